"""Environment throughput: rlnorm's torch CartPole and Pendulum against gymnasium's.

For each env and batch size N it times, in one run and one process:

* ``torch``: the native torch env (``rlnorm.envs.make``), stepped with random actions
  drawn on its device with torch;
* ``torch+policy``: the same env driven by ``rlnorm.nets.mlp(obs, act, (64, 64),
  norm="batch")`` in eval mode under ``rlnorm.acting`` (argmax of the logits for
  CartPole, a tanh-squashed torque for Pendulum): what acting with a small policy costs;
* ``numpy vector`` (CartPole only): ``gym.make_vec("CartPole-v1", vectorization_mode=
  "vector_entry_point")``, gymnasium's own numpy-batched CartPole, random actions;
* ``SyncVectorEnv``: ``gym.make_vec(env_id, vectorization_mode="sync")``, N Python envs
  stepped in a Python loop, random actions (skipped above ``--sync-max`` sub-envs: its
  rate per transition is flat in N, so larger N only cost run time).

Every number is transitions per second: batched ``step`` calls per second times N. The
contenders of one row are timed in interleaved rounds (each round times each of them for
``--seconds / --rounds``, after a warm-up) and each rate is the median over the rounds, so
that load from other processes hits all of them alike and the ratios stay fair.

    python benchmarks/env_throughput.py --sizes 1 64 1024 16384 65536 --seconds 4
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import gymnasium as gym
import numpy as np
import torch

import rlnorm
from rlnorm import envs
from rlnorm.nets import mlp

ENVS = ("CartPole-v1", "Pendulum-v1")
# What a gymnasium column shows when it was not measured.
MISSING = {"numpy": "n/a", "sync": "skipped"}


def parse_args() -> argparse.Namespace:
    """Command-line options; the defaults reproduce benchmarks/README.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=ENVS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 1024, 16384, 65536])
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per cell")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per row")
    parser.add_argument("--device", default="cpu", help="device of the torch envs")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--sync-max", type=int, default=1024, help="largest N to run SyncVectorEnv at"
    )
    parser.add_argument("--out", help="also write the markdown table to this path")
    return parser.parse_args()


