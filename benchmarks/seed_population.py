"""Many seeds in one process (``rlnorm train --seeds``) against one seed per process.

For each agent, in one run of this script and one process at a time (each is timed whole,
start-up included)::

    rlnorm train --agent A --env E --seed 0 --quiet --threads 1 --steps S
    rlnorm train --agent A --env E --seeds 0-(K-1) --quiet --threads 1 --steps S

with the agent's shipped ``configs/<agent>/<E>.yaml`` (E: Pendulum-v1 unless ``--env``),
for each population size K.
It prints and writes to ``benchmarks/results/seed_population.md`` the wall time, the ratio
to one seed alone, the aggregate env steps per second over all members, what K runs one
after another would take (K x the single run, measured once), and every member's final
evaluation (20 episodes, deterministic). Pin it to one core for stable numbers::

    taskset -c 1 python benchmarks/seed_population.py [--agents sac crossq] [--sizes 1 8 32]
        [--env Pendulum-v1] [--steps 20000] [--conditions TEXT] [--output FILE]

(PPO: ``--agents ppo --env CartPole-v1 --steps 150000``, its shipped config.)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from provenance import header

RESULTS = Path(__file__).parent / "results" / "seed_population.md"


def train(
    agent: str, env: str, steps: int, seeds: str | None, workdir: Path
) -> tuple[float, float, list[float]]:
    """Run one ``rlnorm train`` in ``workdir``; its wall time, its CPU time (user + system:
    what it cost, whatever else shares the core) and the members' final returns."""
    argv = ["rlnorm", "train", "--agent", agent, "--env", env, "--quiet",
            "--threads", "1", "--steps", str(steps),
            "--set", "train.final_eval_episodes=20"]  # fmt: skip
    argv += ["--seed", "0"] if seeds is None else ["--seeds", seeds]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summaries = sorted((workdir / "runs").glob("*/*/*/seed*/summary.json"))
    returns = [json.loads(path.read_text())["final_eval"]["mean"] for path in summaries]
    return wall, cpu, returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", nargs="+", default=["sac", "crossq"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--conditions", default="", help="what else ran on the machine")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the results file")
    args = parser.parse_args()
    rows = []
    for agent in args.agents:
        with tempfile.TemporaryDirectory() as tmp:
            single_wall, single_cpu, single_returns = train(
                agent, args.env, args.steps, None, Path(tmp)
            )
        print(
            f"{agent}: one seed alone {single_wall:.1f} s (CPU {single_cpu:.1f} s), "
            f"final {single_returns[0]:.1f}"
        )
        rows.append(
            (agent, "1 (alone)", single_wall, 1.0, single_cpu, 1.0, args.steps / single_wall,
             single_returns)
        )  # fmt: skip
        for size in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                wall, cpu, returns = train(agent, args.env, args.steps, f"0-{size - 1}", Path(tmp))
            ratio, cpu_ratio = wall / single_wall, cpu / single_cpu
            print(
                f"{agent}: {size} seeds in one process {wall:.1f} s = {ratio:.2f}x one seed, "
                f"CPU {cpu:.1f} s = {cpu_ratio:.2f}x (one after another: "
                f"{size * single_wall:.0f} s); finals {returns}"
            )
            rows.append(
                (agent, str(size), wall, ratio, cpu, cpu_ratio, size * args.steps / wall, returns)
            )
    write(rows, args)


def write(rows: list[tuple], args: argparse.Namespace) -> None:
    software = f"torch {torch.__version__}, one torch thread, one process of this script at a time"
    lines = [
        *header("Seed populations: many seeds in one process", software, args.conditions),
        f"- Each agent's shipped `configs/<agent>/{args.env}.yaml`, {args.steps} env steps per "
        "seed, final evaluation over 20 episodes; wall time of the whole command (start-up, "
        "evaluations and checkpoints included); CPU s is its user + system time, less "
        "inflated than wall time by other processes on the machine (not immune: they share "
        "caches and memory bandwidth).",
        "",
        "| agent | seeds | wall s | x one seed | CPU s | x one seed (CPU) | env steps/s (all "
        "seeds) | K runs one after another, s | final returns (min / median / max) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    single = {row[0]: row[2] for row in rows if row[1] == "1 (alone)"}
    for agent, size, wall, ratio, cpu, cpu_ratio, sps, returns in rows:
        k = 1 if size == "1 (alone)" else int(size)
        finals = sorted(returns)
        spread = f"{finals[0]:.1f} / {finals[len(finals) // 2]:.1f} / {finals[-1]:.1f}"
        lines.append(
            f"| {agent} | {size} | {wall:.1f} | {ratio:.2f} | {cpu:.1f} | {cpu_ratio:.2f} | "
            f"{sps:.0f} | "
            f"{k * single[agent]:.0f} | {spread} |"
        )
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
