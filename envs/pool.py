"""The pool of fresh states of ``ClassicControlEnv``, refilled one half at a time (see
the class docstring of :class:`envs.base.ClassicControlEnv` for why halves suffice)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .base import ClassicControlEnv


class NoiseHalf:
    """Buffers that refill one half of the columns of ``ClassicControlEnv``'s fresh states.

    ``bits`` holds the raw draws, from ``generator``; ``values`` views them as one integer
    per fresh value, of ``rows x width`` values; ``stage`` is where they become floats
    (``target`` itself, unless the env's dtype is too narrow to hold 24-bit integers exactly).
    """

    def __init__(
        self,
        env: ClassicControlEnv,
        rows: int,
        start: int,
        stop: int,
        generator: torch.Generator,
    ) -> None:
        self.generator = generator
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

    def refill(self, bit_mask: torch.Tensor, low: torch.Tensor, scale: torch.Tensor) -> None:
        """Draw fresh values for these columns: ``low + scale * bits``, of ``bit_mask``'s
        random bits per value."""
        if self.empty:
            return
        self.bits.random_(generator=self.generator)
        self.stage.copy_(self.values.bitwise_and_(bit_mask))
        torch.addcmul(low, self.stage, scale, out=self.stage)
        if self.stage is not self.target:
            self.target.copy_(self.stage)


def split_pool(
    env: ClassicControlEnv, members: int, rows: int
) -> tuple[list[torch.Generator], tuple[list[NoiseHalf], list[NoiseHalf]]]:
    """One generator per member and the pool's two halves, each a list of one
    :class:`NoiseHalf` per member: member ``k``'s block of ``env.num_envs / members``
    sub-envs (member-major) laid out as an env of that size alone lays out its pool."""
    per_member = env.num_envs // members
    middle = (per_member + 1) // 2
    with torch.inference_mode(False):
        generators = [torch.Generator(device=env.device) for _ in range(members)]
        for generator in generators:
            generator.seed()  # like gymnasium: unseeded envs differ from run to run
        first, second = (
            [
                NoiseHalf(env, rows, k * per_member + a, k * per_member + b, generator)
                for k, generator in enumerate(generators)
            ]
            for a, b in ((0, middle), (middle, per_member))
        )
    return generators, (first, second)