class Timer:
    """Steps one contender; ``rate(seconds)`` times it for at least ``seconds``.

    ``context`` is entered around each timed stretch (not each step), e.g. ``acting``.
    """

    def __init__(
        self,
        step: Callable[[], object],
        sync: Callable[[], None],
        context: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self.step, self.sync, self.context = step, sync, context

    def warm_up(self, seconds: float) -> None:
        """Pay one-off costs (allocator growth, lazy initialisation) before timing."""
        end, calls = time.perf_counter() + seconds, 0
        with self.context():
            while calls < 5 or time.perf_counter() < end:
                self.step()
                calls += 1
        self.sync()

    def rate(self, seconds: float) -> float:
        """``step`` calls per second over at least ``seconds`` (and at least 2 calls);
        ``sync`` waits for queued device work, so asynchronous steps count once run."""
        calls, start = 0, time.perf_counter()
        with self.context():
            while True:
                self.step()
                calls += 1
                if calls % 2 == 0:
                    self.sync()
                    elapsed = time.perf_counter() - start
                    if elapsed >= seconds:
                        return calls / elapsed


def device_sync(device: torch.device) -> Callable[[], None]:
    """Waits for the work queued on ``device`` (nothing to wait for on CPU)."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def torch_random(env_id: str, n: int, device: torch.device) -> Timer:
    """Steps of the native env with random actions drawn on ``device``."""
    env = envs.make(env_id, n, device=device, backend="native")
    env.reset(seed=0)
    gen = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        if env_id == "CartPole-v1":
            env.step(torch.randint(0, 2, (n,), device=device, generator=gen))
        else:
            env.step(torch.rand(n, 1, device=device, generator=gen).mul_(4).sub_(2))

    return Timer(step, device_sync(device))


def torch_policy(env_id: str, n: int, device: torch.device) -> Timer:
    """Steps of the native env driven by a BatchNorm MLP, timed in eval and inference
    mode under ``rlnorm.acting`` (entered around each timed stretch)."""
    torch.manual_seed(0)
    env = envs.make(env_id, n, device=device, backend="native")
    obs_dim = env.single_observation_space.shape[0]
    policy = mlp(obs_dim, 2 if env_id == "CartPole-v1" else 1, (64, 64), norm="batch")
    policy.to(device)
    obs = [env.reset(seed=0)[0]]

    def step() -> None:
        out = policy(obs[0])
        actions = out.argmax(dim=1) if env_id == "CartPole-v1" else torch.tanh(out).mul_(2)
        obs[0] = env.step(actions)[0]

    return Timer(step, device_sync(device), lambda: rlnorm.acting(policy))


def gym_random(env_id: str, n: int, mode: str) -> tuple[Timer, gym.vector.VectorEnv]:
    """Steps of ``gym.make_vec(env_id, vectorization_mode=mode)`` with random numpy
    actions, and the env (to close)."""
    vec = gym.make_vec(env_id, num_envs=n, vectorization_mode=mode)
    vec.reset(seed=0)
    rng = np.random.default_rng(0)

    def step() -> None:
        if env_id == "CartPole-v1":
            vec.step(rng.integers(0, 2, size=n))
        else:
            vec.step(rng.uniform(-2, 2, size=(n, 1)).astype(np.float32))

    return Timer(step, lambda: None), vec


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


def measure_row(
    env_id: str, n: int, args: argparse.Namespace, device: torch.device
) -> dict[str, float]:
    """Transitions/s of each contender at ``n`` sub-envs, timed in interleaved rounds."""
    timers = {
        "torch": torch_random(env_id, n, device),
        "policy": torch_policy(env_id, n, device),
    }
    vector_envs = []
    modes = {"numpy": "vector_entry_point"} if env_id == "CartPole-v1" else {}
    if n <= args.sync_max:
        modes["sync"] = "sync"
    for name, mode in modes.items():
        timers[name], vec = gym_random(env_id, n, mode)
        vector_envs.append(vec)
    for timer in timers.values():
        timer.warm_up(args.seconds / (4 * args.rounds))
    rates: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(args.rounds):
        for name, timer in timers.items():
            rates[name].append(timer.rate(args.seconds / args.rounds) * n)
    for vec in vector_envs:
        vec.close()
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    """Measure every env and size, print the context and a markdown table, save it."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.empty(0, device=args.device).device
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"torch {torch.__version__}, gymnasium {gym.__version__}, numpy {np.__version__}")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, torch threads {args.threads}")
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"torch env device: {device}{gpu}")
    if load is not None:
        print(
            f"load average before the run (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
    print(
        f"{args.seconds:g} s per cell in {args.rounds} interleaved rounds (median); "
        "every rate is transitions/s = steps/s x N\n"
    )

    header = (
        "| env | N | torch | torch+policy | gymnasium numpy vector | SyncVectorEnv "
        "| torch / numpy vector | torch / Sync |"
    )
    rows = [header, "|" + "---|" * 8]
    print("\n".join(rows), flush=True)
    start = time.perf_counter()
    for env_id in args.envs:
        for n in args.sizes:
            r = measure_row(env_id, n, args, device)
            cells = [env_id, str(n), si(r["torch"]), si(r["policy"])]
            cells += [si(r[k]) if k in r else missing for k, missing in MISSING.items()]
            cells += [f"{r['torch'] / r[k]:.2f}x" if k in r else "-" for k in MISSING]
            row = "| " + " | ".join(cells) + " |"
            rows.append(row)
            print(row, flush=True)
    notes = [
        f"SyncVectorEnv skipped above N = {args.sync_max} (--sync-max): it steps N Python "
        "envs one after another, so its transitions/s stays flat in N.",
        "gymnasium has a numpy vector env for CartPole-v1 only (n/a for Pendulum-v1).",
    ]
    table = "\n".join(rows) + "\n\n" + "\n".join(notes)
    print("\n" + "\n".join(notes))
    print(f"run time {time.perf_counter() - start:.0f} s")
    if load is not None:
        after = os.getloadavg()
        print(f"load average after the run: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
        print(f"table written to {args.out}")


if __name__ == "__main__":
    main()
