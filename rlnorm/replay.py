"""A replay buffer that lives on the env's device, shared by every off-policy agent.

Transitions come from :class:`~rlnorm.rollout.Rollout` objects: step ``t`` of sub-env ``i``
is ``(obs[t, i], actions[t, i], rewards[t, i], obs[t + 1, i], terminated[t, i])``. Under
next-step autoreset, ``obs[t + 1]`` after an episode ends is its final observation, so a
truncated transition bootstraps from the right state; the step that only resets a sub-env
(``valid`` False) is no transition and is not stored.

Storage is preallocated, and neither adding nor sampling synchronizes with the host: the
write position and the fill level are device tensors, invalid steps are scattered to a
scratch row past the end instead of being filtered out by boolean indexing.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch

from rlnorm.draws import Draws
from rlnorm.env import space_shape
from rlnorm.rollout import Rollout

_FIELDS = ("obs", "actions", "rewards", "next_obs", "terminated")


@dataclass
class Transitions:
    """A sampled minibatch: each field ``(B, ...)`` on the buffer's device."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


class ReplayBuffer:
    """A ring buffer of the last ``capacity`` transitions.

    Args:
        capacity: transitions kept; older ones are overwritten first.
        observation_space, action_space: single-env gymnasium spaces (their shapes size the
            storage; discrete actions are stored as int64).
        device: where the storage lives (the env's device).
        obs_dtype: dtype of stored observations (the env's).
    """

    def __init__(
        self,
        capacity: int,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        device: torch.device | str = "cpu",
        obs_dtype: torch.dtype = torch.float32,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.device = torch.device(device)
        discrete = isinstance(action_space, gym.spaces.Discrete)
        action_dtype = torch.int64 if discrete else torch.float32
        rows = capacity + 1  # the last row is scratch space for invalid steps
        obs_shape, action_shape = space_shape(observation_space), space_shape(action_space)
        self.storage = {
            "obs": torch.zeros((rows, *obs_shape), dtype=obs_dtype, device=self.device),
            "actions": torch.zeros((rows, *action_shape), dtype=action_dtype, device=self.device),
            "rewards": torch.zeros(rows, dtype=torch.float32, device=self.device),
            "next_obs": torch.zeros((rows, *obs_shape), dtype=obs_dtype, device=self.device),
            "terminated": torch.zeros(rows, dtype=torch.bool, device=self.device),
        }
        self.position = torch.zeros((), dtype=torch.int64, device=self.device)
        self.filled = torch.zeros((), dtype=torch.int64, device=self.device)
        #: env steps (steps x sub-envs, autoreset steps included) of the latest :meth:`add`:
        #: what an agent needs for an update-to-data ratio, known without a host sync.
        self.last_added_steps = 0

    def __len__(self) -> int:
        """Transitions stored (a host sync: for logging and checks, not the hot path)."""
        return int(self.filled)

    def add(self, rollout: Rollout) -> None:
        """Store every valid transition of ``rollout``, in time order."""
        steps, num_envs = rollout.rewards.shape
        if steps * num_envs > self.capacity:
            raise ValueError(
                f"a rollout of {steps} x {num_envs} steps does not fit a replay buffer of "
                f"{self.capacity} transitions"
            )
        valid = rollout.valid.reshape(-1)
        offset = torch.cumsum(valid, 0) - 1
        rows = torch.where(valid, (self.position + offset) % self.capacity, self.capacity)
        values = {
            "obs": rollout.obs[:-1],
            "actions": rollout.actions,
            "rewards": rollout.rewards,
            "next_obs": rollout.obs[1:],
            "terminated": rollout.terminated,
        }
        for name, value in values.items():
            value = value.reshape(steps * num_envs, *value.shape[2:])
            self.storage[name][rows] = value.to(self.storage[name].dtype)
        self.last_added_steps = steps * num_envs
        added = valid.sum()
        self.position = (self.position + added) % self.capacity
        self.filled = torch.clamp(self.filled + added, max=self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Transitions:
        """``batch_size`` transitions drawn uniformly with replacement."""
        u = torch.rand(batch_size, device=self.device, generator=generator)
        index = (u * self.filled).long().clamp(max=self.capacity - 1)
        return Transitions(**{name: self.storage[name][index] for name in _FIELDS})

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The stored transitions and the write position, for resuming a run."""
        filled = int(self.filled)
        state = {name: self.storage[name][:filled].clone() for name in _FIELDS}
        state["position"] = self.position.clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned; shapes and dtypes must match."""
        filled = int(state["obs"].shape[0])
        if filled > self.capacity:
            raise ValueError(f"{filled} stored transitions exceed the capacity {self.capacity}")
        for name in _FIELDS:
            target, value = self.storage[name], state[name]
            if value.shape[1:] != target.shape[1:] or value.dtype != target.dtype:
                raise ValueError(
                    f"replay field {name!r}: got {tuple(value.shape[1:])} {value.dtype}, "
                    f"expected {tuple(target.shape[1:])} {target.dtype}"
                )
            target[:filled] = value.to(self.device)
        self.filled = torch.tensor(filled, dtype=torch.int64, device=self.device)
        self.position = state["position"].to(self.device, torch.int64).reshape(())


class MemberReplay:
    """The replay buffers of a population's ``members``, in one storage.

    Member ``k`` owns columns ``k * N .. (k + 1) * N - 1`` of every rollout (member-major, as
    :class:`rlnorm.population.MemberEnvs` lays out its sub-envs) and keeps exactly the rows
    the run ``--seed k``'s :class:`ReplayBuffer` keeps: same order, same ring positions. A
    minibatch is ``batch_size`` transitions per member, ``(K, batch_size, ...)``, drawn with
    each member's own generator (``draws``) by :class:`ReplayBuffer`'s rule, so member
    ``k`` samples what that run samples. Adding and sampling are a few batched ops whatever
    the number of members.
    """

    def __init__(
        self,
        members: int,
        capacity: int,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        draws: Draws,
        device: torch.device | str = "cpu",
        obs_dtype: torch.dtype = torch.float32,
    ) -> None:
        if capacity < 1 or members < 1:
            raise ValueError(f"need members >= 1 and capacity >= 1, got {members}, {capacity}")
        if draws.members != members:
            raise ValueError(f"draws for {draws.members} members, not {members}")
        self.members, self.capacity, self.draws = members, capacity, draws
        self.device = torch.device(device)
        discrete = isinstance(action_space, gym.spaces.Discrete)
        action_dtype = torch.int64 if discrete else torch.float32
        rows = (members, capacity + 1)  # each member's last row is scratch for invalid steps
        obs_shape, action_shape = space_shape(observation_space), space_shape(action_space)
        self.storage = {
            "obs": torch.zeros((*rows, *obs_shape), dtype=obs_dtype, device=self.device),
            "actions": torch.zeros((*rows, *action_shape), dtype=action_dtype, device=self.device),
            "rewards": torch.zeros(rows, dtype=torch.float32, device=self.device),
            "next_obs": torch.zeros((*rows, *obs_shape), dtype=obs_dtype, device=self.device),
            "terminated": torch.zeros(rows, dtype=torch.bool, device=self.device),
        }
        self.position = torch.zeros(members, dtype=torch.int64, device=self.device)
        self.filled = torch.zeros(members, dtype=torch.int64, device=self.device)
        self._member = torch.arange(members, device=self.device)[:, None]
        #: env steps per member of the latest :meth:`add` (a member's update-to-data ratio)
        self.last_added_steps = 0

    def __len__(self) -> int:
        """Transitions stored by the member with the fewest (a host sync)."""
        return int(self.filled.min())

    def _per_member(self, value: torch.Tensor) -> torch.Tensor:
        """``(T, K * N, ...)`` rollout columns as ``(K, T * N, ...)``, each member's rows in
        the order its own run stores them (time-major)."""
        steps, n = value.shape[0], value.shape[1] // self.members
        rest = value.shape[2:]
        return (
            value.reshape(steps, self.members, n, *rest)
            .transpose(0, 1)
            .reshape(self.members, steps * n, *rest)
        )

    def add(self, rollout: Rollout) -> None:
        """Store every valid transition of ``rollout``, each in its member's buffer."""
        steps, total = rollout.rewards.shape
        if total % self.members:
            raise ValueError(f"{total} sub-envs do not split over {self.members} members")
        if steps * total // self.members > self.capacity:
            raise ValueError(
                f"a rollout of {steps} x {total // self.members} steps per member does not fit "
                f"a replay buffer of {self.capacity} transitions"
            )
        valid = self._per_member(rollout.valid)
        offset = torch.cumsum(valid, 1) - 1
        rows = torch.where(valid, (self.position[:, None] + offset) % self.capacity, self.capacity)
        values = {
            "obs": rollout.obs[:-1],
            "actions": rollout.actions,
            "rewards": rollout.rewards,
            "next_obs": rollout.obs[1:],
            "terminated": rollout.terminated,
        }
        for name, value in values.items():
            self.storage[name][self._member, rows] = self._per_member(value).to(
                self.storage[name].dtype
            )
        self.last_added_steps = valid.shape[1]
        added = valid.sum(1)
        self.position = (self.position + added) % self.capacity
        self.filled = torch.clamp(self.filled + added, max=self.capacity)

    def member(self, k: int) -> ReplayBuffer:
        """Member ``k``'s buffer as the :class:`ReplayBuffer` its own run would hold (a copy)."""
        buffer = ReplayBuffer.__new__(ReplayBuffer)
        buffer.capacity, buffer.device = self.capacity, self.device
        buffer.storage = {name: value[k].clone() for name, value in self.storage.items()}
        buffer.position, buffer.filled = self.position[k].clone(), self.filled[k].clone()
        buffer.last_added_steps = self.last_added_steps
        return buffer

    def load_member(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Put member ``k``'s buffer as its own run saved it (:meth:`ReplayBuffer.state_dict`)
        in place: the inverse of :meth:`member`."""
        filled = int(state["obs"].shape[0])
        if filled > self.capacity:
            raise ValueError(f"{filled} stored transitions exceed the capacity {self.capacity}")
        for name in _FIELDS:
            target = self.storage[name]
            if state[name].shape[1:] != target.shape[2:] or state[name].dtype != target.dtype:
                raise ValueError(f"replay field {name!r} does not fit member {k}'s buffer")
            target[k, :filled] = state[name].to(self.device)
        self.position[k] = int(state["position"])
        self.filled[k] = filled

    def sample(self, batch_size: int) -> Transitions:
        """``batch_size`` transitions per member, uniformly with replacement from its own."""
        u = self.draws.rand((batch_size,), self.device)
        index = (u * self.filled[:, None]).long().clamp(max=self.capacity - 1)
        return Transitions(**{name: self.storage[name][self._member, index] for name in _FIELDS})


__all__ = ["MemberReplay", "ReplayBuffer", "Transitions"]
