"""Checks of what callers hand a native env: sizes, seeds, reset options and actions.

Each refuses a bad input with an :class:`rlnorm.errors.EnvError` before the env changes,
so a refused ``reset`` or ``step`` leaves the env exactly as it was.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlnorm.errors import EnvError

#: The seeds ``reset`` takes: what ``torch.Generator.manual_seed`` and numpy both accept.
MAX_ENV_SEED = 2**64 - 1


def positive_int(name: str, value: object) -> int:
    """``value`` as an int, or ``EnvError`` unless it is an integer >= 1 (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise EnvError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def reset_option(options: dict[str, Any] | None, key: str, default: float) -> float:
    """``options[key]`` as a float (``default`` when absent), or ``EnvError`` if it is not one.

    Gymnasium's classic-control envs read their reset options the same way.
    """
    if not options or key not in options:
        return default
    try:
        value = float(options[key])
    except (TypeError, ValueError, OverflowError):
        raise EnvError(f"reset option {key!r} must be a number, got {options[key]!r}") from None
    if not math.isfinite(value):
        raise EnvError(f"reset option {key!r} must be a finite number, got {value}")
    return value


def parse_reset_bounds(
    options: dict[str, Any] | None, low: float, high: float
) -> tuple[float, float]:
    """The ``low``/``high`` reset options, with the env's defaults, as gymnasium reads them."""
    low, high = reset_option(options, "low", low), reset_option(options, "high", high)
    if not low <= high:
        raise EnvError(f"reset options need low <= high, got low={low}, high={high}")
    return low, high


def check_env_seed(seed: Any) -> int | None:
    """``seed`` as an int, or ``EnvError`` unless it is ``None`` or an integer in
    ``[0, 2**64 - 1]`` (bools, floats and strings are refused, as gymnasium's export does)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise EnvError(f"seed must be an int or None, got {type(seed).__name__} {seed!r}")
    if not 0 <= int(seed) <= MAX_ENV_SEED:
        raise EnvError(f"seed must be in [0, 2**64 - 1], got {seed}")
    return int(seed)


def check_option_keys(options: dict[str, Any] | None, valid: Iterable[str]) -> dict[str, Any]:
    """``options`` (``{}`` for None), or ``EnvError`` naming an unknown key and the valid
    ones: a misspelt option must not be silently ignored."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise EnvError(f"reset options must be a dict, got {type(options).__name__}")
    valid = sorted(valid)
    unknown = sorted(map(str, set(options) - set(valid)))
    if unknown:
        raise EnvError(f"unknown reset option {unknown[0]!r}; this env takes {', '.join(valid)}")
    return options


def parse_reset_mask(mask: Any, num_envs: int, device: torch.device) -> torch.Tensor | None:
    """The ``reset_mask`` option as a bool tensor on ``device`` (None when absent), checked
    as gymnasium's ``SyncVectorEnv`` checks it: shape ``(num_envs,)``, bool, not all False."""
    if mask is None:
        return None
    if isinstance(mask, torch.Tensor):
        mask = mask.detach()
    elif isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask.copy()) if mask.dtype == np.bool_ else None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise EnvError("reset option 'reset_mask' must be a bool array or tensor")
    if mask.shape != (num_envs,):
        raise EnvError(
            f"reset option 'reset_mask' must have shape ({num_envs},), got {tuple(mask.shape)}"
        )
    if not bool(mask.any()):
        raise EnvError("reset option 'reset_mask' is all False: it resets nothing")
    return mask.to(device)


