"""Batched environments (installed as ``rlnorm.envs``): native torch envs for the
classic-control suite, and every other gymnasium id through an adapter with the same API;
``to_gymnasium`` and ``to_sb3`` export a native env to gymnasium's and stable-baselines3's
vector APIs (``to_sb3`` imports stable-baselines3 on first use, not with this package).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch

from rlnorm.catalog import gymnasium_env_ids, missing_extra
from rlnorm.env import TorchVecEnv
from rlnorm.errors import UnknownNameError

from .acrobot import Acrobot
from .base import ClassicControlEnv
from .cartpole import CartPole
from .checks import positive_int
from .export import to_gymnasium
from .gymnasium_adapter import GymnasiumVecEnv
from .mountain_car import MountainCar, MountainCarContinuous
from .pendulum import Pendulum

ENV_REGISTRY: dict[str, type[ClassicControlEnv]] = {
    env.env_id: env for env in (CartPole, Pendulum, MountainCar, MountainCarContinuous, Acrobot)
}

BACKENDS = ("auto", "native", "gymnasium")

__all__ = [
    "BACKENDS",
    "ENV_REGISTRY",
    "Acrobot",
    "CartPole",
    "GymnasiumVecEnv",
    "MountainCar",
    "MountainCarContinuous",
    "Pendulum",
    "TorchVecEnv",
    "env_ids",
    "gymnasium_env_ids",
    "make",
    "missing_extra",
    "to_gymnasium",
    "to_sb3",
]


def __getattr__(name: str) -> Any:
    """``to_sb3`` and ``SB3VecEnv`` on first use: importing stable-baselines3 takes seconds."""
    if name in ("to_sb3", "SB3VecEnv"):
        from . import sb3_vec

        return getattr(sb3_vec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def env_ids() -> list[str]:
    """The ids with a native torch env, sorted."""
    return sorted(ENV_REGISTRY)


def make(
    env_id: str,
    num_envs: int = 1,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    backend: str = "auto",
    **kwargs: Any,
) -> TorchVecEnv:
    """Build ``num_envs`` batched copies of ``env_id`` on ``device``.

    ``backend`` picks the implementation: ``"auto"`` the native torch env when there is
    one (``env_ids()``) and gymnasium's otherwise, ``"native"`` only a native env,
    ``"gymnasium"`` always ``GymnasiumVecEnv`` (native ids too, e.g. to compare the two).
    Both have the same tensor API and next-step autoreset. Extra keyword arguments go to
    the env: the native constructor, or ``GymnasiumVecEnv`` (``max_episode_steps``,
    ``vectorization``) and through it ``gymnasium.make``; gymnasium's env parameters, such
    as Pendulum's ``g``, mean the same in both.

    Raises ``UnknownNameError`` (with the valid ids and a did-you-mean) for an id the
    backend does not know, and ``EnvError`` for ``num_envs < 1`` or an env whose
    dependencies are missing.
    """
    if backend not in BACKENDS:
        raise UnknownNameError("backend", backend, BACKENDS)
    num_envs = positive_int("num_envs", num_envs)
    native = ENV_REGISTRY.get(env_id)
    if backend == "native" and native is None:
        raise UnknownNameError("native env", env_id, ENV_REGISTRY)
    if native is not None and backend != "gymnasium":
        return native(num_envs=num_envs, device=device, dtype=dtype, **kwargs)
    if env_id not in gym.registry:
        if backend == "gymnasium":
            raise UnknownNameError("gymnasium env", env_id, gym.registry)
        raise UnknownNameError("env", env_id, {*ENV_REGISTRY, *gym.registry})
    return GymnasiumVecEnv(env_id, num_envs=num_envs, device=device, dtype=dtype, **kwargs)
