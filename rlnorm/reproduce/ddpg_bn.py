"""``ddpg-bn``: Lillicrap et al. (2015), DDPG with and without BatchNorm, with and without
target networks (the question of the paper's Table 1 and Figure 2).

DDPG is the td3 agent's DDPG setting (``configs/td3/ddpg-Pendulum-v1.yaml``: one critic,
no target smoothing, no delay, BatchNorm placed as in the paper: on the state input and
every actor layer, on the critic's layers before the action joins). "No target network"
is ``tau = 1``: the target is the online network of the previous gradient step. Envs:
Pendulum-v1, InvertedPendulum-v5 and InvertedDoublePendulum-v5 (MuJoCo, gymnasium backend).

Scores are reported raw and in the paper's normalized form: 0 is a uniform random policy
(measured here, 100 episodes) and 1 the best published return for the env (named below).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlnorm.agent import Agent
from rlnorm.reproduce import report, runner
from rlnorm.targets import TargetNetwork

TITLE = "ddpg-bn: DDPG with and without BatchNorm and target networks (Lillicrap et al. 2015)"

VARIANTS = (
    ("BN + target nets", "batch", ()),
    ("BN, no target nets", "batch", ("agent.tau=1.0",)),
    ("no BN + target nets", "none", ()),
    ("no BN, no target nets", "none", ("agent.tau=1.0",)),
)

#: env -> (backend, best published return, its source): a normalized score's 1.
REFERENCE = {
    "Pendulum-v1": ("auto", -152.0, "RL Zoo benchmark, TD3 and DDPG at 20k steps"),
    "InvertedPendulum-v5": (
        "gymnasium",
        1000.0,
        "Fujimoto et al. 2018 (TD3), Table 1, InvertedPendulum-v1: 1000.00 (the maximum)",
    ),
    "InvertedDoublePendulum-v5": (
        "gymnasium",
        9355.52,
        "Fujimoto et al. 2018 (TD3), Table 1, InvertedDoublePendulum-v1: DDPG 9355.52 (TD3 "
        "9337.47)",
    ),
}

#: (env steps, random warm-up steps, episodes for the random policy's score) per budget.
STEPS = {"tiny": (160, 80, 4), "quick": (2_000, 1_000, 20), "full": (15_000, 5_000, 100)}

PUBLISHED = [
    "Lillicrap et al. 2015 (arXiv:1509.02971), Table 1, normalized scores on the paper's own "
    "MuJoCo pendulum task, as quoted in rlnorm issue 13: BatchNorm without a target network "
    "0.099, with target networks 0.946 (0 = random policy, 1 = the paper's iLQG planner); "
    "the paper's conclusion: target networks are needed, BatchNorm helps on some tasks.",
    "RL Zoo benchmark (rl-baselines3-zoo `benchmark.md`): DDPG Pendulum-v1 -152 and TD3 "
    "-152 at 20k steps (no BatchNorm).",
    "Fujimoto et al. 2018 (TD3, arXiv:1802.09477), Table 1 (MuJoCo v1 envs, max average "
    "return over 1M steps): InvertedPendulum 1000.00 for TD3, DDPG and their DDPG; "
    "InvertedDoublePendulum TD3 9337.47 +- 14.96, DDPG 9355.52, their DDPG 8369.95.",
]


def target_gap(agent: Agent, trial: runner.Trial, eval_env: Any) -> dict[str, Any]:
    """Measured, not assumed: the largest difference between a target network's parameters
    and its online network's at the end (0: no target network in effect)."""
    online = agent.modules()
    gaps = [
        float((t - o).detach().abs().max())
        for name, module in online.items()
        if isinstance(module, TargetNetwork)
        for t, o in zip(
            module.net.parameters(), online[name.removesuffix("_target")].parameters(), strict=True
        )
    ]
    return {"target_gap": max(gaps)}


