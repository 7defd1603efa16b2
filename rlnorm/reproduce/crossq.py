"""``crossq``: Bhatt et al. (ICLR 2024), CrossQ versus SAC at the same update-to-data ratio.

CrossQ drops SAC's target networks and normalizes the critic with Batch Renormalization
over ``(s, a)`` and ``(s', a')`` in one joint pass (Adam beta1 0.5, policy delay 3). Three
agents, one gradient step per env step each, on Pendulum-v1 and Hopper-v5 (MuJoCo,
gymnasium backend):

- ``CrossQ``: ``configs/crossq/Pendulum-v1.yaml`` (the paper's settings, narrow nets);
- ``SAC``: ``configs/sac/Pendulum-v1.yaml`` (target networks, no normalization);
- ``SAC + BatchNorm, separate passes``: the same SAC with BatchNorm in actor and critics
  and the critic's textbook pass over ``(s, a)`` alone (``critic_streams=separate``), the
  naive way of adding BatchNorm to SAC that the paper reports failing.

The paper's claim is about sample efficiency: CrossQ's return at equal env steps is at
least SAC's. We compare the area under the evaluation curve (mean return over training)
and the final return.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlnorm.agent import Agent
from rlnorm.reproduce import report, runner
from rlnorm.targets import TargetNetwork

TITLE = "crossq: CrossQ vs SAC at update-to-data ratio 1 (Bhatt et al., ICLR 2024)"

CROSSQ = "CrossQ (Batch Renorm, joint pass, no targets)"
SAC = "SAC (targets, no norm)"
SAC_BN = "SAC + BatchNorm, separate passes"

VARIANTS = (
    (CROSSQ, "crossq", "batch_renorm", "crossq/Pendulum-v1.yaml", ()),
    (SAC, "sac", "none", "sac/Pendulum-v1.yaml", ()),
    (SAC_BN, "sac", "batch", "sac/Pendulum-v1.yaml", ("agent.critic_streams=separate",)),
)

#: env -> (backend, steps per budget).
ENVS = {
    "Pendulum-v1": ("auto", {"tiny": 150, "quick": 1_500, "full": 10_000}),
    "Hopper-v5": ("gymnasium", {"quick": 1_500, "full": 20_000}),
}

PUBLISHED = [
    "Bhatt et al., *CrossQ: Batch Normalization in Deep Reinforcement Learning for Greater "
    "Sample Efficiency and Simplicity*, ICLR 2024, Fig. 1 and 5: on MuJoCo (Hopper, Walker, "
    "Ant, HalfCheetah, Humanoid) CrossQ at UTD 1 matches or beats SAC's return at equal "
    "env steps, and SAC with BatchNorm added naively (separate passes, with targets) fails "
    "to learn; curves only (read qualitatively: CrossQ >= SAC at equal steps).",
    "RL Zoo benchmark (rl-baselines3-zoo `benchmark.md`): SAC Pendulum-v1 -157 at 20k steps.",
]


def has_target(agent: Agent, trial: runner.Trial, eval_env: Any) -> dict[str, Any]:
    """Measured, not assumed: whether the trained agent holds a target network."""
    return {
        "has_target_network": any(
            isinstance(m, TargetNetwork)
            for root in agent.modules().values()
            for m in root.modules()
        )
    }


def trials(seeds: int, budget: str) -> list[runner.Trial]:
    """The three agents on each env the budget covers (the tiny one: Pendulum-v1 only)."""
    small = budget == "tiny"
    return [
        runner.Trial(
            variant, agent, env_id, norm, seed, steps[budget],
            overrides=overrides,
            config_file=runner.packaged_config(config_file),
            backend=backend,
            eval_points=2 if small else 10,
            eval_episodes=2 if small else 10,
            final_episodes=2 if small else 20,
            post=has_target,
        )
        for env_id, (backend, steps) in ENVS.items()
        if budget in steps
        for variant, agent, norm, config_file, overrides in VARIANTS
        for seed in range(seeds)
    ]  # fmt: skip


def run(
    seeds: int, budget: str, out: Path, workers: int, command: str, envs: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Run the reproduction and write its four files into ``out``; returns the table."""
    start = time.perf_counter()
    results = runner.run_trials(
        runner.select(trials(seeds, budget), envs), workers, desc="crossq", store=out / "trials"
    )
    rows, _ = report.write_outputs(out, TITLE, results)
    keys = ("env", "variant")
    reps = report.reps_for(budget)
    table = report.results_table(rows, keys, reps)
    auc = report.summarize(rows, keys, "auc", reps)
    for entry, a in zip(table, auc, strict=True):
        entry["auc_iqm"], entry["auc_ci"] = a["iqm"], (a["ci_low"], a["ci_high"])
        group = [r for r in rows if all(r[k] == entry[k] for k in keys)]
        entry["target network"] = "yes" if group[0]["has_target_network"] else "no"
    columns = [
        "env", "variant", "seeds", "final IQM [95% CI]", "median", "worst", "best",
        "AUC IQM [95% CI]", "target network", "wall s/run",
    ]  # fmt: skip
    description = [
        "Env steps: "
        + ", ".join(f"{e} {s[budget]}" for e, (_, s) in ENVS.items() if budget in s)
        + ". One sub-env, one gradient step per env step (UTD 1), 100 random warm-up steps. "
        "Networks narrowed for a CPU: SAC 64x64; CrossQ actor 64x64, critic 128x128 (paper: "
        "256 and 2048); Batch Renorm stays plain BatchNorm (momentum 0.01) for the whole run "
        "(sbx's 100k-step warm-up). The same configs serve Hopper-v5. AUC: the mean evaluation "
        "return over training, the sample-efficiency measure.",
    ]
    return report.finish(
        out,
        TITLE,
        command,
        budget,
        start,
        description,
        table,
        columns,
        conclusions(table),
        PUBLISHED,
    )


def conclusions(table: list[dict[str, Any]]) -> list[str]:
    """Measured sentences: is CrossQ at least SAC at equal steps (AUC and final return)?"""
    lines = ["## Reproduced?", ""]
    for env_id in dict.fromkeys(t["env"] for t in table):
        by = {t["variant"]: t for t in table if t["env"] == env_id}
        cq, sac, bn = by[CROSSQ], by[SAC], by[SAC_BN]
        if cq["auc_iqm"] < sac["auc_iqm"]:
            verdict = "not reproduced"
        elif cq["auc_ci"][0] > sac["auc_ci"][1]:
            verdict = "reproduced (the 95% CIs do not overlap)"
        else:
            verdict = "in the paper's direction, but the 95% CIs overlap: not conclusive here"
        lines.append(
            f"- {env_id}: AUC IQM CrossQ {cq['auc_iqm']:.1f}, SAC {sac['auc_iqm']:.1f}, SAC + BN "
            f"separate {bn['auc_iqm']:.1f}; final IQM {cq['final_iqm']:.1f}, "
            f"{sac['final_iqm']:.1f}, {bn['final_iqm']:.1f}. CrossQ >= SAC at equal steps "
            f"(AUC): {verdict}."
        )
    return lines
