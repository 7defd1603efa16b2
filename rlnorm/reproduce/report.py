"""How a reproduction reports: statistics by ``rliable`` (interquartile mean with a 95%
stratified bootstrap confidence interval, never hand-written), ``results.csv``,
``curves.csv``, the figure in the post's style, and the README with the command, date,
commit, machine and the published numbers beside ours.
"""

from __future__ import annotations

import csv
import os
import platform
import re
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlnorm.reproduce import runner
from rlnorm.reproduce.runner import TrialResult


# -- statistics (rliable) ------------------------------------------------------------------
def iqm_ci(scores: Iterable[float], reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """The interquartile mean of ``scores`` (one per seed) and its 95% stratified bootstrap
    confidence interval, computed by ``rliable``."""
    from rliable import library as rly
    from rliable import metrics

    matrix = np.asarray(list(scores), dtype=float).reshape(-1, 1)
    np.random.seed(seed)
    point, interval = rly.get_interval_estimates(
        {"x": matrix}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps
    )
    return float(point["x"][0]), float(interval["x"][0, 0]), float(interval["x"][1, 0])


def reps_for(budget: str) -> int:
    """Bootstrap resamples: few for the tests' tiny budget, rliable's usual 2000 otherwise."""
    return 50 if budget == "tiny" else 2000


def summarize(
    rows: Sequence[dict[str, Any]], keys: Sequence[str], value: str, reps: int
) -> list[dict[str, Any]]:
    """Per group of ``keys`` (e.g. env, variant): seeds, IQM of ``value`` with its 95% CI,
    and the median, best and worst seed, in the order the groups first appear."""
    groups: dict[tuple[Any, ...], list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(float(row[value]))
    table = []
    for group, values in groups.items():
        iqm, low, high = iqm_ci(values, reps)
        table.append(
            dict(zip(keys, group, strict=True))
            | {
                "seeds": len(values),
                "iqm": iqm,
                "ci_low": low,
                "ci_high": high,
                "median": float(np.median(values)),
                "best": max(values),
                "worst": min(values),
            }
        )
    return table


# -- files ---------------------------------------------------------------------------------
def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``rows`` as a CSV file with the union of their keys as the header."""
    header = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``columns`` (floats as :func:`fmt` writes them)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return fmt(value)
        return str(value).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def plot_curves(curves: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Evaluation return against env steps, one panel per env, one colour per variant: the
    median seed as a line and the band from the worst to the best seed, as in the post's
    figure (top, median and worst of the seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env_ids = list(dict.fromkeys(c["env"] for c in curves))
    fig, axes = plt.subplots(1, len(env_ids), figsize=(5 * len(env_ids), 3.8), squeeze=False)
    for ax, env_id in zip(axes[0], env_ids, strict=True):
        variants = list(dict.fromkeys(c["variant"] for c in curves if c["env"] == env_id))
        for variant in variants:
            points = [c for c in curves if c["env"] == env_id and c["variant"] == variant]
            steps = sorted({c["step"] for c in points})
            by_step = [[c["return"] for c in points if c["step"] == s] for s in steps]
            median = [float(np.median(v)) for v in by_step]
            (line,) = ax.plot(steps, median, label=variant)
            ax.fill_between(
                steps,
                [min(v) for v in by_step],
                [max(v) for v in by_step],
                alpha=0.2,
                color=line.get_color(),
            )
        ax.set_title(env_id)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval return (median; band: worst to best seed)")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bars(table: Sequence[dict[str, Any]], path: Path, title: str, value: str) -> None:
    """Horizontal bars of ``value`` per variant, one panel per env (rows without it are
    left out: a variant that could not run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env_ids = list(dict.fromkeys(t["env"] for t in table))
    fig, axes = plt.subplots(1, len(env_ids), figsize=(6 * len(env_ids), 3.5), squeeze=False)
    for ax, env_id in zip(axes[0], env_ids, strict=True):
        shown = [t for t in table if t["env"] == env_id and value in t]
        ax.barh([t["variant"] for t in shown], [t[value] for t in shown])
        ax.invert_yaxis()
        ax.set_title(env_id)
        ax.set_xlabel("return (IQM over seeds)")
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> str:
    """The machine in one line: CPU count, platform, torch, load average at the end."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), "
        f"torch {torch.__version__}, 1 torch thread per run, load average {load}"
    )


def fmt(x: float) -> str:
    """A number for a table: 3 significant figures, one decimal from 100 up."""
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.3g}"


def results_table(
    rows: Sequence[dict[str, Any]], keys: Sequence[str], reps: int
) -> list[dict[str, Any]]:
    """Per group of ``keys``: the final return and the area under the curve as IQM [95%
    CI] (rliable), the median, worst and best seed's final return, and the mean wall time."""
    final = summarize(rows, keys, "final_return", reps)
    auc = summarize(rows, keys, "auc", reps)
    table = []
    for f, a in zip(final, auc, strict=True):
        group = [r for r in rows if all(r[k] == f[k] for k in keys)]
        table.append(
            {k: f[k] for k in keys}
            | {
                "seeds": f["seeds"],
                "final IQM [95% CI]": f"{fmt(f['iqm'])} [{fmt(f['ci_low'])}, {fmt(f['ci_high'])}]",
                "median": f["median"],
                "worst": f["worst"],
                "best": f["best"],
                "AUC IQM [95% CI]": f"{fmt(a['iqm'])} [{fmt(a['ci_low'])}, {fmt(a['ci_high'])}]",
                "wall s/run": float(np.mean([r["wall_s"] for r in group])),
                "final_iqm": f["iqm"],
            }
        )
    return table


def audit_section(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[str]:
    """What ``rlnorm audit`` found on each group's trained agents (warnings and errors: after
    the first update, with the update's streams watched, and at the end), deduplicated."""
    lines = ["## What `rlnorm audit` finds", ""]
    groups: dict[tuple[Any, ...], dict[str, str]] = {}
    for row in rows:
        found = groups.setdefault(tuple(row[k] for k in keys), {})
        text = f"{row.get('audit_first_update', '')}\n{row.get('audit_end', '')}"
        for line in filter(None, text.splitlines()):
            # "audit: PATH: MESSAGE; fix: ..." (the learner's) or "SEVERITY: PATH: MESSAGE"
            finding = line.split("; fix:")[0].split(": ", 1)[1]
            # the numbers differ from seed to seed: one line per kind of finding
            found.setdefault(re.sub(r"-?\d+(\.\d+)?", "#", finding), finding)
    for group, found in groups.items():
        kinds = list(found.values())
        shown = "; ".join(kinds[:3]) + (f" (and {len(kinds) - 3} more)" if len(kinds) > 3 else "")
        lines.append(f"- {' / '.join(map(str, group))}: {shown or 'no warnings or errors'}")
    return lines


def write_outputs(
    out: Path, title: str, results: Sequence[TrialResult]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``results.csv``, ``curves.csv`` and ``figure.png`` of ``results``; returns the rows
    and the curve points."""
    rows = [r.row for r in results]
    curves = [c for r in results for c in r.curve]
    write_csv(out / "results.csv", rows)
    write_csv(out / "curves.csv", curves)
    plot_curves(curves, out / "figure.png", title)
    return rows, curves


#: How the runner trains seeds (:func:`rlnorm.reproduce.runner.populations`).
SEEDS_NOTE = (
    "- Seeds: those of a variant built by its registered class train together, as one "
    "population in one process (`rlnorm.population`: member k is the run of seed k); "
    "their `wall s/run` is the population's wall time divided by its seeds. Other trials "
    "(the unsafe variants, which build their own agents) run one per process."
)


def _result_rows(out: Path) -> list[dict[str, str]]:
    try:
        with open(out / "results.csv") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def commits(rows: Sequence[dict[str, str]]) -> str:
    """The commit(s) that trained ``rows`` (those of ``results.csv``: rows read back from
    the trial store may come from an earlier commit than this run's)."""
    revision = runner.REVISION or runner.commit()
    found = [c for c in dict.fromkeys(r.get("commit") or "" for r in rows) if c]
    if not found or found == [revision]:
        return f"`{revision}`"
    shown = ", ".join(f"`{c}`" for c in found)
    return f"rows trained at {shown} (see the `commit` column); this report written at `{revision}`"


def training_time(rows: Sequence[dict[str, str]]) -> float:
    """The summed ``wall_s`` of ``rows``."""
    return sum(float(r["wall_s"]) for r in rows if r.get("wall_s"))


def write_readme(
    out: Path,
    title: str,
    command: str,
    budget: str,
    wall_s: float,
    sections: Sequence[str],
    published: Sequence[str],
    training_s: float | None = None,
) -> None:
    """The reproduction's README: what ran, where and when, its tables, the published
    numbers with their sources. ``training_s``: the trials' summed wall time, where rows of
    ``results.csv`` are not one per trial (default: their ``wall_s`` summed)."""
    label = "" if budget == "full" else f" — **{budget} budget, not the full result**"
    rows = _result_rows(out)
    head = [
        f"# {title}{label}",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Commit: {commits(rows)}",
        f"- Machine: {machine()}",
        f"- Wall time of the whole reproduction: {wall_s:.0f} s this run; training time "
        f"{training_time(rows) if training_s is None else training_s:.0f} s (the trials' wall "
        "times summed, those read back from "
        "`trials/` with the time they took when trained)",
        "- Files: `results.csv` (one row per seed x variant), `curves.csv` (evaluations during "
        "training), `figure.png`.",
        "- Statistics: interquartile mean (IQM) over seeds with a 95% stratified bootstrap "
        "confidence interval, computed by `rliable`.",
        SEEDS_NOTE,
        "",
    ]
    body = [*head, *sections, "", "## Published numbers", "", *[f"- {p}" for p in published]]
    (out / "README.md").write_text("\n".join(body) + "\n")


def finish(
    out: Path,
    title: str,
    command: str,
    budget: str,
    started: float,
    description: Sequence[str],
    table: list[dict[str, Any]],
    columns: Sequence[str],
    conclusions: Sequence[str],
    published: Sequence[str],
    audit: Sequence[str] = (),
    training_s: float | None = None,
) -> list[dict[str, Any]]:
    """Write a reproduction's README: ``description``, then the results ``table``, the
    measured ``conclusions`` and, when given, the ``audit`` section; returns ``table``.
    ``started`` is the ``time.perf_counter()`` reading when the reproduction began;
    ``training_s`` as :func:`write_readme`'s."""
    sections = [*description, "", "## Results", "", markdown_table(table, columns), ""]
    sections += [*conclusions, *(["", *audit] if audit else [])]
    wall_s = time.perf_counter() - started
    write_readme(out, title, command, budget, wall_s, sections, published, training_s)
    return table
