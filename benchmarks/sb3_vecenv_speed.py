"""stable-baselines3 on rlnorm's native envs (``rlnorm.envs.to_sb3``) against SB3's own vector
envs of gymnasium envs (``DummyVecEnv``, ``SubprocVecEnv``), in one run.

Three measurements per vector env, each in steps (transitions) per second:

- **env only**: ``VecEnv.step`` with random actions, N sub-envs (the wrapper's own cost);
- **PPO**: plain ``PPO("MlpPolicy", venv)`` with RL Zoo's CartPole-v1 hyperparameters
  (8 envs x 32 steps, 20 epochs, batch 256), ``learn()`` wall time;
- **SAC**: plain ``SAC("MlpPolicy", venv)`` on Pendulum-v1, one env, 64x64 networks, one
  gradient step per env step, ``learn()`` wall time.

One torch thread in this process; ``SubprocVecEnv`` workers are separate processes. The
contenders of a row run one after another, alternating over ``--rounds`` rounds, and each
cell is the median, so load from other processes falls on all of them alike.

Usage: python benchmarks/sb3_vecenv_speed.py [--ppo-steps N] [--sac-steps N] [--rounds K]
       [--out benchmarks/results/sb3_vecenv_speed.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from rlnorm import envs

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("to_sb3", "DummyVecEnv", "SubprocVecEnv")


def make_venv(kind: str, env_id: str, n: int) -> VecEnv:
    """``n`` copies of ``env_id`` behind SB3's VecEnv interface, built the ``kind`` way."""
    if kind == "to_sb3":
        return envs.to_sb3(envs.make(env_id, num_envs=n))
    cls = DummyVecEnv if kind == "DummyVecEnv" else SubprocVecEnv
    return make_vec_env(env_id, n_envs=n, vec_env_cls=cls)


def env_only(kind: str, env_id: str, n: int, seconds: float = 1.0) -> float:
    """Transitions per second of ``VecEnv.step`` with random actions (NaN for SubprocVecEnv
    above 8 sub-envs: one process per sub-env on a 2-core machine measures only the OS)."""
    if kind == "SubprocVecEnv" and n > 8:
        return float("nan")
    venv = make_venv(kind, env_id, n)
    venv.seed(0)
    venv.reset()
    rng = np.random.default_rng(0)
    actions = [np.array([venv.action_space.sample() for _ in range(n)]) for _ in range(64)]
    rng.shuffle(actions)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        venv.step(actions[steps % 64])
        steps += 1
    rate = steps * n / (time.perf_counter() - start)
    venv.close()
    return rate


def ppo(kind: str, steps: int) -> float:
    venv = make_venv(kind, "CartPole-v1", 8)
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=1e-3,
        seed=0,
        device="cpu",
    )
    start = time.perf_counter()
    model.learn(steps)
    rate = steps / (time.perf_counter() - start)
    venv.close()
    return rate


def sac(kind: str, steps: int) -> float:
    venv = make_venv(kind, "Pendulum-v1", 1)
    model = SAC(
        "MlpPolicy",
        venv,
        learning_rate=1e-3,
        learning_starts=100,
        policy_kwargs={"net_arch": [64, 64]},
        seed=0,
        device="cpu",
    )
    start = time.perf_counter()
    model.learn(steps)
    rate = steps / (time.perf_counter() - start)
    venv.close()
    return rate


def median_rates(run: Callable[[str], float], rounds: int) -> dict[str, float]:
    """Each kind's median rate over ``rounds`` rounds, the kinds alternating within a round."""
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(rounds):
        for kind in KINDS:
            samples[kind].append(run(kind))
    return {kind: statistics.median(values) for kind, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ppo-steps", type=int, default=8192)
    parser.add_argument("--sac-steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/sb3_vecenv_speed.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    began = time.perf_counter()
    rows = []
    for env_id, n in (("CartPole-v1", 8), ("CartPole-v1", 64), ("Pendulum-v1", 1)):
        rates = median_rates(lambda kind, e=env_id, k=n: env_only(kind, e, k), args.rounds)
        rows.append((f"env only: {env_id}, N={n}, random actions", rates))
        print(rows[-1], flush=True)
    rows.append(
        (
            f"PPO MlpPolicy, CartPole-v1, N=8, {args.ppo_steps} steps",
            median_rates(lambda kind: ppo(kind, args.ppo_steps), args.rounds),
        )
    )
    print(rows[-1], flush=True)
    rows.append(
        (
            f"SAC MlpPolicy 64x64, Pendulum-v1, N=1, {args.sac_steps} steps",
            median_rates(lambda kind: sac(kind, args.sac_steps), args.rounds),
        )
    )
    print(rows[-1], flush=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    lines = [
        "# stable-baselines3 on `to_sb3` vs SB3's DummyVecEnv / SubprocVecEnv",
        "",
        "Command (from the repository root):",
        "",
        "```",
        f".venv/bin/python benchmarks/sb3_vecenv_speed.py --ppo-steps {args.ppo_steps} "
        f"--sac-steps {args.sac_steps} --rounds {args.rounds}",
        "```",
        "",
        f"- Date: {time.strftime('%Y-%m-%d')}, commit {commit}. Total runtime "
        f"{time.perf_counter() - began:.0f} s.",
        f"- Machine: {os.cpu_count()}-core CPU, no GPU, **shared**: other jobs ran on the same "
        f"two cores during the run (load average {os.getloadavg()[0]:.1f} at the end), so the "
        "absolute rates are low and noisy; the contenders of a row alternate and each cell is "
        f"the median of {args.rounds} rounds, so the ratios are fairer than the rates.",
        f"- Software: torch {torch.__version__} (1 intra-op thread), stable-baselines3 "
        f"{stable_baselines3.__version__}, Python {platform.python_version()}.",
        "- Rates are env steps (transitions) per second; PPO and SAC: the wall time of "
        "`learn()`, updates included. SubprocVecEnv runs one worker process per sub-env.",
        "",
        "| measurement | to_sb3 | DummyVecEnv | SubprocVecEnv | vs Dummy | vs Subproc |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        a, d, s = (r[k] for k in KINDS)
        sub, vs_sub = ("n/a", "n/a") if np.isnan(s) else (f"{s:,.0f}", f"{a / s:.2f}x")
        lines.append(f"| {name} | {a:,.0f} | {d:,.0f} | {sub} | {a / d:.2f}x | {vs_sub} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
