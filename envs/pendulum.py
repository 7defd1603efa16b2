"""Gymnasium's ``Pendulum-v1`` in torch, batched over ``num_envs`` on any device.

The dynamics (semi-implicit Euler with ``dt = 0.05``, torque clipped to +-2, angular
speed clipped to +-8), the reward ``-(theta^2 + 0.1 theta_dot^2 + 0.001 u^2)`` with the
angle normalized to ``[-pi, pi)`` and taken before the step, the observation
``(cos theta, sin theta, theta_dot)``, the absence of termination and the 200-step time
limit are those of gymnasium 1.x; in ``float64`` one step agrees with gymnasium to
rounding. Autoreset, seeding and the settable ``state`` are ``ClassicControlEnv``'s.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from .base import ClassicControlEnv
from .checks import reset_option

MAX_SPEED = 8.0
MAX_TORQUE = 2.0
DT = 0.05
MASS = 1.0
LENGTH = 1.0
RESET_THETA, RESET_THETA_DOT = math.pi, 1.0  # gymnasium's default x_init, y_init


class Pendulum(ClassicControlEnv):
    """``num_envs`` Pendulum-v1 sub-environments stepped together with torch ops.

    Actions are torques of shape ``(num_envs, 1)``, gymnasium's batched ``Box`` shape; a
    ``(num_envs,)`` tensor is rejected rather than unsqueezed, so a policy emitting the
    wrong shape fails loudly instead of broadcasting. Torques outside ``[-2, 2]`` are
    clipped, as gymnasium does (the reward's torque cost uses the clipped torque too); a
    NaN torque raises ``EnvError`` on CPU and trips an asynchronous device-side assert
    elsewhere (see ``ClassicControlEnv._box_actions``).

    ``state`` is the live ``(num_envs, 2)`` state (theta, theta_dot), theta unwrapped as in
    gymnasium. ``reset`` accepts gymnasium's options ``x_init`` and ``y_init``: fresh states
    are uniform in ``[-x_init, x_init] x [-y_init, y_init]`` (default pi and 1).
    """

    env_id = "Pendulum-v1"
    state_names = ("theta", "theta_dot")
    reset_options = ("x_init", "y_init")

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_episode_steps: int = 200,
        g: float = 10.0,
        fast: bool | None = None,
    ) -> None:
        high = np.array([1.0, 1.0, MAX_SPEED], dtype=np.float32)
        super().__init__(
            num_envs,
            device,
            dtype,
            max_episode_steps,
            observation_space=gym.spaces.Box(-high, high, dtype=np.float32),
            action_space=gym.spaces.Box(-MAX_TORQUE, MAX_TORQUE, shape=(1,), dtype=np.float32),
            fast=fast,
        )
        self.g = float(g)
        # Gymnasium's coefficients, computed as it computes them.
        self._gravity_coef = 3 * self.g / (2 * LENGTH)
        self._torque_coef = 3.0 / (MASS * LENGTH**2)
        with torch.inference_mode(False):
            self._theta, self._theta_dot = self._state[0], self._state[1]

    def _apply_reset_options(self, options: dict[str, Any] | None) -> None:
        """Fresh states uniform in ``[-x_init, x_init] x [-y_init, y_init]``, as gymnasium."""
        x = reset_option(options, "x_init", RESET_THETA)
        y = reset_option(options, "y_init", RESET_THETA_DOT)
        self._set_draw_bounds((-x, -y), (x, y))

    def _observe(self) -> torch.Tensor:
        """A fresh ``(num_envs, 3)`` tensor of ``(cos theta, sin theta, theta_dot)``."""
        obs = torch.empty(self.num_envs, 3, device=self.device, dtype=self.dtype)
        rows = obs.T
        torch.cos(self._theta, out=rows[0])
        torch.sin(self._theta, out=rows[1])
        rows[2].copy_(self._theta_dot)
        return obs

    def step(
        self, actions: torch.Tensor | np.ndarray | list[list[float]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Advance every sub-env one step; see ``TorchVecEnv.step`` for the returns.

        ``terminated`` is always False: a pendulum episode only ends by truncation.
        """
        u = torch.clamp(self._box_actions(actions), -MAX_TORQUE, MAX_TORQUE)
        theta, theta_dot = self._theta, self._theta_dot

        # The cost of the state before the step, with theta normalized to [-pi, pi).
        angle = torch.remainder(theta + math.pi, 2 * math.pi).sub_(math.pi)
        cost = angle.square_().add_(theta_dot.square(), alpha=0.1).add_(u.square(), alpha=0.001)

        # theta_dot' = clip(theta_dot + (3g/(2l) sin theta + 3/(m l^2) u) dt, +-8);
        # theta' = theta + theta_dot' dt (the new velocity: semi-implicit Euler).
        accel = torch.sin(theta).mul_(self._gravity_coef).add_(u, alpha=self._torque_coef)
        theta_dot.add_(accel, alpha=DT).clamp_(-MAX_SPEED, MAX_SPEED)
        theta.add_(theta_dot, alpha=DT)

        alive = self._autoreset()
        reward = torch.where(alive, cost.neg_(), self._zero)
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        truncated = self._end_step(terminated)
        return self._observe(), reward, terminated, truncated, {}
