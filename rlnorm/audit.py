"""What is unsafe about the normalization of a set of networks, as a list of findings.

:func:`audit` inspects modules at rest (a module, a mapping of names to modules, or an
agent); :func:`audit_checkpoint` a saved checkpoint, through :func:`rlnorm.checkpoint.load`
(no unpickling). Each :class:`Finding` names the module path, what is wrong and a one-line
fix. What is looked for:

- error: NaN or inf in a parameter or buffer; a batch-dependent layer without running
  statistics (it normalizes with batch statistics in eval mode too);
- warning: mode-dependent norm layers left in train mode; running statistics never
  updated; settled exponential-average statistics far from the last train-mode batch
  (``DRIFT_SHIFT``, ``DRIFT_LOG_VAR``); a Batch Renorm warm-up longer than the run (info
  instead when the agent's config sets that warm-up, ``renorm_warmup_steps``: then it is a
  recorded choice, as CrossQ's sbx settings make it); with
  a :class:`rlnorm.streams.StreamWatch` of an update, shared statistics reached by
  separate passes of different distributions (``STREAM_GAP``);
- info: batch-dependent layers (safe only when acting in eval mode and training on
  batches); running statistics far from the last batch when that is expected: a cumulative
  average over the whole run (momentum None), or an exponential one still settling (fewer
  than 1/momentum passes); a Batch Renorm still inside its warm-up or relaxation.

Which layers are batch-dependent, mode-dependent or keep running statistics is the norm
registry's answer (:mod:`rlnorm.norm`), for rlnorm's layers and torch's alike.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from typing import Literal

import torch
from torch import nn

from rlnorm import checkpoint
from rlnorm import norm as norms
from rlnorm.agent import AgentLookup
from rlnorm.diagnostics import layer_drift
from rlnorm.layers import BatchRenorm1d
from rlnorm.member_layers import MemberBatchRenorm1d
from rlnorm.meta import CheckpointMeta
from rlnorm.norm import Modules, named_layers, named_roots
from rlnorm.streams import StreamWatch
from rlnorm.targets import TargetNetwork

Severity = Literal["error", "warning", "info"]
_RANK: dict[str, int] = {"error": 0, "warning": 1, "info": 2}

#: Drift warning: the last batch's mean is this many running standard deviations away
#: (mean over features) ...
DRIFT_SHIFT = 1.0
#: ... or its variance differs by this log-ratio (mean over features; log 4: a factor 4).
DRIFT_LOG_VAR = math.log(4)
#: Shared-statistics warning: separate passes this far apart (a shift of half a standard
#: deviation), and beyond sampling noise.
STREAM_GAP = 0.5
#: The agent-config key that sets Batch Renorm's warm-up (CrossQ's ``renorm_warmup_steps``).
RENORM_WARMUP_KEY = "renorm_warmup_steps"


@dataclass(frozen=True)
class Finding:
    """One thing the audit found.

    Attributes:
        severity: ``"error"`` (the network is broken), ``"warning"`` (it acts or trains
            differently from what its user likely expects) or ``"info"`` (a property to
            keep in mind).
        path: the module's path, e.g. ``"actor.body.1"``; ``""`` for a lone root module.
        message: what is wrong, with the numbers that show it.
        fix: one line saying what to do.
    """

    severity: Severity
    path: str
    message: str
    fix: str


def audit(
    obj: Modules, *, progress: float | None = None, watch: StreamWatch | None = None
) -> list[Finding]:
    """Audit the normalization of ``obj``: a module, a mapping of names to modules, or an
    agent (its ``modules()``). Findings are sorted errors first, then warnings, then info.

    Args:
        progress: the fraction of the run's planned updates done so far
            (``0 < progress <= 1``), which projects each Batch Renorm's train-mode pass
            count to the end of the run to tell whether the run ends inside its warm-up.
            The learner passes ``1 / planned updates`` after its first update. Layers
            inside a :class:`rlnorm.targets.TargetNetwork` are checked for non-finite
            values only: their statistics are copies of the online network's.
        watch: a :class:`rlnorm.streams.StreamWatch` that watched an update, to find
            shared statistics reached by separate passes of different distributions (a
            runtime property that modules at rest cannot show).
    """
    if progress is not None and not 0 < progress <= 1:
        raise ValueError(f"progress must be in (0, 1], got {progress}")
    roots = named_roots(obj)
    # A target network's buffers are copies of its online network's, which is audited.
    copies = {
        id(layer)
        for target in named_layers(roots)
        if isinstance(target[1], TargetNetwork)
        for layer in target[1].modules()
    }
    # A warm-up the agent's config sets is a recorded choice, not an accident of defaults.
    configured = getattr(getattr(obj, "config", None), RENORM_WARMUP_KEY, None)
    findings: list[Finding] = []
    for path, module in named_layers(roots):
        findings += _non_finite(path, module)
        kind = norms.kind_of(module)
        if kind is not None and id(module) not in copies:
            findings += _norm_layer(path, module, kind, progress, configured)
    findings += _train_mode(roots)
    if watch is not None:
        findings += _shared_statistics(watch)
    return sorted(findings, key=lambda f: _RANK[f.severity])


def _non_finite(path: str, module: nn.Module) -> list[Finding]:
    findings = []
    tensors = chain(
        (("parameter", n, t) for n, t in module.named_parameters(recurse=False)),
        (("buffer", n, t) for n, t in module.named_buffers(recurse=False)),
    )
    for what, name, tensor in tensors:
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
            continue
        nan, inf = int(tensor.isnan().sum()), int(tensor.isinf().sum())
        findings.append(
            Finding(
                "error",
                path,
                f"{what} {name!r} holds {nan} NaN and {inf} inf of {tensor.numel()} values",
                "go back to the last finite checkpoint and find the update that diverged "
                "(learning rate, gradient clipping, a zero-variance feature)",
            )
        )
    return findings


def _norm_layer(
    path: str,
    layer: nn.Module,
    kind: norms.NormKind,
    progress: float | None,
    configured_warmup: int | None = None,
) -> list[Finding]:
    name = f"{type(layer).__name__} (norm {kind.name!r})"
    findings = []
    if kind.batch_dependent:
        findings.append(
            Finding(
                "info",
                path,
                f"{name} is batch-dependent: in train mode each sample's output depends on "
                "the other samples of its batch",
                "act only through rlnorm.acting or the RolloutManager (eval mode); train on "
                "batches of dozens of samples, never one",
            )
        )
    if kind.mode_dependent and hasattr(layer, "running_mean") and layer.running_mean is None:
        findings.append(
            Finding(
                "error",
                path,
                f"{name} keeps no running statistics (track_running_stats=False), so it "
                "normalizes with the batch's own statistics in eval mode too: a lone state "
                "is normalized to zero",
                "build it with track_running_stats=True (rlnorm's norm='batch' does)",
            )
        )
    if norms.uses_running_statistics(layer):
        findings += _statistics(path, layer, name)
    if isinstance(layer, BatchRenorm1d | MemberBatchRenorm1d):
        findings += _renorm_schedule(path, layer, progress, configured_warmup)
    return findings


def _statistics(path: str, layer: nn.Module, name: str) -> list[Finding]:
    tracked = getattr(layer, "num_batches_tracked", None)
    running_mean, running_var = (
        norms.buffer(layer, "running_mean"),
        norms.buffer(layer, "running_var"),
    )
    at_init = bool((running_mean == 0).all() and (running_var == 1).all())
    if tracked is not None and int(tracked) == 0 and at_init:
        return [
            Finding(
                "warning",
                path,
                f"{name}: running statistics never updated (zero mean, unit variance, no "
                "train-mode batch seen): eval mode normalizes with values unrelated to the data",
                "run train-mode forward passes over representative data (inside "
                "rlnorm.training) before acting; every learner update does",
            )
        ]
    drift = layer_drift(layer)
    if drift is None or (tracked is not None and int(tracked) == 0):
        return []
    shift, log_var = (float(d) for d in drift)
    if not (shift > DRIFT_SHIFT or log_var > DRIFT_LOG_VAR):
        return []  # NaN drift comes with non-finite statistics, reported as an error
    numbers = (
        f"mean shift {shift:.2f} running std, log-variance ratio {log_var:.2f}, averaged "
        f"over {running_mean.numel()} features"
    )
    momentum = getattr(layer, "momentum", None)
    if tracked is not None and momentum is None:
        return [
            Finding(
                "info",
                path,
                f"{name}: its running statistics average all {int(tracked)} train-mode "
                f"batches and are far from the last one ({numbers}): eval mode normalizes "
                "recent data with statistics of the whole run",
                "harmless if the network trains with these statistics (frozen statistics, "
                "PPO's default); if it trains on batch statistics, use an exponential average",
            )
        ]
    # An exponential average with momentum m spans about 1/m batches: before that many,
    # its distance from the data is expected, not a sign of stale statistics.
    if tracked is not None and momentum and int(tracked) < 1 / momentum:
        return [
            Finding(
                "info",
                path,
                f"{name}: running statistics still settling ({int(tracked)} train-mode passes "
                f"of the ~{1 / momentum:.0f} that momentum {momentum} averages over) and far "
                f"from the last batch ({numbers})",
                "nothing to do if training goes on; a larger momentum settles faster",
            )
        ]
    return [
        Finding(
            "warning",
            path,
            f"{name}: running statistics are far from the last train-mode batch ({numbers}): "
            "eval mode normalizes recent data differently from train mode",
            "refresh the statistics with train-mode passes over current data (a larger "
            "momentum follows it faster), and check that the last batch was representative",
        )
    ]


def _renorm_schedule(
    path: str,
    layer: BatchRenorm1d | MemberBatchRenorm1d,
    progress: float | None,
    configured_warmup: int | None,
) -> list[Finding]:
    passes = int(layer.num_batches_tracked)
    warmup, full = layer.warmup_steps, layer.warmup_steps + layer.relax_steps
    if progress is None or passes == 0:
        if passes >= warmup:
            return []
        return [
            Finding(
                "info",
                path,
                f"Batch Renorm inside its warm-up: {passes} of {warmup} train-mode passes, "
                "plain BatchNorm (r = 1, d = 0) so far",
                f"make sure the run goes well past {warmup} train-mode passes, or shorten "
                "warmup_steps",
            )
        ]
    total = passes / progress
    if total <= warmup:
        chosen = configured_warmup == warmup
        return [
            Finding(
                "info" if chosen else "warning",
                path,
                f"Batch Renorm stays in its warm-up for the whole run, so it normalizes as "
                f"plain BatchNorm throughout: the warm-up lasts {warmup:,} train-mode passes "
                f"and the run makes about {total:,.0f}"
                + (f" (set by the config: agent.{RENORM_WARMUP_KEY}={warmup})" if chosen else ""),
                f"for Batch Renorm's correction, a warm-up well below {total:,.0f} passes ("
                + (
                    f"--set agent.{RENORM_WARMUP_KEY}=N"
                    if configured_warmup is not None
                    else "BatchRenorm1d(warmup_steps=N)"
                )
                + "), or a longer run",
            )
        ]
    if total < full:
        return [
            Finding(
                "info",
                path,
                f"Batch Renorm's clips reach r_max={layer.r_max}, d_max={layer.d_max} after "
                f"{full} train-mode passes; the run makes about {total:.0f}",
                "shorten relax_steps if the final clips matter",
            )
        ]
    return []


def _train_mode(roots: dict[str, nn.Module]) -> list[Finding]:
    findings = []
    for name, root in roots.items():
        layers = [
            p
            for p, m in root.named_modules(prefix=name)
            if m.training and (k := norms.kind_of(m)) is not None and k.mode_dependent
        ]
        if layers:
            shown = ", ".join(layers[:3]) + (", ..." if len(layers) > 3 else "")
            findings.append(
                Finding(
                    "warning",
                    name,
                    f"{len(layers)} mode-dependent norm layer(s) left in train mode ({shown}): "
                    "a forward pass outside rlnorm.acting normalizes with batch statistics, "
                    "a lone state to zero",
                    "put it in eval mode at rest (module.eval()) and act through "
                    "rlnorm.acting; rlnorm.load returns eval-mode modules",
                )
            )
    return findings


def _shared_statistics(watch: StreamWatch) -> list[Finding]:
    findings = []
    for path, seen in watch.results().items():
        # A joint pass normalizes all streams with one set of statistics in both modes.
        if seen.joint or seen.gap < STREAM_GAP or seen.gap**2 < seen.noise:
            continue
        findings.append(
            Finding(
                "warning",
                path,
                f"{seen.calls} separate train-mode passes normalized batches whose statistics "
                f"are {seen.gap:.2f} apart (0: one distribution; sampling noise "
                f"{math.sqrt(seen.noise):.2f}): streams of different distributions share "
                "these running statistics, which converge to a mixture no stream has",
                "give each stream its own statistics (rlnorm.nets.mlp(..., streams=k), "
                "net(x, stream=i)) or pass the streams as one batch (rlnorm.nets.joint_forward)",
            )
        )
    return findings


def audit_checkpoint(path: str | os.PathLike[str], agent_class: AgentLookup) -> list[Finding]:
    """Audit the agent saved at ``path``, loaded as :func:`rlnorm.load` does (eval mode, no
    unpickling; ``agent_class`` finds the agent by name: ``rlnorm.agents.get``). When the
    checkpoint records its run's planned length, Batch Renorm's warm-up is checked against
    it. NaN and inf weights are reported as findings; anything else that is not a valid
    checkpoint (a tensor of the wrong dtype or shape, malformed metadata) raises
    :class:`rlnorm.CheckpointError` naming it."""
    agent = checkpoint.load(path, agent_class, allow_non_finite=True)
    return audit(agent, progress=_progress(checkpoint.read_meta(path)))


def _progress(meta: CheckpointMeta) -> float | None:
    """The fraction of its run a checkpoint was saved at, when its metadata tells."""
    steps = meta.counters.get("env_steps", 0)
    if meta.run is None or steps <= 0:
        return None
    return min(1.0, steps / meta.run.train.total_steps)


def format_findings(findings: Iterable[Finding]) -> str:
    """One line per finding (severity, path, message, fix), or ``"no findings"``."""
    lines = [f"{f.severity:<7} {f.path or '<root>'}: {f.message}; fix: {f.fix}" for f in findings]
    return "\n".join(lines) or "no findings"
