"""The pool of fresh states of ``ClassicControlEnv``, refilled one half at a time (see
the class docstring of :class:`envs.base.ClassicControlEnv` for why halves suffice)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .base import ClassicControlEnv


class NoiseHalf:
    """Buffers that refill one half of the columns of ``ClassicControlEnv``'s fresh states.

    ``bits`` holds the raw draws; ``values`` views them as one integer per fresh value, of
    ``rows x width`` values; ``stage`` is where they become floats (``target`` itself,
    unless the env's dtype is too narrow to hold 24-bit integers exactly).
    """

    def __init__(self, env: ClassicControlEnv, rows: int, start: int, stop: int) -> None:
        width = stop - start
        self.empty = width == 0
        self.target = env._pending[:rows, start:stop]
        device = env.device
        if env.dtype == torch.float64:
            # 53 bits of one 64-bit draw per value.
            self.bits = torch.empty(rows, width, dtype=torch.int64, device=device)
            self.values = self.bits
        else:
            # 24 bits of each 32-bit half of a draw, as torch.rand does for float32 (about
            # half the cost of uniform_ on CPU).
            count = rows * width
            self.bits = torch.empty((count + 1) // 2, dtype=torch.int64, device=device)
            self.values = self.bits.view(torch.int32)[:count].view(rows, width)
        if env.dtype in (torch.float32, torch.float64):
            self.stage = self.target
        else:  # float16 and bfloat16 cannot hold 24-bit integers: convert in float32
            self.stage = torch.empty(rows, width, dtype=torch.float32, device=device)
