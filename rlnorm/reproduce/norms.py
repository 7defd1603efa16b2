"""``norms``: every normalization kind (``rlnorm list``) with PPO on CartPole-v1 and
Acrobot-v1, and with SAC and CrossQ on Pendulum-v1; aggregate statistics and performance
profiles by ``rliable`` (Agarwal et al., NeurIPS 2021).

The post: "Layer norm, weight norm, and cosine norm all fix the contracts that batch norm
breaks [...] When tuned well, I'd expect the difference between various methods to be
pretty low." Each agent runs its shipped config for the env with only ``--norm`` changed.

Scores are normalized per task for the aggregates: 0 is a uniform random policy (measured)
and 1 the best norm's mean final return on that task in this very run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlnorm import norm as norms
from rlnorm.reproduce import report, runner

TITLE = "norms: every normalization kind across PPO, SAC and CrossQ"

#: (agent, env) -> steps per budget (the tiny budget: PPO CartPole-v1 only).
TASKS = {
    ("ppo", "CartPole-v1"): {"tiny": 256, "quick": 5_000, "full": 50_000},
    ("ppo", "Acrobot-v1"): {"quick": 5_000, "full": 50_000},
    ("sac", "Pendulum-v1"): {"quick": 600, "full": 8_000},
    ("crossq", "Pendulum-v1"): {"quick": 600, "full": 8_000},
}

PUBLISHED = [
    "The post (Irpan 2017, `shared/reference/perils-of-batch-norm.md`): layer, weight and "
    "cosine norm fix the contracts BatchNorm breaks; 'when tuned well, I'd expect the "
    "difference between various methods to be pretty low'. No numbers.",
    "RL Zoo benchmark (rl-baselines3-zoo `benchmark.md`): PPO CartPole-v1 500 at 100k steps; "
    "SAC Pendulum-v1 -157 at 20k steps (no normalization).",
    "CleanRL (`ppo.py`, CartPole-v1): 490 +- 6 at 500k steps.",
    "Agarwal et al. 2021, *Deep RL at the Edge of the Statistical Precipice* (rliable): IQM "
    "with stratified bootstrap confidence intervals and performance profiles.",
]


def task_name(agent: str, env_id: str) -> str:
    """One task's label: ``"ppo CartPole-v1"``."""
    return f"{agent} {env_id}"


def trials(seeds: int, budget: str) -> list[runner.Trial]:
    """Every norm on every task the budget covers, same seeds."""
    small = budget == "tiny"
    return [
        runner.Trial(
            norm, agent, env_id, norm, seed, steps[budget],
            eval_points=2 if small else 10,
            eval_episodes=2 if small else 10,
            final_episodes=2 if small else 20,
        )
        for (agent, env_id), steps in TASKS.items()
        if budget in steps
        for norm in norms.names()
        for seed in range(seeds)
    ]  # fmt: skip


def normalize(rows: list[dict[str, Any]], random: dict[str, float]) -> None:
    """Add ``task`` and ``score``: the final return with 0 the random policy's and 1 the
    best norm's mean on the task."""
    for row in rows:
        row["task"] = task_name(row["agent"], row["env"])
    for task in dict.fromkeys(r["task"] for r in rows):
        group = [r for r in rows if r["task"] == task]
        best = max(
            np.mean([r["final_return"] for r in group if r["norm"] == n])
            for n in dict.fromkeys(r["norm"] for r in group)
        )
        span = best - random[task] if best > random[task] else 1.0  # none beat random
        for r in group:
            r["score"] = (r["final_return"] - random[task]) / span


