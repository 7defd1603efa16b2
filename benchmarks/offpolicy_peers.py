"""rlnorm's SAC and CrossQ on Pendulum-v1 beside stable-baselines3's SAC and sbx's SAC and CrossQ.

All contenders train with rlnorm's shipped ``configs/sac/Pendulum-v1.yaml`` (64x64 ReLU actor
and twin critics, lr 1e-3 for actor, critics and temperature, batch 256, gamma 0.99, tau
0.005, buffer 1e6, 100 random warm-up steps, one gradient step per env step, entropy tuned
from alpha 1.0) or ``configs/crossq/Pendulum-v1.yaml`` (no target networks, actor 64x64,
critics 128x128, Batch Renorm momentum 0.01 whose 100k-step warm-up leaves plain BatchNorm
throughout, Adam beta1 0.5, policy delay 3) for ``--steps`` env steps per seed, each in its
own process, one at a time, one thread (``seed_population_peers.ONE_THREAD``):

- **rlnorm SAC / CrossQ**: ``rlnorm train --agent sac|crossq --env Pendulum-v1 --quiet
  --threads 1``, ``--seed 0`` and ``--seeds 0-(K-1)`` for each ``--sizes`` K, no periodic
  evaluation or checkpoint, timed by ``seed_population_peers.worker_rlnorm``; the rlnorm the
  interpreter imports (``pip install -e .`` of this checkout);
- **SB3 SAC**, **sbx SAC**, **sbx CrossQ**: ``SAC("MlpPolicy")`` / ``CrossQ("MlpPolicy")`` on
  one gymnasium Pendulum-v1, seed 0 (SB3 on the CPU).

Not matched, for want of a setting in sbx 0.28: its CrossQ's temperature Adam keeps beta1 0.9
(rlnorm: 0.5 for all three optimizers) and its Batch Renorm epsilon is 1e-3 (rlnorm's 1e-5).
sbx's ``batch_norm_momentum`` is the running statistics' decay: rlnorm's 0.01 is sbx's 0.99.
Initialisations and the policies' log-std handling are each library's own.

Each seed ends with a deterministic evaluation over 10 episodes (rlnorm: its ``final_eval``;
SB3/sbx: ``evaluate_policy`` on 10 envs). The results file's header says what each column
times. sbx compiles inside ``learn()``: with ``train_freq=1`` each iteration of SB3's loop is
one env step and, past ``learning_starts``, one update, and a callback marks each. sbx
compiles its action sampling and update in the first iterations after the warm-up (CrossQ's
update three times: its policy-delay phase is a static argument), so compile time is the
excess of the first ``COMPILE_WINDOW`` of them over the median iteration (on each clock),
plus one deterministic ``predict`` on the evaluation batch's shape. Needs the ``peers``
extra; a contender whose packages are missing is reported as not run. Pin it to one core::

    taskset -c 1 python benchmarks/offpolicy_peers.py [--steps 20000] [--sizes 8]
        [--contenders rlnorm-sac rlnorm-crossq sb3-sac sbx-sac sbx-crossq]
        [--repeats 1] [--conditions TEXT] [--output FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import header
from seed_population_peers import (
    ONE_THREAD,
    Row,
    installed,
    median_row,
    software_line,
    worker_rlnorm,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "offpolicy_peers.md"
ENV_ID = "Pendulum-v1"
EVAL_EPISODES = 10
COMPILE_WINDOW = 10  # iterations after the warm-up whose excess over the median is compilation
PACKAGES = ("torch", "stable-baselines3", "sbx-rl", "jax", "flax", "optax", "gymnasium")
CONTENDERS = ("rlnorm-sac", "rlnorm-crossq", "sb3-sac", "sbx-sac", "sbx-crossq")
ALGO_NAME = {"sac": "SAC", "crossq": "CrossQ"}


def shipped(algo: str) -> dict[str, Any]:
    """The shipped config's agent section, checked for what the peers below assume."""
    path = ROOT / "configs" / algo / f"{ENV_ID}.yaml"
    config = yaml.safe_load(path.read_text())
    agent = config["agent"]
    assumed = {
        "train.num_envs": (config["train"]["num_envs"], 1),
        "agent.steps_per_env": (agent["steps_per_env"], 1),
        "agent.gradient_steps": (agent["gradient_steps"], -1),
        "agent.autotune_alpha": (agent["autotune_alpha"], True),
        # SB3 has one learning rate for all three optimizers, sbx's temperature the actor's
        "agent.critic_lr": (agent["critic_lr"], agent["actor_lr"]),
        "agent.alpha_lr": (agent["alpha_lr"], agent["actor_lr"]),
    }
    for key, (value, wanted) in assumed.items():
        if value != wanted:
            raise SystemExit(f"{path}: the peers assume {key} = {wanted}, not {value}")
    return dict(agent)


