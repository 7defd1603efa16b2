"""stable-baselines3 algorithms as rlnorm agents: ``rlnorm train --agent sb3:PPO``.

``sb3:PPO``, ``sb3:A2C``, ``sb3:SAC``, ``sb3:TD3``, ``sb3:DQN`` (stable-baselines3) and
``sb3:CrossQ`` (sb3-contrib) train with SB3's own loss code, unchanged, inside rlnorm's
harness: rollouts, evaluation, checkpoints, TensorBoard and the CLI are rlnorm's. Each
adapter is an ordinary :class:`~rlnorm.agent.Agent`:

- **Networks.** The SB3 policy is built with rlnorm's ``--norm`` placed as
  :func:`rlnorm.nets.mlp` places it, by the same :func:`rlnorm.nets.hidden_block`, after
  each hidden Linear (``Linear -> norm -> activation``; SB3's MLPs have no norm option).
  The policy's own factory methods are overridden (:mod:`.policies`), so SB3 then builds
  its optimizers and target networks over the normalized nets itself. ``--norm none``
  leaves SB3's networks exactly as SB3 builds them. CrossQ's built-in Batch Renorm is
  switched off: the norm is rlnorm's, placed like everywhere else.
- **Acting.** Only through :meth:`act`, which rlnorm's rollout manager calls in eval mode:
  SB3's ``collect_rollouts`` never runs. Continuous actions of SAC, TD3 and CrossQ are
  squashed to [-1, 1] by the policy and rescaled to the env's bounds here.
- **Updates.** On-policy (PPO, A2C): :meth:`SB3OnPolicy.update` fills a fresh SB3
  ``RolloutBuffer`` from rlnorm's :class:`~rlnorm.rollout.Rollout` and calls ``train()``.
  With a mode-dependent norm, ``norm_update: frozen`` (the default, as in rlnorm's PPO) runs
  ``train()`` with every BatchNorm on its running statistics, the function that acted, then
  refreshes the statistics with one train-mode pass over the rollout; ``batch`` is SB3's
  textbook train mode. ``norm_statistics: cumulative`` (default) averages the statistics
  over all batches, ``ema`` keeps BatchNorm's momentum of 0.1.
  Off-policy (SAC, TD3, CrossQ, DQN): the learner fills rlnorm's replay buffer, and SB3's
  ``train(gradient_steps, batch_size)`` samples it through a view in SB3's layout.
- **Targets.** Inside the update every target network normalizes with its copied running
  statistics (:func:`rlnorm.safety.frozen_statistics`): rlnorm's ``training`` context puts
  every submodule of the policy in train mode, and SB3's ``set_training_mode`` leaves the
  targets alone. At each of SB3's target updates *every* buffer of the online net is copied
  into the target, not only those named ``running_*`` as SB3 does (which misses
  ``num_batches_tracked`` and every other norm state).
- **Checkpoints.** :meth:`modules` holds the SB3 policy (all parameters and buffers, targets
  included) and the algorithm's own state (update counters, DQN's exploration rate, the
  learned entropy coefficient), :meth:`optimizers` every SB3 optimizer: an rlnorm
  checkpoint (safetensors, no pickle) restores an adapter exactly, and building one needs
  only the spaces, no env.
- **Logs.** SB3's logger is replaced by one that writes nothing; what ``train()`` records
  comes back as rlnorm metrics: losses under ``loss/``, schedules and counters under
  ``train/``.

The config of ``sb3:<Algo>`` is ``SB3<Algo>Config`` (:mod:`.configs`): SB3's hyperparameter
names with SB3's defaults, checked when the config is built (an unknown key names the
valid ones). ``net_arch``/``critic_net_arch`` and ``activation_fn``, ``ortho_init``,
``log_std_init`` and ``n_critics`` go into SB3's ``policy_kwargs``. SB3 keeps exploration
outside its policy; these adapters implement it in :meth:`act` from SB3's settings: DQN's
epsilon-greedy with SB3's schedule (a coin per sub-env, so one env's action never depends
on the others in the batch) and ``action_noise_std``, SB3's ``NormalActionNoise`` in the
scaled action space.

stable-baselines3 is imported only when an ``sb3:`` agent is asked for
(:func:`agent_class`), so rlnorm itself imports without it.


The package, by concern:

- :mod:`.configs`: the config dataclasses and their translation to SB3's arguments;
- :mod:`.policies`: the norm injected into SB3's policy classes;
- :mod:`.agent`: :class:`SB3Agent`, the base every adapter shares, and importing SB3;
- :mod:`.on_policy`: PPO and A2C; :mod:`.off_policy`: SAC, TD3, CrossQ and DQN;
- this module: the registry of ``sb3:`` names (:func:`agent_class`); which of them are
  installed, :func:`rlnorm.catalog.sb3_available` tells without importing torch.
"""