def trials(seeds: int, budget: str) -> list[runner.Trial]:
    """Every variant on every env, same seeds, the DDPG config."""
    steps, starts, _ = STEPS[budget]
    small = budget == "tiny"
    return [
        runner.Trial(
            variant, "td3", env_id, norm, seed, steps,
            overrides=(*overrides, f"agent.learning_starts={starts}", "agent.gamma=0.99"),
            config_file=runner.packaged_config("td3/ddpg-Pendulum-v1.yaml"),
            backend=REFERENCE[env_id][0],
            eval_points=2 if small else 10,
            eval_episodes=2 if small else 10,
            final_episodes=2 if small else 20,
            post=target_gap,
        )
        for env_id in (["Pendulum-v1"] if small else REFERENCE)  # tiny: the tests' smoke run
        for variant, norm, overrides in VARIANTS
        for seed in range(seeds)
    ]  # fmt: skip


def run(
    seeds: int, budget: str, out: Path, workers: int, command: str, envs: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Run the reproduction and write its four files into ``out``; returns the table."""
    start = time.perf_counter()
    results = runner.run_trials(
        runner.select(trials(seeds, budget), envs), workers, desc="ddpg-bn", store=out / "trials"
    )
    rows, _ = report.write_outputs(out, TITLE, results)
    episodes = STEPS[budget][2]
    env_ids = list(dict.fromkeys(r["env"] for r in rows))
    random = {
        env_id: float(runner.random_returns(env_id, episodes, 0, REFERENCE[env_id][0]).mean())
        for env_id in env_ids
    }
    for row in rows:
        best = REFERENCE[row["env"]][1]
        row["normalized"] = (row["final_return"] - random[row["env"]]) / (best - random[row["env"]])
    report.write_csv(out / "results.csv", rows)
    keys = ("env", "variant")
    reps = report.reps_for(budget)
    table = report.results_table(rows, keys, reps)
    normalized = report.summarize(rows, keys, "normalized", reps)
    for entry, norm_entry in zip(table, normalized, strict=True):
        entry["normalized IQM [95% CI]"] = (
            f"{norm_entry['iqm']:.3f} [{norm_entry['ci_low']:.3f}, {norm_entry['ci_high']:.3f}]"
        )
        entry["normalized_iqm"] = norm_entry["iqm"]
        group = [r for r in rows if all(r[k] == entry[k] for k in keys)]
        entry["target - online"] = max(r["target_gap"] for r in group)
    columns = [
        "env", "variant", "seeds", "final IQM [95% CI]", "normalized IQM [95% CI]", "median",
        "worst", "best", "AUC IQM [95% CI]", "target - online", "wall s/run",
    ]  # fmt: skip
    steps, starts, _ = STEPS[budget]
    description = [
        f"{steps} env steps per run, the first {starts} with uniform random actions, then one "
        "gradient step per env step; gamma 0.99, the rest as `configs/td3/ddpg-Pendulum-v1.yaml`"
        " (64x64 networks, lr 1e-3, tau 0.005 or 1). *target - online*: the largest "
        "difference between a target network's parameters and its online network's at the "
        "end, measured (0: no target network in effect). Normalized: (return - random) / (best "
        "published - random), with the uniform random policy's mean return measured here over "
        f"{episodes} episodes:",
        "",
        *[
            f"- {env_id}: random {random[env_id]:.1f}; best published {REFERENCE[env_id][1]} "
            f"({REFERENCE[env_id][2]})"
            for env_id in env_ids
        ],
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
    """Measured sentences: does BN without target networks fail where BN with them works?"""
    lines = ["## Reproduced?", ""]
    for env_id in dict.fromkeys(t["env"] for t in table):
        by = {t["variant"]: t["normalized_iqm"] for t in table if t["env"] == env_id}
        with_targets, without = by["BN + target nets"], by["BN, no target nets"]
        if with_targets < 0.5:
            verdict = "inconclusive: BN with target networks did not learn either (< 0.5)"
        elif with_targets - without > 0.25 and without < 0.5:
            verdict = "reproduced: BN without target networks is far below BN with them"
        else:
            verdict = "not reproduced: BN without target networks is not far below BN with them"
        lines.append(
            f"- {env_id}: normalized IQM, BN + targets {with_targets:.3f}, BN without targets "
            f"{without:.3f} (paper, pendulum: 0.946 and 0.099): {verdict}; without BN "
            f"{by['no BN + target nets']:.3f} and {by['no BN, no target nets']:.3f}."
        )
    lines.append(
        "- The verdict's rule: reproduced when BN without target networks scores below 0.5 "
        "and at least 0.25 below BN with them; inconclusive when BN with them is below 0.5."
    )
    return lines