# ---------------------------------------------------------------- workers (run in subprocesses)


def worker_peer(library: str, algo: str, steps: int, seed: int) -> dict[str, Any]:
    """SB3's or sbx's SAC or CrossQ, one seed: train, then evaluate deterministically."""
    import numpy as np
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    cfg = shipped(algo)
    kwargs: dict[str, Any] = {
        "learning_rate": cfg["actor_lr"],
        "buffer_size": cfg["buffer_size"],
        "learning_starts": cfg["learning_starts"],
        "batch_size": cfg["batch_size"],
        "gamma": cfg["gamma"],
        "train_freq": 1,
        "gradient_steps": 1,
        "ent_coef": f"auto_{cfg['init_alpha']}",  # learned, starting from init_alpha
    }
    if library == "sb3":
        import stable_baselines3
        import torch

        torch.set_num_threads(1)
        algo_class: Any = stable_baselines3.SAC
        kwargs["device"] = "cpu"
        relu: Any = torch.nn.ReLU
    else:
        import flax.linen as nn
        import sbx

        algo_class = sbx.SAC if algo == "sac" else sbx.CrossQ
        relu = nn.relu
    policy_kwargs: dict[str, Any] = {"activation_fn": relu, "n_critics": cfg["n_critics"]}
    if algo == "sac":
        kwargs["tau"] = cfg["tau"]
        policy_kwargs["net_arch"] = list(cfg["hidden"])
    else:
        kwargs["policy_delay"] = cfg["policy_delay"]
        policy_kwargs |= {
            "net_arch": {"pi": list(cfg["actor_hidden"]), "qf": list(cfg["critic_hidden"])},
            "batch_norm": True,
            "batch_norm_actor": True,
            # flax's momentum is the running statistics' decay: torch's 0.01 is 0.99 there
            "batch_norm_momentum": 0.99,
            "renorm_warmup_steps": cfg["renorm_warmup_steps"],
            "optimizer_kwargs": {"b1": cfg["adam_beta1"]},
        }
    kwargs["policy_kwargs"] = policy_kwargs

    class Iterations(BaseCallback):
        """When each iteration of SB3's loop (one env step, then one update) starts."""

        def __init__(self) -> None:
            super().__init__()
            self.starts: list[tuple[float, float]] = []  # (wall, CPU)

        def _on_rollout_start(self) -> None:
            self.starts.append((time.perf_counter(), time.process_time()))

        def _on_step(self) -> bool:
            return True

    env = make_vec_env(ENV_ID, n_envs=1, seed=seed)
    model = algo_class("MlpPolicy", env, seed=seed, verbose=0, **kwargs)
    iterations = Iterations()  # both libraries, so both pay the callback's few microseconds
    start, start_cpu = time.perf_counter(), time.process_time()
    model.learn(steps, callback=iterations)
    iterations.starts.append((time.perf_counter(), time.process_time()))  # the last one's end
    compile_s: float | None = None
    compile_cpu_s = 0.0
    eval_env = make_vec_env(ENV_ID, n_envs=EVAL_EPISODES, seed=seed + 10_000)
    if library == "sbx":
        excess = []
        for clock in (0, 1):
            marks = [mark[clock] for mark in iterations.starts]
            times = [b - a for a, b in itertools.pairwise(marks)][cfg["learning_starts"] :]
            median = statistics.median(times)
            excess.append(sum(max(0.0, t - median) for t in times[:COMPILE_WINDOW]))
        # the deterministic action on the evaluation batch's shape compiles on first use
        warm, warm_cpu = time.perf_counter(), time.process_time()
        obs = np.zeros((EVAL_EPISODES, *(env.observation_space.shape or ())), np.float32)
        model.predict(obs, deterministic=True)
        compile_s = excess[0] + time.perf_counter() - warm
        compile_cpu_s = excess[1] + time.process_time() - warm_cpu
    returns = evaluate_policy(
        model, eval_env, n_eval_episodes=EVAL_EPISODES, deterministic=True,
        return_episode_rewards=True,
    )[0]  # fmt: skip
    return {
        "train_s": time.perf_counter() - start - (compile_s or 0.0),
        "train_cpu_s": time.process_time() - start_cpu - compile_cpu_s,
        "compile_s": compile_s,
        "env_steps": model.num_timesteps,
        "returns": [float(np.mean(returns))],
    }


