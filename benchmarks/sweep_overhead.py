"""What ``rlnorm sweep`` costs per trial on each backend, and what ``--workers`` buys.

1. Overhead per trial: ``--trials`` tiny PPO CartPole trials (``--tiny-steps`` env steps,
   10 final-evaluation episodes), one at a time (``--workers 1``), on ``--backend local``
   and on ``--backend ray`` (a local Ray started by the sweep). Overhead per trial is
   (the sweep's wall time - the trials' own training time, from their ``summary.json``) /
   trials: process start, imports, env and agent set-up, checkpoints, bookkeeping, and for
   Ray its start-up and shutdown, spread over the trials.
2. Speed-up of ``--workers 2``: the issue's minimal spec (PPO CartPole, 8192 steps,
   norm none/batch x seeds 0-2, shipped config otherwise) with ``--workers 1`` and then 2.

Each sweep is a fresh ``rlnorm sweep`` process in a new temporary directory. Writes
Markdown to ``--out`` (default benchmarks/results/sweep_overhead.md) with the conditions.

    python benchmarks/sweep_overhead.py
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch

ROOT = Path(__file__).resolve().parents[1]


def sweep(spec_text: str, root: Path, name: str, *args: str) -> tuple[float, float, int]:
    """Run a sweep; returns (its wall time, the sum of its trials' training time, trials)."""
    spec = root / f"{name}.yaml"
    spec.write_text(spec_text)
    out = root / name
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "rlnorm.cli", "sweep", str(spec), "--out", str(out), *args],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(row["status"] == "done" for row in rows), rows
    return wall, sum(float(row["wall_s"]) for row in rows), len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--tiny-steps", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/sweep_overhead.md")
    args = parser.parse_args()
    load_before = os.getloadavg()
    seeds = list(range(args.trials))
    tiny = (
        f"train: {{agent: ppo, env: CartPole-v1, norm: none, steps: {args.tiny_steps}, "
        "train.final_eval_episodes: 10}\n"
        f"grid: {{seed: {seeds}}}\n"
    )
    minimal = (
        "train: {agent: ppo, env: CartPole-v1, steps: 8192}\n"
        "grid: {norm: [none, batch], seed: [0, 1, 2]}\n"
    )
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        overhead = {}
        for backend in ("local", "ray"):
            wall, train, n = sweep(tiny, root, backend, "--backend", backend, "--workers", "1")
            overhead[backend] = (wall, train, n, (wall - train) / n)
        speed = {}
        for workers in (1, 2):
            speed[workers] = sweep(minimal, root, f"w{workers}", "--workers", str(workers))[0]
        report = subprocess.run(
            [sys.executable, "-m", "rlnorm.cli", "sweep", "report", str(root / "w2")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    load_after = os.getloadavg()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    lines += [
        "# `rlnorm sweep`: overhead per trial and `--workers` speed-up",
        "",
        f"`python benchmarks/sweep_overhead.py --trials {args.trials} --tiny-steps "
        f"{args.tiny_steps}` on {time.strftime('%Y-%m-%d %H:%M %Z')}, commit {commit}; "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, torch {torch.__version__}, Ray {ray.__version__}; "
        f"load average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in load_before)} before, "
        f"{'/'.join(f'{x:.1f}' for x in load_after)} after (other processes shared the cores).",
        "",
        f"## Overhead per trial ({args.trials} PPO CartPole trials of {args.tiny_steps} steps, "
        "`--workers 1`)",
        "",
        "| backend | sweep wall time | trials' own training time | overhead per trial |",
        "| --- | ---: | ---: | ---: |",
    ]
    for backend, (wall, train, _, per_trial) in overhead.items():
        lines.append(f"| {backend} | {wall:.1f} s | {train:.1f} s | {per_trial:.1f} s |")
    lines += [
        "",
        "## `--workers 2` speed-up (the minimal spec: PPO CartPole, 8192 steps, norm none/batch "
        "x 3 seeds)",
        "",
        "| workers | sweep wall time | speed-up |",
        "| ---: | ---: | ---: |",
        f"| 1 | {speed[1]:.1f} s | 1.00 |",
        f"| 2 | {speed[2]:.1f} s | {speed[1] / speed[2]:.2f} |",
        "",
        "## `rlnorm sweep report` of the `--workers 2` sweep",
        "",
        *[
            f"#{line}" if line.startswith("## ") else line
            for line in report[report.index("## ") :].splitlines()
            if not line.startswith(("![", "wrote "))
        ],
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
