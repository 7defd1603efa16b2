"""The training loop: collect, update in train mode, log, evaluate, checkpoint.

The learner owns no algorithm. It asks the rollout manager for data (eval-mode acting),
hands it to ``agent.update`` inside :func:`rlnorm.training` (train mode, exact mode
restoration afterwards), logs the returned metrics, evaluates on a separate env and keeps
``checkpoints/last`` (always) and ``checkpoints/best`` (best evaluation mean) current.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlnorm import checkpoint
from rlnorm.agents.base import Agent, OnPolicy
from rlnorm.config import RunConfig
from rlnorm.envs.base import TorchVecEnv
from rlnorm.monitor import Monitor
from rlnorm.rollout import EvalResult, RolloutManager
from rlnorm.safety import training

#: Evaluation episodes are seeded with the run seed plus this, apart from training seeds.
EVAL_SEED_OFFSET = 1_000_003


@dataclass
class TrainResult:
    """Where a run's artefacts are and how it ended."""

    run_dir: Path
    tb_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    final_eval: EvalResult
    env_steps: int
    wall_time: float


class Learner:
    """Trains ``agent`` on ``env`` as ``config.train`` says, writing into ``run_dir``."""

    def __init__(
        self,
        agent: Agent,
        env: TorchVecEnv,
        eval_env: TorchVecEnv,
        config: RunConfig,
        run_dir: str | Path,
        quiet: bool = False,
    ) -> None:
        if not isinstance(agent.collection, OnPolicy):
            raise NotImplementedError(f"{agent.name}: only on-policy collection is implemented")
        self.agent, self.config = agent, config
        self.run_dir = Path(run_dir)
        self.rollouts = RolloutManager(agent, env, eval_env)
        self.monitor = Monitor(self.run_dir, config.train.total_steps, quiet=quiet)
        self.env_steps = 0
        self.updates = 0
        self.best_mean = -np.inf

    def _evaluate(self, episodes: int) -> EvalResult:
        # A fixed seed per run: `rlnorm eval` replays the same episodes from the checkpoint.
        seed = self.config.seed + EVAL_SEED_OFFSET
        result = self.rollouts.evaluate(episodes, seed=seed)
        record = {
            "step": self.env_steps,
            "mean": result.mean,
            "std": result.std,
            "episodes": len(result.returns),
            "seed": seed,
        }
        self.monitor.scalars(
            {
                "eval/mean_return": result.mean,
                "eval/std_return": result.std,
                "eval/mean_length": float(result.lengths.mean()),
            },
            self.env_steps,
        )
        with open(self.run_dir / "eval.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        self._save("last", eval=record)
        if result.mean > self.best_mean:
            self.best_mean = result.mean
            self._save("best", eval=record)
        return result

    def _save(self, name: str, **extra: Any) -> Path:
        return checkpoint.save(
            self.agent,
            self.run_dir / "checkpoints" / name,
            env_id=self.config.env,
            counters={"env_steps": self.env_steps, "updates": self.updates},
            extra={"run_config": self.config.to_dict(), **extra},
        )

    def train(self) -> TrainResult:
        """Run to ``total_steps`` environment steps, then evaluate and checkpoint."""
        cfg = self.config.train
        steps_per_env = self.agent.collection.steps_per_env
        start = time.perf_counter()
        next_eval = cfg.eval_every or None
        self.rollouts.reset(seed=self.config.seed)
        try:
            while self.env_steps < cfg.total_steps:
                rollout = self.rollouts.collect(steps_per_env)
                self.env_steps += rollout.num_steps
                with training(*self.agent.modules().values()):
                    metrics = self.agent.update(
                        rollout, progress=min(1.0, self.env_steps / cfg.total_steps)
                    )
                self.updates += 1

                elapsed = time.perf_counter() - start
                returns = self.rollouts.episode_returns
                if returns:
                    metrics["rollout/episode_return"] = float(np.mean(returns))
                    metrics["rollout/episode_length"] = float(
                        np.mean(self.rollouts.episode_lengths)
                    )
                metrics["time/sps"] = self.env_steps / elapsed
                self.monitor.scalars(metrics, self.env_steps)
                self.monitor.progress(
                    self.env_steps, metrics["time/sps"], returns[-1] if returns else None
                )
                if (
                    next_eval is not None
                    and self.env_steps >= next_eval
                    and self.env_steps < cfg.total_steps
                ):
                    self._evaluate(cfg.eval_episodes)
                    next_eval += cfg.eval_every
            final = self._evaluate(cfg.final_eval_episodes)
        finally:
            self.monitor.close()
        wall = time.perf_counter() - start
        summary = {
            "env_steps": self.env_steps,
            "updates": self.updates,
            "wall_time_s": wall,
            "final_eval": {"mean": final.mean, "std": final.std, "episodes": len(final.returns)},
            "best_eval_mean": self.best_mean,
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        best = self.run_dir / "checkpoints" / "best"
        return TrainResult(
            self.run_dir,
            self.monitor.tb_dir,
            self.run_dir / "checkpoints" / "last",
            best if best.exists() else None,
            final,
            self.env_steps,
            wall,
        )
