"""Checks of what callers hand a native env: sizes, seeds and reset options.

Each refuses a bad input with an :class:`rlnorm.errors.EnvError` before the env changes,
so a refused ``reset`` or ``step`` leaves the env exactly as it was.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

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
