"""What one gradient update costs, one seed against a population, and where the time goes.

For each population size K (1: an ordinary ``--seed 0`` run; K > 1: ``--seeds 0-(K-1)``),
a child process trains the agent's shipped config for ``--env`` (Pendulum-v1 unless given)
and times the agent's ``update`` calls after a warm-up (wall and CPU time per update,
inside the calls: not the acting and env steps between them), then times every aten op
of a window of updates on its own (a ``TorchDispatchMode`` that reads the clock around each
op: it sees the ops autograd's backward runs too, and, unlike ``torch.profiler``, adds its
overhead outside what it measures) and sorts them: matrix products (``mm``, ``bmm``,
``addmm``, ``baddbmm``, with the FLOP rate from their shapes), the batch-norm kernel
(forward and backward), activations (ReLU, tanh and their backward, sigmoid), copies, the
optimizer's kernels, other ops, and the rest of the update (Python, dispatch). The *floor*
is what a population cannot share between its members: its products, batch-norm and
activation kernels, against one seed's whole update. Where it exceeds a target ratio, no
saving of per-op overhead reaches that ratio on this machine::

    taskset -c 1 python benchmarks/update_cost.py [--agent crossq] [--env Pendulum-v1]
        [--sizes 1 8] [--updates 300] [--conditions TEXT] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from provenance import header
from torch.utils._python_dispatch import TorchDispatchMode

RESULTS = Path(__file__).parent / "results" / "update_cost.md"
WARMUP = 150  # updates before timing: replay past its first batches, allocator settled
MATMUL = ("mm", "bmm", "addmm", "baddbmm")
#: The op kinds in table order; the first three make the floor.
CATEGORIES = {
    "matrix products": MATMUL,
    "batch-norm kernel": ("native_batch_norm", "native_batch_norm_backward", "batch_norm"),
    # a population's tanh is 1 - 2 sigmoid(-2x) (rlnorm.activations): its multiply and
    # subtraction are among the other ops
    "activations": (
        *("relu", "relu_", "threshold_backward", "clamp_min", "tanh", "tanh_backward"),
        "sigmoid",
    ),
    "copies": ("copy_", "clone", "_to_copy", "contiguous"),
    "optimizer": ("_fused_adam_",),  # and every _foreach_ op
}


KINDS = [*CATEGORIES, "other ops"]
OFF_POLICY_UPDATE = "replay sample, critic, delayed actor and temperature, optimizers"
PPO_UPDATE = "advantages, then every epoch's minibatch steps over one rollout"


def category(op: str) -> str:
    if op.startswith("_foreach_"):
        return "optimizer"
    return next((name for name, ops in CATEGORIES.items() if op in ops), "other ops")


def matmul_flops(op: str, args: tuple[Any, ...]) -> int:
    """2 m n k per product (``bmm``/``baddbmm``: per batch entry) from the operands' shapes."""
    a, b = (args[1], args[2]) if op in ("addmm", "baddbmm") else (args[0], args[1])
    return 2 * math.prod(a.shape) * b.shape[-1]


class OpTimer(TorchDispatchMode):
    """Each aten op's own wall time and, for products, FLOPs, summed by category."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[str, float] = defaultdict(float)
        self.by_op: dict[str, float] = defaultdict(float)
        self.flops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        elapsed = time.perf_counter() - start
        op = func.overloadpacket.__name__
        self.seconds[category(op)] += elapsed
        self.by_op[op] += elapsed
        if op in MATMUL:
            self.flops += matmul_flops(op, args)
        return out


def steps_per_update(agent: str, env: str) -> int:
    """Env steps per ``update`` call: PPO's rollout (steps x envs), else one."""
    from rlnorm import config

    if agent != "ppo":
        return 1
    path = config.packaged_config(agent, env)
    if path is None:
        raise SystemExit(f"update_cost.py: no shipped config for {agent} on {env}")
    data = config.read_yaml(path)
    return int(data["agent"]["rollout_steps"]) * int(data["train"]["num_envs"])


