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

from typing import Any

import gymnasium as gym
import torch


class TorchVecEnv:
    """Base class: subclasses set the attributes below and implement ``reset`` and ``step``.

    Attributes:
        env_id: the gymnasium id this env reproduces, e.g. ``"CartPole-v1"``.
        num_envs: number of sub-environments stepped together.
        device: where every tensor the env takes or returns lives.
        dtype: floating dtype of observations and rewards.
        single_observation_space: gymnasium's observation space of one sub-env.
        single_action_space: gymnasium's action space of one sub-env.
        max_episode_steps: truncation limit, as in gymnasium's registration.
    """

    env_id: str
    num_envs: int
    device: torch.device
    dtype: torch.dtype
    single_observation_space: gym.spaces.Space
    single_action_space: gym.spaces.Space
    max_episode_steps: int

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


__all__ = ["TorchVecEnv"]
