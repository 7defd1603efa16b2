"""What every reproduction shares: one trial is one ordinary training run, trials run in
parallel processes, and the results become ``results.csv``, ``curves.csv``, ``figure.png``
and a ``README.md`` with a table whose statistics are ``rliable``'s.

A reproduction (one file beside this one) lists its :class:`Trial` s for a budget and
turns the measured rows into tables; nothing here knows what a reproduction reproduces.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rlnorm import agents, config, envs
from rlnorm.agent import Agent
from rlnorm.audit import audit
from rlnorm.diagnostics import StreamWatch
from rlnorm.learner import Learner
from rlnorm.rollout import evaluate, uniform_actions
from rlnorm.safety import training

#: The budgets of ``rlnorm reproduce --budget``; ``tiny`` is the tests' (one seed, seconds).
BUDGETS = ("tiny", "quick", "full")

#: Builds the agent of a trial (a module-level function, so trials pickle to workers).
AgentFactory = Callable[[type[Agent], Any, config.RunConfig], Agent]
#: Measures more of a trained agent: ``(agent, trial, eval_env) -> extra result columns``.
PostHook = Callable[[Agent, "Trial", Any], dict[str, Any]]


@dataclass(frozen=True)
class Trial:
    """One training run: ``agent`` on ``env`` with ``norm`` and config overrides.

    ``make_agent`` replaces the registered class's constructor (the reproductions' unsafe
    variants); ``post`` measures the trained agent further. Both must be module-level
    functions so that a trial can be sent to a worker process.
    """

    variant: str
    agent: str
    env: str
    norm: str
    seed: int
    steps: int
    overrides: tuple[str, ...] = ()
    config_file: str | None = None
    backend: str = "auto"
    eval_points: int = 10
    eval_episodes: int = 10
    final_episodes: int = 20
    make_agent: AgentFactory | None = None
    post: PostHook | None = None


@dataclass
class TrialResult:
    """A trial's measured row (``results.csv``) and evaluation curve (``curves.csv``)."""

    row: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)


def packaged_config(relative: str) -> str:
    """The path of a config file shipped with rlnorm, e.g. ``"td3/ddpg-Pendulum-v1.yaml"``."""
    return str(config.packaged_configs_dir() / relative)


def build_agent(cls: type[Agent], env: Any, cfg: config.RunConfig) -> Agent:
    """The registered agent class, as ``rlnorm train`` builds it."""
    return cls(env.single_observation_space, env.single_action_space, cfg.agent_config, cfg.norm)


