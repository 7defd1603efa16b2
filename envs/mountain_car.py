"""Gymnasium's ``MountainCar-v0`` and ``MountainCarContinuous-v0`` in torch, batched.

Both cars share gymnasium's physics: ``velocity += push - 0.0025 cos(3 position)``,
clipped to +-0.07; ``position += velocity``, clipped to ``[-1.2, 0.6]``; hitting the left
wall while moving left stops the car. An episode terminates when ``position >= goal``
and ``velocity >= goal_velocity``. They differ in the push and the reward:

* ``MountainCar-v0``: actions {0, 1, 2} push with ``(action - 1) * 0.001``; goal 0.5;
  reward -1 on every step (the terminating one too); 200-step time limit.
* ``MountainCarContinuous-v0``: the action ``a`` is clipped to ``[-1, 1]`` for the push
  ``0.0015 * clip(a)``, but the reward's action cost ``-0.1 a^2`` uses the *unclipped*
  action, as gymnasium computes it; reaching the goal (0.45) adds 100; 999-step limit.

Gymnasium stores ``MountainCarContinuous``'s state as ``float32`` after every step
(whatever the precision of its arithmetic); these envs keep the state in ``dtype``, so in
``float64`` the continuous car agrees with gymnasium's step to ``float32`` rounding of the
new state (reward and termination, computed before that rounding, to double rounding).
Fresh states have ``position`` uniform in ``[low, high]`` (reset options, default
``[-0.6, -0.4]``) and ``velocity`` 0. Autoreset, seeding and the settable ``state``
(position, velocity) are ``ClassicControlEnv``'s.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from .base import ClassicControlEnv

MIN_POSITION, MAX_POSITION = -1.2, 0.6
MAX_SPEED = 0.07
GRAVITY = 0.0025
FORCE = 0.001  # MountainCar-v0: velocity change per unit of (action - 1)
POWER = 0.0015  # MountainCarContinuous-v0: velocity change per unit of clipped action
GOAL_POSITION = 0.5
CONTINUOUS_GOAL_POSITION = 0.45
GOAL_REWARD = 100.0
ACTION_COST = 0.1
RESET_LOW, RESET_HIGH = -0.6, -0.4


class _Car(ClassicControlEnv):
    """The physics, observation and reset distribution both mountain cars share."""

    state_names = ("position", "velocity")
    default_reset_bounds = (RESET_LOW, RESET_HIGH)
    goal_position: float

    def __init__(
        self,
        num_envs: int,
        device: torch.device | str,
        dtype: torch.dtype,
        max_episode_steps: int,
        goal_velocity: float,
        action_space: gym.spaces.Space,
        fast: bool | None,
    ) -> None:
        low = np.array([MIN_POSITION, -MAX_SPEED], dtype=np.float32)
        high = np.array([MAX_POSITION, MAX_SPEED], dtype=np.float32)
        super().__init__(
            num_envs,
            device,
            dtype,
            max_episode_steps,
            observation_space=gym.spaces.Box(low, high, dtype=np.float32),
            action_space=action_space,
            draw_rows=1,  # only the position is random; the velocity starts at 0
            fast=fast,
        )
        self.goal_velocity = float(goal_velocity)
        with torch.inference_mode(False):
            self._gravity = torch.tensor(GRAVITY, device=self.device, dtype=dtype)
            self._position, self._velocity = self._state[0], self._state[1]

    def _move(self, push: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integrate one step under ``push`` (velocity change per env), autoreset, and
        return ``(terminated, alive)``: goal reached on a real transition, and the mask of
        real transitions (False on autoreset steps)."""
        position, velocity = self._position, self._velocity
        accel = torch.addcmul(push, torch.cos(position * 3), self._gravity, value=-1.0)
        velocity.add_(accel).clamp_(-MAX_SPEED, MAX_SPEED)
        position.add_(velocity).clamp_(MIN_POSITION, MAX_POSITION)
        # An inelastic collision with the left wall: masked_fill_ syncs nothing.
        velocity.masked_fill_(torch.eq(position, MIN_POSITION).logical_and_(velocity < 0), 0.0)

        alive = self._autoreset()
        terminated = torch.ge(self._position, self.goal_position)
        terminated.logical_and_(self._velocity >= self.goal_velocity).logical_and_(alive)
        return terminated, alive


class MountainCar(_Car):
    """``num_envs`` MountainCar-v0 sub-environments stepped together with torch ops.

    Actions are integers in {0, 1, 2} (push left, no push, push right) of shape
    ``(num_envs,)``, checked like ``CartPole``'s: wrong shapes and floating-point actions
    raise ``EnvError``, out-of-range values too on CPU (a device-side assert elsewhere).
    """

    env_id = "MountainCar-v0"
    goal_position = GOAL_POSITION

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_episode_steps: int = 200,
        goal_velocity: float = 0.0,
        fast: bool | None = None,
    ) -> None:
        super().__init__(
            num_envs, device, dtype, max_episode_steps, goal_velocity, gym.spaces.Discrete(3), fast
        )
        with torch.inference_mode(False):
            like: dict[str, Any] = {"device": self.device, "dtype": dtype}
            self._pushes = torch.tensor([-FORCE, 0.0, FORCE], **like)  # (action - 1) * force
            self._minus_one = torch.tensor(-1.0, **like)

    def step(
        self, actions: torch.Tensor | np.ndarray | list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Advance every sub-env one step; see ``TorchVecEnv.step`` for the returns."""
        push = self._lookup(self._pushes, self._discrete_actions(actions))
        terminated, alive = self._move(push)
        reward = torch.where(alive, self._minus_one, self._zero)
        truncated = self._end_step(terminated)
        return self._observe(), reward, terminated, truncated, {}


class MountainCarContinuous(_Car):
    """``num_envs`` MountainCarContinuous-v0 sub-environments stepped together.

    Actions are forces of shape ``(num_envs, 1)``, gymnasium's batched ``Box`` shape; a
    ``(num_envs,)`` tensor is rejected rather than unsqueezed. The push uses the action
    clipped to ``[-1, 1]`` while the reward's cost ``-0.1 a^2`` uses the action as given,
    exactly as gymnasium does (so an action of 3 pushes like 1 and costs 0.9). A NaN action
    raises ``EnvError`` on CPU and trips an asynchronous device-side assert elsewhere.
    """

    env_id = "MountainCarContinuous-v0"
    goal_position = CONTINUOUS_GOAL_POSITION

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_episode_steps: int = 999,
        goal_velocity: float = 0.0,
        fast: bool | None = None,
    ) -> None:
        space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        super().__init__(num_envs, device, dtype, max_episode_steps, goal_velocity, space, fast)
        with torch.inference_mode(False):
            self._goal_reward = torch.tensor(GOAL_REWARD, device=self.device, dtype=dtype)

    def step(
        self, actions: torch.Tensor | np.ndarray | list[list[float]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Advance every sub-env one step; see ``TorchVecEnv.step`` for the returns."""
        a = self._box_actions(actions)
        terminated, alive = self._move(a.clamp(-1.0, 1.0).mul_(POWER))
        bonus = torch.where(terminated, self._goal_reward, self._zero)
        reward = torch.where(alive, bonus.sub_(a.square().mul_(ACTION_COST)), self._zero)
        truncated = self._end_step(terminated)
        return self._observe(), reward, terminated, truncated, {}
