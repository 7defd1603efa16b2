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

Every metric name is a constant of :mod:`rlnorm.metrics`; the stream gap lives in
:mod:`rlnorm.streams`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from rlnorm import norm as norms
from rlnorm.metrics import (
    DRIFT_LOG_VAR,
    DRIFT_MEAN,
    GAP_OUTPUT,
    as_floats,
    per_layer,
)
from rlnorm.norm import Modules, named_roots, statistics_layers
from rlnorm.safety import train_and_eval_outputs
from rlnorm.streams import StreamWatch, stream_gap_tensors, stream_layers

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
    return as_floats(_stat_drift(statistics_layers(modules)))


# -- for a learner --------------------------------------------------------------------------


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
        self._stream_norms = stream_layers(self.modules)
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
        values |= stream_gap_tensors(self._stream_norms, watch)
        return as_floats(values)
