"""Normalization layers that torch lacks or gets unsafe, for the registry in :mod:`rlnorm.norm`."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rlnorm.errors import NormalizationError


class BatchGuard:
    """Mixin for batch-dependent layers: refuse a train-mode batch without statistics.

    A train-mode batch of one (``(1, C)``, ``(1, C, L)``) or an unbatched ``(C,)`` state
    means a policy is being run in train mode on a lone state, the source post's first
    failure: its own statistics would normalize it to zero (torch either raises an opaque
    error or, for ``(1, C, L)``, silently normalizes over ``L``). Raise instead, naming the
    layer and the fix.
    """

    #: Set by :func:`rlnorm.safety.label_layers` to the layer's path inside its agent.
    rlnorm_path: str = ""

    def check_batch(self, input: torch.Tensor) -> None:
        batch = input.shape[0] if input.dim() in (2, 3) else 1
        if input.dim() not in (2, 3) or batch < 2:
            where = self.rlnorm_path or type(self).__name__
            raise NormalizationError(
                f"{where}: train-mode {type(self).__name__} got input of shape "
                f"{tuple(input.shape)}, a batch of {batch} sample(s); it would normalize a "
                "lone state with its own statistics (to zero). Act through rlnorm.acting(...) "
                "or the RolloutManager, which run the policy in eval mode; train on batches "
                "of at least 2."
            )


class LastBatch:
    """Mixin for layers with running statistics: remember how the last train-mode batch
    was normalized.

    ``last_mean`` and ``last_invstd`` hold the per-feature mean and inverse standard
    deviation ``1 / sqrt(var + eps)`` (biased variance) with which the layer normalized its
    latest train-mode batch, exactly as train mode did, to compare with what eval mode uses,
    the running statistics (:func:`rlnorm.diagnostics.stat_drift`). Before the first
    train-mode pass they equal the initial running statistics. They are persistent buffers,
    so a checkpoint carries them and ``rlnorm audit CHECKPOINT`` can report the drift.
    """

    last_mean: torch.Tensor
    last_invstd: torch.Tensor

    def register_last_batch(self, num_features: int, eps: float, **factory: Any) -> None:
        """Create the two buffers (call from ``__init__``)."""
        invstd = torch.full((num_features,), (1 + eps) ** -0.5, **factory)
        self.register_buffer("last_mean", torch.zeros(num_features, **factory))  # type: ignore[attr-defined]
        self.register_buffer("last_invstd", invstd)  # type: ignore[attr-defined]

    def record_batch(self, mean: torch.Tensor, invstd: torch.Tensor) -> None:
        """Store a batch's mean and inverse standard deviation (under ``torch.no_grad()``)."""
        self.last_mean.copy_(mean)
        self.last_invstd.copy_(invstd)


