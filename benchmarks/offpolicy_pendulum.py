"""Off-policy agents on Pendulum-v1: does each (agent, norm) reach -200 within 20k steps?

Runs, one after another (never two at a time: each run is timed),

    rlnorm train --agent A --env Pendulum-v1 --norm N --seed 0 --quiet --threads 1
                 --run-dir DIR --set train.final_eval_episodes=20

with each agent's shipped ``configs/<agent>/Pendulum-v1.yaml``, and writes the final
deterministic 20-episode evaluation mean, the wall time and the command of each run to
``benchmarks/results/offpolicy_pendulum.md``. Runs already recorded in ``--runs-dir``
(a ``summary.json`` there) are reused, so an interrupted benchmark continues where it
stopped. Usage::

    python benchmarks/offpolicy_pendulum.py [--runs sac:none sac:batch ...] [--runs-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

TARGET = -200.0
RUNS = [
    "sac:none", "sac:layer", "sac:batch",
    "td3:none", "td3:layer", "td3:batch",
    # PPO's fix for the actor: its loss on running statistics (agents/td3.py)
    "td3:batch:agent.actor_norm_update=frozen",
    # rlnorm's mlp layout (Linear -> norm -> ReLU, nothing on the input) instead of sbx's
    "td3:batch:agent.bn_placement=hidden",
    "crossq:batch_renorm", "crossq:batch", "crossq:layer", "crossq:none",
    # rlnorm's mlp layout (Linear -> norm -> ReLU, nothing on the input) instead of sbx's
    "crossq:batch_renorm:agent.bn_placement=hidden",
    # Batch Renorm relaxing after the layer's default 1k warm-up passes, not sbx's 100k:
    "crossq:batch_renorm:agent.renorm_warmup_steps=1000",
]  # fmt: skip
RESULTS = Path(__file__).parent / "results" / "offpolicy_pendulum.md"


def command(agent: str, norm: str, sets: list[str], run_dir: Path) -> list[str]:
    """The ``rlnorm train`` command line of one run (``sets``: extra ``--set`` overrides)."""
    overrides = [arg for value in sets for arg in ("--set", value)]
    return [
        "rlnorm", "train", "--agent", agent, "--env", "Pendulum-v1", "--norm", norm,
        "--seed", "0", "--quiet", "--threads", "1", "--run-dir", str(run_dir),
        "--set", "train.final_eval_episodes=20", *overrides,
    ]  # fmt: skip


def run(agent: str, norm: str, sets: list[str], runs_dir: Path) -> dict[str, object]:
    """Train one (agent, norm) unless its run directory already holds a summary."""
    run_dir = runs_dir / "-".join([agent, norm, *sets])
    argv = command(agent, norm, sets, run_dir)
    summary_path, failed_path = run_dir / "summary.json", run_dir / "failed.txt"
    if not summary_path.exists() and not failed_path.exists():
        rlnorm = Path(sys.executable).with_name("rlnorm")
        start = time.perf_counter()
        done = subprocess.run([str(rlnorm), *argv[1:]], capture_output=True, text=True)
        wall = time.perf_counter() - start
        (run_dir / "wall_time.txt").write_text(f"{wall:.1f}\n")
        if done.returncode != 0:  # e.g. a diverging run stopped by its NaN check
            failed_path.write_text(done.stderr.strip().splitlines()[-1] + "\n")
    row: dict[str, object] = {
        "agent": agent,
        "norm": " ".join([norm, *sets]),
        "wall": float((run_dir / "wall_time.txt").read_text()),
        "command": shlex.join(argv),
    }
    if failed_path.exists():
        return row | {"failed": failed_path.read_text().strip()}
    summary = json.loads(summary_path.read_text())
    return row | {
        "mean": summary["final_eval"]["mean"],
        "std": summary["final_eval"]["std"],
        "best": summary["best_eval_mean"],
        "train_wall": summary["wall_time_s"],
    }


def report(rows: list[dict[str, object]], conditions: str) -> str:
    """The results as Markdown; ``conditions`` says when and under what load they ran."""
    lines = [
        "# Off-policy agents on Pendulum-v1 (20,000 env steps, seed 0)",
        "",
        "Written by `python benchmarks/offpolicy_pendulum.py`: each run is",
        "`rlnorm train --agent A --env Pendulum-v1 --norm N --seed 0 --quiet --threads 1",
        "--run-dir DIR --set train.final_eval_episodes=20` with the shipped",
        "`configs/A/Pendulum-v1.yaml`, one run at a time on a 2-core CPU machine",
        f"({conditions}). The final evaluation is 20 deterministic",
        f"episodes in eval mode; the target is a mean >= {TARGET:.0f} (rl-baselines3-zoo's",
        "published single SAC run reaches -157 at 20k steps).",
        "",
        "The configs keep the zoo's and the papers' hyperparameters except the network widths,",
        "narrowed so that one run takes minutes on one CPU core: SAC and TD3 64x64 (zoo:",
        "256x256 and 400x300), CrossQ actor 64x64 and critic 128x128 (paper: 256 and 2048).",
        "TD3 follows the zoo's 10k random warm-up steps, so it makes 10k gradient steps;",
        "SAC and CrossQ make one per env step after 100 warm-up steps. CrossQ and TD3 place",
        "their norms as sbx's CrossQ does (on the input and after each activation;",
        "`bn_placement=hidden` is rlnorm's usual Linear -> norm -> ReLU, SAC's layout).",
        "CrossQ's Batch Renorm",
        "is plain BatchNorm (momentum 0.01) for its first 100k train-mode passes (sbx's",
        "warm-up), so throughout these runs; the last row relaxes it after 1k passes instead",
        "(the layer's default). The `actor_norm_update=frozen` row runs TD3's actor loss on",
        "the actor's running statistics (the policy that acts), PPO's fix.",
        "",
        "| agent | `--norm` | final 20-episode mean ± std | target | best periodic eval "
        "| wall time (training) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(
                f"| {r['agent']} | `{r['norm']}` | **failed**: {r['failed']} | missed | - "
                f"| {float(r['wall']):.0f} s |"
            )
            continue
        hit = "met" if float(r["mean"]) >= TARGET else f"**missed** ({float(r['mean']):.1f})"
        lines.append(
            f"| {r['agent']} | `{r['norm']}` | {float(r['mean']):.1f} ± {float(r['std']):.1f} "
            f"| {hit} | {float(r['best']):.1f} | {float(r['wall']):.0f} s "
            f"({float(r['train_wall']):.0f} s) |"
        )
    lines += ["", "Commands:", ""]
    lines += [f"- `{r['command']}`" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", nargs="+", default=RUNS, help="agent:norm[:key=value...] (--set overrides)"
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/rlnorm-offpolicy-pendulum"))
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    started = time.strftime("%Y-%m-%d")
    rows = []
    for pair in args.runs:
        agent, norm, *sets = pair.split(":")
        rows.append(run(agent, norm, sets, args.runs_dir))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        now = " ".join(f"{x:.2f}" for x in os.getloadavg())
        conditions = f"{started}; load average (1/5/15 min) {load} before, {now} after"
        RESULTS.write_text(report(rows, conditions))
        print(
            f"{agent} {norm}: {rows[-1].get('mean', 'failed')} in {rows[-1]['wall']:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
