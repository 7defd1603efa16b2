"""rlnorm's environments seen from gymnasium: ``to_gymnasium(env)`` is a real
``gymnasium.vector.VectorEnv``, so code written for gymnasium's vector API (its wrappers,
other libraries' training loops) can run on a native torch env.

The export speaks numpy, as gymnasium's vector envs do: actions come in as arrays (or
anything ``numpy.asarray`` takes), observations, rewards and flags go out as arrays, at
the cost of one device-to-host copy per step for envs on an accelerator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

from rlnorm.env import TorchVecEnv
from rlnorm.errors import EnvError


class ExportedVectorEnv(VectorEnv):
    """A ``TorchVecEnv`` behind gymnasium's ``VectorEnv`` interface.

    Spaces are the env's own (the batched ones are ``batch_space`` of the single ones);
    observations are returned in the observation space's dtype (so a float64 env returns
    float32 observations, as its space says), rewards as float64 and flags as bool arrays,
    as gymnasium's ``SyncVectorEnv`` does. ``metadata["autoreset_mode"]`` is
    ``AutoresetMode.NEXT_STEP``: the env's own autoreset, which gymnasium's wrappers read.

    ``reset(seed=s)`` seeds the whole env with ``s`` (the same seed gives the same
    episodes, an unseeded reset differs from run to run) and gymnasium's ``np_random``
    with it too. Gymnasium's per-sub-env seed lists are not supported: the torch env has
    one generator for all sub-envs. ``reset(options={"reset_mask": mask})`` resets only
    the masked sub-envs, as ``SyncVectorEnv`` does; unknown options are refused. ``close``
    closes the wrapped env.
    """

    def __init__(self, env: TorchVecEnv) -> None:
        self.torch_env = env
        self.num_envs = env.num_envs
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self.metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}
        self._obs_dtype = env.single_observation_space.dtype or np.float32

    def __repr__(self) -> str:
        return f"ExportedVectorEnv({self.torch_env!r})"

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env; returns observations ``(num_envs, *obs_shape)`` and info."""
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise EnvError(
                f"seed must be an int or None, got {seed!r}: the env has one generator for "
                "all its sub-envs, so it cannot take a seed per sub-env"
            )
        # The torch env first: options it refuses (an unknown key, a bad reset_mask) leave
        # both it and np_random as they were.
        obs, info = self.torch_env.reset(seed=seed, options=options)
        super().reset(seed=seed)
        return self._numpy(obs, self._obs_dtype), info

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every sub-env with a batch of actions from ``action_space``."""
        a = torch.as_tensor(np.asarray(actions), device=self.torch_env.device)
        obs, reward, terminated, truncated, info = self.torch_env.step(a)
        return (
            self._numpy(obs, self._obs_dtype),
            self._numpy(reward, np.float64),
            self._numpy(terminated, np.bool_),
            self._numpy(truncated, np.bool_),
            info,
        )

    @staticmethod
    def _numpy(tensor: torch.Tensor, dtype: np.dtype | type) -> np.ndarray:
        """``tensor`` as a numpy array of ``dtype`` that shares no memory with the env."""
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
            tensor = tensor.float()
        return np.array(tensor.cpu().numpy(), dtype=dtype)

    def close_extras(self, **kwargs: Any) -> None:
        """Close the wrapped torch env."""
        self.torch_env.close()


def to_gymnasium(env: TorchVecEnv) -> ExportedVectorEnv:
    """``env`` as a gymnasium ``VectorEnv`` (numpy in and out, next-step autoreset)."""
    if not isinstance(env, TorchVecEnv):
        raise EnvError(f"to_gymnasium takes an rlnorm TorchVecEnv, got {type(env).__name__}")
    return ExportedVectorEnv(env)