class GuardedBatchNorm1d(BatchGuard, LastBatch, nn.BatchNorm1d):
    """torch's BatchNorm1d with the :class:`BatchGuard` check in train mode, recording
    how each train-mode batch was normalized (:class:`LastBatch`).

    The train-mode pass calls the kernel beneath ``F.batch_norm``
    (``torch.native_batch_norm``), which also returns the batch's mean and inverse standard
    deviation, so recording them costs two small copies; on CPU the output, the running
    statistics and the gradients are bit-identical to torch's BatchNorm1d. Eval mode and
    layers without running statistics run torch's own forward.
    """

    def __init__(self, num_features: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(num_features, *args, **kwargs)
        factory = {k: kwargs[k] for k in ("device", "dtype") if k in kwargs}
        self.register_last_batch(num_features, self.eps, **factory)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(input)
        self.check_batch(input)
        if self.running_mean is None or self.num_batches_tracked is None:
            return super().forward(input)
        self._check_input_dim(input)
        self.num_batches_tracked.add_(1)
        # torch's rule: momentum None is a cumulative average over the batches seen
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        output, mean, invstd = torch.native_batch_norm(
            input,
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
            True,
            factor,
            self.eps,
        )
        with torch.no_grad():
            self.record_batch(mean, invstd)
        return output


def renorm_clip_limits(layer: Any, passes: int) -> tuple[float, float]:
    """Batch Renorm's ``(r_max, d_max)`` for the next train-mode pass of ``layer`` (its
    ``warmup_steps``, ``relax_steps``, ``r_max``, ``d_max``) after ``passes`` passes."""
    # passes after warm-up, this one included; the first warmup_steps passes are warm-up
    past = passes - layer.warmup_steps + 1
    if past <= 0:
        return 1.0, 0.0
    frac = 1.0 if layer.relax_steps == 0 else min(1.0, past / layer.relax_steps)
    return 1.0 + (layer.r_max - 1.0) * frac, layer.d_max * frac


def renorm_step(
    layer: Any, batch_mean: torch.Tensor, batch_var: torch.Tensor, n: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One train-mode pass of Batch Renorm's bookkeeping from given batch statistics
    (``(K, C)``; the member-batched layer's masked pass, whose members count different
    samples; :func:`renorm_pass` is the kernel path): the batch's
    standard deviation (with gradient) and the corrections ``r`` and ``d`` (without), after
    moving the running statistics towards the batch of ``n`` samples per feature and
    recording it (:class:`LastBatch`)."""
    batch_std = torch.sqrt(batch_var + layer.eps)
    running_std = torch.sqrt(layer.running_var + layer.eps)
    r_max, d_max = layer.clip_limits()
    with torch.no_grad():
        r = (batch_std / running_std).clamp(1.0 / r_max, r_max)
        d = ((batch_mean - layer.running_mean) / running_std).clamp(-d_max, d_max)
        # momentum None: cumulative average over every batch, as in torch's BatchNorm
        weight: float | torch.Tensor = (
            1.0 / (layer.num_batches_tracked + 1).to(batch_mean.dtype)
            if layer.momentum is None
            else layer.momentum
        )
        for running, batch in (
            (layer.running_mean, batch_mean),
            (layer.running_var, _unbiased(batch_var, n)),
        ):
            running.lerp_(batch, weight)
        layer.num_batches_tracked += 1
        layer.record_batch(batch_mean, batch_std.reciprocal())
    return batch_std, r, d


def _unbiased(var: torch.Tensor, n: float | torch.Tensor) -> torch.Tensor:
    """A batch's biased variance with Bessel's correction, ``var * n / (n - 1)``, for a batch
    of ``n`` samples (per member: ``[K, 1]``)."""
    if isinstance(n, torch.Tensor):
        return var * n / (n - 1).clamp_min(1)
    return var * n / max(n - 1, 1)


def renorm_pass(
    layer: Any,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One train-mode Batch Renorm pass over ``(N, C)`` or ``(N, C, L)`` through torch's
    batch-norm kernel, for :class:`BatchRenorm1d` and its member-batched twin (which passes
    its ``[K, F]`` parameters and statistics as ``[K * F]`` views). Returns the output and
    the batch's mean and inverse standard deviation.

    With ``r`` and ``d`` constants, ``gamma * (x_hat * r + d) + beta`` is batch norm with
    weight ``gamma * r`` and bias ``gamma * d + beta``, so the kernel's gradient (through the
    batch statistics) is Batch Renorm's. The kernel also moves the running statistics as
    :func:`renorm_step` does (unbiased variance, the same momentum rule); ``r`` and ``d``
    are computed from the statistics before it. One fused pass instead of a dozen
    elementwise ops and ``torch.var`` (slow on CPU); it halved the update of 8 stacked
    CrossQ members (``benchmarks/results/seed_population.md``). During warm-up (``r = 1``,
    ``d = 0``) it is the kernel alone."""
    r_max, d_max = layer.clip_limits()
    plain = r_max == 1.0 and d_max == 0.0
    with torch.no_grad():
        old_mean, old_std = running_mean.clone(), (running_var + layer.eps).sqrt_()
    # momentum None: cumulative average over every batch, as in torch's BatchNorm
    factor = (
        1.0 / float(layer.num_batches_tracked + 1) if layer.momentum is None else layer.momentum
    )
    out, mean, invstd = torch.native_batch_norm(
        input,
        weight if plain else None,
        bias if plain else None,
        running_mean,
        running_var,
        True,
        factor,
        layer.eps,
    )
    layer.num_batches_tracked += 1
    if plain:
        return out, mean, invstd
    with torch.no_grad():
        r = (invstd.reciprocal() / old_std).clamp_(1.0 / r_max, r_max)
        d = ((mean - old_mean) / old_std).clamp_(-d_max, d_max)
    shape = (1, -1, 1) if input.dim() == 3 else (1, -1)
    scale, shift = (weight * r).view(shape), torch.addcmul(bias, weight, d).view(shape)
    return torch.addcmul(shift, out, scale), mean, invstd


class BatchRenorm1d(BatchGuard, LastBatch, nn.Module):
    """Batch Renormalization (Ioffe 2017) over ``(N, C)`` or ``(N, C, L)`` inputs.

    Train mode normalizes with the batch statistics corrected towards the running ones::

        r = clip(sigma_B / sigma, 1 / r_max, r_max)
        d = clip((mu_B - mu) / sigma, -d_max, d_max)
        y = gamma * ((x - mu_B) / sigma_B * r + d) + beta      (r, d without gradient)

    so that, when the clips are inactive, the train-mode output equals the eval-mode output
    ``gamma * (x - mu) / sigma + beta``, while gradients still see the batch statistics.
    Eval mode uses the running statistics only.

    Schedule (counted in train-mode forward passes, ``num_batches_tracked``): for
    ``warmup_steps`` it is plain BatchNorm (r = 1, d = 0) while the running statistics
    settle; then ``r_max`` grows linearly from 1 and ``d_max`` from 0 to their final values
    over ``relax_steps``. Defaults: Ioffe's final clips (3, 5) and CrossQ's momentum (0.01);
    a warm-up of 1,000 passes and a relaxation of 5,000 instead of the paper's 5k and 40k
    (25k for d) because RL runs make ~10^4 updates, not ImageNet's 10^5-10^6: with the
    paper's schedule a CartPole run would end inside it. A warm-up longer than the run
    makes the layer plain BatchNorm throughout; :func:`rlnorm.audit.audit` reports that.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.01,
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_steps: int = 1_000,
        relax_steps: int = 5_000,
    ) -> None:
        super().__init__()
        if r_max < 1 or d_max < 0 or warmup_steps < 0 or relax_steps < 0:
            raise ValueError("BatchRenorm1d needs r_max >= 1, d_max >= 0 and non-negative steps")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.r_max, self.d_max = r_max, d_max
        self.warmup_steps, self.relax_steps = warmup_steps, relax_steps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.register_last_batch(num_features, eps)

    def clip_limits(self) -> tuple[float, float]:
        """The ``(r_max, d_max)`` for the next train-mode pass (``(1, 0)`` during warm-up)."""
        return renorm_clip_limits(self, int(self.num_batches_tracked))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(
                input,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                False,
                0.0,
                self.eps,
            )
        self.check_batch(input)
        out, mean, invstd = renorm_pass(
            self, input, self.weight, self.bias, self.running_mean, self.running_var
        )
        with torch.no_grad():
            self.record_batch(mean, invstd)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, momentum={self.momentum}, r_max={self.r_max}, "
            f"d_max={self.d_max}, warmup_steps={self.warmup_steps}, relax_steps={self.relax_steps}"
        )


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich 2019): ``x / sqrt(mean(x^2) + eps) * weight``, per sample.

    No mean subtraction and no bias; one path in train and eval mode. (torch's own
    ``nn.RMSNorm`` needs torch >= 2.4; rlnorm supports 2.3.)
    """

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input * torch.rsqrt(input.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class CosineLinear(nn.Module):
    """Cosine normalization (Luo et al. 2018): the pre-activation is the cosine similarity
    between the input and each weight vector, times a learnable scalar ``scale``.

    ``y_j = scale * <w_j, x> / (|w_j| |x| + eps)``: bounded in ``[-scale, scale]`` whatever
    the magnitudes of ``x`` and ``w_j``. ``CosineLinear(in, out)`` is the paper's layer
    (no bias, ``scale`` starting at 1). :meth:`for_mlp`, what rlnorm's ``cosine`` norm
    builds, adds two things without which PPO did not learn CartPole-v1 (measured, seed 0,
    150k steps: 98.5 with the paper's layer, 125.2 with only the scale change, 500 with
    only the constant input, 500 with both, and 500 on seed 1 with both):

    - **a constant input** (``bias=True``): the cosine is taken between ``(w_j, b_j)`` and
      ``(x, 1)``, so ``y_j = scale * (<w_j, x> + b_j) / (|(w_j, b_j)| |(x, 1)| + eps)``.
      Without it the layer sees only the *direction* of its input: for the first layer,
      the states ``x`` and ``100 x`` are the same input, and a near-upright CartPole state
      (all entries ~0.01) has the same features as a falling one pointing the same way.
      A value function, which depends on how far the state is from failure, cannot be
      represented, and the direction of a state near 0 jumps with noise. Against the
      constant axis the angle of ``(x, 1)`` encodes ``|x|``; the output stays bounded.
    - **``scale`` initialized to** ``sqrt(fan_in)`` (``fan_in`` counting the constant):
      ``scale`` is one learnable gain per layer, the only thing that sets the size of the
      pre-activations. A weight direction and an input direction that are unrelated, as at
      initialization, have a cosine of mean 0 and variance ``1 / fan_in``; ``scale =
      sqrt(fan_in)`` gives pre-activations of unit variance, as a variance-preserving
      (LeCun or orthogonal) init gives a plain Linear, so a following tanh starts in its
      non-linear range. With ``scale = 1`` a 64-wide layer's pre-activations have a
      standard deviation of ~1/8: the tanh is linear, every unit is nearly the same small
      function, and Adam (steps of ~lr per update on a scalar) did not grow ``scale`` in
      time (it ended at 0.8-1.8 after 150k steps; with the new init it ends at 2.3-3.0
      and 8.5-9.5 in the two layers, near where it started).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        scale_init: float = 1.0,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.eps = in_features, out_features, eps
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    @classmethod
    def for_mlp(cls, in_features: int, out_features: int) -> CosineLinear:
        """The hidden layer of rlnorm's ``cosine`` norm: a constant input and unit-variance
        pre-activations at initialization (``scale = sqrt(in_features + 1)``); see above."""
        return cls(in_features, out_features, bias=True, scale_init=math.sqrt(in_features + 1))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        dots = F.linear(input, self.weight, self.bias)
        if self.bias is None:
            norms = input.norm(dim=-1, keepdim=True) * self.weight.norm(dim=-1)
        else:  # |(x, 1)| |(w_j, b_j)|
            x_norm = (input.pow(2).sum(-1, keepdim=True) + 1).sqrt()
            norms = x_norm * (self.weight.pow(2).sum(-1) + self.bias.pow(2)).sqrt()
        return self.scale * dots / (norms + self.eps)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


def weight_normed_linear(in_features: int, out_features: int) -> nn.Linear:
    """A Linear whose weight is ``g * v / |v|`` per output row (Salimans & Kingma 2016)."""
    return nn.utils.parametrizations.weight_norm(nn.Linear(in_features, out_features))


def running_affine(
    input: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """Eval-mode normalization of ``[K, B, F]`` with running statistics ``[K, F]``, as one
    per-member affine map ``x * scale + shift`` (the statistics and the affine parameters
    folded on ``[K, F]`` first): one op over the batch where the kernel's ``[B, K * F]``
    layout would cost two copies and a batch-norm pass (acting, and PPO's updates on frozen
    statistics, run this path)."""
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    return torch.addcmul(shift.unsqueeze(1), input, scale.unsqueeze(1))
