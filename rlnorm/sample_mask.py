"""Which samples of a member-batched tensor are real: the padding of ragged members.

A population's members do not always have the same number of samples: a PPO rollout keeps
each member's valid steps (not the autoreset ones), and those counts differ. Their samples
are then padded to the longest member's count, and :func:`sample_mask` tells the
member-batched norm layers (:mod:`rlnorm.member_layers`) which rows are real, so that in
train mode each member's batch statistics are taken over its own samples only, as its own
run takes them. Layers that normalize each sample alone ignore the mask: padding rows
cannot reach the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

_ACTIVE: list[torch.Tensor] = []


@contextmanager
def sample_mask(mask: torch.Tensor | None) -> Iterator[None]:
    """Inside, member-batched layers read ``mask`` (``[K, B]``, True for a real sample) as the
    rows of each ``[K, B, F]`` input that batch statistics are taken over. ``None`` (every
    row real) is a no-op."""
    if mask is None:
        yield
        return
    _ACTIVE.append(mask)
    try:
        yield
    finally:
        _ACTIVE.pop()


def active_mask(input: torch.Tensor) -> torch.Tensor | None:
    """The mask in force for ``input`` (``[K, B, ...]``), or ``None`` when every row is real."""
    if not _ACTIVE:
        return None
    mask = _ACTIVE[-1]
    if tuple(mask.shape) != tuple(input.shape[:2]):
        raise ValueError(
            f"sample mask of shape {tuple(mask.shape)} does not match an input of shape "
            f"{tuple(input.shape)}: expected [members, samples]"
        )
    return mask


def masked_moments(
    input: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each member's mean and biased variance over its real samples (``[K, F]`` each) and
    its count of real samples (``[K, 1]``), for an input ``[K, B, F]``."""
    weight = mask.to(input.dtype).unsqueeze(-1)
    count = weight.sum(1)
    mean = (input * weight).sum(1) / count
    var = ((input - mean.unsqueeze(1)).pow(2) * weight).sum(1) / count
    return mean, var, count


def masked_batch_norm(layer: Any, input: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A member-batched BatchNorm's train-mode pass (``layer``: its weights, statistics and
    ``record_batch``) over each member's real samples only: the formula of torch's kernel,
    written out, as each member's run computes it on its samples alone."""
    mean, var, count = masked_moments(input, mask)
    invstd = torch.rsqrt(var + layer.eps)
    out = (input - mean.unsqueeze(1)) * invstd.unsqueeze(1)
    if layer.weight is not None and layer.bias is not None:
        out = out * layer.weight.unsqueeze(1) + layer.bias.unsqueeze(1)
    with torch.no_grad():
        if layer.running_mean is not None and layer.running_var is not None:
            layer.num_batches_tracked.add_(1)
            momentum = layer.momentum
            factor = 1.0 / float(layer.num_batches_tracked) if momentum is None else momentum
            layer.running_mean.lerp_(mean, factor)
            layer.running_var.lerp_(var * count / (count - 1), factor)
        layer.record_batch(mean, invstd)
    return out