def check_draw_bounds(low: Any, high: Any, dtype: torch.dtype) -> None:
    """``EnvError`` unless the reset bounds ``low``/``high`` (numbers or tuples of them) and
    their span are finite in ``dtype``: ``low=-1e308, high=1e308`` would draw NaN states."""
    lows, highs = np.broadcast_arrays(np.asarray(low, np.float64), np.asarray(high, np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        spans = highs - lows
    finfo = torch.finfo(dtype)
    for value in (*lows.ravel(), *highs.ravel(), *spans.ravel()):
        if not math.isfinite(value) or abs(value) > finfo.max:
            raise EnvError(
                f"reset bounds low={low}, high={high} are out of range: the bounds and their "
                f"span must be finite in {dtype} (at most {finfo.max:.3g} in size)"
            )


def action_set(space: gym.spaces.Space) -> str:
    """A discrete action set as text, e.g. ``{0, 1, 2}``."""
    return "{" + ", ".join(map(str, range(gym.spaces.flatdim(space)))) + "}"


def discrete_actions(
    actions: torch.Tensor | np.ndarray | list[int],
    num_envs: int,
    device: torch.device,
    space: gym.spaces.Space,
) -> torch.Tensor:
    """``actions`` as an index tensor on ``device``, or ``EnvError`` for a bad shape or dtype
    (the env's lookup checks the range).

    The shape must be ``(num_envs,)`` exactly: a ``(num_envs, 1)`` tensor is rejected rather
    than squeezed, so a policy that emits the wrong shape fails loudly instead of
    broadcasting. Floating-point actions are rejected, as gymnasium's ``Discrete`` space does.
    """
    a = torch.as_tensor(actions, device=device)
    if a.shape != (num_envs,):
        raise EnvError(
            f"actions must have shape ({num_envs},) (one per sub-env), got {tuple(a.shape)}"
        )
    if a.dtype.is_floating_point or a.dtype.is_complex:
        problem = "contain NaN and " if bool(torch.isnan(a).any()) else ""
        raise EnvError(
            f"actions {problem}must be integers in {action_set(space)}, got dtype "
            f"{a.dtype}; cast with .long() after choosing them"
        )
    if a.dtype not in (torch.int64, torch.int32):
        a = a.long()  # bool, uint8, int8, int16: index_select wants int32/int64
    return a


def box_actions(
    actions: torch.Tensor | np.ndarray | list[list[float]],
    num_envs: int,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Actions of a ``Box`` of shape ``(1,)`` as a ``(num_envs,)`` tensor of ``dtype`` on
    ``device``, unclipped, or ``EnvError``.

    The shape must be ``(num_envs, 1)``, gymnasium's batched ``Box`` shape; ``(num_envs,)``
    is rejected rather than unsqueezed, for the same reason as in :func:`discrete_actions`.
    A NaN action raises ``EnvError`` on CPU; on other devices it trips an asynchronous
    device-side assert instead (a RuntimeError at the next sync), so the check never stalls
    a step. Infinite actions are allowed: gymnasium clips them like any other. The result
    may be a view of the caller's tensor: never modify it in place. It never requires grad.
    """
    # Detached: an action that tracks gradients must not pull the env's state into its
    # autograd graph (every later in-place update of the state would then fail).
    a = torch.as_tensor(actions, device=device).detach()
    expected = (num_envs, 1)
    if a.shape != expected:
        hint = "; add the last axis with .unsqueeze(-1)" if a.shape == expected[:1] else ""
        raise EnvError(
            f"actions must have shape {expected} (num_envs, *action_space.shape), "
            f"got {tuple(a.shape)}{hint}"
        )
    if a.dtype.is_complex:
        raise EnvError(f"actions must be real numbers, got dtype {a.dtype}")
    a = a.reshape(num_envs).to(dtype)
    nan = torch.isnan(a)
    if a.device.type != "cpu":
        torch._assert_async(nan.any().logical_not(), "actions contain NaN")
    elif bool(nan.any()):
        rows = nan.nonzero().flatten().tolist()
        shown = ", ".join(map(str, rows[:8])) + (", ..." if len(rows) > 8 else "")
        raise EnvError(f"actions contain NaN (sub-envs {shown}); a NaN would poison the state")
    return a
