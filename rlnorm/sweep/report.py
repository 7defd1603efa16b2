"""``rlnorm sweep report DIR``: the statistics of a finished (or partly finished) sweep, by
``rliable``.

Trials are grouped by (agent, env); within a group each configuration (the trial's grid
values other than the seed) is one row, its seeds the runs. For each row: the interquartile
mean, median and mean of the score with 95% stratified-bootstrap confidence intervals, and
the probability of improvement over a baseline row (``P(row > baseline)``, with its CI),
all computed by ``rliable`` (Agarwal et al., 2021). The score of a run is its final
evaluation's mean return (``--metric final``) or the area under its evaluation curve divided
by the steps it spans (``--metric auc``: the mean return over training, on the scale of a
return). Figures per group: rliable's performance profile, and the learning curves (median
over seeds, band from the worst to the best seed). Written as Markdown and CSV.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlnorm.errors import MissingDependencyError, RlnormError
from rlnorm.plot import Curve, aggregate, read_curve, read_header
from rlnorm.sweep import spec as specs

CONFIDENCE = 0.95
ESTIMATES = ("iqm", "median", "mean", "improvement")  # the columns of a row, in order


@dataclass
class Row:
    """One configuration of a group and its statistics: ``estimates[name] = (point, low,
    high)`` for ``iqm``, ``median``, ``mean``, and ``improvement`` over the baseline."""

    label: str
    scores: np.ndarray
    curves: list[Curve]
    estimates: dict[str, tuple[float, float, float]]


def _rliable() -> tuple[Any, Any]:
    try:
        from rliable import library, metrics
    except ImportError:
        raise MissingDependencyError("sweep report needs rliable: pip install rliable") from None
    return library, metrics


def score(run_dir: Path, metric: str) -> tuple[float, Curve]:
    """A finished run's score by ``metric`` (``final`` or ``auc``) and its evaluation curve."""
    curve = read_curve(run_dir / "eval.jsonl")
    if metric == "final":
        return float(
            json.loads((run_dir / "summary.json").read_text())["final_eval"]["mean"]
        ), curve
    if len(curve.steps) == 1:
        return float(curve.values[0]), curve
    widths, heights = np.diff(curve.steps), (curve.values[1:] + curve.values[:-1]) / 2
    return float(np.sum(widths * heights) / np.sum(widths)), curve  # trapezoids / span


def collect(out: Path, metric: str) -> tuple[dict[str, dict[str, Row]], list[str]]:
    """The finished trials of the sweep in ``out`` as rows of groups (``"agent on env"``),
    and the names of its trials that have not finished (left out of the statistics)."""
    recorded = out / "sweep.yaml"
    if not recorded.is_file():
        raise RlnormError(f"{out}: not a sweep directory (no sweep.yaml; run rlnorm sweep SPEC)")
    spec = specs.parse(recorded.read_text(), recorded)
    groups: dict[str, dict[str, Row]] = {}
    missing = []
    for trial in spec.trials:
        run_dir = out / trial.name
        if not (run_dir / "summary.json").is_file():
            missing.append(trial.name)
            continue
        header = read_header(run_dir / "config.yaml")
        group = f"{header.get('agent')} on {header.get('env')}"
        config = {k: v for k, v in trial.values.items() if k not in ("seed", "agent", "env")}
        label = ", ".join(f"{k}={v}" for k, v in config.items()) or "all"
        value, curve = score(run_dir, metric)
        row = groups.setdefault(group, {}).setdefault(label, Row(label, np.empty(0), [], {}))
        row.scores = np.append(row.scores, value)
        row.curves.append(curve)
    if not groups:
        raise RlnormError(f"{out}: no trial has finished yet ({len(missing)} not finished)")
    return groups, missing


def analyse(rows: dict[str, Row], baseline: str | None, reps: int, seed: int = 0) -> str:
    """Fill each row's estimates with rliable; returns the baseline's label."""
    library, metrics = _rliable()
    if baseline is None:
        baseline = "norm=none" if "norm=none" in rows else next(iter(rows))
    if baseline not in rows:
        raise RlnormError(f"--baseline {baseline!r} is not a row; rows: {', '.join(rows)}")
    scores = {label: row.scores[:, None] for label, row in rows.items()}  # runs x 1 task

    def aggregates(x: np.ndarray) -> np.ndarray:
        return np.array(
            [metrics.aggregate_iqm(x), metrics.aggregate_median(x), metrics.aggregate_mean(x)]
        )

    pairs = {label: (scores[label], scores[baseline]) for label in rows}
    with warnings.catch_warnings():
        # arch, under rliable, deprecates the RandomState rliable hands it: not ours to fix.
        warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
        points, cis = library.get_interval_estimates(
            scores,
            aggregates,
            reps=reps,
            confidence_interval_size=CONFIDENCE,
            random_state=np.random.RandomState(seed),
        )
        improvement, improvement_cis = library.get_interval_estimates(
            pairs,
            metrics.probability_of_improvement,
            reps=reps,
            confidence_interval_size=CONFIDENCE,
            random_state=np.random.RandomState(seed),
        )
    for label, row in rows.items():
        for i, name in enumerate(("iqm", "median", "mean")):
            row.estimates[name] = (points[label][i], cis[label][0, i], cis[label][1, i])
        p = np.ravel(improvement_cis[label])
        row.estimates["improvement"] = (float(improvement[label]), p[0], p[-1])
    return baseline


