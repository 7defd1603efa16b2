"""The batched environment contract: what the rollout manager and the learner may assume
of an environment, whichever folder or package implements it.

A :class:`TorchVecEnv` steps ``num_envs`` copies of one environment at once with tensors on
``device``, with gymnasium 1.x vector semantics and next-step autoreset: when sub-env ``i``
terminates or truncates at step ``t``, the observation returned at ``t`` is that episode's
final observation (to bootstrap a truncated return), and the next ``step`` ignores action
``i``, resets the sub-env, and returns the first observation of the new episode with reward
0 and both flags False. The implementations live in ``envs/`` (``rlnorm.envs``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import torch

from rlnorm.errors import EnvError


class TorchVecEnv:
    """Base class: subclasses set the attributes below and implement ``reset`` and ``step``.

    Attributes:
        env_id: the gymnasium id this env reproduces, e.g. ``"CartPole-v1"``.
        num_envs: number of sub-environments stepped together.
        device: where every tensor the env takes or returns lives.
        dtype: floating dtype of observations and rewards.
        single_observation_space: gymnasium's observation space of one sub-env.
        single_action_space: gymnasium's action space of one sub-env.
        observation_space, action_space: the batched spaces (gymnasium's ``batch_space``).
        max_episode_steps: truncation limit, as in gymnasium's registration (read-only;
            subclasses set ``_max_episode_steps``).
    """

    env_id: str
    num_envs: int
    device: torch.device
    dtype: torch.dtype
    single_observation_space: gym.spaces.Space
    single_action_space: gym.spaces.Space
    observation_space: gym.spaces.Space
    action_space: gym.spaces.Space
    _max_episode_steps: int

    @property
    def max_episode_steps(self) -> int:
        """Steps after which an episode is truncated."""
        return self._max_episode_steps

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset every sub-env; returns observations ``(num_envs, *obs_shape)`` and info."""
        raise NotImplementedError

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Step every sub-env; returns ``(obs, reward, terminated, truncated, info)``.

        ``reward`` has dtype ``self.dtype``; ``terminated``/``truncated`` are bool; all have
        leading dimension ``num_envs`` and live on ``self.device``.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (nothing for pure-torch envs)."""


@runtime_checkable
class ResumableEnv(Protocol):
    """An env whose state (physics, episode clocks, random stream) a checkpoint can hold,
    so a resumed run continues the same episodes; the native envs are resumable."""

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


@runtime_checkable
class MemberSplitEnv(Protocol):
    """A resumable env that can step a population's members' envs as one batch (the native
    classic-control envs): split into ``members`` blocks of sub-envs, block ``k`` draws from
    its own random stream, seeded by ``seed_members``, exactly as an env of that size alone
    does, and ``state_dict(k)`` / ``load_state_dict(state, k)`` are that env's."""

    def split_members(self, members: int, like: TorchVecEnv) -> bool: ...

    def seed_members(self, seeds: list[int]) -> None: ...

    def state_dict(self, member: int = 0) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor], member: int = 0) -> None: ...


def space_shape(space: gym.spaces.Space) -> tuple[int, ...]:
    """The fixed shape of one element of ``space`` (Box, Discrete, MultiBinary, ...); spaces
    without one (Dict, Tuple, Text) are refused: rlnorm's networks take flat tensors."""
    if space.shape is None:
        raise EnvError(f"{space} has no fixed shape; rlnorm needs Box or Discrete spaces")
    return tuple(space.shape)


__all__ = ["MemberSplitEnv", "ResumableEnv", "TorchVecEnv", "space_shape"]