def aggregate(
    rows: list[dict[str, Any]], reps: int
) -> tuple[dict[str, tuple[float, float, float]], np.ndarray, dict[str, Any], dict[str, Any]]:
    """rliable on the normalized scores, one ``(seeds, tasks)`` matrix per norm: IQM with
    its 95% stratified bootstrap CI, and performance profiles with their CIs."""
    from rliable import library as rly
    from rliable import metrics

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    kinds = list(dict.fromkeys(r["norm"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    scores = {
        n: np.array(
            [[next(r["score"] for r in rows if (r["norm"], r["task"], r["seed"]) == (n, t, s))
              for t in tasks] for s in seeds]
        )
        for n in kinds
    }  # fmt: skip
    np.random.seed(0)
    point, interval = rly.get_interval_estimates(
        scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps
    )
    iqm = {
        n: (float(point[n][0]), float(interval[n][0, 0]), float(interval[n][1, 0])) for n in kinds
    }
    taus = np.linspace(-0.25, 1.25, 61)
    profiles, profile_cis = rly.create_performance_profile(scores, taus, reps=reps)
    return iqm, taus, profiles, profile_cis


def plot_profiles(
    iqm: dict[str, tuple[float, float, float]],
    taus: np.ndarray,
    profiles: dict[str, Any],
    cis: dict[str, Any],
    path: Path,
) -> None:
    """Performance profiles (left) and aggregate IQM with 95% CIs (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for kind, profile in profiles.items():
        (line,) = left.plot(taus, profile, label=kind)
        left.fill_between(taus, cis[kind][0], cis[kind][1], alpha=0.15, color=line.get_color())
    left.set_xlabel("normalized score tau")
    left.set_ylabel("fraction of runs with score > tau")
    left.legend(fontsize=7)
    kinds = list(iqm)
    values = [iqm[k][0] for k in kinds]
    errors = [[iqm[k][0] - iqm[k][1] for k in kinds], [iqm[k][2] - iqm[k][0] for k in kinds]]
    right.barh(kinds, values, xerr=errors)
    right.invert_yaxis()
    right.set_xlabel("IQM of normalized score (95% CI)")
    fig.suptitle(TITLE)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(
    seeds: int, budget: str, out: Path, workers: int, command: str, envs: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Run the reproduction and write its four files into ``out``; returns the table."""
    start = time.perf_counter()
    results = runner.run_trials(
        runner.select(trials(seeds, budget), envs), workers, desc="norms", store=out / "trials"
    )
    rows, _ = report.write_outputs(out, TITLE, results)
    episodes = 4 if budget == "tiny" else 100
    random = {
        task_name(agent, env_id): float(runner.random_returns(env_id, episodes, 0).mean())
        for (agent, env_id), steps in TASKS.items()
        if budget in steps
    }
    normalize(rows, random)
    report.write_csv(out / "results.csv", rows)
    reps = report.reps_for(budget)
    iqm, taus, profiles, cis = aggregate(rows, reps)
    plot_profiles(iqm, taus, profiles, cis, out / "figure.png")
    table = report.results_table(rows, ("task", "norm"), reps)
    overall = [
        {"norm": k, "IQM normalized score [95% CI]": f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"}
        for k, v in sorted(iqm.items(), key=lambda kv: -kv[1][0])
    ]
    columns = [
        "task", "norm", "seeds", "final IQM [95% CI]", "median", "worst", "best",
        "AUC IQM [95% CI]", "wall s/run",
    ]  # fmt: skip
    steps = ", ".join(f"{task_name(*t)} {s[budget]}" for t, s in TASKS.items() if budget in s)
    spread = max(v[0] for v in iqm.values()) - min(v[0] for v in iqm.values())
    sections = [
        f"Env steps: {steps}; each agent's shipped config for the env, only `--norm` changed. "
        "Normalized score: 0 = uniform random policy (measured over "
        f"{episodes} episodes: "
        + ", ".join(f"{t} {r:.1f}" for t, r in random.items())
        + "), 1 = the best norm's mean final return on that task here. `figure.png`: "
        "performance profiles and the aggregate IQM, by rliable; `curves.csv`: the evaluation "
        "curves.",
        "",
        "## Aggregate over tasks (rliable)",
        "",
        report.markdown_table(overall, ["norm", "IQM normalized score [95% CI]"]),
        "",
        f"Spread between the best and the worst norm's aggregate IQM: {spread:.3f}.",
        "",
        "## Per task",
        "",
        report.markdown_table(table, columns),
    ]
    report.write_readme(
        out, TITLE, command, budget, time.perf_counter() - start, sections, PUBLISHED
    )
    return overall