# ---------------------------------------------------------------- driver


def run_worker(args: list[str], cwd: str | None = None) -> tuple[float, dict[str, Any]]:
    """This script as a subprocess in worker mode; its wall time and its JSON result."""
    argv = [sys.executable, str(Path(__file__).resolve()), *args]
    start = time.perf_counter()
    out = subprocess.run(
        argv, cwd=cwd, env={**os.environ, **ONE_THREAD}, check=True, capture_output=True, text=True
    )
    return time.perf_counter() - start, json.loads(out.stdout.strip().splitlines()[-1])


def run_rlnorm(algo: str, steps: int, seeds: int | None) -> Row:
    """One ``rlnorm train`` (``--seed 0`` when ``seeds`` is None) in a scratch directory."""
    argv = ["train", "--agent", algo, "--env", ENV_ID, "--quiet", "--threads", "1",
            "--steps", str(steps),
            "--set", "train.eval_every=0", "--set", "train.checkpoint_every=0",
            "--set", f"train.final_eval_episodes={EVAL_EPISODES}"]  # fmt: skip
    argv += ["--seed", "0"] if seeds is None else ["--seeds", f"0-{seeds - 1}"]
    with tempfile.TemporaryDirectory() as tmp:
        wall, out = run_worker(["--worker", "rlnorm", "--rlnorm-argv", shlex.join(argv)], tmp)
        paths = sorted(Path(tmp).glob("runs/*/*/*/seed*/summary.json"))
        summaries = [json.loads(path.read_text()) for path in paths]
    name = f"rlnorm {ALGO_NAME[algo]}" + (", --seed 0" if seeds is None else "")
    row = Row(name, len(summaries), wall, out["train_s"], out["train_cpu_s"])
    row.env_steps = summaries[0]["env_steps"]
    row.returns = [s["final_eval"]["mean"] for s in summaries]
    return row


def one_round(args: argparse.Namespace) -> list[Row]:
    """Every contender once, one after another, each algorithm's rows together."""
    rows: list[Row] = []
    for algo in ("sac", "crossq"):
        if f"rlnorm-{algo}" in args.contenders:
            for seeds in [None, *args.sizes]:
                rows.append(run_rlnorm(algo, args.steps, seeds))
                print(table_line(rows[-1], rows), flush=True)
        for library, label in (("sb3", "SB3"), ("sbx", "sbx")):
            if f"{library}-{algo}" not in args.contenders:
                continue
            name = f"{label} {ALGO_NAME[algo]}"
            modules = ("stable_baselines3",) if library == "sb3" else ("sbx", "jax")
            missing = installed(*modules)
            if missing is not None:
                rows.append(Row(name, 1, note=f"not run: {missing} not installed"))
            else:
                worker = ["--worker", f"{library}-{algo}", "--steps", str(args.steps)]
                wall, out = run_worker(worker)
                row = Row(name, 1, wall, out["train_s"], out["train_cpu_s"], out["compile_s"])
                row.env_steps, row.returns = out["env_steps"], out["returns"]
                rows.append(row)
            print(table_line(rows[-1], rows), flush=True)
    return rows


