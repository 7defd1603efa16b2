"""Environment throughput: rlnorm's torch CartPole against gymnasium's CartPole vector envs.

For each batch size N it times, in one run and one process:

* ``torch``: ``rlnorm.envs.CartPole`` stepped with random actions drawn on its device
  with torch;
* ``torch+policy``: the same env driven by a 4-64-64-2 tanh MLP in eval mode under
  ``torch.inference_mode``, taking argmax actions each step (what evaluation pays);
* ``gymnasium numpy vector``: ``gym.make_vec("CartPole-v1", vectorization_mode=
  "vector_entry_point")``, gymnasium's own numpy-batched CartPole, random actions;
* ``SyncVectorEnv``: ``gym.make_vec(..., vectorization_mode="sync")``, N Python envs
  stepped in a Python loop (skipped above ``--sync-max`` sub-envs: its rate per
  transition is flat in N, so larger N only cost run time).

Every number is transitions per second: batched ``step`` calls per second times N.
Each measurement warms up first, then steps for at least ``--seconds`` of wall time.

    python benchmarks/env_throughput.py --sizes 1 64 1024 16384 --seconds 2
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlnorm.envs import CartPole


def parse_args() -> argparse.Namespace:
    """Command-line options; the defaults reproduce benchmarks/README.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 1024, 16384])
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per cell")
    parser.add_argument("--device", default="cpu", help="device of the torch env")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch intra-op threads"
    )
    parser.add_argument(
        "--sync-max", type=int, default=1024, help="largest N to run SyncVectorEnv at"
    )
    parser.add_argument("--out", help="also write the markdown table to this path")
    return parser.parse_args()


def steps_per_second(step: Callable[[], object], seconds: float, sync: Callable[[], None]) -> float:
    """Calls of ``step`` per second, timed over at least ``seconds`` after a warm-up.

    The warm-up (a tenth of the time, at least 5 calls) pays one-off costs such as
    allocator growth and lazy initialisation. ``sync`` waits for queued device work, so
    asynchronous CUDA steps are counted only once they have run.
    """
    warm_end, calls = time.perf_counter() + seconds / 10, 0
    while calls < 5 or time.perf_counter() < warm_end:
        step()
        calls += 1
    sync()
    calls, start = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        if calls % 8 == 0:
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return calls / elapsed


def torch_random(n: int, device: torch.device, seconds: float, sync: Callable[[], None]) -> float:
    """Steps/s of the torch CartPole with random actions drawn on ``device``."""
    env = CartPole(num_envs=n, device=device)
    env.reset(seed=0)
    gen = torch.Generator(device=device).manual_seed(0)
    return steps_per_second(
        lambda: env.step(torch.randint(0, 2, (n,), device=device, generator=gen)),
        seconds,
        sync,
    )


def torch_policy(n: int, device: torch.device, seconds: float, sync: Callable[[], None]) -> float:
    """Steps/s of the torch CartPole driven by an MLP's argmax actions, in inference mode."""
    torch.manual_seed(0)
    policy = nn.Sequential(
        nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2)
    )
    policy.to(device).eval()
    env = CartPole(num_envs=n, device=device)
    obs = [env.reset(seed=0)[0]]

    def step() -> None:
        obs[0] = env.step(policy(obs[0]).argmax(dim=1))[0]

    with torch.inference_mode():
        return steps_per_second(step, seconds, sync)


def gym_vector(n: int, mode: str, seconds: float) -> float:
    """Steps/s of ``gym.make_vec("CartPole-v1", vectorization_mode=mode)``, random actions."""
    envs = gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode=mode)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    try:
        return steps_per_second(
            lambda: envs.step(rng.integers(0, 2, size=n)), seconds, lambda: None
        )
    finally:
        envs.close()


def si(x: float) -> str:
    """A rate with three significant digits and a k/M/G suffix."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= factor:
            return f"{x / factor:.3g}{suffix}"
    return f"{x:.3g}"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    """Measure every size, print the context and a markdown table, optionally save it."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.empty(0, device=args.device).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"torch {torch.__version__}, gymnasium {gym.__version__}, numpy {np.__version__}")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, torch threads {args.threads}")
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"torch env device: {device}{gpu}")
    if load is not None:
        print(
            f"load average before the run (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
    print(f"timed {args.seconds:g} s per cell; every rate is transitions/s = steps/s x N\n")

    header = (
        "| N | torch (transitions/s) | torch+policy | gymnasium numpy vector | SyncVectorEnv "
        "| ratio torch/numpy-vector | ratio torch/sync |"
    )
    rows = [header, "|" + "---|" * 7]
    print("\n".join(rows), flush=True)
    skipped = []
    for n in args.sizes:
        t = torch_random(n, device, args.seconds, sync) * n
        tp = torch_policy(n, device, args.seconds, sync) * n
        nv = gym_vector(n, "vector_entry_point", args.seconds) * n
        if n <= args.sync_max:
            sv = gym_vector(n, "sync", args.seconds) * n
            sv_cell, ratio_sync = si(sv), f"{t / sv:.2f}x"
        else:
            sv_cell, ratio_sync = "skipped", "-"
            skipped.append(n)
        row = f"| {n} | {si(t)} | {si(tp)} | {si(nv)} | {sv_cell} | {t / nv:.2f}x | {ratio_sync} |"
        rows.append(row)
        print(row, flush=True)
    table = "\n".join(rows)
    if load is not None:
        after = os.getloadavg()
        print(f"load average after the run: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    if skipped:
        note = (
            f"\nSyncVectorEnv skipped at N = {', '.join(map(str, skipped))} (above "
            f"--sync-max {args.sync_max}): it steps N Python env objects one after another, "
            "so its transitions/s stays flat in N (compare the rows above) while building, "
            "warming up and timing N env objects only gets slower."
        )
        print(note)
        table += "\n" + note
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
        print(f"\ntable written to {args.out}")


if __name__ == "__main__":
    main()
