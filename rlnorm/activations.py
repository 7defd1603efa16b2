"""A tanh that runs faster than torch's own on large CPU tensors, for seed populations.

torch's CPU ``tanh`` kernel evaluates the function element by element, several times the
cost of a vectorized sigmoid ([activation_cost.md](../benchmarks/results/activation_cost.md));
it was the most expensive op of an 8-member PPO update, ahead of the matrix products
([update_cost.md](../benchmarks/results/update_cost.md)). :class:`Tanh` computes
``2 sigmoid(2x) - 1`` there instead and uses torch's ``tanh_backward`` for the gradient; on
other devices it is ``torch.tanh``. Its four ops cost more than torch's one on a small
tensor, so :func:`rlnorm.members.stack` puts it in a population's networks, whose tensors
are K times larger, and a single seed's networks keep ``nn.Tanh``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: Largest |difference| from the true tanh that :func:`tanh` is tested to keep in float32
#: (torch's own kernel keeps 6e-8, half a unit in the last place of 1); relative to a
#: value near zero it is larger, as it is an absolute bound.
FLOAT32_ABS_ERROR = 2.5e-7


def _sigmoid_tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x * 2).mul_(2).sub_(1)


class _SigmoidTanh(torch.autograd.Function):
    """``tanh`` through the sigmoid, with tanh's own backward on the saved output: one
    kernel for the gradient rather than the three of differentiating the formula."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _sigmoid_tanh(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (output,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, output)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """The hyperbolic tangent: ``2 sigmoid(2x) - 1`` on a CPU (within
    :data:`FLOAT32_ABS_ERROR` of the true value in float32), ``torch.tanh`` elsewhere.

    The choice depends on the device only, never on the batch size, so a state's output is
    the same alone or in a batch (the eval-mode batch-independence contract)."""
    if x.device.type != "cpu":
        return torch.tanh(x)
    if x.requires_grad and torch.is_grad_enabled():
        return _SigmoidTanh.apply(x)
    return _sigmoid_tanh(x)


class Tanh(nn.Module):
    """``nn.Tanh`` computed by :func:`tanh`: the activation ``"tanh"`` of rlnorm's networks."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return tanh(input)
