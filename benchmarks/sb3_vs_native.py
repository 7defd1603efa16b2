"""Native rlnorm agents vs stable-baselines3 through rlnorm's adapter vs plain stable-baselines3.

For PPO on CartPole-v1 and SAC on Pendulum-v1 (when the native ``sac`` agent exists), three
trainings with the same hyperparameters, budget and seed:

- **native**: ``rlnorm train --agent ppo|sac`` with the shipped ``configs/<agent>/<env>.yaml``;
- **adapter**: ``rlnorm train --agent sb3:PPO|sb3:SAC`` with ``configs/sb3/<Algo>-<env>.yaml``,
  the same hyperparameters under SB3's names (SB3's loss code, rlnorm's rollouts);
- **plain SB3**: SB3's own ``learn()`` on a gymnasium ``DummyVecEnv`` of as many envs, built
  with exactly the keyword arguments the adapter derives from that same YAML file.

Every trained policy is evaluated the same way, by rlnorm's evaluator on the same episodes
(deterministic, eval mode, the seed a run's own final evaluation uses): plain SB3's policy is
loaded into an adapter (``--norm none`` builds SB3's own network, so its weights fit). The
rlnorm runs have no periodic evaluation or checkpoint, so the training rate the learner logs
(``time/sps``) is training alone, as is plain SB3's ``learn()`` time. ``--norm none`` rows
compare the three; ``--norm batch`` rows (plain SB3 has no norm option) show rlnorm's
BatchNorm PPO against SB3's train-mode BatchNorm update through the adapter.

Usage: python benchmarks/sb3_vs_native.py [--ppo-steps N] [--sac-steps N] [--seed K]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import stable_baselines3
import torch
import yaml
from stable_baselines3.common.env_util import make_vec_env
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlnorm import agents, envs
from rlnorm.agents import sb3
from rlnorm.cli import main as rlnorm_main
from rlnorm.config import build_config, eval_seed
from rlnorm.rollout import evaluate

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Case:
    """One environment and algorithm: the native agent and its SB3 counterpart."""

    env: str
    native: str
    algorithm: str
    steps: int
    norms: tuple[str, ...]

    @property
    def sb3_config(self) -> Path:
        return ROOT / "configs" / "sb3" / f"{self.algorithm}-{self.env}.yaml"


@dataclass
class Result:
    """Final evaluation and training speed of one run."""

    mean: float
    std: float
    episodes: int
    train_s: float
    steps: int

    @property
    def sps(self) -> float:
        return self.steps / self.train_s


def run_rlnorm(agent: str, case: Case, norm: str, seed: int, config: Path | None) -> Result:
    """``rlnorm train`` without periodic evaluations or checkpoints; training time from the
    learner's last ``time/sps``."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            "train", "--agent", agent, "--env", case.env, "--norm", norm, "--seed", str(seed),
            "--steps", str(case.steps), "--run-dir", tmp, "--quiet", "--threads", "1",
            "--set", "train.eval_every=0", "--set", "train.checkpoint_every=0",
        ]  # fmt: skip
        if config is not None:
            argv += ["--config", str(config)]
        with contextlib.redirect_stdout(io.StringIO()):
            if rlnorm_main(argv) != 0:
                raise RuntimeError(f"training failed: rlnorm {' '.join(argv)}")
        summary = json.loads((Path(tmp) / "summary.json").read_text())
        tb = EventAccumulator(str(Path(tmp) / "tb"))
        tb.Reload()
        sps = tb.Scalars("time/sps")[-1].value
    final = summary["final_eval"]
    steps = summary["env_steps"]
    return Result(final["mean"], final["std"], final["episodes"], steps / sps, steps)


def run_plain_sb3(case: Case, seed: int) -> Result:
    """SB3's ``learn()`` with the adapter's keyword arguments, then rlnorm's evaluation."""
    data = yaml.safe_load(case.sb3_config.read_text())
    train = data["train"]
    cls = agents.get(f"sb3:{case.algorithm}")
    kwargs, policy_kwargs = sb3.sb3_kwargs(build_config(cls, data["agent"]), cls.critic_key)
    torch.set_num_threads(1)
    vec_env = make_vec_env(case.env, n_envs=train["num_envs"], seed=seed)
    model = getattr(stable_baselines3, case.algorithm)(
        "MlpPolicy", vec_env, policy_kwargs=policy_kwargs, seed=seed, device="cpu", **kwargs
    )
    start = time.perf_counter()
    model.learn(case.steps)
    train_s = time.perf_counter() - start

    eval_env = envs.make(case.env, num_envs=train["eval_num_envs"])
    agent = cls(
        eval_env.single_observation_space,
        eval_env.single_action_space,
        build_config(cls, data["agent"]),
        "none",
    )
    agent.model.policy.load_state_dict(model.policy.state_dict())
    episodes = train["final_eval_episodes"]
    result = evaluate(agent, eval_env, episodes, seed=eval_seed(seed))
    return Result(result.mean, result.std, episodes, train_s, model.num_timesteps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ppo-steps", type=int, default=50_000)
    parser.add_argument("--sac-steps", type=int, default=6_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cases = [Case("CartPole-v1", "ppo", "PPO", args.ppo_steps, ("none", "batch"))]
    if "sac" in agents.names():
        cases.append(Case("Pendulum-v1", "sac", "SAC", args.sac_steps, ("none",)))
    rows = []
    start = time.perf_counter()
    for case in cases:
        for norm in case.norms:
            native = run_rlnorm(case.native, case, norm, args.seed, None)
            adapter = run_rlnorm(f"sb3:{case.algorithm}", case, norm, args.seed, case.sb3_config)
            plain = run_plain_sb3(case, args.seed) if norm == "none" else None
            rows.append((case, norm, native, adapter, plain))
            runs = {"native": native, "adapter": adapter, "plain": plain}
            record = {k: None if r is None else vars(r) for k, r in runs.items()}
            print(json.dumps({"env": case.env, "norm": norm, **record}))
    total = time.perf_counter() - start

    def cell(r: Result | None) -> str:
        return "—" if r is None else f"{r.mean:.1f} ± {r.std:.1f}"

    def speed(r: Result | None) -> str:
        return "—" if r is None else f"{r.train_s:.0f} s ({r.sps:.0f})"

    lines = [
        "| env, algorithm | norm | steps | final eval: native | adapter | plain SB3 "
        "| train time (SPS): native | adapter | plain SB3 | SPS adapter/native | adapter/plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, norm, native, adapter, plain in rows:
        ratio_native = f"{adapter.sps / native.sps:.2f}x"
        ratio_plain = "—" if plain is None else f"{adapter.sps / plain.sps:.2f}x"
        lines.append(
            f"| {case.env}, {case.native} / sb3:{case.algorithm} | {norm} | {adapter.steps} "
            f"| {cell(native)} | {cell(adapter)} | {cell(plain)} | {speed(native)} "
            f"| {speed(adapter)} | {speed(plain)} | {ratio_native} | {ratio_plain} |"
        )
    table = "\n".join(lines)
    versions = (
        f"torch {torch.__version__}, stable-baselines3 {stable_baselines3.__version__}, "
        f"gymnasium {gym.__version__}, Python {platform.python_version()}"
    )
    print(table)
    print(f"total {total:.0f} s; {versions}")


if __name__ == "__main__":
    main()
