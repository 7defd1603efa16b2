"""An on-policy update's samples and minibatches, for one run or a population of members.

A rollout holds ``T`` steps of every sub-env, some of which only reset their sub-env (next-
step autoreset) and are no transitions. One run keeps its valid steps, time-major, and
splits a random permutation of them into minibatches. A population
(:mod:`rlnorm.population`) does the same for each member over the member's own sub-envs,
with the member's own generator, so member ``k`` sees the minibatches of the run
``--seed k``. Members keep different numbers of valid steps, so their samples are padded to
the longest member's count and carry a mask: every reduction here (a loss's mean, advantage
normalization, a metric) is taken per member over its real samples only, and
:func:`rlnorm.sample_mask.sample_mask` gives the member-batched norm layers the same mask
for their batch statistics.

One run's path runs the ops it always ran (boolean selection, ``tensor_split``, plain
means), so a single seed is neither changed nor slowed by the population's bookkeeping.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence

from rlnorm.draws import Draws
from rlnorm.errors import ConfigError
from rlnorm.sample_mask import sample_mask


def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Each member's mean over its real samples: ``[K, B, ...]`` -> ``[K]`` (0 for a member
    with none: one that skips this minibatch)."""
    x = x.flatten(2).mean(2) if x.dim() > 2 else x
    if mask is None:
        return x.mean(1)
    weight = mask.to(x.dtype)
    return (x * weight).sum(1) / weight.sum(1).clamp_min(1)


