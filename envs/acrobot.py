"""Gymnasium's ``Acrobot-v1`` in torch, batched over ``num_envs`` on any device.

Two links hang from a fixed pivot; a torque of -1, 0 or +1 on the joint between them must
swing the tip above a line one link length over the pivot. As in gymnasium 1.x: one step
is one classic fourth-order Runge-Kutta step of ``dt = 0.2`` of the "book" dynamics
(Sutton & Barto's, the default ``book_or_nips``); the angles are then wrapped into
``[-pi, pi]`` and the angular velocities clipped to ``+-4 pi`` and ``+-9 pi``; an episode
terminates when ``-cos(theta1) - cos(theta1 + theta2) > 1``; the reward is -1 on every
step except the terminating one (0); the time limit is 500 steps. Gymnasium's default
``torque_noise_max = 0`` applies: there is no torque noise.

In ``float64`` one step agrees with gymnasium to rounding. The motion is chaotic, so two
implementations whose operations round differently (here, e.g., vectorized ``sin``/``cos``
or the association of the RK4 sums) drift apart along long trajectories; the MDP is the
same. Gymnasium stores a fresh state as ``float32``; here it has the env's ``dtype``.
Autoreset, seeding and the settable ``state`` are ``ClassicControlEnv``'s.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from .base import ClassicControlEnv

DT = 0.2
LINK_LENGTH_1 = 1.0
LINK_MASS_1 = LINK_MASS_2 = 1.0
LINK_COM_POS_1 = LINK_COM_POS_2 = 0.5  # centre of mass of each link, from its pivot
LINK_MOI = 1.0  # moment of inertia of each link
GRAVITY = 9.8
MAX_VEL_1, MAX_VEL_2 = 4 * math.pi, 9 * math.pi
TORQUES = (-1.0, 0.0, 1.0)  # indexed by the action
RESET_LOW, RESET_HIGH = -0.1, 0.1

# The constant parts of gymnasium's ``_dsdt``, named as there (m: masses, l1: length of
# link 1, lc: centre-of-mass positions, I: moments of inertia, g: gravity).
_M1, _M2, _L1, _LC1, _LC2, _I = (
    LINK_MASS_1,
    LINK_MASS_2,
    LINK_LENGTH_1,
    LINK_COM_POS_1,
    LINK_COM_POS_2,
    LINK_MOI,
)
D1_CONST = _M1 * _LC1**2 + _M2 * (_L1**2 + _LC2**2) + _I + _I  # d1 = D1_CONST + D1_COS cos th2
D1_COS = _M2 * 2 * _L1 * _LC2
D2_CONST = _M2 * _LC2**2 + _I  # d2 = D2_CONST + D2_COS cos th2
D2_COS = _M2 * _L1 * _LC2
PHI2_COEF = _M2 * _LC2 * GRAVITY  # phi2 = PHI2_COEF cos(th1 + th2 - pi/2)
PHI1_GRAVITY = (_M1 * _LC1 + _M2 * _L1) * GRAVITY  # coefficient of cos(th1 - pi/2) in phi1
CORIOLIS = _M2 * _L1 * _LC2  # coefficient of the velocity products times sin th2
INERTIA_2 = _M2 * _LC2**2 + _I  # ddth2's denominator is INERTIA_2 - d2^2 / d1


def _derivatives(y: torch.Tensor, torque: torch.Tensor) -> torch.Tensor:
    """``dy/dt`` for states ``y = (theta1, theta2, dtheta1, dtheta2)`` of shape ``(4, N)``.

    Gymnasium's "book" equations of motion (``AcrobotEnv._dsdt``); the torque is constant
    over the step, so it is an argument instead of a fifth state row.
    """
    theta1, theta2, dtheta1, dtheta2 = y
    cos2, sin2 = torch.cos(theta2), torch.sin(theta2)
    d1 = cos2 * D1_COS + D1_CONST
    d2 = cos2 * D2_COS + D2_CONST
    phi2 = torch.cos(theta1 + theta2 - math.pi / 2) * PHI2_COEF
    phi1 = (
        -CORIOLIS * dtheta2**2 * sin2
        - 2 * CORIOLIS * dtheta2 * dtheta1 * sin2
        + PHI1_GRAVITY * torch.cos(theta1 - math.pi / 2)
        + phi2
    )
    ddtheta2 = (torque + d2 / d1 * phi1 - CORIOLIS * dtheta1**2 * sin2 - phi2) / (
        INERTIA_2 - d2**2 / d1
    )
    ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
    return torch.stack((dtheta1, dtheta2, ddtheta1, ddtheta2))


class Acrobot(ClassicControlEnv):
    """``num_envs`` Acrobot-v1 sub-environments stepped together with torch ops.

    Actions are integers in {0, 1, 2} (torque -1, 0, +1) of shape ``(num_envs,)``, checked
    like ``CartPole``'s: wrong shapes and floating-point actions raise ``EnvError``, and
    out-of-range values too on CPU (a device-side assert elsewhere).

    ``state`` is the live ``(num_envs, 4)`` state (theta1, theta2, dtheta1, dtheta2), the
    raw joint values; the observation is ``(cos theta1, sin theta1, cos theta2, sin theta2,
    dtheta1, dtheta2)``. Fresh states are uniform in ``[low, high]^4`` (reset options,
    default -0.1/0.1).
    """

    env_id = "Acrobot-v1"
    state_names = ("theta1", "theta2", "dtheta1", "dtheta2")
    default_reset_bounds = (RESET_LOW, RESET_HIGH)

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_episode_steps: int = 500,
        fast: bool | None = None,
    ) -> None:
        high = np.array([1.0, 1.0, 1.0, 1.0, MAX_VEL_1, MAX_VEL_2], dtype=np.float32)
        super().__init__(
            num_envs,
            device,
            dtype,
            max_episode_steps,
            observation_space=gym.spaces.Box(-high, high, dtype=np.float32),
            action_space=gym.spaces.Discrete(3),
            fast=fast,
        )
        with torch.inference_mode(False):
            like: dict[str, Any] = {"device": self.device, "dtype": dtype}
            self._torques = torch.tensor(TORQUES, **like)
            self._max_vel = torch.tensor([[MAX_VEL_1], [MAX_VEL_2]], **like)
            self._min_vel = -self._max_vel
            self._minus_one = torch.tensor(-1.0, **like)

    def _observe(self) -> torch.Tensor:
        """A fresh ``(num_envs, 6)`` tensor of the angles' cos and sin and the velocities."""
        obs = torch.empty(self.num_envs, 6, device=self.device, dtype=self.dtype)
        rows, angles = obs.T, self._state[:2]
        torch.cos(angles, out=rows[0:4:2])
        torch.sin(angles, out=rows[1:4:2])
        rows[4:].copy_(self._state[2:])
        return obs

    def step(
        self, actions: torch.Tensor | np.ndarray | list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Advance every sub-env one step; see ``TorchVecEnv.step`` for the returns."""
        torque = self._lookup(self._torques, self._discrete_actions(actions))

        # One RK4 step over dt, as gymnasium's ``rk4`` with the time points [0, dt].
        y0 = self._state
        k1 = _derivatives(y0, torque)
        k2 = _derivatives(y0 + DT / 2 * k1, torque)
        k3 = _derivatives(y0 + DT / 2 * k2, torque)
        k4 = _derivatives(y0 + DT * k3, torque)
        y0.add_((k1 + 2 * k2 + 2 * k3 + k4) * (DT / 6))

        # Wrap the angles into [-pi, pi] (gymnasium subtracts or adds 2 pi until they are
        # inside; n counts the turns at once) and clip the angular velocities.
        angles = y0[:2]
        over = torch.ceil((angles - math.pi) / (2 * math.pi)).clamp_(min=0)
        under = torch.ceil((-math.pi - angles) / (2 * math.pi)).clamp_(min=0)
        angles.sub_(over.sub_(under).mul_(2 * math.pi))
        y0[2:].clamp_(self._min_vel, self._max_vel)

        alive = self._autoreset()
        theta1, theta2 = self._state[0], self._state[1]
        height = torch.cos(theta1).neg_().sub_(torch.cos(theta2 + theta1))
        terminated = torch.gt(height, 1.0).logical_and_(alive)
        reward = torch.where(alive, self._minus_one, self._zero).masked_fill_(terminated, 0.0)
        truncated = self._end_step(terminated)
        return self._observe(), reward, terminated, truncated, {}
