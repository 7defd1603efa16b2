"""Any gymnasium environment behind rlnorm's tensor API.

``GymnasiumVecEnv`` runs ``num_envs`` copies of a registered gymnasium id in gymnasium's
own ``SyncVectorEnv`` (one process) or ``AsyncVectorEnv`` (one worker process per copy),
with next-step autoreset as rlnorm's native envs have, and converts at the boundary:
actions arrive as tensors (or arrays, or lists) and are checked and handed to gymnasium
as numpy; observations, rewards and flags leave as tensors on ``device``. The rest of
rlnorm (rollouts, evaluation, the CLI) cannot tell it from a native env, except by speed:
every step is a numpy round trip, and a host sync when ``device`` is an accelerator.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from rlnorm.env import TorchVecEnv
from rlnorm.errors import EnvError, UnknownNameError

from .checks import positive_int

VECTORIZATIONS = ("sync", "async")

# Observation spaces whose batch is one numpy array: Box observations become floating
# tensors of the env's dtype, the integer-valued ones int64 tensors.
_INTEGER_SPACES = (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)


def _make_one(env_id: str, max_episode_steps: int | None, kwargs: dict[str, Any]) -> gym.Env:
    """One gymnasium env; a module-level function so async workers can rebuild it."""
    return gym.make(env_id, max_episode_steps=max_episode_steps, **kwargs)


class GymnasiumVecEnv(TorchVecEnv):
    """``num_envs`` copies of the gymnasium env ``env_id``, stepped through gymnasium.

    Args:
        env_id: a registered gymnasium id, e.g. ``"Hopper-v5"``.
        num_envs: number of sub-environments.
        device: where returned tensors live.
        dtype: floating dtype of rewards and of ``Box`` observations (whatever dtype the
            space has: images of ``uint8`` become floats too). Observations of integer
            spaces (``Discrete``, ``MultiDiscrete``, ``MultiBinary``) are ``int64``.
        vectorization: ``"sync"`` (a loop in this process) or ``"async"`` (a worker
            process per sub-env, worth it when one env step is expensive).
        max_episode_steps: the time limit; default the id's registered one. Required for
            ids registered without one, because rlnorm's evaluation bounds its episodes.
        **kwargs: passed to ``gymnasium.make`` (e.g. ``g=9.81`` for Pendulum-v1).

    Semantics are those of the native envs: ``reset(seed=s)`` seeds sub-env ``i`` with
    ``s + i`` (gymnasium's convention), so the same seed gives the same episodes, and an
    unseeded reset differs from run to run; when a sub-env ends at step ``t`` the
    observation at ``t`` is its final one and step ``t + 1`` resets it (action ignored,
    reward 0, flags False). ``info`` is gymnasium's info dict, with numpy values.
    Actions of the wrong shape or dtype, NaN, or outside a discrete range raise
    ``EnvError`` before anything is stepped.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        vectorization: str = "sync",
        max_episode_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        num_envs = positive_int("num_envs", num_envs)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise EnvError(f"dtype must be a floating torch dtype, got {dtype!r}")
        if vectorization not in VECTORIZATIONS:
            raise EnvError(
                f"vectorization must be one of {', '.join(VECTORIZATIONS)}, got {vectorization!r}"
            )
        if env_id not in gym.registry:
            raise UnknownNameError("gymnasium env", env_id, gym.registry)
        if max_episode_steps is not None:
            max_episode_steps = positive_int("max_episode_steps", max_episode_steps)
        limit = max_episode_steps or gym.spec(env_id).max_episode_steps
        if limit is None:
            raise EnvError(
                f"{env_id} is registered without a time limit; pass max_episode_steps=N "
                "(rlnorm's evaluation needs a bound on episode length)"
            )
        self.env_id = env_id
        self.num_envs = num_envs
        self.device = torch.empty(0, device=device).device
        self.dtype = dtype
        self._max_episode_steps = limit
        make_one = partial(_make_one, env_id, max_episode_steps, kwargs)
        vector_cls = SyncVectorEnv if vectorization == "sync" else AsyncVectorEnv
        try:
            # copy=False: every output is copied into a tensor anyway.
            self.vector_env = vector_cls(
                [make_one] * num_envs, copy=False, autoreset_mode=AutoresetMode.NEXT_STEP
            )
        except (gym.error.DependencyNotInstalled, ImportError) as e:
            mujoco = "mujoco" in str(gym.spec(env_id).entry_point)
            hint = ' (pip install "rlnorm[mujoco]")' if mujoco else ""
            raise EnvError(f"{env_id} needs a package that is not installed: {e}{hint}") from e
        except (gym.error.Error, TypeError) as e:
            raise EnvError(f"gymnasium could not make {env_id}: {e}") from e
        self.single_observation_space = self.vector_env.single_observation_space
        self.single_action_space = self.vector_env.single_action_space
        self.observation_space = self.vector_env.observation_space
        self.action_space = self.vector_env.action_space
        obs_space = self.single_observation_space
        if isinstance(obs_space, gym.spaces.Box):
            self._obs_dtype = dtype
        elif isinstance(obs_space, _INTEGER_SPACES):
            self._obs_dtype = torch.int64
        else:
            self.vector_env.close()
            raise EnvError(
                f"{env_id} observes a {type(obs_space).__name__} space, which is not one "
                "tensor; wrap it, e.g. gym.wrappers.FlattenObservation, and register that"
            )
        self._needs_reset = True

    def __repr__(self) -> str:
        return (
            f"GymnasiumVecEnv({self.env_id}, num_envs={self.num_envs}, device={self.device}, "
            f"dtype={self.dtype})"
        )

    def _tensor(self, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        """A fresh tensor on ``device``: gymnasium's buffers are reused on the next step."""
        return torch.from_numpy(np.asarray(array)).to(device=self.device, dtype=dtype, copy=True)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset every sub-env (sub-env ``i`` seeded with ``seed + i``); returns the
        observations ``(num_envs, *obs_shape)`` on ``device`` and gymnasium's info."""
        obs, info = self.vector_env.reset(seed=None if seed is None else int(seed), options=options)
        self._needs_reset = False
        return self._tensor(obs, self._obs_dtype), info

    def step(
        self, actions: torch.Tensor | np.ndarray | list[Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Step every sub-env; see ``TorchVecEnv.step``. Rewards have dtype ``self.dtype``."""
        obs, reward, terminated, truncated, info = self.vector_env.step(self._actions(actions))
        return (
            self._tensor(obs, self._obs_dtype),
            self._tensor(reward, self.dtype),
            self._tensor(terminated, torch.bool),
            self._tensor(truncated, torch.bool),
            info,
        )

    def _actions(self, actions: torch.Tensor | np.ndarray | list[Any]) -> np.ndarray:
        """``actions`` as the numpy batch gymnasium takes, or ``EnvError`` if they do not fit
        the action space: wrong shape (never broadcast or squeezed), NaN, floats for a
        discrete space, or values outside a discrete range."""
        if self._needs_reset:
            raise EnvError("call reset() before step()")
        if isinstance(actions, torch.Tensor):
            actions = actions.detach().cpu().numpy()
        a = np.asarray(actions)
        space = self.action_space
        if a.shape != space.shape:
            raise EnvError(
                f"actions must have shape {space.shape} (num_envs, *action_space.shape), "
                f"got {a.shape}"
            )
        if a.dtype.kind not in "biuf":
            raise EnvError(f"actions must be real numbers, got dtype {a.dtype}")
        if a.dtype.kind == "f" and np.isnan(a).any():
            rows = np.flatnonzero(np.isnan(a).reshape(self.num_envs, -1).any(axis=1)).tolist()
            shown = ", ".join(map(str, rows[:8])) + (", ..." if len(rows) > 8 else "")
            raise EnvError(f"actions contain NaN (sub-envs {shown})")
        if isinstance(self.single_action_space, gym.spaces.Box):
            return a.astype(space.dtype, copy=False)
        if a.dtype.kind == "f":
            raise EnvError(
                f"actions must be integers for {self.single_action_space}, got dtype "
                f"{a.dtype}; cast with .long() after choosing them"
            )
        a = a.astype(space.dtype, copy=False)
        if not space.contains(a):
            raise EnvError(
                f"actions must be in {self.single_action_space}, got values {np.unique(a).tolist()}"
            )
        return a

    def close(self) -> None:
        """Close gymnasium's vector env (and its worker processes, if async)."""
        self.vector_env.close()
