"""A tanh that runs faster than torch's own on large CPU tensors, for seed populations.

torch's CPU ``tanh`` kernel evaluates the function element by element, several times the
cost of a vectorized sigmoid ([activation_cost.md](../benchmarks/results/activation_cost.md));
it was the most expensive op of an 8-member PPO update, ahead of the matrix products
([update_cost.md](../benchmarks/results/update_cost.md)). :class:`Tanh` computes
``1 - 2 sigmoid(-2x)`` there instead; on other devices it is ``torch.tanh``.
:func:`rlnorm.members.stack` puts it in a population's networks in place of ``nn.Tanh``. A
single seed's networks keep torch's: its three ops cost more than torch's one on the
smallest tensors (acting), and small-budget learning tests showed single-seed results to be
sensitive to last-bit differences, so changing a single run's numbers is left to a decision
of its own.
"""

from __future__ import annotations

import torch
from torch import nn

#: Largest |difference| from the true tanh that :func:`tanh` is tested to keep in float32
#: (measured beside torch's own in activation_cost.md); an absolute bound, so relative to
#: a value near zero the error is larger.
FLOAT32_ABS_ERROR = 2.5e-7


def tanh(x: torch.Tensor) -> torch.Tensor:
    """The hyperbolic tangent: ``1 - 2 sigmoid(-2x)`` on a CPU (within
    :data:`FLOAT32_ABS_ERROR` of the true value in float32), ``torch.tanh`` elsewhere.

    Three ops whose kernels are vectorized, differentiated by autograd. (A custom
    ``autograd.Function`` with tanh's one-kernel backward was tried: its backward runs in
    Python, which cost about what the one kernel saved.) The choice depends on the device
    only, never on the batch size, so a state's output is the same alone or in a batch (the
    eval-mode batch-independence contract)."""
    if x.device.type != "cpu":
        return torch.tanh(x)
    return torch.rsub(torch.sigmoid(x * -2), 1, alpha=2)


class Tanh(nn.Module):
    """``nn.Tanh`` computed by :func:`tanh`: the tanh of a seed population's networks."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return tanh(input)
