"""How far apart several input streams' normalization statistics are.

The post's third bug is two distributions through one set of BatchNorm statistics. Two
places show it: the running statistics of per-stream layers (``mlp(..., streams=k)``), and
the batch statistics that a :class:`StreamWatch` sees pass through one layer during an
update (separate passes, or the inputs of one :func:`rlnorm.nets.joint_forward`).
:func:`stream_gap` measures both; :mod:`rlnorm.diagnostics` logs it, :mod:`rlnorm.audit`
turns it into findings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rlnorm import norm as norms
from rlnorm.member_layers import MemberModule
from rlnorm.metrics import STREAM_GAP, as_floats, per_layer
from rlnorm.nets import StreamNorm, joint_sizes
from rlnorm.norm import Modules, named_layers, statistics_layers


def _batch_statistics(input: torch.Tensor, eps: float, members: bool = False) -> torch.Tensor:
    """Per-feature mean and inverse standard deviation ``1 / sqrt(var + eps)`` (biased),
    stacked ``(2, C)``, of an ``(N, C)`` or ``(N, C, L)`` batch: what BatchNorm's train mode
    computes. Two passes: as accurate as ``torch.var_mean`` and, reducing over the batch
    dimension, several times faster on CPU. With ``members``, a member-batched ``(K, N, C)``
    batch: statistics over N, per member and feature, stacked ``(2, K * C)``."""
    dims = (1,) if members else (0, 2) if input.dim() == 3 else (0,)
    mean = input.mean(dims, keepdim=True)
    var = (input - mean).square().mean(dims)
    return torch.stack((mean.flatten(), (var + eps).rsqrt().flatten()))


def _max_pair_gap(
    mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor, eps: float, pairs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest noise-corrected distance between two rows of per-feature statistics.

    ``mean``, ``var``: ``(K, F)`` estimates from ``count[k]`` samples each (``inf``: exact);
    ``pairs``: ``(K, K)`` bool, the pairs to compare. Returns ``(gap, noise)`` for the pair
    with the largest gap, ``noise`` being the squared distance sampling alone would give.
    """
    pooled = (var[:, None] + var[None]) / 2 + eps
    log_var = torch.log(var + eps)
    squared = (mean[:, None] - mean[None]).pow(2) / pooled
    squared = (squared + (log_var[:, None] - log_var[None]).pow(2) / 2).mean(-1)
    # E[(mean_a - mean_b)^2] = v_a/n_a + v_b/n_b; Var(log of a sample variance) ~ 2/(n - 1)
    sampling = var / count[:, None]
    noise = ((sampling[:, None] + sampling[None]) / pooled).mean(-1)
    noise = noise + (1 / (count - 1))[:, None] + (1 / (count - 1))[None]
    excess = (squared - noise).clamp_min(0).masked_fill(~pairs, -1.0).flatten()
    best = excess.argmax()
    return excess[best].clamp_min(0).sqrt(), noise.flatten()[best]


@dataclass(frozen=True)
class StreamStats:
    """What a :class:`StreamWatch` saw of one layer.

    Attributes:
        calls: train-mode passes through the layer while watched.
        joint: whether a pass was a :func:`rlnorm.nets.joint_forward` of several inputs.
        gap: the largest noise-corrected distance between the batch statistics of two
            separate passes, or of two inputs of one joint pass (0: one distribution).
        noise: the squared distance sampling alone would give for that pair; a gap whose
            square is well above it is not noise.
    """

    calls: int
    joint: bool
    gap: float
    noise: float