def _masked_var(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Each member's unbiased variance over its real samples: ``[K, B]`` -> ``[K]``."""
    if mask is None:
        return x.var(1)
    weight = mask.to(x.dtype)
    count = weight.sum(1)
    mean = (x * weight).sum(1) / count.clamp_min(1)
    return ((x - mean.unsqueeze(1)).pow(2) * weight).sum(1) / (count - 1).clamp_min(1)


@dataclass
class Minibatch:
    """Rows of :class:`ValidSamples` for one gradient step.

    Attributes:
        index: the rows, ``[B]`` for one run, ``[K, B]`` for a population (padded).
        mask: ``[K, B]``, True for a member's real rows; ``None`` when every row is real.
        members: K, or ``None`` for one run.
        active: ``[K]``, the members that take this step (a member whose valid steps
            split into fewer minibatches has none left); ``None`` when all do.
    """

    index: torch.Tensor
    mask: torch.Tensor | None
    members: int | None
    active: torch.Tensor | None = None

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """The minibatch's rows of ``x`` (one of :meth:`ValidSamples.take`'s results)."""
        if self.members is None:
            return x[self.index]
        return x[torch.arange(self.members, device=x.device).unsqueeze(1), self.index]

    def masked(self) -> AbstractContextManager[None]:
        """Norm layers take batch statistics over each member's real rows inside."""
        return sample_mask(self.mask)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """A loss term's mean over the samples: one run's ``x.mean()``; in a population the
        sum of the members' own means, so each member's gradient is exactly its own."""
        if self.members is None:
            return x.mean()
        return _masked_mean(x, self.mask).sum()

    def average(self, x: torch.Tensor) -> torch.Tensor:
        """A metric: the mean over the samples, averaged over members."""
        if self.members is None:
            return x.mean()
        means = _masked_mean(x, self.mask)
        return means.mean() if self.active is None else means[self.active].mean()

    def max(self, x: torch.Tensor) -> torch.Tensor:
        """A metric: the largest value over every member's real samples."""
        if self.mask is None:
            return x.max()
        return x.masked_fill(~self.mask, -torch.inf).max()

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / (std + 1e-8)`` over each member's real samples (unbiased std)."""
        if self.members is None:
            return (x - x.mean()) / (x.std() + 1e-8)
        mean = _masked_mean(x, self.mask).unsqueeze(1)
        return (x - mean) / (_masked_var(x, self.mask).sqrt().unsqueeze(1) + 1e-8)


class ValidSamples:
    """The valid steps of a rollout, as an on-policy update takes them.

    ``valid`` is the rollout's ``(T, columns)`` flag. One run (``members=None``): the
    valid steps flattened time-major, ``[n, ...]``. A population of K members owning
    member-major blocks of columns: member ``k``'s valid steps, time-major over its own
    sub-envs, padded to the longest member's count, ``[K, n_max, ...]``.
    """

    def __init__(self, valid: torch.Tensor, members: int | None) -> None:
        self.members = members
        if members is None:
            self.keep = valid.flatten()
            self.counts = [int(self.keep.sum())]
            self.mask: torch.Tensor | None = None
            return
        per_member = self._per_member(valid)
        counts = per_member.sum(1)
        self.counts = counts.tolist()
        longest = max(self.counts)
        # valid steps first, in time-major order (a stable sort of the flags)
        order = torch.argsort((~per_member).to(torch.uint8), dim=1, stable=True)
        self.index = order[:, :longest]
        full = all(c == longest for c in self.counts)
        positions = torch.arange(longest, device=valid.device)
        self.mask = None if full else positions < counts.unsqueeze(1)

    def _per_member(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, K * N, ...)`` -> ``(K, T * N, ...)``, member ``k``'s steps time-major."""
        assert self.members is not None
        return x.unflatten(1, (self.members, -1)).transpose(0, 1).flatten(1, 2)

    @property
    def count(self) -> int:
        """The smallest member's number of valid steps (one run: its number)."""
        return min(self.counts)

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """The valid steps of a ``(T, columns, ...)`` rollout tensor."""
        if self.members is None:
            return x.flatten(0, 1)[self.keep]
        rows = torch.arange(self.members, device=x.device).unsqueeze(1)
        return self._per_member(x)[rows, self.index]

    def masked(self) -> AbstractContextManager[None]:
        """Norm layers take batch statistics over each member's valid steps inside."""
        return sample_mask(self.mask)

    def variance(self, x: torch.Tensor) -> torch.Tensor:
        """The unbiased variance over the valid steps, per member (``[K]``; one run: ``[]``)."""
        return x.var() if self.members is None else _masked_var(x, self.mask)

    def minibatches(
        self, size: int, draws: Draws, batch_dependent: bool, may_skip: bool = True
    ) -> list[Minibatch]:
        """One epoch's minibatches: near-equal splits of a random permutation of each
        member's valid steps (never a remainder of one sample: BatchNorm needs two), about
        ``size`` samples each, the permutation drawn from the member's own generator.

        Members whose counts split into fewer minibatches than others are inactive in the
        last ones (:attr:`Minibatch.active`: they skip those steps,
        :func:`rlnorm.member_adam.stepping`). ``may_skip=False`` refuses that instead, for
        an update whose train-mode batch statistics would count a skipped pass (BatchNorm's
        pass counter is one for all members)."""
        splits = [max(1, round(n / size)) for n in self.counts]
        if len(set(splits)) > 1 and not may_skip:
            raise ConfigError(
                f"the members' rollouts kept {sorted(set(self.counts))} valid steps, which split "
                f"into different numbers of minibatches {sorted(set(splits))} of about {size}: "
                "with train-mode batch statistics in the update (norm_update: batch) a "
                "population needs one number for all (norm_update: frozen, a minibatch_size "
                "that divides the rollout, or these seeds one per process)"
            )
        parts = max(splits)
        if batch_dependent and any(n // m < 2 for n, m in zip(self.counts, splits, strict=True)):
            raise ConfigError(
                f"rollout left {self.count} valid samples: too few for batch statistics"
            )
        device = self.keep.device if self.members is None else self.index.device
        perms = draws.randperms(self.counts, device)
        if self.members is None:
            return [Minibatch(idx, None, None) for idx in perms[0].tensor_split(parts)]
        padded = pad_sequence(perms, batch_first=True)  # [K, n_max]
        counts = torch.tensor(self.counts, device=device).unsqueeze(1)
        own = torch.tensor(splits, device=device).unsqueeze(1)
        quotient, remainder = counts // own, counts % own
        batches = []
        for j in range(parts):  # tensor_split's rule, per member: the first r parts get one more
            active = j < own
            sizes = (quotient + (j < remainder).long()) * active
            starts = j * quotient + remainder.clamp(max=j)
            longest = int(sizes.max())
            offsets = torch.arange(longest, device=device)
            mask = offsets < sizes
            positions = (starts + offsets).clamp(max=padded.shape[1] - 1)
            batches.append(
                Minibatch(
                    padded.gather(1, positions),
                    None if bool(mask.all()) else mask,
                    self.members,
                    None if bool(active.all()) else active.squeeze(1),
                )
            )
        return batches
