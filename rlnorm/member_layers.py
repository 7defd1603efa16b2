"""Member-batched layers: K independent copies of a layer, computed with batched kernels.

Each layer takes ``[K, B, *features]`` (K members, B samples per member) and returns
``[K, B, ...]``; member ``k``'s slice is what the layer built from member ``k``'s tensors
computes on its slice alone. Every parameter and statistic has a leading member dimension
(``weight [K, out, in]``, ``running_mean [K, F]``); the only exception is the pass counter
``num_batches_tracked``, one scalar shared by the members, which run in lockstep.

Tensor names, registration order and (but for the member dimension) shapes are those of
the layer each one replaces, so a member-batched module's ``named_parameters()`` lines up
with its originals' (:func:`rlnorm.members.stack` builds these layers; this module only
defines them).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from rlnorm.errors import NormalizationError
from rlnorm.layers import (
    BatchGuard,
    LastBatch,
    renorm_clip_limits,
    renorm_pass,
    renorm_step,
    running_affine,
)
from rlnorm.sample_mask import active_mask, masked_batch_norm, masked_moments


def per_member(t: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
    """``t`` (``[K, *S]``) viewed to broadcast against ``input`` (``[K, ..., *S]``)."""
    ones = (1,) * (input.dim() - t.dim())
    return t.view(t.shape[0], *ones, *t.shape[1:])


class MemberModule(nn.Module):
    """Base of the member-batched layers.

    Attributes:
        members: K, the size of every tensor's leading dimension.
        shared_buffers: buffers that are one tensor for all members (no member dimension).
        optional_buffers: buffers the layer keeps that some of the layers it replaces lack
            (torch's BatchNorm1d has no ``last_mean``): skipped when copying to them.
    """

    shared_buffers: ClassVar[tuple[str, ...]] = ()
    optional_buffers: ClassVar[tuple[str, ...]] = ()
    #: Set by :func:`rlnorm.safety.label_layers` (batch-dependent layers) or copied from
    #: the layer this one replaces: the layer's path inside its agent, for error messages.
    rlnorm_path: str = ""

    def __init__(self, members: int) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"{type(self).__name__} needs members >= 1, got {members}")
        self.members = members

    def check_members(self, input: torch.Tensor, exact_dim: int | None = None) -> None:
        """Refuse an input that is not ``[K, B, *features]`` with this layer's K."""
        ok = input.dim() >= 3 if exact_dim is None else input.dim() == exact_dim
        if not ok or input.shape[0] != self.members:
            where = self.rlnorm_path or type(self).__name__
            shape = "[K, B, F]" if exact_dim == 3 else "[K, B, ..., F]"
            raise ValueError(
                f"{where}: expected a member-batched input {shape} with K = {self.members}, "
                f"got shape {tuple(input.shape)}"
            )

    def extra_repr(self) -> str:
        return f"members={self.members}"


def member_linear(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``input [K, ..., in] @ weight[k].T + bias[k]`` per member, as one ``baddbmm``."""
    flat = input if input.dim() == 3 else input.reshape(input.shape[0], -1, input.shape[-1])
    if bias is None:
        out = torch.bmm(flat, weight.transpose(1, 2))
    else:
        out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return out if input.dim() == 3 else out.view(*input.shape[:-1], out.shape[-1])


class MemberLinear(MemberModule):
    """K ``nn.Linear`` layers: ``weight [K, out, in]``, ``bias [K, out]`` (or None)."""

    def __init__(
        self,
        members: int,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(members)
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(members, out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each member initialized as ``nn.Linear`` initializes itself."""
        bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        with torch.no_grad():
            for k in range(self.members):
                nn.init.kaiming_uniform_(self.weight[k], a=math.sqrt(5))
                if self.bias is not None:
                    nn.init.uniform_(self.bias[k], -bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.check_members(input)
        return member_linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"members={self.members}, in_features={self.in_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}"
        )


class _MemberWeightNorm(nn.Module):
    """The parametrization ``weight = g * v / |v|`` per member and output row."""

    def forward(self, weight_g: torch.Tensor, weight_v: torch.Tensor) -> torch.Tensor:
        return weight_v * (weight_g / weight_v.norm(dim=-1, keepdim=True))

    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return weight.norm(dim=-1, keepdim=True), weight


class MemberWeightNormLinear(MemberLinear):
    """K weight-normalized Linears (``rlnorm.layers.weight_normed_linear``): a torch
    parametrization of ``weight`` with ``parametrizations.weight.original0`` (g,
    ``[K, out, 1]``) and ``original1`` (v, ``[K, out, in]``), as torch's ``weight_norm``
    names them; ``weight[k] = g[k] * v[k] / |v[k]|`` row by row."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        parametrize.register_parametrization(self, "weight", _MemberWeightNorm(), unsafe=True)


class MemberCosineLinear(MemberModule):
    """K :class:`rlnorm.layers.CosineLinear`: ``weight [K, out, in]``, ``bias [K, out]`` or
    None, ``scale [K]`` (one learnable gain per member)."""

    def __init__(
        self,
        members: int,
        in_features: int,
        out_features: int,
        bias: bool = False,
        scale_init: float = 1.0,
        eps: float = 1e-8,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(members)
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features, self.eps = in_features, out_features, eps
        self.weight = nn.Parameter(torch.empty(members, out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.zeros(members, out_features, **factory)) if bias else None
        self.scale = nn.Parameter(torch.full((members,), float(scale_init), **factory))
        with torch.no_grad():
            for k in range(members):
                nn.init.kaiming_uniform_(self.weight[k], a=math.sqrt(5))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.check_members(input)
        dots = member_linear(input, self.weight, self.bias)
        if self.bias is None:
            w_norm = self.weight.norm(dim=-1)
            norms = input.norm(dim=-1, keepdim=True) * per_member(w_norm, input)
        else:  # |(x, 1)| |(w_j, b_j)|
            x_norm = (input.pow(2).sum(-1, keepdim=True) + 1).sqrt()
            w_norm = (self.weight.pow(2).sum(-1) + self.bias.pow(2)).sqrt()
            norms = x_norm * per_member(w_norm, input)
        return per_member(self.scale, input) * dots / (norms + self.eps)

    def extra_repr(self) -> str:
        return (
            f"members={self.members}, in_features={self.in_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}"
        )


class MemberLayerNorm(MemberModule):
    """K ``nn.LayerNorm``: per-sample statistics, per-member affine ``[K, *shape]``."""

    def __init__(
        self,
        members: int,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(members)
        factory = {"device": device, "dtype": dtype}
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        self.normalized_shape = tuple(shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        full = (members, *self.normalized_shape)
        affine = elementwise_affine
        self.weight = nn.Parameter(torch.ones(full, **factory)) if affine else None
        self.bias = nn.Parameter(torch.zeros(full, **factory)) if affine and bias else None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.check_members(input)
        out = F.layer_norm(input, self.normalized_shape, None, None, self.eps)
        if self.weight is not None:
            out = out * per_member(self.weight, input)
        if self.bias is not None:
            out = out + per_member(self.bias, input)
        return out

    def extra_repr(self) -> str:
        return f"members={self.members}, {self.normalized_shape}, eps={self.eps}"


class MemberRMSNorm(MemberModule):
    """K :class:`rlnorm.layers.RMSNorm`: ``weight [K, F]``."""

    def __init__(
        self,
        members: int,
        num_features: int,
        eps: float = 1e-6,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(members)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(members, num_features, device=device, dtype=dtype))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.check_members(input)
        scale = torch.rsqrt(input.pow(2).mean(-1, keepdim=True) + self.eps)
        return input * scale * per_member(self.weight, input)


class MemberBatchGuard(BatchGuard):
    """:class:`rlnorm.layers.BatchGuard` for ``[K, B, F]`` inputs: each member needs a
    train-mode batch of at least 2 samples."""

    def check_batch(self, input: torch.Tensor) -> None:
        mask = active_mask(input) if input.dim() == 3 else None
        batch = input.shape[1] if input.dim() == 3 else 1
        if mask is not None:  # the smallest member's count of real samples
            batch = int(mask.sum(1).min())
        if input.dim() != 3 or batch < 2:
            where = self.rlnorm_path or type(self).__name__
            raise NormalizationError(
                f"{where}: train-mode {type(self).__name__} got input of shape "
                f"{tuple(input.shape)}, a batch of {batch} sample(s) per member; it would "
                "normalize a lone state with its own statistics (to zero). Act through "
                "rlnorm.acting(...) or the RolloutManager, which run the policy in eval mode; "
                "train on batches of at least 2 per member."
            )


def _register_statistics(
    layer: nn.Module, members: int, features: int, eps: float, factory: dict[str, Any]
) -> None:
    """``running_mean``/``running_var`` ``[K, F]``, the shared ``num_batches_tracked``, and
    ``last_mean``/``last_invstd`` ``[K, F]`` (:class:`rlnorm.layers.LastBatch`)."""
    shape = (members, features)
    layer.register_buffer("running_mean", torch.zeros(shape, **factory))
    layer.register_buffer("running_var", torch.ones(shape, **factory))
    layer.register_buffer(
        "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=factory.get("device"))
    )
    layer.register_buffer("last_mean", torch.zeros(shape, **factory))
    layer.register_buffer("last_invstd", torch.full(shape, (1 + eps) ** -0.5, **factory))


class MemberBatchNorm1d(MemberBatchGuard, LastBatch, MemberModule):
    """K BatchNorm1d (``rlnorm.layers.GuardedBatchNorm1d`` or torch's) over ``[K, B, F]``.

    Statistics are taken over the sample dimension, per member and feature: the input is
    laid out as ``[B, K * F]`` and run through torch's batch-norm kernel, whose channels
    are then the (member, feature) pairs, so no statistic crosses members. The running
    statistics are updated in place through ``[K * F]`` views (unbiased variance, as torch
    does); ``momentum=None`` averages over all batches (factor ``1 / num_batches_tracked``,
    torch's rule). ``last_mean``/``last_invstd`` record each train-mode batch.
    """

    shared_buffers = ("num_batches_tracked",)
    optional_buffers = ("last_mean", "last_invstd")
    running_mean: torch.Tensor | None
    running_var: torch.Tensor | None
    num_batches_tracked: torch.Tensor | None

    def __init__(
        self,
        members: int,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(members)
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        shape = (members, num_features)
        self.weight = nn.Parameter(torch.ones(shape, **factory)) if affine else None
        self.bias = nn.Parameter(torch.zeros(shape, **factory)) if affine else None
        if track_running_stats:
            _register_statistics(self, members, num_features, eps, factory)
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)
            self.register_buffer("last_mean", torch.zeros(shape, **factory))
            self.register_buffer("last_invstd", torch.full(shape, (1 + eps) ** -0.5, **factory))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.check_members(input, exact_dim=3)
        if self.training:
            self.check_batch(input)
        if self.training and (mask := active_mask(input)) is not None:
            return masked_batch_norm(self, input, mask)
        if not self.training and self.running_mean is not None and self.running_var is not None:
            return running_affine(
                input, self.running_mean, self.running_var, self.eps, self.weight, self.bias
            )
        k, b, f = input.shape
        flat = input.transpose(0, 1).reshape(b, k * f)
        weight = None if self.weight is None else self.weight.view(-1)
        bias = None if self.bias is None else self.bias.view(-1)
        if self.running_mean is None or self.running_var is None:
            out = F.batch_norm(flat, None, None, weight, bias, True, 0.0, self.eps)
        else:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            # torch's rule: momentum None is a cumulative average over the batches seen
            factor = (
                1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            )
            running = (self.running_mean.view(-1), self.running_var.view(-1))
            out, mean, invstd = torch.native_batch_norm(
                flat, weight, bias, *running, True, factor, self.eps
            )
            with torch.no_grad():
                self.record_batch(mean.view(k, f), invstd.view(k, f))
        return out.view(b, k, f).transpose(0, 1)

    def extra_repr(self) -> str:
        return (
            f"members={self.members}, {self.num_features}, eps={self.eps}, "
            f"momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


class MemberBatchRenorm1d(MemberBatchGuard, LastBatch, MemberModule):
    """K :class:`rlnorm.layers.BatchRenorm1d` over ``[K, B, F]``: the same formula per
    member (batch statistics over the sample dimension, r and d clipped towards the
    member's running statistics), one shared ``num_batches_tracked`` and so one schedule
    (:meth:`clip_limits`) for all members."""

    shared_buffers = ("num_batches_tracked",)
    optional_buffers = ("last_mean", "last_invstd")
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(
        self,
        members: int,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.01,
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_steps: int = 1_000,
        relax_steps: int = 5_000,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(members)
        factory = {"device": device, "dtype": dtype}
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.r_max, self.d_max = r_max, d_max
        self.warmup_steps, self.relax_steps = warmup_steps, relax_steps
        self.weight = nn.Parameter(torch.ones(members, num_features, **factory))
        self.bias = nn.Parameter(torch.zeros(members, num_features, **factory))
        _register_statistics(self, members, num_features, eps, factory)

    def clip_limits(self) -> tuple[float, float]:
        """The ``(r_max, d_max)`` for the next train-mode pass (``(1, 0)`` during warm-up)."""
        return renorm_clip_limits(self, int(self.num_batches_tracked))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.check_members(input, exact_dim=3)
        if not self.training:
            return running_affine(
                input, self.running_mean, self.running_var, self.eps, self.weight, self.bias
            )
        self.check_batch(input)
        mask = active_mask(input)
        if mask is None:  # the kernel on [B, K * F], as MemberBatchNorm1d
            k, b, f = input.shape
            flat = input.transpose(0, 1).reshape(b, k * f)
            out, mean, invstd = renorm_pass(
                self,
                flat,
                self.weight.view(-1),
                self.bias.view(-1),
                self.running_mean.view(-1),
                self.running_var.view(-1),
            )
            with torch.no_grad():
                self.record_batch(mean.view(k, f), invstd.view(k, f))
            return out.view(b, k, f).transpose(0, 1)
        # each member's real samples only (rlnorm.sample_mask)
        batch_mean, batch_var, count = masked_moments(input, mask)
        batch_std, r, d = renorm_step(self, batch_mean, batch_var, count)
        x_hat = (input - batch_mean[:, None]) / batch_std[:, None]
        x_hat = x_hat * r[:, None] + d[:, None]
        return x_hat * self.weight[:, None] + self.bias[:, None]

    def extra_repr(self) -> str:
        return (
            f"members={self.members}, {self.num_features}, momentum={self.momentum}, "
            f"r_max={self.r_max}, d_max={self.d_max}, warmup_steps={self.warmup_steps}, "
            f"relax_steps={self.relax_steps}"
        )
