"""What one gradient update costs, one seed against a population, and where the time goes.

For each population size K (1: an ordinary ``--seed 0`` run; K > 1: ``--seeds 0-(K-1)``),
a child process trains the agent's shipped Pendulum-v1 config and times the agent's
``update`` calls after a warm-up (wall and CPU time per update), then profiles a window of
updates with ``torch.profiler`` and splits their CPU time into matrix products (``mm``,
``bmm``, ``addmm``, ``baddbmm``: the network's arithmetic, with the FLOP rate the profiler
counts for them), the batch-norm kernel (forward and backward) and everything else. The
table shows what a population's update costs per member, and how much of it is the
arithmetic that grows with K (one seed's update is mostly per-op overhead, which a
population shares)::

    taskset -c 1 python benchmarks/update_cost.py [--agent crossq] [--sizes 1 8]
        [--updates 300] [--conditions TEXT] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results" / "update_cost.md"
WARMUP = 150  # updates before timing: replay past its first batches, allocator settled
MATMUL = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm")
BATCH_NORM = ("aten::native_batch_norm", "aten::native_batch_norm_backward")


def child(agent: str, size: int, updates: int) -> dict[str, Any]:
    """Train in this process, timing ``updates`` updates and profiling ``updates // 3``."""
    from torch.profiler import ProfilerActivity, profile

    from rlnorm import agents, cli

    cls = agents.get(agent)
    original = cls.update
    timed_end, profiled_end = WARMUP + updates, WARMUP + updates + updates // 3
    state: dict[str, Any] = {"calls": 0}

    def update(self: Any, batch: Any, progress: float) -> dict[str, float]:
        state["calls"] += 1
        n = state["calls"]
        if n == WARMUP + 1:
            state["wall"], state["cpu"] = time.perf_counter(), time.process_time()
        if n == timed_end + 1:
            state["wall"] = (time.perf_counter() - state["wall"]) / updates
            state["cpu"] = (time.process_time() - state["cpu"]) / updates
            state["profiler"] = profile(activities=[ProfilerActivity.CPU], with_flops=True)
            state["profiler"].__enter__()
        metrics = original(self, batch, progress)
        if n == profiled_end:
            state["profiler"].__exit__(None, None, None)
        return metrics

    cls.update = update  # type: ignore[method-assign]
    steps = profiled_end + 200  # one update per env step after 100 random warm-up steps
    seeds = ["--seed", "0"] if size == 1 else ["--seeds", f"0-{size - 1}"]
    argv = ["train", "--agent", agent, "--env", "Pendulum-v1", "--steps", str(steps),
            "--threads", "1", "--quiet", "--set", "train.eval_every=0",
            "--set", "train.checkpoint_every=0", "--set", "train.final_eval_episodes=1",
            *seeds]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            cli.main(argv)
        finally:
            os.chdir(cwd)
    events = state["profiler"].key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL)
    flops = sum(e.flops for e in events if e.key in MATMUL)
    norm = sum(e.self_cpu_time_total for e in events if e.key in BATCH_NORM)
    return {
        "wall_ms": 1e3 * state["wall"],
        "cpu_ms": 1e3 * state["cpu"],
        "matmul_share": matmul / total,
        "norm_share": norm / total,
        "gflops": flops / (matmul * 1e-6) / 1e9 if matmul else 0.0,
        "mflop_per_update": flops / (updates // 3) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="crossq")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--conditions", default="", help="what else ran on the machine")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.agent, args.child, args.updates)))
        return
    rows = []
    for size in args.sizes:
        argv = [sys.executable, __file__, "--agent", args.agent, "--updates", str(args.updates),
                "--child", str(size)]  # fmt: skip
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append((size, row))
        print(f"K={size}: {json.dumps(row)}")
    write(rows, args)


def write(rows: list[tuple[int, dict[str, Any]]], args: argparse.Namespace) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    one = dict(rows)[1] if 1 in dict(rows) else rows[0][1]
    lines = [
        "# One update's cost: one seed against a population",
        "",
        f"- Command: `taskset -c {cores} python benchmarks/update_cost.py "
        f"{shlex.join(sys.argv[1:])}`",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit `{commit}`",
        f"- Machine: {os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), "
        f"torch {torch.__version__}, one torch thread, pinned to core(s) {cores}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end",
        *([f"- Conditions: {args.conditions}"] if args.conditions else []),
        f"- `{args.agent}`'s shipped `configs/{args.agent}/Pendulum-v1.yaml`; after {WARMUP} "
        f"updates, {args.updates} updates timed (the agent's `update`: replay sample, critic, "
        f"delayed actor and temperature, optimizers), then {args.updates // 3} profiled. "
        "*Matrix products*: `mm`, `bmm`, `addmm`, `baddbmm`, the networks' arithmetic; "
        "*batch-norm kernel*: its forward and backward; shares of the profiled CPU time.",
        "",
        "| seeds K | wall ms / update | CPU ms / update | x one seed (CPU) | per member, x one "
        "seed | matrix products | batch-norm kernel | matmul GFLOP/s | MFLOP / update |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size, r in rows:
        ratio = r["cpu_ms"] / one["cpu_ms"]
        lines.append(
            f"| {size} | {r['wall_ms']:.2f} | {r['cpu_ms']:.2f} | {ratio:.2f} | "
            f"{ratio / size:.2f} | {100 * r['matmul_share']:.0f}% | "
            f"{100 * r['norm_share']:.0f}% | {r['gflops']:.0f} | {r['mflop_per_update']:.0f} |"
        )
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
