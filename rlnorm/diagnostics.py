"""Normalization diagnostics cheap enough to compute after every update.

Three measurements tell whether the network that acts is the network that trained:

- :func:`train_eval_gap`: how differently the acting networks compute in train and in eval
  mode on the same inputs (0 without a mode-dependent layer).
- :func:`stat_drift`: how far each batch-norm-like layer's running statistics (what it acts
  with) are from the last batch it normalized in train mode (what it last trained on).
- :func:`stream_gap`: how far apart several input streams' statistics are: the running
  statistics of per-stream layers (``mlp(..., streams=k)``), and the batch statistics that
  a :class:`StreamWatch` saw pass through one layer during an update (separate passes, or
  the inputs of one :func:`rlnorm.nets.joint_forward`).

:class:`NormDiagnostics` bundles them for a learner, every ``every`` updates, with a single
device synchronization per measurement. None of them changes a mode, a running statistic,
a parameter or a gradient.

Every ``norm/`` metric name is one of the constants below, used by the learner and the
agents alike: one name for one quantity, whichever agent logs it. ``docs/metrics.md`` is
their table (meaning, who logs it, when) with the names they replaced. A per-layer value is
the aggregate's name, ``/``, and the layer's path (``norm/drift/mean/actor.body.1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rlnorm import norm as norms
from rlnorm.nets import StreamNorm, joint_sizes
from rlnorm.safety import train_and_eval_outputs

# -- metric names ----------------------------------------------------------------------------

#: acting modules, train- vs eval-mode output (relative RMS): every agent, from the learner
GAP_OUTPUT = "norm/gap/output"
#: KL(train-mode policy || eval-mode policy) on PPO's first minibatch
GAP_POLICY_KL = "norm/gap/policy_kl"
#: the critic's train- vs eval-mode output (relative RMS) on its training inputs: off-policy
GAP_CRITIC = "norm/gap/critic"
#: running vs last-batch statistics over all layers, mean shift and log-variance ratio
DRIFT_MEAN = "norm/drift/mean"
DRIFT_LOG_VAR = "norm/drift/log_var"
#: the same over the critic's layers only, at the off-policy agents' own cadence
DRIFT_CRITIC_MEAN = "norm/drift/critic/mean"
DRIFT_CRITIC_LOG_VAR = "norm/drift/critic/log_var"
#: the largest distance between the statistics of streams reaching one layer
STREAM_GAP = "norm/stream_gap"
#: PPO's importance ratio on its first minibatch, before any gradient step
PPO_FIRST_RATIO = "norm/ppo/first_minibatch_ratio"
PPO_FIRST_CLIP_FRACTION = "norm/ppo/first_minibatch_clip_fraction"
PPO_FIRST_RATIO_DEVIATION = "norm/ppo/first_minibatch_ratio_deviation"  # mean |ratio - 1|
PPO_FIRST_MAX_RATIO_DEVIATION = "norm/ppo/first_minibatch_max_ratio_deviation"


def per_layer(name: str, path: str) -> str:
    """The metric ``name`` of one layer: ``per_layer(DRIFT_MEAN, "actor.body.1")``."""
    return f"{name}/{path}"


#: The modules to inspect: a module, a mapping of names to modules, an agent (anything
#: whose ``modules()`` returns such a mapping), or an iterable of modules.
Modules = nn.Module | Mapping[str, nn.Module] | Iterable[nn.Module] | Any


def named_roots(modules: Modules) -> dict[str, nn.Module]:
    """Name the module trees in ``modules``: a lone module is unprefixed (its layers are
    ``"1"``, ``"body.1"``), a mapping or an agent keeps its names (``"actor.body.1"``), an
    iterable of modules is named ``"0"``, ``"1"``, ..."""
    if isinstance(modules, nn.Module):
        return {"": modules}
    if isinstance(modules, Mapping):
        roots = dict(modules)
    elif callable(agent_modules := getattr(modules, "modules", None)):
        roots = dict(agent_modules())
    else:
        roots = {str(i): m for i, m in enumerate(modules)}
    for name, module in roots.items():
        if not isinstance(module, nn.Module):
            raise TypeError(f"{name!r}: expected torch.nn.Module, got {type(module).__name__}")
    return roots


def named_layers(modules: Modules) -> Iterator[tuple[str, nn.Module]]:
    """Every submodule of ``modules`` with its path, each module once."""
    seen: set[int] = set()
    for prefix, root in named_roots(modules).items():
        for path, module in root.named_modules(prefix=prefix):
            if id(module) not in seen:
                seen.add(id(module))
                yield path, module


def statistics_layers(modules: Modules) -> dict[str, nn.Module]:
    """The layers that normalize with running statistics in eval mode, by path (the
    registry decides which: :func:`rlnorm.norm.uses_running_statistics`)."""
    return {p: m for p, m in named_layers(modules) if norms.uses_running_statistics(m)}


# -- train/eval gap ----------------------------------------------------------------------


def _leaves(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, list | tuple):
        return [t for item in output for t in _leaves(item)]
    return []


def _flat(output: Any) -> torch.Tensor:
    return torch.cat([t.detach().flatten().float() for t in _leaves(output)])


def _mode_dependent(module: nn.Module) -> bool:
    return any((k := norms.kind_of(m)) is not None and k.mode_dependent for m in module.modules())


def _train_eval_gap(measured: list[nn.Module], total: int, inputs: torch.Tensor) -> torch.Tensor:
    """The mean gap over ``total`` modules, of which only ``measured`` can differ by mode."""
    gap = torch.zeros((), device=inputs.device)
    for module in measured:
        train_out, eval_out = (_flat(o) for o in train_and_eval_outputs(module, inputs))
        rms_diff = (train_out - eval_out).pow(2).mean().sqrt()
        gap = gap + rms_diff / (eval_out.pow(2).mean().sqrt() + 1e-12)
    return gap / max(total, 1)


def train_eval_gap(modules: Modules, inputs: torch.Tensor) -> float:
    """How differently ``modules`` compute in train mode and in eval mode on ``inputs``.

    For each module, ``rms(train_output - eval_output) / rms(eval_output)``, averaged over
    the modules: 0 when the two modes are one function, growing as BatchNorm's batch
    statistics part from its running ones. Scale-free, so a policy's logits and a critic's
    values count alike. A module without a mode-dependent norm layer counts 0 without
    being run (the registry's contract: one function in both modes, which
    ``tests/test_safety.py`` measures), so the measurement is free for such nets.

    Every module is called as ``module(inputs)``: pass the observations as the acting
    modules receive them, a batch of at least 2 (train-mode BatchNorm refuses a lone
    state). Without side effects (:func:`rlnorm.safety.train_and_eval_outputs`): modes,
    running statistics and autograd are untouched; only a module that also draws random
    numbers in train mode (dropout) would advance the RNG.
    """
    roots = list(named_roots(modules).values())
    return _train_eval_gap([m for m in roots if _mode_dependent(m)], len(roots), inputs).item()


# -- statistics drift ----------------------------------------------------------------------


def layer_drift(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(mean shift, log-variance ratio)`` between how ``layer`` normalized its last
    train-mode batch and its running statistics, averaged over features (see
    :func:`stat_drift`); ``None`` for a layer that does not record its batches (torch's own
    BatchNorm)."""
    if getattr(layer, "last_mean", None) is None:
        return None
    running_var = norms.buffer(layer, "running_var") + getattr(layer, "eps", 1e-5)
    mean_gap = norms.buffer(layer, "last_mean") - norms.buffer(layer, "running_mean")
    shift = (mean_gap.abs() * running_var.rsqrt()).mean()
    # log(var_batch + eps) = -2 log(invstd)
    log_gap = torch.log(running_var) + 2 * torch.log(norms.buffer(layer, "last_invstd"))
    return shift, log_gap.abs().mean()


