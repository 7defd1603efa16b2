"""What a run needs beyond its weights to continue exactly: the random streams, the env's
state, the episodes in flight and the replay buffer, saved beside ``checkpoints/last``;
and the periodic ``step-<n>`` snapshots kept next to it."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch

from rlnorm.agent import Agent
from rlnorm.env import ResumableEnv, TorchVecEnv
from rlnorm.errors import ConfigError
from rlnorm.replay import ReplayBuffer
from rlnorm.rollout import RolloutManager


def replay_of(agent: Agent) -> ReplayBuffer | None:
    """The replay buffer an off-policy agent keeps as ``agent.replay`` (None: it has none)."""
    replay = getattr(agent, "replay", None)
    if replay is not None and not isinstance(replay, ReplayBuffer):
        raise ConfigError(f"{agent.name}.replay is a {type(replay).__name__}, not a ReplayBuffer")
    return replay


def capture(
    env: TorchVecEnv, rollouts: RolloutManager, replay: ReplayBuffer | None
) -> dict[str, torch.Tensor]:
    """The training state as flat ``group.name`` tensors for a safetensors file."""
    state: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    if env.device.type == "cuda":
        state["rng.cuda"] = torch.cuda.get_rng_state(env.device)
    if isinstance(env, ResumableEnv):
        state.update({f"env.{k}": v for k, v in env.state_dict().items()})
    state.update({f"rollout.{k}": v for k, v in rollouts.state_dict().items()})
    if replay is not None:
        state.update({f"replay.{k}": v for k, v in replay.state_dict().items()})
    return state


def apply(
    state: dict[str, torch.Tensor],
    env: TorchVecEnv,
    rollouts: RolloutManager,
    replay: ReplayBuffer | None,
    *,
    fresh_seed: int,
) -> None:
    """Put a captured training state back in place, after the env's first reset. An env
    that cannot restore its state starts fresh episodes seeded with ``fresh_seed``."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        group, _, name = key.partition(".")
        parts.setdefault(group, {})[name] = value
    torch.set_rng_state(parts["rng"]["torch"].cpu())
    if "cuda" in parts["rng"]:
        torch.cuda.set_rng_state(parts["rng"]["cuda"].cpu(), env.device)
    if "env" in parts and isinstance(env, ResumableEnv):
        env.load_state_dict(parts["env"])
    else:
        warnings.warn(
            f"{env!r} cannot save its state: the resumed run starts fresh episodes "
            "(seeded from the step count), so it will not match an uninterrupted run",
            RuntimeWarning,
            stacklevel=4,
        )
        rollouts.reset(seed=fresh_seed)
        parts["rollout"].pop("obs", None)
    rollouts.load_state_dict(parts["rollout"])
    if "replay" in parts and replay is not None:
        replay.load_state_dict(parts["replay"])


def snapshot(last: Path, env_steps: int, keep: int) -> None:
    """Copy the checkpoint ``last`` to ``step-<env_steps>`` beside it, keeping the newest
    ``keep`` snapshots (0: none). The copy is made under a temporary name and renamed."""
    if keep == 0:
        return
    target = last.with_name(f"step-{env_steps:010d}")
    tmp = last.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(last, tmp)
    if target.exists():  # this run's own, from before a resume: replaced by the same step
        shutil.rmtree(target)
    tmp.replace(target)
    for old in sorted(last.parent.glob("step-*"))[:-keep]:
        shutil.rmtree(old)
