"""Shared machinery of the native envs, on top of the env contract
(:class:`rlnorm.env.TorchVecEnv`: batched tensors, next-step autoreset).

``ClassicControlEnv`` implements that contract once for envs whose whole state is a few
real numbers per sub-env (gymnasium's classic-control suite): its subclasses only add
their physics.
"""

from __future__ import annotations

from typing import Any, cast

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import batch_space

from rlnorm.env import TorchVecEnv
from rlnorm.errors import EnvError

from .checks import (
    action_set,
    box_actions,
    check_draw_bounds,
    check_env_seed,
    check_option_keys,
    discrete_actions,
    parse_reset_bounds,
    parse_reset_mask,
    positive_int,
)
from .pool import NoiseHalf, split_pool

# From this many sub-envs on CPU, ``fast=None`` picks sparse autoresets. Measured per
# CartPole step with random actions, one thread (2026-12-01): 18% faster at 16384 sub-envs
# and 42% at 65536, 9% at 4096 (close to even there, so the threshold sits above it), and
# 8-20% slower at 64-1024, where finding the ended sub-envs costs more than it saves.
FAST_MIN_ENVS = 8192

DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


class ClassicControlEnv(TorchVecEnv):
    """Machinery shared by the classic-control envs, so each of them is only its physics.

    The state lives on ``device`` as a ``(state_dim, num_envs)`` tensor, one contiguous row
    per physical quantity (``state_names``, in gymnasium's order). This class owns:

    * the per-env episode step counters and the truncation flag;
    * next-step autoreset: ``_autoreset`` overwrites the columns of the sub-envs that
      ended on the previous step with fresh states, by masks, never with boolean indexing
      or ``.item()``, so a step never waits for the device (except the CPU-only sparse
      path below, where there is no device to wait for);
    * the fresh states: a ``(state_dim, num_envs)`` pool holding one unused draw per
      sub-env, from a ``torch.Generator`` on ``device`` (``reset(seed=s)`` re-seeds it;
      unseeded envs differ run to run), uniform in per-row bounds ``[low, high]``;
    * ``reset``, the settable ``state`` and the checks of discrete and box actions.

    Why a pool refilled by halves: a step cannot know which sub-envs will reset without a
    host sync, so it must have a fresh state ready for every one of them, and drawing all
    of them on every step was a third of CartPole's step on CPU. But a sub-env resets at
    most every other step (a reset step, then at least one real one), so refilling the
    pool's first half of columns on even steps and the second half on odd ones, before
    the resets, suffices: every reset takes a draw that no reset has taken before, so
    fresh states stay independent and uniform, for half the random numbers.

    ``fast`` picks how ended sub-envs take their fresh states. ``False``: the pool and a
    ``torch.where`` over every sub-env, a fixed sequence of ops that never reads a value
    back to the host (graph-capturable on CUDA). ``True`` (CPU only): sparse autoresets,
    which find the ended sub-envs (``masked_select`` of an index range) and draw fresh
    states for those alone.
    On CPU the host reads the mask without waiting for any device, and since only a few
    percent of sub-envs end on a step, this skips nearly all of the pool's random draws and
    the masked pass over the state. The dynamics are the same, the random stream differs:
    a seeded sparse env is reproducible, but its resets draw other values than the dense
    env's. The default (None) is sparse on CPU from ``FAST_MIN_ENVS`` sub-envs; up to about
    1024, finding the ended sub-envs costs more than it saves (and small-batch training runs
    keep the dense stream). ``fast=True`` on another device is an ``EnvError``.

    A subclass calls ``__init__`` with its spaces, implements ``step``
    (validate the actions; integrate every row; ``_autoreset``; flags; ``_end_step``), and
    may override ``_observe`` (default: a copy of the state) and ``_apply_reset_options``
    (default: gymnasium's ``low``/``high`` options around ``default_reset_bounds``, for
    every drawn row).

    Observations, rewards and flags returned by ``reset``/``step`` are fresh tensors: the
    env never writes into them later, and writing into them does not change the env. No
    tensor the env holds ever requires grad (state writes are detached), so its ops never
    record an autograd graph and need no ``no_grad`` context, which would cost time.
    """

    state_names: tuple[str, ...]
    default_reset_bounds: tuple[float, float]
    #: The reset options this env reads besides ``reset_mask``; others are refused.
    reset_options: tuple[str, ...] = ("low", "high")

    def __init__(
        self,
        num_envs: int,
        device: torch.device | str,
        dtype: torch.dtype,
        max_episode_steps: int,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        draw_rows: int | None = None,
        fast: bool | None = None,
    ) -> None:
        """Validate the arguments and allocate the shared buffers.

        ``draw_rows`` is how many leading state rows a fresh state draws at random (default:
        all); the other rows of a fresh state are 0 (MountainCar draws only the position).
        ``fast`` selects sparse autoresets (see the class docstring).
        """
        num_envs = positive_int("num_envs", num_envs)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise EnvError(f"dtype must be a floating torch dtype, got {dtype!r}")
        if dtype not in DTYPES:
            raise EnvError(f"dtype must be one of {', '.join(map(str, DTYPES))}, got {dtype}")
        self.num_envs = num_envs
        # Resolve "cuda" to "cuda:0" so comparisons with tensor.device hold.
        self.device = torch.empty(0, device=device).device
        self.dtype = dtype
        on_cpu = self.device.type == "cpu"
        if fast and not on_cpu:
            raise EnvError(
                f"fast=True (sparse autoresets) reads which sub-envs ended back to the host, "
                f"which on {self.device} would wait for the device every step; use fast=False "
                "or None there"
            )
        self.fast = on_cpu and num_envs >= FAST_MIN_ENVS if fast is None else bool(fast)
        self._max_episode_steps = positive_int("max_episode_steps", max_episode_steps)
        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.observation_space = batch_space(observation_space, num_envs)
        self.action_space = batch_space(action_space, num_envs)
        rows = len(self.state_names) if draw_rows is None else draw_rows

        # Buffers are made outside inference mode even if the env is built inside one, so
        # that stepping later outside it can still update them in place.
        with torch.inference_mode(False):
            like: dict[str, Any] = {"device": self.device, "dtype": dtype}
            self._state = torch.zeros(len(self.state_names), num_envs, **like)
            self._steps = torch.zeros(num_envs, dtype=torch.int32, device=self.device)
            self._alive = torch.ones(num_envs, dtype=torch.bool, device=self.device)
            self._env_index = torch.arange(num_envs, device=self.device)
            # Scalars as device tensors: an op given a Python number wraps it in a new
            # tensor on every call, which is a sizeable part of a small-batch step.
            self._zero = torch.tensor(0.0, **like)
            ints: dict[str, Any] = {"device": self.device, "dtype": torch.int32}
            self._one_step = torch.tensor(1, **ints)
            self._limit = torch.tensor(self._max_episode_steps, **ints)
            # The pool of fresh states; rows from draw_rows on stay 0.
            self._pending = torch.zeros(len(self.state_names), num_envs, **like)
            self._split(1, rows)
            self._bit_count = 53 if dtype == torch.float64 else 24
            rng: dict[str, Any] = {"device": self.device, "dtype": self._halves[0][0].stage.dtype}
            self._draw_low = torch.zeros(rows, 1, **rng)
            self._draw_scale = torch.zeros(rows, 1, **rng)
            self._draw_span = torch.zeros(rows, 1, **rng)
            self._bit_mask = torch.tensor(
                2**self._bit_count - 1, device=self.device, dtype=self._halves[0][0].values.dtype
            )
        # The bounds the draw tensors hold now (None: not set yet), so that a reset with the
        # bounds already in place (every masked reset of an SB3 export) skips re-setting them.
        self._draw_bounds: tuple[Any, Any] | None = None
        self._needs_reset = True

    def _split(self, members: int, rows: int) -> None:
        """``members`` equal blocks of sub-envs, each with its own generator and pool."""
        self.members, self.per_member = members, self.num_envs // members
        self._generators, self._halves = split_pool(self, members, rows)
        self._generator = self._generators[0]
        self._next_half = 0

    def split_members(self, members: int, like: TorchVecEnv) -> bool:
        """Step this env as ``members`` envs of ``num_envs / members`` sub-envs each (a
        population's, member-major): block ``k`` draws its fresh states from its own
        generator and pool, exactly as ``like``, an env of that size alone, does, so every
        member's episodes are its own env's, stepped in one batch. Sparse autoresets draw
        from one generator: for them (``like.fast``), or a ``like`` of another kind, False is
        returned and nothing changes. Seed the members with :meth:`seed_members`."""
        if (
            type(like) is not type(self)
            or not isinstance(like, ClassicControlEnv)
            or like.fast
            or like.num_envs * members != self.num_envs
        ):
            return False
        self.fast = False
        self._split(members, self._draw_low.shape[0])
        return True

    def seed_members(self, seeds: list[int]) -> None:
        """Seed member ``k``'s generator with ``seeds[k]``, as ``reset(seed=seeds[k])``
        seeds an env of its own; the next :meth:`reset` draws every member's states."""
        checked = [check_env_seed(seed) for seed in seeds]
        if len(seeds) != self.members or None in checked:
            raise EnvError(f"seed_members needs one int seed per member ({self.members}): {seeds}")
        for generator, seed in zip(self._generators, checked, strict=True):
            generator.manual_seed(cast(int, seed))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.env_id}, num_envs={self.num_envs}, "
            f"device={self.device}, dtype={self.dtype})"
        )

    @property
    def state(self) -> torch.Tensor:
        """The live ``(num_envs, state_dim)`` state, a view: in-place writes reach the next step.

        The view is detached, so writing a tensor that requires grad into it never makes
        the env's state part of an autograd graph. Episode step counters are not touched.
        """
        return self._state.detach().T

    @state.setter
    def state(self, value: torch.Tensor | np.ndarray) -> None:
        value = torch.as_tensor(value)
        expected = (self.num_envs, len(self.state_names))
        if tuple(value.shape) != expected:
            raise EnvError(
                f"state must have shape {expected} (num_envs, [{', '.join(self.state_names)}]), "
                f"got {tuple(value.shape)}"
            )
        self._state.T.copy_(value.detach())

    def _set_draw_bounds(
        self, low: float | tuple[float, ...], high: float | tuple[float, ...]
    ) -> None:
        """Make fresh states uniform in ``[low, high]`` from now on: one bound for every drawn
        row, or one per row. Values drawn earlier keep their bounds, but ``reset`` redraws
        the whole pool, so bounds set while resetting hold for every later autoreset.
        Bounds that are not finite in the env's dtype (nor their span) are an ``EnvError``,
        raised before anything changes."""
        if self._draw_bounds == (low, high):
            return
        check_draw_bounds(low, high, self.dtype)
        low_t = torch.as_tensor(low, dtype=torch.float64).reshape(-1, 1)
        high_t = torch.as_tensor(high, dtype=torch.float64).reshape(-1, 1)
        self._draw_low.copy_(low_t.expand_as(self._draw_low))
        self._draw_scale.copy_(((high_t - low_t) / 2**self._bit_count).expand_as(self._draw_scale))
        self._draw_span.copy_((high_t - low_t).expand_as(self._draw_span))
        self._draw_bounds = (low, high)

    def _refill(self, halves: list[NoiseHalf]) -> None:
        """Draw fresh values for one half of the pool's columns (of each member), uniform in
        the draw bounds."""
        for half in halves:
            half.refill(self._bit_mask, self._draw_low, self._draw_scale)

    def _draw(self, count: int) -> torch.Tensor:
        """``count`` fresh states as a ``(state_dim, count)`` tensor, uniform in the draw
        bounds (sparse autoresets: ``torch.rand``'s 24 or 53 random bits per value, as the
        pool uses)."""
        rows = self._draw_low.shape[0]
        fresh = torch.zeros(len(self.state_names), count, device=self.device, dtype=self.dtype)
        uniform = torch.rand(
            rows, count, generator=self._generator, device=self.device, dtype=self._draw_low.dtype
        )
        fresh[:rows] = torch.addcmul(self._draw_low, uniform, self._draw_span)
        return fresh

    def _apply_reset_options(self, options: dict[str, Any] | None) -> None:
        """Set the reset distribution from ``reset``'s ``options``, for later autoresets too."""
        self._set_draw_bounds(*parse_reset_bounds(options, *self.default_reset_bounds))

    def _observe(self) -> torch.Tensor:
        """A fresh ``(num_envs, *obs_shape)`` observation; by default a contiguous copy of
        the state, for envs that observe their whole state."""
        obs = torch.empty(
            self.num_envs, len(self.state_names), device=self.device, dtype=self.dtype
        )
        obs.T.copy_(self._state)  # measured 2.5x faster on CPU than self._state.T.contiguous()
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset every sub-env (or those of ``options["reset_mask"]``) to a state drawn from
        the reset distribution.

        ``seed`` re-seeds the env's generator, so the same seed gives the same states (on
        the same device); it must be an int in ``[0, 2**64 - 1]`` or None. ``options`` are
        gymnasium's reset options of this env (``reset_options``), used for later
        autoresets too, as gymnasium's ``CartPoleVectorEnv`` does (its ``SyncVectorEnv``
        autoresets with the defaults instead), and ``reset_mask``, a bool array of shape
        ``(num_envs,)``: as in gymnasium's ``SyncVectorEnv``, only those sub-envs reset,
        the others keep their state and step count. An unknown option, or a bad seed,
        mask or bound, is an ``EnvError`` raised before anything changes.
        """
        seed = check_env_seed(seed)
        options = check_option_keys(options, (*self.reset_options, "reset_mask"))
        mask = parse_reset_mask(options.get("reset_mask"), self.num_envs, self.device)
        if mask is not None and self._needs_reset and not bool(mask.all()):
            raise EnvError(
                "reset_mask needs a full reset() first: the other sub-envs have no state"
            )
        self._apply_reset_options({k: v for k, v in options.items() if k != "reset_mask"})
        if seed is not None:
            if self.members > 1:
                raise EnvError("an env split into members seeds each with seed_members")
            self._generator.manual_seed(seed)
        for half in self._halves:
            self._refill(half)
        self._next_half = 0  # so that a seeded reset fixes every later draw
        if mask is None:
            self._state.copy_(self._pending)
            self._steps.zero_()
            self._alive.fill_(True)
        else:
            torch.where(mask, self._pending, self._state, out=self._state)
            self._steps.masked_fill_(mask, 0)
            self._alive.logical_or_(mask)
        self._needs_reset = False
        return self._observe(), {}

    def state_dict(self, member: int = 0) -> dict[str, torch.Tensor]:
        """The env's dynamic state: physical state, step counters, which sub-envs ended on
        the last step, the pool of fresh states, which half of it refills next, and the
        reset generator. After a ``reset`` with the same options, :meth:`load_state_dict`
        continues exactly where this left off (resuming a run). Of an env split into
        members (:meth:`split_members`), member ``member``'s, as its env alone has it."""
        columns = self._member_columns(member)
        return {
            "state": self._state[:, columns].clone(),
            "steps": self._steps[columns].clone(),
            "alive": self._alive[columns].clone(),
            "pool": self._pending[:, columns].clone(),
            "next_half": torch.tensor(self._next_half),
            "generator": self._generators[member].get_state(),
            "fast": torch.tensor(self.fast),
        }

    def _member_columns(self, member: int) -> slice:
        if not 0 <= member < self.members:
            raise EnvError(f"member {member} of an env of {self.members} members")
        return slice(member * self.per_member, (member + 1) * self.per_member)

    def load_state_dict(self, state: dict[str, torch.Tensor], member: int = 0) -> None:
        """Restore what :meth:`state_dict` returned, into an env with the same autoreset
        path (a sparse env never refills its pool, so a dense env would reuse its draws);
        of an env split into members, into member ``member``."""
        if "fast" in state and bool(state["fast"]) != self.fast:
            raise EnvError(
                f"the saved env state comes from an env with fast={bool(state['fast'])}, this "
                f"env has fast={self.fast}: build it with fast={bool(state['fast'])} to continue"
            )
        columns = self._member_columns(member)
        for name, buffer in (
            ("state", self._state[:, columns]),
            ("steps", self._steps[columns]),
            ("alive", self._alive[columns]),
            ("pool", self._pending[:, columns]),
        ):
            if state[name].shape != buffer.shape:
                raise EnvError(
                    f"saved env {name} has shape {tuple(state[name].shape)}, this env "
                    f"{tuple(buffer.shape)} (num_envs differs?)"
                )
            buffer.copy_(state[name])
        self._next_half = int(state["next_half"])
        self._generators[member].set_state(state["generator"].cpu())
        self._needs_reset = False

    def _discrete_actions(self, actions: torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
        """``actions`` as an index tensor on ``device`` (:func:`checks.discrete_actions`)."""
        if self._needs_reset:
            raise EnvError("call reset() before step()")
        return discrete_actions(actions, self.num_envs, self.device, self.single_action_space)

    def _lookup(self, table: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """``table[actions]``, or ``EnvError`` for an action outside the table.

        ``index_select`` bounds-checks the actions: IndexError on CPU, and on accelerators
        an asynchronous device-side assert, so the range check costs no host sync.
        """
        try:
            return table.index_select(0, actions)
        except IndexError:
            raise EnvError(
                f"actions must be in {action_set(self.single_action_space)}, got values "
                f"{actions.unique().tolist()}"
            ) from None

    def _box_actions(self, actions: torch.Tensor | np.ndarray | list[list[float]]) -> torch.Tensor:
        """Actions of a ``Box`` of shape ``(1,)`` as a ``(num_envs,)`` tensor of ``dtype`` on
        ``device``, unclipped (:func:`checks.box_actions`)."""
        if self._needs_reset:
            raise EnvError("call reset() before step()")
        return box_actions(actions, self.num_envs, self.device, self.dtype)

    def _autoreset(self) -> torch.Tensor:
        """Restart the sub-envs that ended on the previous step and count the step.

        Call after integrating every row: columns of ended sub-envs take a fresh state
        (their integrated values, from an ignored action, are discarded), and their step
        counters restart. Returns the mask of sub-envs whose step was a real transition
        (False on an autoreset step, whose reward must be 0 and flags False); it stays valid
        until ``_end_step``.
        """
        alive = self._alive
        if self.fast:
            # CPU only (checked in __init__): the host reads the mask without a device wait.
            # masked_select of an index range is measured faster than nonzero on CPU.
            ended = torch.masked_select(self._env_index, alive.logical_not())
            self._steps.add_(self._one_step)
            if ended.numel():
                self._state.index_copy_(1, ended, self._draw(ended.numel()))
                self._steps.index_fill_(0, ended, 0)
        else:
            self._refill(self._halves[self._next_half])
            self._next_half ^= 1
            torch.where(alive, self._state, self._pending, out=self._state)
            self._steps.add_(self._one_step).mul_(alive)
        return alive

    def _end_step(self, terminated: torch.Tensor) -> torch.Tensor:
        """The truncation flags of this step; records which sub-envs ended for the next one.

        ``terminated`` must already be False on autoreset steps.
        """
        truncated = torch.ge(self._steps, self._limit)
        torch.logical_or(terminated, truncated, out=self._alive).logical_not_()
        return truncated
