"""What an activation costs on this CPU: torch's ``tanh`` against :func:`rlnorm.activations.tanh`
(``1 - 2 sigmoid(-2x)``, the tanh of a seed population's networks), beside ReLU, sigmoid
and a multiply.

The shapes are the hidden activations PPO's CartPole networks see: one seed acting on 8
envs (``8 x 64``), 8 members acting (``8 x 8 x 64``), one seed's minibatch (``256 x 64``)
and 8 members' (``8 x 256 x 64``). For each, the forward alone (no autograd), and forward
plus backward of a sum, in microseconds: the contenders of one shape are timed in
``--rounds`` interleaved rounds of ``--seconds / --rounds`` each (``members_forward.py``'s
timer), each time the median over the rounds. Also the largest absolute difference of
rlnorm's tanh from float64's.
With ``--pairs N``, it also trains PPO on CartPole-v1 (shipped config, ``--steps`` per
seed) with 8 members, N times with each tanh, alternating, in child processes, and
reports their CPU times: what the activation changes in a whole run::

    taskset -c 1 python benchmarks/activation_cost.py [--seconds 1] [--rounds 8]
        [--pairs 3] [--steps 60000] [--conditions TEXT] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from members_forward import timed
from provenance import header

from rlnorm.activations import tanh

RESULTS = Path(__file__).parent / "results" / "activation_cost.md"
SHAPES = {
    "8 x 64 (acting)": (8, 64),
    "8 x 8 x 64 (acting)": (8, 8, 64),
    "256 x 64": (256, 64),
    "8 x 256 x 64": (8, 256, 64),
}
CONTENDERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "torch.tanh": torch.tanh,
    "rlnorm tanh": tanh,
    "torch.sigmoid": torch.sigmoid,
    "torch.relu": torch.relu,
    "x * x": lambda x: x * x,
}


def measure(shape: tuple[int, ...], seconds: float, rounds: int) -> dict[str, tuple[float, float]]:
    """Microseconds per call of each contender: forward alone, forward + backward."""
    x = torch.randn(shape, requires_grad=True)
    runs: dict[str, Callable[[], None]] = {}
    for name, fn in CONTENDERS.items():

        def forward(fn: Callable[[torch.Tensor], torch.Tensor] = fn) -> None:
            with torch.no_grad():
                fn(x)

        def backward(fn: Callable[[torch.Tensor], torch.Tensor] = fn) -> None:
            x.grad = None
            fn(x).sum().backward()

        runs[f"{name} forward"], runs[f"{name} backward"] = forward, backward
    us = {name: 1e6 * t for name, t in timed(runs, seconds, rounds, "cpu").items()}
    return {name: (us[f"{name} forward"], us[f"{name} backward"]) for name in CONTENDERS}


def child(tanh_kind: str, steps: int) -> dict[str, float]:
    """Train 8 PPO members in this process with ``tanh_kind``'s tanh."""
    import rlnorm.activations
    from rlnorm import cli

    if tanh_kind == "torch":  # what a population ran before rlnorm.activations
        rlnorm.activations.tanh = torch.tanh  # type: ignore[assignment]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["train", "--agent", "ppo", "--env", "CartPole-v1", "--seeds", "0-7",
                "--steps", str(steps), "--threads", "1", "--quiet",
                "--run-dir", f"{tmp}/seed{{seed}}"]  # fmt: skip
        cli.main(argv)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall": time.perf_counter() - start, "cpu": usage.ru_utime + usage.ru_stime}


def whole_runs(pairs: int, steps: int) -> list[str]:
    """8 members with the two tanh kinds alternating ``pairs`` times; CPU seconds."""
    lines = [
        "",
        f"## Whole runs: PPO on CartPole-v1, {steps} steps per seed, {pairs} pairs",
        "",
        "CPU seconds of `rlnorm train --agent ppo --env CartPole-v1 --seeds 0-7` "
        "(shipped config but for the steps), the two tanh kinds alternating, each run in its "
        "own process.",
        "",
        "| population's tanh | CPU s, each run | median | x torch.tanh |",
        "|---|---|---|---|",
    ]
    runs: dict[str, list[float]] = {"rlnorm": [], "torch": []}
    for _ in range(pairs):
        for kind in runs:
            argv = [sys.executable, __file__, "--child", kind, "--steps", str(steps)]
            out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            runs[kind].append(json.loads(out.strip().splitlines()[-1])["cpu"])
            print(kind, runs[kind][-1])
    old = statistics.median(runs["torch"])
    for kind, label in (("rlnorm", "rlnorm tanh"), ("torch", "torch.tanh")):
        median = statistics.median(runs[kind])
        lines.append(
            f"| {label} | {', '.join(f'{v:.1f}' for v in runs[kind])} | "
            f"{median:.1f} | {median / old:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per contender and shape")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--conditions", default="", help="what else ran on the machine")
    parser.add_argument("--pairs", type=int, default=0)
    parser.add_argument("--steps", type=int, default=60_000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=["rlnorm", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return
    torch.set_num_threads(1)
    grid = torch.linspace(-20, 20, 2_000_001)
    error = (tanh(grid).double() - torch.tanh(grid.double())).abs().max().item()
    torch_error = (torch.tanh(grid).double() - torch.tanh(grid.double())).abs().max().item()
    capability = torch.backends.cpu.get_cpu_capability()
    lines = [
        *header(
            "Activation cost: torch's tanh against rlnorm's",
            f"torch {torch.__version__} (CPU kernels: {capability}), one torch thread",
            args.conditions,
        ),
        f"- float32 on [-20, 20] (2M points): largest |error| against float64's tanh "
        f"{error:.2e} for rlnorm's tanh, {torch_error:.2e} for torch's.",
        f"- Microseconds per call, median over {args.rounds} interleaved rounds of "
        f"{args.seconds / args.rounds:.3g} s per contender; *forward*: under `torch.no_grad()`; "
        "*fwd + bwd*: forward, `.sum().backward()`.",
        "",
        "| shape | activation | forward µs | x torch.tanh | fwd + bwd µs | x torch.tanh |",
        "|---|---|---|---|---|---|",
    ]
    for label, shape in SHAPES.items():
        rows = measure(shape, args.seconds, args.rounds)
        base_fwd, base_bwd = rows["torch.tanh"]
        for name, (fwd, bwd) in rows.items():
            lines.append(
                f"| {label} | {name} | {fwd:.1f} | {fwd / base_fwd:.2f} | {bwd:.1f} | "
                f"{bwd / base_bwd:.2f} |"
            )
            print(lines[-1])
    if args.pairs:
        lines += whole_runs(args.pairs, args.steps)
    args.output.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