class StreamWatch:
    """Watch every train-mode pass through the batch-norm-like layers of ``modules``.

    A context manager; use it around an update. A layer's running statistics converge to
    the average of everything it normalizes in train mode. When that is one distribution
    (PPO's minibatches of one rollout), its passes' batch statistics differ by sampling
    noise only; when separate passes carry different distributions (a critic's (s, a) and
    (s', a') in two calls, real and fake samples in turn) the running statistics become a
    mixture that no stream has: the source post's third failure.

    Each pass's per-feature mean and variance are recorded (for rlnorm's layers derived
    from ``last_mean``/``last_invstd``, without another pass over the batch). Inside
    :func:`rlnorm.nets.joint_forward` the merged batch is split back into its inputs, which
    are then known streams. The distance between two recorded batches is
    ``sqrt(mean_f[(mu_a - mu_b)^2 / v + (log v_a - log v_b)^2 / 2])`` with ``v`` the mean of
    the two variances (about sqrt(2 KL) for close Gaussians: 1 for a shift of one standard
    deviation, 0.98 for a factor 2 in scale), minus what sampling alone gives, so that
    batches of one distribution give nearly 0 whatever their size (up to about 0.2, the
    largest of many pairs of a few hundred rows, where features are strongly correlated).

    On a member-batched layer (:mod:`rlnorm.members`, input ``[K, B, F]``) each pass's
    statistics are per member and feature and the distance averages over both: a gap
    between two passes is their distance pooled over the members (the members' own
    distributions are never compared with each other).

    Limits: it sees passes, not streams: separate passes are compared pairwise, so it finds
    that a layer saw several distributions, not which caller sent which. A distribution
    that changes within the watched window looks like several streams. The noise correction
    assumes roughly Gaussian features and independent rows: heavy tails or repeated rows
    leave a small positive gap. Only the first ``max_calls`` passes per layer are kept.
    The hooks cost microseconds per pass and exist only while the watch is active.
    """

    def __init__(self, modules: Modules, max_calls: int = 64) -> None:
        self.layers = statistics_layers(modules)
        self.max_calls = max_calls
        self.calls = dict.fromkeys(self.layers, 0)
        self._joint: set[str] = set()
        # per layer: (stacked mean and inverse std, samples, group); group -1: a separate
        # pass, compared with every other separate pass; group g >= 0: one input of joint
        # pass g, compared with the other inputs of that pass only.
        self._records: dict[str, list[tuple[torch.Tensor, float, int]]] = {
            p: [] for p in self.layers
        }
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> StreamWatch:
        self._handles = [m.register_forward_hook(self._hook(p)) for p, m in self.layers.items()]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, path: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        records = self._records[path]

        def hook(layer: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if not layer.training:
                return
            self.calls[path] += 1
            x = args[0]
            if len(records) >= self.max_calls or x.dim() not in (2, 3):
                return
            # samples along dim 0 (and L of (N, C, L)); a member layer's [K, B, F]: dim 1
            members = isinstance(layer, MemberModule)
            dim, per_row = (1, 1) if members else (0, math.prod(x.shape[2:]))
            eps = getattr(layer, "eps", 1e-5)
            sizes = joint_sizes()
            if sizes is not None and len(sizes) > 1 and sum(sizes) == x.shape[dim]:
                self._joint.add(path)
                with torch.no_grad():
                    for part in x.split(sizes, dim):
                        if part.shape[dim] * per_row >= 2:
                            stats = _batch_statistics(part, eps, members)
                            records.append((stats, part.shape[dim] * per_row, self.calls[path]))
            elif getattr(layer, "last_mean", None) is not None:
                stats = torch.stack(
                    (
                        norms.buffer(layer, "last_mean").flatten(),
                        norms.buffer(layer, "last_invstd").flatten(),
                    )
                )
                records.append((stats, x.shape[dim] * per_row, -1))
            else:
                with torch.no_grad():
                    stats = _batch_statistics(x, eps, members)
                    records.append((stats, x.shape[dim] * per_row, -1))

        return hook

    def _gaps(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        gaps = {}
        for path, records in self._records.items():
            groups = torch.tensor([r[2] for r in records])
            pairs = (groups[:, None] == groups[None]).triu(diagonal=1)
            if not bool(pairs.any()):
                continue
            stats = torch.stack([r[0] for r in records])
            eps = getattr(self.layers[path], "eps", 1e-5)
            count = torch.tensor([r[1] for r in records], device=stats.device)
            # unbiased variances from the inverse standard deviations (biased, eps added)
            var = (stats[:, 1].pow(-2) - eps) * (count / (count - 1))[:, None]
            gaps[path] = _max_pair_gap(stats[:, 0], var, count, eps, pairs.to(stats.device))
        return gaps

    def results(self) -> dict[str, StreamStats]:
        """Per watched layer that saw at least two batches to compare, what it saw."""
        return {
            path: StreamStats(self.calls[path], path in self._joint, gap.item(), noise.item())
            for path, (gap, noise) in self._gaps().items()
        }


def stream_layers(modules: Modules) -> dict[str, list[nn.Module]]:
    """Per-stream layers with two or more statistics-keeping members, by path."""
    found = {}
    for path, layer in named_layers(modules):
        if isinstance(layer, StreamNorm):
            members = [m for m in layer if norms.uses_running_statistics(m)]
            if len(members) >= 2:
                found[path] = members
    return found


def stream_gap_tensors(
    stream_norms: dict[str, list[nn.Module]], watch: StreamWatch | None
) -> dict[str, torch.Tensor]:
    gaps: dict[str, torch.Tensor] = {}
    for path, members in stream_norms.items():
        # flattened: a member-batched layer's [K, F] statistics count as K * F features
        mean = torch.stack([norms.buffer(m, "running_mean").flatten() for m in members])
        var = torch.stack([norms.buffer(m, "running_var").flatten() for m in members])
        pairs = torch.ones(len(members), len(members), dtype=torch.bool, device=mean.device)
        eps = getattr(members[0], "eps", 1e-5)
        exact = torch.full((len(members),), math.inf, device=mean.device)
        gaps[path] = _max_pair_gap(mean, var, exact, eps, pairs.triu(1))[0]
    if watch is not None:
        gaps |= {path: gap for path, (gap, _) in watch._gaps().items()}
    if not gaps:
        return {}
    return {STREAM_GAP: torch.stack(list(gaps.values())).max()} | {
        per_layer(STREAM_GAP, p): g for p, g in gaps.items()
    }


def stream_gap(modules: Modules, watch: StreamWatch | None = None) -> dict[str, float]:
    """How far apart the statistics of the streams reaching each normalization layer are.

    - For every per-stream layer (:class:`rlnorm.nets.StreamNorm`, ``mlp(..., streams=k)``):
      the largest distance between two streams' running statistics (the distance of
      :class:`StreamWatch`, exact statistics so no noise correction). Large is not a bug:
      it is why these streams need their own statistics.
    - With ``watch``, for every layer it saw normalize two or more batches: the largest
      noise-corrected distance between them (~0 for batches of one distribution). For a
      layer with shared statistics reached by separate passes, a large value means its
      running statistics are a mixture of distributions no stream has.

    Keys: ``norm/stream_gap/<path>`` per layer and ``norm/stream_gap``, the largest; empty
    when there is nothing to compare.
    """
    return as_floats(stream_gap_tensors(stream_layers(modules), watch))