HEADER = (
    "| contender | seeds | wall s (process) | compile s | train s | train CPU s | env steps/s "
    "(all seeds, train CPU) | x rlnorm same algorithm, 1 seed (steps/s, train CPU) | final "
    "returns (min / median / max) |"
)


def table_line(row: Row, rows: list[Row]) -> str:
    """The row's markdown line; its ratio against its algorithm's rlnorm ``--seed 0`` row."""
    if row.note:
        return f"| {row.contender} | {row.seeds} | {row.note} | | | | | | |"
    algo = row.contender.split(" ")[1].rstrip(",")
    base = next((r for r in rows if r.contender == f"rlnorm {algo}, --seed 0"), None)
    ratio = "—" if base is None or base.note else f"{row.sps_cpu / base.sps_cpu:.2f}"
    finals = sorted(row.returns)
    spread = f"{finals[0]:.1f} / {finals[len(finals) // 2]:.1f} / {finals[-1]:.1f}"
    compile_s = "—" if row.compile_s is None else f"{row.compile_s:.1f}"
    return (
        f"| {row.contender} | {row.seeds} | {row.wall_s:.1f} | {compile_s} | {row.train_s:.1f} "
        f"| {row.train_cpu_s:.1f} | {row.sps_cpu:.0f} | {ratio} | {spread} |"
    )


def write(rows: list[Row], args: argparse.Namespace) -> None:
    lines = [
        *header(
            f"SAC and CrossQ on {ENV_ID} beside SB3 and sbx",
            software_line(PACKAGES),
            args.conditions,
            python=True,
            mark_uncommitted=True,
        ),
        f"- {args.steps} env steps per seed, `configs/{{sac,crossq}}/{ENV_ID}.yaml`'s "
        "hyperparameters (the peers' unmatched ones: the script's docstring), then a "
        f"deterministic evaluation of each seed over {EVAL_EPISODES} episodes. Wall: the whole "
        f"process. Compile (sbx): the first {COMPILE_WINDOW} updating iterations' excess over "
        "the median one, plus the first deterministic action on the evaluation batch. Train: "
        "training and the evaluation, in-process, compilation excluded (rlnorm: its learner's "
        "`train()`; SB3/sbx: `learn()` and `evaluate_policy`). Train CPU: the process's CPU "
        "time over that span, which other processes on the core inflate less than wall time. "
        "The ratio: env steps per train-CPU second over the algorithm's rlnorm `--seed 0` row's."
        + (
            f" Each time is the median over {args.repeats} rounds run one after another, each "
            "round every contender once (final returns: the first round's; the seeds repeat)."
            if args.repeats > 1
            else ""
        ),
        "",
        HEADER,
        "|---|---|---|---|---|---|---|---|---|",
        *(table_line(row, rows) for row in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.write_text(text)
    print(f"wrote {args.output}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per seed")
    parser.add_argument("--sizes", nargs="*", type=int, default=[8], help="rlnorm populations")
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--repeats", type=int, default=1, help="rounds; rows give medians")
    parser.add_argument("--conditions", default="", help="what else ran on the machine")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the results file")
    workers = ["rlnorm", "sb3-sac", "sbx-sac", "sbx-crossq"]
    parser.add_argument("--worker", choices=workers, help=argparse.SUPPRESS)
    parser.add_argument("--rlnorm-argv", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "rlnorm":
        print(json.dumps(worker_rlnorm(shlex.split(args.rlnorm_argv))))
        return
    if args.worker is not None:
        library, algo = args.worker.split("-")
        print(json.dumps(worker_peer(library, algo, args.steps, 0)))
        return
    # rounds one after another, each every contender once: load that comes and goes falls on
    # all contenders alike, and each row's times are the medians over the rounds
    rounds = [one_round(args) for _ in range(args.repeats)]
    write([median_row(group) for group in zip(*rounds, strict=True)], args)


if __name__ == "__main__":
    main()
