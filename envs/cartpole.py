"""Gymnasium's ``CartPole-v1`` in torch, batched over ``num_envs`` on any device.

The physics (Euler integrator, constants, termination thresholds), the reward (1.0 on
every step of an episode, the terminating step included), the 500-step time limit and the
next-step autoreset are those of gymnasium 1.x, so an agent trained here sees the same
MDP as one trained on ``gym.make_vec("CartPole-v1")``. In ``float64`` one step agrees with
gymnasium to rounding (the parity tests check 1e-9). In ``float32`` (the default, and the
dtype of gymnasium's observations) the state itself is kept in ``float32`` while gymnasium
keeps it in ``float64``, so long trajectories drift apart by rounding; the MDP is the same.

The state lives on ``device`` as a ``(4, num_envs)`` tensor so each physical quantity is a
contiguous row, and a step is a fixed sequence of tensor ops with no host synchronisation:
ended sub-envs are reset by masks, never with boolean indexing or ``.item()``, except in
the CPU-only ``fast`` path, which indexes them (the machinery shared with the other
classic-control envs is ``base.ClassicControlEnv``).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from .base import ClassicControlEnv
from .checks import parse_reset_bounds

# Gymnasium's CartPole constants (classic_control/cartpole.py).
GRAVITY = 9.8
MASS_CART = 1.0
MASS_POLE = 0.1
TOTAL_MASS = MASS_POLE + MASS_CART
HALF_LENGTH = 0.5  # gymnasium's ``length``: half the pole's length
POLEMASS_LENGTH = MASS_POLE * HALF_LENGTH
FORCE_MAG = 10.0
TAU = 0.02  # seconds per step
X_THRESHOLD = 2.4
THETA_THRESHOLD = 12 * 2 * math.pi / 360  # 12 degrees, in radians
RESET_LOW, RESET_HIGH = -0.05, 0.05


class CartPole(ClassicControlEnv):
    """``num_envs`` CartPole-v1 sub-environments stepped together with torch ops.

    Actions are integers in {0, 1} (push left, push right) with shape ``(num_envs,)``
    exactly: a ``(num_envs, 1)`` tensor is rejected rather than squeezed, so a policy
    that emits the wrong shape fails loudly instead of broadcasting. Floating-point
    actions are rejected too, as gymnasium's ``Discrete`` space does. Out-of-range
    values raise ``EnvError`` on CPU; on CUDA they trip an asynchronous device-side
    assert instead (a RuntimeError at the next sync), so the check never stalls a step.

    ``state`` is the live ``(num_envs, 4)`` state (x, x_dot, theta, theta_dot); assigning
    to it or to a slice of it changes what the next ``step`` integrates. Episode step
    counters are not touched by such assignments.

    Observations, rewards and flags returned by ``reset``/``step`` are fresh tensors (see
    ``ClassicControlEnv``), and no tensor the env holds ever requires grad.
    """

    env_id = "CartPole-v1"
    state_names = ("x", "x_dot", "theta", "theta_dot")
    default_reset_bounds = (RESET_LOW, RESET_HIGH)

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_episode_steps: int = 500,
        fast: bool | None = None,
    ) -> None:
        high = np.array([X_THRESHOLD * 2, np.inf, THETA_THRESHOLD * 2, np.inf], dtype=np.float32)
        super().__init__(
            num_envs,
            device,
            dtype,
            max_episode_steps,
            observation_space=gym.spaces.Box(-high, high, dtype=np.float32),
            action_space=gym.spaces.Discrete(2),
            fast=fast,
        )
        with torch.inference_mode(False):
            like: dict[str, Any] = {"device": self.device, "dtype": dtype}
            self._acc = torch.empty(2, self.num_envs, **like)  # (x_acc, theta_acc)
            force = [-FORCE_MAG / TOTAL_MASS, FORCE_MAG / TOTAL_MASS]
            self._force_over_mass = torch.tensor(force, **like)  # indexed by the action
            self._den_const = torch.tensor(HALF_LENGTH * 4.0 / 3.0, **like)
            self._thresholds = torch.tensor([[X_THRESHOLD], [THETA_THRESHOLD]], **like)
            self._gravity = torch.tensor(GRAVITY, **like)
            # Views into the buffers, made once: the buffers are only updated in place.
            self._theta, self._theta_dot = self._state[2], self._state[3]
            pairs = self._state.view(2, 2, self.num_envs)
            self._pos, self._vel = pairs[:, 0], pairs[:, 1]  # (x, theta), (x_dot, theta_dot)
            self._x_acc, self._theta_acc = self._acc[0], self._acc[1]

    def _apply_reset_options(self, options: dict[str, Any] | None) -> None:
        """Reset bounds from ``options`` (keys ``low``/``high``, default -0.05/0.05)."""
        low, high = parse_reset_bounds(options, RESET_LOW, RESET_HIGH)
        self._set_draw_bounds(low, high)
        # Only bounds reaching towards the thresholds can make a fresh state terminal.
        self._fresh_may_terminate = max(abs(low), abs(high)) > 0.2

    def step(
        self, actions: torch.Tensor | np.ndarray | list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Advance every sub-env one step; see ``TorchVecEnv.step`` for the returns.

        Sub-envs that ended on the previous step ignore their action and restart from a
        fresh random state (reward 0, both flags False), as gymnasium's next-step
        autoreset does.
        """
        force = self._lookup(self._force_over_mass, self._discrete_actions(actions))
        theta, theta_dot = self._theta, self._theta_dot

        # Gymnasium's dynamics, with its constants folded together:
        #   temp      = (force + m_p l theta_dot^2 sin) / M
        #   theta_acc = (g sin - cos temp) / (l (4/3 - m_p cos^2 / M))
        #   x_acc     = temp - m_p l theta_acc cos / M
        cos, sin = torch.cos(theta), torch.sin(theta)
        temp = torch.addcmul(force, theta_dot * theta_dot, sin, value=POLEMASS_LENGTH / TOTAL_MASS)
        num = torch.mul(sin, self._gravity).addcmul_(cos, temp, value=-1.0)
        den = torch.addcmul(self._den_const, cos, cos, value=-HALF_LENGTH * MASS_POLE / TOTAL_MASS)
        torch.div(num, den, out=self._theta_acc)
        torch.addcmul(
            temp, self._theta_acc, cos, value=-POLEMASS_LENGTH / TOTAL_MASS, out=self._x_acc
        )

        # Euler: positions (x, theta) advance with the old velocities, then the velocities.
        self._pos.add_(self._vel, alpha=TAU)
        self._vel.add_(self._acc, alpha=TAU)

        alive = self._autoreset()
        # 1 on real transitions, 0 on autoreset steps (through uint8: a bool tensor's own
        # conversion to float is 3x slower on CPU)
        reward = alive.view(torch.uint8).to(self.dtype)
        outside = torch.gt(self._pos.abs(), self._thresholds)
        terminated = torch.logical_or(outside[0], outside[1])
        if self._fresh_may_terminate:
            terminated.logical_and_(alive)  # gymnasium clears the flags of a reset step
        truncated = self._end_step(terminated)
        return self._observe(), reward, terminated, truncated, {}
