"""rlnorm's native envs seen from stable-baselines3: ``to_sb3(env)`` is a real
``stable_baselines3.common.vec_env.VecEnv``, so plain SB3 code (``PPO("MlpPolicy", ...)``,
``VecNormalize``, ``VecMonitor``, ``evaluate_policy``) runs on a batched torch env.

SB3 speaks numpy and resets a sub-env in the same step that ends its episode: the
observation returned for an ended sub-env is the first one of its next episode, and the
final one goes in ``infos[i]["terminal_observation"]`` (with ``"TimeLimit.truncated"`` set
when the time limit, not a terminal state, ended it). rlnorm's envs autoreset on the next
step instead, so the export resets the ended sub-envs itself, right after the step that
ended them, through the env's public ``reset(options={"reset_mask": ended, ...})`` (the
env's own seeded generator and reset distribution, nothing private of the env class).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from rlnorm.env import TorchVecEnv
from rlnorm.errors import EnvError

from .base import ClassicControlEnv

# Attributes SB3 reads from every sub-env that a torch env has no use for.
_SUB_ENV_DEFAULTS: dict[str, Any] = {"render_mode": None}


class SB3VecEnv(VecEnv):
    """A native ``TorchVecEnv`` behind SB3's ``VecEnv`` interface (see the module docstring).

    Observations come back in the observation space's dtype, rewards as float32 and dones
    as bool arrays, as SB3's ``DummyVecEnv`` returns them. ``seed(s)`` seeds the next
    ``reset`` (the torch env has one generator for all its sub-envs, so sub-env ``i`` does
    not get ``s + i`` as in ``DummyVecEnv``, but the same ``s`` gives the same episodes).
    ``get_attr``, ``set_attr`` and ``env_method`` reach the one torch env that holds every
    sub-env, so they take all sub-envs at once (``indices=None``), not a subset.
    """

    def __init__(self, env: ClassicControlEnv) -> None:
        self.torch_env = env
        self._obs_dtype = env.single_observation_space.dtype or np.float32
        self._actions: torch.Tensor | None = None
        # The options of the last full reset: the same-step resets pass them again, so that
        # every episode starts from the distribution they set (as the env's own autoresets).
        self._episode_options: dict[str, Any] = {}
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)

    def __repr__(self) -> str:
        return f"SB3VecEnv({self.torch_env!r})"

    def reset(self) -> np.ndarray:
        """Reset every sub-env, with the seed and options set since the last reset."""
        seed, options = self._seeds[0], self._options[0] or None
        obs, info = self.torch_env.reset(seed=seed, options=options)
        self._episode_options = dict(options or {})
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [dict(info) for _ in range(self.num_envs)]
        return self._numpy(obs, self._obs_dtype)

    def step_async(self, actions: np.ndarray) -> None:
        """Keep the batch of actions for :meth:`step_wait`."""
        self._actions = torch.as_tensor(np.asarray(actions), device=self.torch_env.device)

    def step_wait(self) -> VecEnvStepReturn:
        """Step every sub-env; ended sub-envs are reset at once, SB3's way."""
        if self._actions is None:
            raise EnvError("step_wait() needs step_async(actions) first")
        env, actions, self._actions = self.torch_env, self._actions, None
        obs, reward, terminated, truncated, _ = env.step(actions)
        done = terminated | truncated
        dones = self._numpy(done, np.bool_)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if dones.any():
            final = self._numpy(obs, self._obs_dtype)
            # The masked reset counts them as alive again, so their next step is a real
            # transition with their new actions: SB3's semantics, not a next-step autoreset.
            obs, _ = env.reset(options={**self._episode_options, "reset_mask": done})
            limit = (truncated & ~terminated).cpu().numpy()
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = final[i]
                infos[i]["TimeLimit.truncated"] = bool(limit[i])
        return self._numpy(obs, self._obs_dtype), self._numpy(reward, np.float32), dones, infos

    def close(self) -> None:
        """Close the wrapped torch env."""
        self.torch_env.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The torch env's attribute, once per sub-env of ``indices``."""
        count = len(self._all(indices, "get_attr"))
        if hasattr(self.torch_env, attr_name):
            return [getattr(self.torch_env, attr_name)] * count
        if attr_name in _SUB_ENV_DEFAULTS:
            return [_SUB_ENV_DEFAULTS[attr_name]] * count
        raise AttributeError(f"{type(self.torch_env).__name__} has no attribute {attr_name!r}")

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the torch env (every sub-env at once)."""
        self._every(indices, "set_attr")
        setattr(self.torch_env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        """Call a method of the torch env once (it acts on every sub-env); its result is
        returned once per sub-env, as SB3 expects one result per sub-env."""
        self._every(indices, "env_method")
        result = getattr(self.torch_env, method_name)(*method_args, **kwargs)
        return [result] * self.num_envs

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """No sub-env is wrapped in a gymnasium wrapper (there are no gymnasium sub-envs)."""
        return [False] * len(self._all(indices, "env_is_wrapped"))

    def _all(self, indices: VecEnvIndices, what: str) -> list[int]:
        picked = list(self._get_indices(indices))
        if any(not 0 <= int(i) < self.num_envs for i in picked):
            raise EnvError(f"{what}: indices {picked} out of range for {self.num_envs} sub-envs")
        return picked

    def _every(self, indices: VecEnvIndices, what: str) -> None:
        if sorted(int(i) for i in self._all(indices, what)) != list(range(self.num_envs)):
            raise EnvError(
                f"{what} reaches the one torch env that holds all {self.num_envs} sub-envs; "
                "pass indices=None (a subset of sub-envs cannot be changed alone)"
            )

    @staticmethod
    def _numpy(tensor: torch.Tensor, dtype: np.dtype | type) -> np.ndarray:
        """``tensor`` as a numpy array of ``dtype`` that shares no memory with the env."""
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
            tensor = tensor.float()
        return np.array(tensor.cpu().numpy(), dtype=dtype)


def to_sb3(env: TorchVecEnv) -> SB3VecEnv:
    """``env``, a native rlnorm env (``rlnorm.envs.make`` of a native id), as an SB3
    ``VecEnv``: numpy in and out, same-step autoreset with ``terminal_observation``."""
    if not isinstance(env, ClassicControlEnv):
        raise EnvError(
            f"to_sb3 takes a native rlnorm env (ids: rlnorm.envs.env_ids()), got "
            f"{type(env).__name__}; for any other gymnasium id use SB3's own "
            "stable_baselines3.common.env_util.make_vec_env(env_id, n_envs)"
        )
    return SB3VecEnv(env)


__all__ = ["SB3VecEnv", "to_sb3"]
