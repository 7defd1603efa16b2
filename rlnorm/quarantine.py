"""A population's members stopped for non-finite weights, held out while the others go on.

Members share no computation that could carry a NaN from one to another (each has its own
weights, statistics, gradient clipping and Adam moments), so one member blowing up need not
end the others' runs. :class:`Quarantine` finds the members whose weights stopped being
finite after an update; :mod:`rlnorm.population` puts such a member back to its last good
state, stops writing its run directory (its last good checkpoint stays) and, through
:meth:`Quarantine.holding`, puts it back after every later update, so it never moves
again while the other members train on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class Quarantine:
    """The stopped members of a population whose stacked ``modules`` have ``members``
    members, and why each stopped."""

    def __init__(self, modules: dict[str, nn.Module], members: int) -> None:
        self.members = members
        #: member index -> why it stopped
        self.stopped: dict[int, str] = {}
        tensors = [t for m in modules.values() for t in (*m.parameters(), *m.buffers())]
        self._params: list[torch.Tensor] = [
            p for m in modules.values() for p in m.parameters() if p.numel()
        ]
        self._per_member = [t for t in tensors if t.dim() and t.shape[0] == members]

    def nonfinite(self) -> list[int]:
        """The members with a non-finite weight: one check of every tensor's 2-norm (never
        finite when a value is not; 6x cheaper than the largest ``|value|`` on CPU), split by
        member, value by value, only when that fails (then a norm that overflowed from finite
        values finds no member)."""
        with torch.no_grad():
            if bool(torch.stack(torch._foreach_norm(self._params, 2)).isfinite().all()):
                return []
            finite = torch.stack([p.flatten(1).isfinite().all(1) for p in self._params]).all(0)
        return [k for k, ok in enumerate(finite.tolist()) if not ok]

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Inside, an update may move every member; the stopped members' weights and
        statistics are put back as they were when it ends."""
        if not self.stopped:
            yield
            return
        index = torch.tensor(sorted(self.stopped), device=self._per_member[0].device)
        saved = [(t, t[index].clone()) for t in self._per_member]
        try:
            yield
        finally:
            with torch.no_grad():
                for tensor, before in saved:
                    tensor[index] = before