def child(agent: str, env: str, size: int, updates: int) -> dict[str, Any]:
    """Train in this process, timing ``updates`` updates, then op-timing ``updates // 3``."""
    from rlnorm import agents, cli

    cls = agents.get(agent)
    original = cls.update
    timed_end, op_timed_end = WARMUP + updates, WARMUP + updates + updates // 3
    state: dict[str, Any] = {"calls": 0, "timer": OpTimer(), "wall": 0.0, "cpu": 0.0}

    def update(self: Any, batch: Any, progress: float) -> dict[str, float]:
        state["calls"] += 1
        n = state["calls"]
        if WARMUP < n <= timed_end:  # the update call alone: acting and env steps are not
            wall, cpu = time.perf_counter(), time.process_time()
            metrics = original(self, batch, progress)
            state["wall"] += (time.perf_counter() - wall) / updates
            state["cpu"] += (time.process_time() - cpu) / updates
            return metrics
        if timed_end < n <= op_timed_end:
            with state["timer"]:
                return original(self, batch, progress)
        return original(self, batch, progress)

    cls.update = update  # type: ignore[method-assign]
    # off-policy: one update per env step after its random warm-up steps (100 or fewer)
    steps = (op_timed_end + 200) * steps_per_update(agent, env)
    seeds = ["--seed", "0"] if size == 1 else ["--seeds", f"0-{size - 1}"]
    argv = ["train", "--agent", agent, "--env", env, "--steps", str(steps),
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
    timer, window = state["timer"], updates // 3
    ms = {name: 1e3 * seconds / window for name, seconds in timer.seconds.items()}
    matmul_s = timer.seconds["matrix products"]
    return {
        "wall_ms": 1e3 * state["wall"],
        "cpu_ms": 1e3 * state["cpu"],
        "op_ms": ms,
        "gflops": timer.flops / matmul_s / 1e9 if matmul_s else 0.0,
        "mflop_per_update": timer.flops / window / 1e6,
        "top_ops_ms": {
            op: round(1e3 * seconds / window, 3)
            for op, seconds in sorted(timer.by_op.items(), key=lambda kv: -kv[1])[:15]
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="crossq")
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--conditions", default="", help="what else ran on the machine")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.agent, args.env, args.child, args.updates)))
        return
    rows = []
    for size in args.sizes:
        argv = [sys.executable, __file__, "--agent", args.agent, "--env", args.env,
                "--updates", str(args.updates),
                "--child", str(size)]  # fmt: skip
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append((size, row))
        print(f"K={size}: {json.dumps(row)}")
    write(rows, args)


def write(rows: list[tuple[int, dict[str, Any]]], args: argparse.Namespace) -> None:
    one = dict(rows)[1] if 1 in dict(rows) else rows[0][1]
    software = f"torch {torch.__version__}, one torch thread"
    lines = [
        *header("One update's cost: one seed against a population", software, args.conditions),
        f"- `{args.agent}`'s shipped `configs/{args.agent}/{args.env}.yaml`; after {WARMUP} "
        f"updates, {args.updates} updates timed (the agent's `update`: "
        f"{PPO_UPDATE if args.agent == 'ppo' else OFF_POLICY_UPDATE}). "
        "Op columns: ms per update of each kind of aten op's own time, timed apart in a "
        f"window of {args.updates // 3} further updates (the script's docstring); *rest*: "
        "the CPU per update less them all (Python, dispatch, autograd's bookkeeping). "
        "*Floor*: matrix products + batch-norm kernel + activations, over one seed's CPU per "
        "update.",
        "",
        "| seeds K | wall ms / update | CPU ms / update | x one seed (CPU) | per member, x one "
        f"seed | {' | '.join(KINDS)} | rest | floor, x one seed | matmul GFLOP/s | "
        "MFLOP / update |",
        "|---|---|---|---|---|" + "---|" * len(KINDS) + "---|---|---|---|",
    ]
    for size, r in rows:
        ratio = r["cpu_ms"] / one["cpu_ms"]
        op_ms = [r["op_ms"].get(kind, 0.0) for kind in KINDS]
        floor = sum(op_ms[:3]) / one["cpu_ms"]
        lines.append(
            f"| {size} | {r['wall_ms']:.2f} | {r['cpu_ms']:.2f} | {ratio:.2f} | "
            f"{ratio / size:.2f} | {' | '.join(f'{v:.2f}' for v in op_ms)} | "
            f"{r['cpu_ms'] - sum(op_ms):.2f} | {floor:.2f} | {r['gflops']:.0f} | "
            f"{r['mflop_per_update']:.0f} |"
        )
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