from __future__ import annotations

from rlnorm.agents.sb3.agent import PREFIX, AlgorithmState, CopyAllBuffers, SB3Agent, require
from rlnorm.agents.sb3.configs import (
    SB3A2CConfig,
    SB3ActorCriticConfig,
    SB3Config,
    SB3CrossQConfig,
    SB3DQNConfig,
    SB3MaxEntropyConfig,
    SB3OffPolicyConfig,
    SB3OnPolicyConfig,
    SB3PPOConfig,
    SB3SACConfig,
    SB3TD3Config,
    sb3_kwargs,
)
from rlnorm.agents.sb3.off_policy import (
    SB3DQN,
    SB3SAC,
    SB3TD3,
    ReplayView,
    SB3ActorCritic,
    SB3CrossQ,
    SB3MaxEntropy,
    SB3OffPolicy,
)
from rlnorm.agents.sb3.on_policy import SB3A2C, SB3PPO, SB3OnPolicy
from rlnorm.agents.sb3.policies import normalize_hidden, set_statistics_mode
from rlnorm.errors import MissingDependencyError, UnknownNameError

__all__ = [
    "PREFIX",
    "SB3A2C",
    "SB3DQN",
    "SB3PPO",
    "SB3SAC",
    "SB3TD3",
    "AlgorithmState",
    "CopyAllBuffers",
    "MissingDependencyError",
    "ReplayView",
    "SB3A2CConfig",
    "SB3ActorCritic",
    "SB3ActorCriticConfig",
    "SB3Agent",
    "SB3Config",
    "SB3CrossQ",
    "SB3CrossQConfig",
    "SB3DQNConfig",
    "SB3MaxEntropy",
    "SB3MaxEntropyConfig",
    "SB3OffPolicy",
    "SB3OffPolicyConfig",
    "SB3OnPolicy",
    "SB3OnPolicyConfig",
    "SB3PPOConfig",
    "SB3SACConfig",
    "SB3TD3Config",
    "agent_class",
    "normalize_hidden",
    "sb3_kwargs",
    "set_statistics_mode",
]

_AGENTS: dict[str, type[SB3Agent]] = {
    cls.algorithm: cls for cls in (SB3A2C, SB3CrossQ, SB3DQN, SB3PPO, SB3SAC, SB3TD3)
}


def agent_class(name: str) -> type[SB3Agent]:
    """The adapter for ``sb3:<Algo>``, once its package imports.

    Raises :class:`UnknownNameError` listing the valid names for an unknown algorithm, and
    :class:`MissingDependencyError` when stable-baselines3 (or sb3-contrib) is missing.
    """
    algorithm = name.removeprefix(PREFIX)
    if algorithm not in _AGENTS:
        raise UnknownNameError(
            "stable-baselines3 algorithm", name, [cls.name for cls in _AGENTS.values()]
        )
    cls = _AGENTS[algorithm]
    require(cls.package, algorithm)
    return cls