def run_config(trial: Trial) -> config.RunConfig:
    """The trial's resolved run config: the agent's config for the env (or the trial's
    file), the overrides, and the evaluation schedule of the budget."""
    every = max(1, trial.steps // trial.eval_points)
    schedule = [
        f"train.eval_every={every}",
        f"train.eval_episodes={trial.eval_episodes}",
        f"train.final_eval_episodes={trial.final_episodes}",
        f"train.eval_num_envs={min(10, trial.eval_episodes, trial.final_episodes)}",
        "train.checkpoint_every=0",
        "train.keep_checkpoints=0",
        f"train.log_every={trial.steps}",
    ]
    cfg = config.resolve(
        agents.get(trial.agent),
        trial.env,
        norm=trial.norm,
        seed=trial.seed,
        config_file=trial.config_file,
        overrides=[*schedule, *trial.overrides],
        total_steps=trial.steps,
    )
    cfg.backend = trial.backend
    return cfg


def audit_text(agent: Agent, watch: StreamWatch | None = None) -> str:
    """``rlnorm audit``'s warnings and errors on ``agent`` as it is at rest (and on the
    update ``watch`` watched), one per line."""
    return "\n".join(
        f"{f.severity}: {f.path}: {f.message}"
        for f in audit(agent, watch=watch)
        if f.severity != "info"
    )


def audit_after_update(agent: Agent) -> str:
    """:func:`audit_text` of ``agent`` with one more update on its replay buffer watched,
    so that statistics shared by separate passes of different streams are found (they
    show only while an update runs)."""
    with training(*agent.modules().values()), StreamWatch(agent.modules()) as watch:
        agent.update(agent.replay, 1.0)  # type: ignore[attr-defined]
    return audit_text(agent, watch)


def train_trial(trial: Trial) -> TrialResult:
    """Train one trial in a scratch directory; measure its final return, its area under the
    evaluation curve, its wall time, and what ``rlnorm audit`` says of the trained agent
    (the learner's audit after the first update, which watches the streams, included)."""
    torch.set_num_threads(1)
    cfg = run_config(trial)
    torch.manual_seed(trial.seed)
    env = envs.make(cfg.env, num_envs=cfg.train.num_envs, backend=trial.backend)
    eval_env = envs.make(cfg.env, num_envs=cfg.train.eval_num_envs, backend=trial.backend)
    cls = agents.get(trial.agent)
    agent = (trial.make_agent or build_agent)(cls, env, cfg)
    with tempfile.TemporaryDirectory(prefix="rlnorm-reproduce-") as run_dir:
        learner = Learner(agent, env, eval_env, cfg, run_dir, quiet=True)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = learner.train()
        wall = time.perf_counter() - start
        lines = (Path(run_dir) / "eval.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    first_update = [str(w.message) for w in caught if str(w.message).startswith("audit:")]
    steps = np.array([r["step"] for r in records], dtype=float)
    means = np.array([r["mean"] for r in records], dtype=float)
    row: dict[str, Any] = {
        "variant": trial.variant,
        "env": trial.env,
        "agent": trial.agent,
        "norm": trial.norm,
        "seed": trial.seed,
        "steps": result.env_steps,
        "final_return": result.final_eval.mean,
        "final_std": result.final_eval.std,
        "auc": area_under_curve(steps, means),
        "wall_s": round(wall, 2),
        "audit_first_update": "\n".join(dict.fromkeys(first_update)),
        "audit_end": audit_text(agent),
    }
    if trial.post is not None:
        row |= trial.post(agent, trial, eval_env)
    curve = [
        {"variant": trial.variant, "env": trial.env, "seed": trial.seed, "step": s, "return": m}
        for s, m in zip(steps.tolist(), means.tolist(), strict=True)
    ]
    env.close()
    eval_env.close()
    return TrialResult(row, curve)


def area_under_curve(steps: np.ndarray, returns: np.ndarray) -> float:
    """The mean return over training: the trapezoid area under the evaluation curve, from
    the first to the last evaluation, divided by that span (a lone point is its value)."""
    if len(steps) < 2:
        return float(returns.mean()) if len(returns) else float("nan")
    area = float(np.sum((returns[1:] + returns[:-1]) / 2 * np.diff(steps)))
    return area / float(steps[-1] - steps[0])


def _init_worker() -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")


def run_trials(
    trials: Sequence[Trial],
    workers: int = 1,
    desc: str = "",
    task: Callable[[Trial], TrialResult] = train_trial,
) -> list[TrialResult]:
    """Run ``task`` on every trial, ``workers`` processes at a time, with a progress bar;
    results come back in the order of ``trials``."""
    results: list[TrialResult | None] = [None] * len(trials)
    bar = tqdm(total=len(trials), desc=desc, unit="run", leave=True)
    if workers <= 1:
        for i, trial in enumerate(trials):
            results[i] = task(trial)
            bar.update()
    else:
        with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
            futures = {pool.submit(task, trial): i for i, trial in enumerate(trials)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    bar.close()
    return [r for r in results if r is not None]


def random_returns(env_id: str, episodes: int, seed: int, backend: str = "auto") -> np.ndarray:
    """Returns of a uniform random policy over ``episodes`` episodes (a normalized score's
    zero), measured."""

    class _Uniform(Agent):
        name = "uniform"

        def acting_modules(self) -> list[torch.nn.Module]:
            return []

        def act(self, obs: torch.Tensor, deterministic: bool = False) -> Any:
            from rlnorm.agent import ActOutput

            return ActOutput(uniform_actions(self.action_space, obs.shape[0], obs.device))

    env = envs.make(env_id, num_envs=min(10, episodes), backend=backend)
    torch.manual_seed(seed)
    agent = _Uniform(env.single_observation_space, env.single_action_space, None, "none")
    returns = evaluate(agent, env, episodes, deterministic=False, seed=seed).returns
    env.close()
    return returns


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


#: The commit a reproduction started from (set by :func:`rlnorm.reproduce.run`), so that
#: edits made while it runs do not change what its README says it ran.
REVISION = ""


def commit() -> str:
    """The git commit the code runs from (``-dirty`` with uncommitted changes), if known."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head + ("-dirty" if dirty else "")) if head else "unknown"


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


def write_readme(
    out: Path,
    title: str,
    command: str,
    budget: str,
    wall_s: float,
    sections: Sequence[str],
    published: Sequence[str],
) -> None:
    """The reproduction's README: what ran, where and when, its tables, the published
    numbers with their sources."""
    label = "" if budget == "full" else f" — **{budget} budget, not the full result**"
    head = [
        f"# {title}{label}",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Commit: `{REVISION or commit()}`",
        f"- Machine: {machine()}",
        f"- Wall time of the whole reproduction: {wall_s:.0f} s",
        "- Files: `results.csv` (one row per seed x variant), `curves.csv` (evaluations during "
        "training), `figure.png`.",
        "- Statistics: interquartile mean (IQM) over seeds with a 95% stratified bootstrap "
        "confidence interval, computed by `rliable`.",
        "",
    ]
    body = [*head, *sections, "", "## Published numbers", "", *[f"- {p}" for p in published]]
    (out / "README.md").write_text("\n".join(body) + "\n")
