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

import os
from collections.abc import Callable, Sequence

import torch
from torch.distributions import Categorical, Distribution, Normal


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

    def randperms(self, counts: Sequence[int], device: torch.device) -> list[torch.Tensor]:
        """A random permutation of ``range(counts[k])`` for each member (one run: one)."""
        (count,) = counts
        return [torch.randperm(count, device=device)]

    def sample(self, dist: Distribution) -> torch.Tensor:
        """One sample of ``dist`` (a Categorical or a Normal) per batch element."""
        return dist.sample()


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

    def randperms(self, counts: Sequence[int], device: torch.device) -> list[torch.Tensor]:
        return [
            torch.randperm(count, generator=g, device=device)
            for count, g in zip(counts, self.generators, strict=True)
        ]

    def sample(self, dist: Distribution) -> torch.Tensor:
        """Member ``k``'s slice of ``dist``'s batch sampled from generator ``k``, with the
        kernel and shape ``dist.sample()`` uses for one run."""
        with torch.no_grad():
            if isinstance(dist, Categorical):
                probs = dist.probs
                return torch.stack(
                    [
                        torch.multinomial(
                            p.reshape(-1, p.shape[-1]), 1, True, generator=g
                        ).T.reshape(p.shape[:-1])
                        for p, g in zip(probs, self.generators, strict=True)
                    ]
                )
            if isinstance(dist, Normal):
                loc, scale = torch.broadcast_tensors(dist.loc, dist.scale)
                return torch.stack(
                    [
                        torch.normal(m, s, generator=g)
                        for m, s, g in zip(loc, scale, self.generators, strict=True)
                    ]
                )
        raise TypeError(f"MemberDraws cannot sample a {type(dist).__name__}")


def deterministic_algorithms(enabled: bool) -> Callable[[], None]:
    """Make torch use deterministic algorithms when ``enabled`` (``--deterministic``), and
    return the function that puts torch's setting back.

    Nothing is touched unless the setting changes: torch's switch imports its compiler
    (about 1.6 s) even to set what is already set.
    """
    if not enabled or torch.are_deterministic_algorithms_enabled():
        return lambda: None
    # cuBLAS needs a fixed workspace for reproducible matmuls; CPU runs are already
    # deterministic (tested), so this matters on CUDA.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    benchmark = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False

    def restore() -> None:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = benchmark

    return restore
