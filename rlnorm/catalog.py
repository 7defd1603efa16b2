"""What rlnorm ships, by name, known without importing torch: the built-in agents, the
stable-baselines3 adapters, the normalization kinds with their contracts, the native env
ids and the gymnasium families that need an extra.

``rlnorm list`` prints from this table, so it answers in a fraction of a second instead of
the seconds an import of torch takes. The registries stay the authority on what runs: the
norm registry (:mod:`rlnorm.norm`) builds its built-in kinds from :data:`NORMS` and adds
every kind registered later to it, and tests check that the agent and env registries hold
exactly the names listed here, so the table cannot drift from the code. Only the standard
library is imported at module level; gymnasium (not torch) is imported by the functions
that read its registry.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class NormContract:
    """What a normalization kind declares, as ``rlnorm list`` shows it.

    Attributes:
        description: one line for ``rlnorm list``.
        batch_dependent: in train mode, does the output for ``x_i`` depend on other ``x_j``?
        mode_dependent: do the train-mode and eval-mode outputs differ?
    """

    description: str
    batch_dependent: bool
    mode_dependent: bool


#: The built-in agents (``rlnorm.agents``), by registered name, with one line each.
AGENTS: dict[str, str] = {
    "crossq": "CrossQ: SAC without target networks, (s, a) and (s', a') normalized jointly",
    "ppo": "PPO: clipped policy gradient with GAE, BatchNorm frozen during updates",
    "sac": "Soft Actor-Critic: twin critics, tanh-Gaussian actor, learned entropy",
    "td3": "TD3 (and DDPG as a config): deterministic actor, twin delayed critics",
}

#: The stable-baselines3 adapters (``rlnorm.agents.sb3``): name -> the package providing
#: the algorithm; an adapter is offered where that package is installed.
SB3_AGENTS: dict[str, str] = {
    "sb3:A2C": "stable_baselines3",
    "sb3:CrossQ": "sb3_contrib",
    "sb3:DQN": "stable_baselines3",
    "sb3:PPO": "stable_baselines3",
    "sb3:SAC": "stable_baselines3",
    "sb3:TD3": "stable_baselines3",
}

#: Every normalization kind, in registration order: the built-in ones, and any kind a
#: plug-in registers through :func:`rlnorm.norm.register` in this process.
NORMS: dict[str, NormContract] = {
    "none": NormContract("no normalization", batch_dependent=False, mode_dependent=False),
    "batch": NormContract(
        "BatchNorm1d: batch statistics in train mode, running statistics in eval mode",
        batch_dependent=True,
        mode_dependent=True,
    ),
    "layer": NormContract(
        "LayerNorm: per-sample statistics, one path in train and eval mode",
        batch_dependent=False,
        mode_dependent=False,
    ),
    "batch_renorm": NormContract(
        "Batch Renormalization: batch statistics corrected towards running ones",
        batch_dependent=True,
        mode_dependent=True,
    ),
    "weight": NormContract(
        "weight normalization of each hidden Linear: w = g * v / |v|",
        batch_dependent=False,
        mode_dependent=False,
    ),
    "cosine": NormContract(
        "cosine normalization: pre-activation = scale * cos((w, b), (x, 1))",
        batch_dependent=False,
        mode_dependent=False,
    ),
    "rms": NormContract(
        "RMSNorm: per-sample root-mean-square scaling, one path in train and eval",
        batch_dependent=False,
        mode_dependent=False,
    ),
}

#: The ids with a native torch env (``rlnorm.envs.ENV_REGISTRY``), sorted.
NATIVE_ENVS: tuple[str, ...] = (
    "Acrobot-v1",
    "CartPole-v1",
    "MountainCar-v0",
    "MountainCarContinuous-v0",
    "Pendulum-v1",
)

#: Gymnasium env families whose package is an extra: entry-point prefix -> (the module to
#: find, the extra's name, the requirement that installs it).
EXTRAS: dict[str, tuple[str, str, str]] = {
    "gymnasium.envs.box2d": ("Box2D", "box2d", "gymnasium[box2d]"),
    "gymnasium.envs.mujoco": ("mujoco", "mujoco", "rlnorm[mujoco]"),
}


def sb3_available() -> list[str]:
    """The ``sb3:`` agent names whose package is installed (found without importing it)."""
    return [name for name, package in SB3_AGENTS.items() if importlib.util.find_spec(package)]


def gymnasium_env_ids() -> list[str]:
    """The ids of gymnasium's registry without a native env, sorted: ``rlnorm.envs.make``
    runs them through its gymnasium adapter. Some need extra packages (:func:`missing_extra`)."""
    import gymnasium as gym

    return sorted(set(gym.registry) - set(NATIVE_ENVS))


def missing_extra(env_id: str) -> tuple[str, str] | None:
    """``(extra, requirement)`` when the gymnasium id ``env_id`` needs a package that is not
    installed (box2d, mujoco), else None: ``pip install '<requirement>'`` installs it.
    ``rlnorm list`` marks those ids."""
    import gymnasium as gym

    entry = gym.registry[env_id].entry_point
    for prefix, (module, extra, requirement) in EXTRAS.items():
        if isinstance(entry, str) and entry.startswith(prefix):
            return None if importlib.util.find_spec(module) else (extra, requirement)
    return None


__all__ = [
    "AGENTS",
    "EXTRAS",
    "NATIVE_ENVS",
    "NORMS",
    "SB3_AGENTS",
    "NormContract",
    "gymnasium_env_ids",
    "missing_extra",
    "sb3_available",
]