def _stat_drift(layers: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    shifts: dict[str, torch.Tensor] = {}
    log_vars: dict[str, torch.Tensor] = {}
    for path, layer in layers.items():
        drift = layer_drift(layer)
        if drift is not None:
            shifts[path], log_vars[path] = drift
    if not shifts:
        return {}
    out = {DRIFT_MEAN: torch.stack(list(shifts.values())).mean()}
    out[DRIFT_LOG_VAR] = torch.stack(list(log_vars.values())).mean()
    out |= {per_layer(DRIFT_MEAN, p): v for p, v in shifts.items()}
    out |= {per_layer(DRIFT_LOG_VAR, p): v for p, v in log_vars.items()}
    return out


def stat_drift(modules: Modules) -> dict[str, float]:
    """How far each batch-norm-like layer's running statistics are from its last batch.

    The running statistics are what the layer normalizes with when acting; its last
    train-mode batch's statistics (``last_mean``/``last_invstd``, recorded by rlnorm's
    BatchNorm and Batch Renorm layers) are what it last trained with. Per layer, averaged
    over features:

    - ``norm/drift/mean/<path>``: ``|mean_batch - mean_running| / sqrt(var_running + eps)``,
      the batch mean's distance in running standard deviations;
    - ``norm/drift/log_var/<path>``: ``|log(var_batch + eps) - log(var_running + eps)|``
      (log 4 = 1.39: one variance is four times the other). ``var_batch`` is the biased
      variance train mode divides by, ``var_running`` averages unbiased ones, so a batch of
      ``n`` identical to the running statistics still shows ``log(n / (n - 1))``;

    and ``norm/drift/mean``, ``norm/drift/log_var``: their means over the layers. 0
    before a layer's first train-mode pass. Layers that do not record their batches
    (torch's own BatchNorm) are left out; empty without any layer.
    """
    return _floats(_stat_drift(statistics_layers(modules)))


# -- stream gap ----------------------------------------------------------------------------


def _batch_statistics(input: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-feature mean and inverse standard deviation ``1 / sqrt(var + eps)`` (biased),
    stacked ``(2, C)``, of an ``(N, C)`` or ``(N, C, L)`` batch: what BatchNorm's train mode
    computes. Two passes: as accurate as ``torch.var_mean`` and, reducing over the batch
    dimension, several times faster on CPU."""
    dims = (0, 2) if input.dim() == 3 else (0,)
    mean = input.mean(dims, keepdim=True)
    var = (input - mean).square().mean(dims)
    return torch.stack((mean.flatten(), (var + eps).rsqrt()))


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
            per_row = math.prod(x.shape[2:])
            eps = getattr(layer, "eps", 1e-5)
            sizes = joint_sizes()
            if sizes is not None and len(sizes) > 1 and sum(sizes) == x.shape[0]:
                self._joint.add(path)
                with torch.no_grad():
                    for part in x.split(sizes):
                        if part.shape[0] * per_row >= 2:
                            stats = _batch_statistics(part, eps)
                            records.append((stats, part.shape[0] * per_row, self.calls[path]))
            elif getattr(layer, "last_mean", None) is not None:
                stats = torch.stack(
                    (norms.buffer(layer, "last_mean"), norms.buffer(layer, "last_invstd"))
                )
                records.append((stats, x.shape[0] * per_row, -1))
            else:
                with torch.no_grad():
                    records.append((_batch_statistics(x, eps), x.shape[0] * per_row, -1))

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


def _stream_norms(modules: Modules) -> dict[str, list[nn.Module]]:
    """Per-stream layers with two or more statistics-keeping members, by path."""
    found = {}
    for path, layer in named_layers(modules):
        if isinstance(layer, StreamNorm):
            members = [m for m in layer if norms.uses_running_statistics(m)]
            if len(members) >= 2:
                found[path] = members
    return found


def _stream_gap(
    stream_norms: dict[str, list[nn.Module]], watch: StreamWatch | None
) -> dict[str, torch.Tensor]:
    gaps: dict[str, torch.Tensor] = {}
    for path, members in stream_norms.items():
        mean = torch.stack([norms.buffer(m, "running_mean") for m in members])
        var = torch.stack([norms.buffer(m, "running_var") for m in members])
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
    return _floats(_stream_gap(_stream_norms(modules), watch))


# -- for a learner --------------------------------------------------------------------------


def _floats(values: dict[str, torch.Tensor]) -> dict[str, float]:
    """Tensors to floats with one device synchronization."""
    if not values:
        return {}
    flat = torch.stack([v.reshape(()) for v in values.values()])  # all 0-d, one device
    return dict(zip(values, flat.tolist(), strict=True))


class NormDiagnostics:
    """The ``norm/`` scalars a learner logs for any agent, every ``every`` updates.

    Args:
        modules: all of the agent's modules (``agent.modules()``): drift and stream gaps.
        acting: the modules that act (``agent.acting_modules()``): the train/eval gap.
        every: measure on updates ``0, every, 2 * every, ...``.
        max_inputs: the train/eval gap uses at most this many input rows (evenly strided),
            so its cost does not grow with the number of environments.

    Usage, with ``update`` counting from 0::

        with training(*agent.modules().values()), diagnostics.watch(update):
            metrics = agent.update(batch, progress)
        metrics |= diagnostics.measure(update, observations)
    """

    def __init__(
        self, modules: Modules, acting: Modules, every: int = 4, max_inputs: int = 1024
    ) -> None:
        if every < 1 or max_inputs < 2:
            raise ValueError("NormDiagnostics needs every >= 1 and max_inputs >= 2")
        self.modules = named_roots(modules)
        self.every, self.max_inputs = every, max_inputs
        # The module trees are fixed: find their layers once, not at every measurement.
        acting_roots = list(named_roots(acting).values())
        self._acting = ([m for m in acting_roots if _mode_dependent(m)], len(acting_roots))
        self._statistics = statistics_layers(self.modules)
        self._stream_norms = _stream_norms(self.modules)
        #: the watch of the last measured update, for :func:`rlnorm.audit.audit`.
        self.last_watch: StreamWatch | None = None
        self._watched_update: int | None = None

    def due(self, update: int) -> bool:
        """Whether update number ``update`` (from 0) is measured."""
        return update % self.every == 0

    @contextmanager
    def watch(self, update: int) -> Iterator[StreamWatch | None]:
        """Around ``agent.update``: watch the norm layers' train-mode passes when due."""
        if not (self.due(update) and self._statistics):
            yield None
            return
        with StreamWatch(self.modules) as watch:
            self.last_watch, self._watched_update = watch, update
            yield watch

    def measure(self, update: int, inputs: torch.Tensor) -> dict[str, float]:
        """After the update: the train/eval gap on ``inputs`` (observations as the acting
        modules take them), the statistics drift and the stream gaps; ``{}`` when not due."""
        if not self.due(update):
            return {}
        step = max(1, -(-inputs.shape[0] // self.max_inputs))
        gap = _train_eval_gap(*self._acting, inputs[::step])
        values = {GAP_OUTPUT: gap} | _stat_drift(self._statistics)
        watch = self.last_watch if self._watched_update == update else None
        values |= _stream_gap(self._stream_norms, watch)
        return _floats(values)
