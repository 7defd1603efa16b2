"""How BatchNorm PPO fares on CartPole-v1 with each way of handling the train/eval gap.

Runs the default PPO CartPole config (150k steps) for each variant and seed and prints a
markdown table of the final deterministic 100-episode evaluation. Variants:

- ``none``: no normalization (the reference).
- ``batch / train-mode``: textbook BatchNorm PPO: minibatch statistics in the update, EMA
  running statistics for acting, old log-probs recomputed in train mode.
- ``batch / train-mode, behaviour ratio``: the same with the acting pass's log-probs.
- ``batch / frozen, ema``: running statistics normalize during the update (acting and update
  are one function), refreshed after each update with BatchNorm's EMA (momentum 0.1).
- ``batch / frozen, cumulative``: the same with a cumulative average (rlnorm's default).

Usage: python benchmarks/ppo_batchnorm_variants.py [--seeds 0 1] [--steps 150000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rlnorm.cli import main as rlnorm_main

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "none": ("none", []),
    "batch / train-mode": ("batch", ["agent.norm_update=batch", "agent.norm_statistics=ema"]),
    "batch / train-mode, behaviour ratio": (
        "batch",
        ["agent.norm_update=batch", "agent.norm_statistics=ema", "agent.old_log_prob=behaviour"],
    ),
    "batch / frozen, ema": ("batch", ["agent.norm_update=frozen", "agent.norm_statistics=ema"]),
    "batch / frozen, cumulative (default)": ("batch", []),
}


def run(norm: str, overrides: list[str], seed: int, steps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "train",
            "--norm",
            norm,
            "--seed",
            str(seed),
            "--steps",
            str(steps),
            "--run-dir",
            tmp,
            "--quiet",
        ]
        for o in overrides:
            args += ["--set", o]
        start = time.perf_counter()
        if rlnorm_main(args) != 0:
            raise RuntimeError(f"training failed: {args}")
        wall = time.perf_counter() - start
        summary = json.loads((Path(tmp) / "summary.json").read_text())
        evals = [
            json.loads(line)["mean"] for line in (Path(tmp) / "eval.jsonl").read_text().splitlines()
        ]
    return {"final": summary["final_eval"]["mean"], "best": max(evals), "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=150_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    lines = [
        "| variant | " + " | ".join(f"seed {s}: final (best)" for s in args.seeds) + " |",
        "|---|" + "---|" * len(args.seeds),
    ]
    for name, (norm, overrides) in VARIANTS.items():
        cells = []
        for seed in args.seeds:
            r = run(norm, overrides, seed, args.steps)
            cells.append(f"{r['final']:.1f} ({r['best']:.1f}) [{r['wall']:.0f} s]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