def tables(
    groups: dict[str, dict[str, Row]], baselines: dict[str, str], metric: str
) -> tuple[str, str]:
    """The Markdown report and the CSV of every row's estimates."""
    what = (
        "final evaluation return"
        if metric == "final"
        else "mean evaluation return over training (AUC / steps)"
    )
    md = [f"# Sweep report\n\nScore: {what}; 95% stratified bootstrap CIs (rliable).\n"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    bounds = ("", "_low", "_high")
    columns = [f"{n}{b}" for n in ("iqm", "median", "mean", "p_improvement") for b in bounds]
    writer.writerow(["group", "config", "runs", *columns, "baseline"])
    for group, rows in groups.items():
        baseline = baselines[group]
        md += [
            f"## {group}\n",
            f"| config | runs | IQM | median | mean | P(> {baseline}) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in rows.values():
            estimates = [row.estimates[n] for n in ESTIMATES]
            cells = " | ".join(map(_cell, estimates))
            md.append(f"| {row.label} | {len(row.scores)} | {cells} |")
            numbers = [f"{v:.6g}" for estimate in estimates for v in estimate]
            writer.writerow([group, row.label, len(row.scores), *numbers, baseline])
        md.append("")
    return "\n".join(md), buffer.getvalue()


def _cell(estimate: tuple[float, float, float]) -> str:
    point, low, high = estimate
    return f"{point:.2f} [{low:.2f}, {high:.2f}]"


def _figure(columns: int = 2) -> tuple[Any, list[Any]]:
    """A matplotlib figure on the Agg canvas (no pyplot: no global backend, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5 * columns, 4.2), dpi=130, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, columns, squeeze=False).flat)


def draw(group: str, rows: dict[str, Row], path: Path, metric: str) -> Path:
    """One PNG per group: rliable's performance profile (the fraction of runs scoring above
    each threshold, with its bootstrap CI band) and the learning curves (median over seeds,
    band from the worst to the best seed)."""
    from matplotlib.ticker import EngFormatter

    library, _ = _rliable()
    scores = {label: row.scores[:, None] for label, row in rows.items()}
    every = np.concatenate([row.scores for row in rows.values()])
    thresholds = np.linspace(every.min(), every.max(), 81)
    profiles, profile_cis = library.create_performance_profile(scores, thresholds, reps=500)
    fig, (profile_ax, curve_ax) = _figure()
    for label, row in rows.items():
        (line,) = profile_ax.plot(
            thresholds, profiles[label], label=f"{label} (n={len(row.scores)})"
        )
        low, high = profile_cis[label]
        profile_ax.fill_between(thresholds, low, high, color=line.get_color(), alpha=0.2)
        grid = aggregate({label: row.curves})[label].steps
        values = np.stack([np.interp(grid, c.steps, c.values) for c in row.curves])
        curve_ax.plot(
            grid, np.median(values, axis=0), marker="o", color=line.get_color(), label=label
        )
        curve_ax.fill_between(grid, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
    profile_ax.set(
        xlabel=f"score τ ({metric})",
        ylabel="fraction of runs with score > τ",
        title="performance profile",
    )
    curve_ax.set(
        xlabel="environment steps",
        ylabel="evaluation return",
        title="learning curves (median; band: worst to best seed)",
    )
    curve_ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    for ax in (profile_ax, curve_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(group)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def write_report(
    out: Path,
    metric: str = "final",
    baseline: str | None = None,
    output: Path | None = None,
    reps: int = 2000,
) -> tuple[str, list[Path]]:
    """Compute the report of the sweep in ``out``; write the Markdown to ``output`` (default
    ``out/report.md``), the CSV beside it (``.csv``) and a figure per group
    (``<stem>-<group>.png``). Returns the Markdown and the paths written."""
    groups, missing = collect(out, metric)
    output = output or out / "report.md"
    baselines = {group: analyse(rows, baseline, reps) for group, rows in groups.items()}
    markdown, table = tables(groups, baselines, metric)
    written = []
    for group, rows in groups.items():
        name = specs.trial_name({"": group}).lstrip("=").replace("-on-", "_")
        figure = draw(group, rows, output.with_name(f"{output.stem}-{name}.png"), metric)
        markdown += f"\n![{group}]({figure.name})\n"
        written.append(figure)
    if missing:
        markdown += f"\nNot finished, left out ({len(missing)}): {', '.join(missing)}\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(markdown)
    output.with_suffix(".csv").write_text(table)
    return markdown, [output, output.with_suffix(".csv"), *written]
