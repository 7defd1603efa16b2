"""Where an agent's random numbers come from: torch's global generator for one run, one
generator per member for a population of seeds trained together.

A single run draws from torch's global generator, seeded by :meth:`rlnorm.learner.Learner.create`.
In a population (:mod:`rlnorm.population`) member ``k`` draws from its own generator, which
starts in the state the global generator has in the run ``--seed k`` right after building its
agent. Every draw below is taken per member with the per-member shape that run would ask for,
in the same order, so member ``k`` receives exactly the numbers the run ``--seed k`` receives,
and no member's draws depend on another's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Draws:
    """torch's global generator: the random numbers of a single run."""

    #: members drawn for (None: one run, results carry no member dimension)
    members: int | None = None

    def randn_like(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal values shaped like ``like``."""
        return torch.randn_like(like)

    def rand(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Uniform ``[0, 1)`` values of ``shape`` (float32)."""
        return torch.rand(shape, device=device)

    def rand_rows(self, rows: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """``rows`` rows of uniform values, ``(rows, *shape)``: one row per sub-env."""
        return torch.rand((rows, *shape), device=device)

    def randint_rows(self, high: int, rows: int, device: torch.device) -> torch.Tensor:
        """``rows`` integers uniform in ``[0, high)``: one per sub-env."""
        return torch.randint(high, (rows,), device=device)


#: The draws of every single run.
GLOBAL = Draws()


class MemberDraws(Draws):
    """One generator per member; results carry a leading member dimension.

    ``randn_like`` and ``rand`` return ``(K, *shape)``, member ``k``'s slice drawn from
    generator ``k`` with the shape a single run would draw. The ``*_rows`` methods serve
    a member-major batch of sub-envs (``K * N`` rows, member ``k`` owning rows
    ``k * N .. (k + 1) * N - 1``) and return rows in that order.
    """

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        if not generators:
            raise ValueError("MemberDraws needs at least one generator")
        self.generators = list(generators)
        self.members = len(self.generators)

    def _per_member(self, rows: int) -> int:
        if rows % len(self.generators):
            raise ValueError(f"{rows} rows do not split over {len(self.generators)} members")
        return rows // len(self.generators)

    def randn_like(self, like: torch.Tensor) -> torch.Tensor:
        shape, dtype, device = like.shape[1:], like.dtype, like.device
        return torch.stack(
            [torch.randn(shape, generator=g, dtype=dtype, device=device) for g in self.generators]
        )

    def rand(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return torch.stack([torch.rand(shape, generator=g, device=device) for g in self.generators])

    def rand_rows(self, rows: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return self.rand((self._per_member(rows), *shape), device).flatten(0, 1)

    def randint_rows(self, high: int, rows: int, device: torch.device) -> torch.Tensor:
        n = self._per_member(rows)
        return torch.cat(
            [torch.randint(high, (n,), generator=g, device=device) for g in self.generators]
        )
