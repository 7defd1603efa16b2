"""Batched environments written in torch (installed as ``rlnorm.envs``)."""

from __future__ import annotations

import numbers
from typing import Any

import torch

from rlnorm.errors import EnvError, UnknownNameError

from .acrobot import Acrobot
from .base import TorchVecEnv
from .cartpole import CartPole
from .mountain_car import MountainCar, MountainCarContinuous
from .pendulum import Pendulum

ENV_REGISTRY: dict[str, type[TorchVecEnv]] = {
    env.env_id: env for env in (CartPole, Pendulum, MountainCar, MountainCarContinuous, Acrobot)
}

__all__ = [
    "ENV_REGISTRY",
    "Acrobot",
    "CartPole",
    "MountainCar",
    "MountainCarContinuous",
    "Pendulum",
    "TorchVecEnv",
    "env_ids",
    "make",
]


def env_ids() -> list[str]:
    """The ids ``make`` accepts, sorted."""
    return sorted(ENV_REGISTRY)


def make(
    env_id: str,
    num_envs: int = 1,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> TorchVecEnv:
    """Build ``num_envs`` batched copies of the registered env ``env_id`` on ``device``.

    Extra keyword arguments go to the env's constructor (e.g. ``max_episode_steps``).
    Raises ``UnknownNameError`` (listing the valid ids) for an unregistered id and
    ``EnvError`` for ``num_envs < 1``.
    """
    if env_id not in ENV_REGISTRY:
        raise UnknownNameError("env", env_id, ENV_REGISTRY)
    if isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral) or num_envs < 1:
        raise EnvError(f"num_envs must be an int >= 1, got {num_envs!r}")
    return ENV_REGISTRY[env_id](num_envs=num_envs, device=device, dtype=dtype, **kwargs)
