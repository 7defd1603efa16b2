"""The training loop: collect, update in train mode, log, evaluate, checkpoint, resume.

The learner owns no algorithm. It asks the rollout manager for data (eval-mode acting),
hands it to ``agent.update`` inside :func:`rlnorm.training` (train mode, exact mode
restoration afterwards), logs the returned metrics, evaluates on a separate env, and keeps
checkpoints current:

- ``checkpoints/last``: written every ``train.checkpoint_every`` env steps and at every
  evaluation, with the training state a resumed run needs (RNG states, the env's state,
  the episodes in flight, the replay buffer, the reward scaler), so a killed run loses at
  most ``checkpoint_every`` steps;
- ``checkpoints/best``: the best evaluation mean so far;
- ``checkpoints/step-<n>``: the last ``train.keep_checkpoints`` periodic snapshots.

A checkpoint is written only after the update that precedes it passed the NaN checks, so
``last`` is always a good one.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlnorm import checkpoint, resume
from rlnorm.agent import Agent, OffPolicy, OnPolicy, network_dtype
from rlnorm.audit import audit
from rlnorm.config import RunConfig
from rlnorm.diagnostics import NormDiagnostics
from rlnorm.draws import deterministic_algorithms
from rlnorm.env import TorchVecEnv, space_shape
from rlnorm.errors import CheckpointError, ConfigError, NonFiniteError
from rlnorm.monitor import Monitor
from rlnorm.normalize import ObservationNormalizer, RewardScaler
from rlnorm.replay import ReplayBuffer
from rlnorm.resume import replay_of
from rlnorm.rollout import EvalResult, Rollout, RolloutManager
from rlnorm.safety import training


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


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are one (``cuda`` and ``cuda:<current>`` are)."""
    if a.type != b.type:
        return False
    if a.type == "cuda":
        return (a.index or torch.cuda.current_device()) == (b.index or torch.cuda.current_device())
    return a.index == b.index or a.type == "cpu"


def next_due(due: int | None, every: int, now: int) -> int | None:
    """The first of ``due, due + every, ...`` after ``now`` (``None``: never due)."""
    if due is None:
        return None
    while due <= now:
        due += every
    return due


class Learner:
    """Trains ``agent`` on ``env`` as ``config.train`` says, writing into ``run_dir``.

    Call :meth:`restore` with a checkpoint of the same run before :meth:`train` to resume.
    :meth:`create` builds a seeded agent for the run first; the agent and both envs must
    live on one device.
    """

    @classmethod
    def create(
        cls,
        agent_cls: type[Agent],
        env: TorchVecEnv,
        eval_env: TorchVecEnv,
        config: RunConfig,
        run_dir: str | Path,
        quiet: bool = False,
    ) -> Learner:
        """A learner with a fresh ``agent_cls`` agent whose initial weights, like everything
        the run draws from torch's global generator, follow from ``config.seed``."""
        torch.manual_seed(config.seed)
        agent = agent_cls(
            env.single_observation_space,
            env.single_action_space,
            config.agent_config,
            config.norm,
            env.device,
        )
        return cls(agent, env, eval_env, config, run_dir, quiet)

    def __init__(
        self,
        agent: Agent,
        env: TorchVecEnv,
        eval_env: TorchVecEnv,
        config: RunConfig,
        run_dir: str | Path,
        quiet: bool = False,
    ) -> None:
        if not isinstance(agent.collection, OnPolicy | OffPolicy):
            raise ConfigError(
                f"{agent.name}: collection must be OnPolicy or OffPolicy, got {agent.collection!r}"
            )
        for name, device in (("env", env.device), ("eval_env", eval_env.device)):
            if not _same_device(agent.device, device):
                raise ConfigError(
                    f"the agent is on {agent.device} but the {name} on {device}: acting and "
                    "collection keep every tensor on the env's device; build both on one"
                )
        self.agent, self.config, self.env = agent, config, env
        self.run_dir = Path(run_dir)
        self.quiet = quiet
        cfg = config.train
        if cfg.normalize_obs and agent.obs_normalizer is None:
            shape = space_shape(env.single_observation_space)
            agent.obs_normalizer = ObservationNormalizer(shape).to(agent.device)
        scaler = (
            RewardScaler(env.num_envs, cfg.reward_gamma).to(env.device)
            if cfg.normalize_reward
            else None
        )
        self.rollouts = RolloutManager(agent, env, eval_env, scaler)
        self.norm_diagnostics = NormDiagnostics(
            agent.modules(), agent.acting_modules(), every=cfg.norm_diagnostics_every
        )
        for module in agent.modules().values():
            # At rest in eval mode, as rlnorm.load returns modules: a fresh and a resumed run
            # start alike, and acting()/training() set the modes each pass needs anyway.
            module.eval()
        self.env_steps = 0
        self.updates = 0
        self.best_mean = -math.inf
        self.next_eval = cfg.eval_every or None
        self.next_checkpoint = cfg.checkpoint_every or None
        self._restored: dict[str, torch.Tensor] | None = None
        self._params_by_device: dict[torch.device, list[torch.Tensor]] | None = None

    # -- checkpoints -----------------------------------------------------------------------
    def _save(self, name: str, with_state: bool = False, **extra: Any) -> Path:
        return checkpoint.save(
            self.agent,
            self.run_dir / "checkpoints" / name,
            env_id=self.config.env,
            counters={"env_steps": self.env_steps, "updates": self.updates},
            extra={
                "run_config": self.config.to_dict(),
                "learner": {
                    "best_mean": self.best_mean,
                    "next_eval": self.next_eval,
                    "next_checkpoint": self.next_checkpoint,
                },
                **extra,
            },
            training_state=(
                resume.capture(self.env, self.rollouts, replay_of(self.agent))
                if with_state
                else None
            ),
        )

    def _checkpoint(self) -> None:
        """Write ``last`` (resumable) and a periodic ``step-<n>`` snapshot, keeping the newest
        ``keep_checkpoints`` snapshots."""
        last = self._save("last", with_state=True)
        resume.snapshot(last, self.env_steps, self.config.train.keep_checkpoints)

    def restore(self, path: str | Path) -> None:
        """Continue the run saved in the checkpoint ``path`` (its ``last`` checkpoint): the
        agent must already hold that checkpoint's weights (:func:`rlnorm.load`); this
        restores counters, schedules, RNG states, env, episodes and replay buffer."""
        meta = checkpoint.read_meta(path)
        state = checkpoint.load_training_state(path, self.env.device)
        if not state:
            raise CheckpointError(
                f"{path} holds no training state (only checkpoints/last of a run does)"
            )
        if meta.learner is None or not {"env_steps", "updates"} <= set(meta.counters):
            raise CheckpointError(f"{path} records no learner state (counters, schedules)")
        self.env_steps = meta.counters["env_steps"]
        self.updates = meta.counters["updates"]
        self.best_mean = meta.learner.best_mean
        self.next_eval, self.next_checkpoint = meta.learner.next_eval, meta.learner.next_checkpoint
        # A kill between writing best/ and last/ leaves best/ newer: keep its mean.
        best = Path(path).parent / "best"
        if best.is_dir():
            best_mean = checkpoint.read_meta(best).eval_mean
            self.best_mean = max(self.best_mean, -math.inf if best_mean is None else best_mean)
        self._restored = state

    def _apply_restored(self) -> None:
        """Put the restored training state in place, after the env's first reset."""
        assert self._restored is not None
        resume.apply(
            self._restored,
            self.env,
            self.rollouts,
            replay_of(self.agent),
            fresh_seed=self.config.seed + self.env_steps,
        )
        self._restored = None

    # -- evaluation ------------------------------------------------------------------------
    def _evaluate(self, episodes: int) -> EvalResult:
        seed = self.config.eval_seed
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
        self.monitor.log(
            f"step {self.env_steps}: evaluation mean {result.mean:.2f} +- {result.std:.2f} "
            f"over {len(result.returns)} episodes"
        )
        with open(self.run_dir / "eval.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if result.mean > self.best_mean:
            self.best_mean = result.mean
            self._save("best", eval=record)
        return result

    # -- the loop --------------------------------------------------------------------------
    def _check_update(self, metrics: dict[str, float]) -> None:
        """Stop on a non-finite loss or weight after an update, naming it, before the
        policy acts again and before any checkpoint.

        The weights are checked in one pass per device (the largest ``|value|`` of every
        tensor, finite exactly when all its values are) and named only when that fails:
        a check of each tensor with its own host read cost about 10% of a one-env SAC step.
        """
        problems = [k for k, v in metrics.items() if k.startswith("loss/") and not math.isfinite(v)]
        if problems or not self._weights_finite():
            problems += [
                f"weight {name}.{param_name}"
                for name, module in self.agent.modules().items()
                for param_name, param in module.named_parameters()
                if not bool(torch.isfinite(param).all())
            ]
        if not problems:
            return
        message = (
            f"non-finite {', '.join(problems)} after update {self.updates + 1} "
            f"(env step {self.env_steps}); the last good checkpoint is "
            f"{self.run_dir / 'checkpoints' / 'last'}"
        )
        # Even with nan_policy=warn: there is nothing to go on training from.
        raise NonFiniteError(message)

    @torch.no_grad()
    def _weights_finite(self) -> bool:
        if self._params_by_device is None:
            # Gathered once: loading weights and optimizer steps update parameters in place.
            self._params_by_device = {}
            for module in self.agent.modules().values():
                for param in module.parameters():
                    if param.numel():
                        self._params_by_device.setdefault(param.device, []).append(param)
        return all(
            bool(torch.stack(torch._foreach_norm(params, math.inf)).isfinite().all())
            for params in self._params_by_device.values()
        )

    def _step(self) -> dict[str, float]:
        """One collection and (unless still warming up) one update; returns the metrics."""
        collection = self.agent.collection
        warming_up = (
            isinstance(collection, OffPolicy) and self.env_steps < collection.learning_starts
        )
        try:
            rollout = self.rollouts.collect(collection.steps_per_env, random_actions=warming_up)
        except NonFiniteError as e:
            message = f"{e} (the rollout that began at env step {self.env_steps})"
            self.env_steps += collection.steps_per_env * self.env.num_envs
            if self.config.train.nan_policy == "raise":
                raise NonFiniteError(message, e.step, e.env_index) from None
            warnings.warn(f"{message}; nan_policy=warn: rollout dropped", RuntimeWarning, 3)
            return {}
        self.env_steps += rollout.num_steps
        progress = min(1.0, self.env_steps / self.config.train.total_steps)
        if isinstance(collection, OffPolicy):
            replay = replay_of(self.agent)
            if replay is None:
                raise ConfigError(f"off-policy agent {self.agent.name} has no replay buffer")
            replay.add(rollout)
            if self.env_steps < collection.learning_starts:
                return {}
            batch: Rollout | ReplayBuffer = replay
        else:
            batch = rollout
        diagnostics = self.norm_diagnostics
        with training(*self.agent.modules().values()), diagnostics.watch(self.updates):
            metrics = self.agent.update(batch, progress=progress)
        self._check_update(metrics)
        if diagnostics.due(self.updates):
            metrics |= diagnostics.measure(self.updates, self._diagnostic_inputs(batch))
        if self.updates == 0:
            self._audit(1 / self._planned_updates(), diagnostics.last_watch)
        self.updates += 1
        return metrics

    def _planned_updates(self) -> int:
        """How many updates the whole run makes: one per collection, after the warm-up."""
        collection = self.agent.collection
        per_update = collection.steps_per_env * self.env.num_envs
        starts = collection.learning_starts if isinstance(collection, OffPolicy) else 0
        remaining = max(0, self.config.train.total_steps - max(starts, per_update))
        return 1 + math.ceil(remaining / per_update)

    def _diagnostic_inputs(self, batch: Any) -> torch.Tensor:
        """Observations as the acting modules take them: the rollout's (already normalized),
        or for an off-policy agent a replay sample (a one-step rollout is too small a batch
        for train-mode BatchNorm)."""
        obs = batch.obs if isinstance(batch, Rollout) else batch.sample(256).obs
        return (
            obs.reshape(-1, *space_shape(self.env.single_observation_space))
            .to(network_dtype(self.agent))
            .flatten(1)
        )

    def _audit(self, progress: float, watch: Any) -> None:
        """After the first update, warn about anything unsafe the audit finds (the update
        has run, so statistics that still never updated are a real finding)."""
        for finding in audit(self.agent, progress=progress, watch=watch):
            if finding.severity != "info":
                message = f"audit: {finding.path}: {finding.message}; fix: {finding.fix}"
                self.monitor.log(message)
                warnings.warn(message, RuntimeWarning, stacklevel=4)

    def train(self) -> TrainResult:
        """Run to ``total_steps`` environment steps, then evaluate and checkpoint."""
        cfg = self.config.train
        start = time.perf_counter()
        start_steps = self.env_steps
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.monitor = Monitor(
            self.run_dir,
            cfg.total_steps,
            quiet=self.quiet,
            start_step=self.env_steps,
            log_every=cfg.log_every,
        )
        if self._restored is None:
            self.rollouts.reset(seed=self.config.seed)
        else:
            self._truncate_eval_log()
            self.rollouts.reset(seed=self.config.seed)
            self._apply_restored()
            self.monitor.log(f"resumed at env step {self.env_steps}")
        restore_algorithms = deterministic_algorithms(cfg.deterministic)
        try:
            while self.env_steps < cfg.total_steps:
                self.monitor.record(self._step(), self.env_steps)
                sps = (self.env_steps - start_steps) / (time.perf_counter() - start)
                returns = self.rollouts.episode_returns
                finished = self.env_steps >= cfg.total_steps
                if finished or self.monitor.due(self.env_steps):
                    rollout = {"time/sps": sps}
                    if returns:
                        rollout["rollout/episode_return"] = float(np.mean(returns))
                        rollout["rollout/episode_length"] = float(
                            np.mean(self.rollouts.episode_lengths)
                        )
                    self.monitor.record(rollout, self.env_steps)
                    self.monitor.flush(self.env_steps)
                self.monitor.progress(self.env_steps, sps, returns[-1] if returns else None)
                if finished:
                    break
                evaluate = self.next_eval is not None and self.env_steps >= self.next_eval
                save = self.next_checkpoint is not None and self.env_steps >= self.next_checkpoint
                if evaluate:
                    self._evaluate(cfg.eval_episodes)
                    self.next_eval = next_due(self.next_eval, cfg.eval_every, self.env_steps)
                if save:
                    self.next_checkpoint = next_due(
                        self.next_checkpoint, cfg.checkpoint_every, self.env_steps
                    )
                if evaluate or save:
                    self.monitor.flush(self.env_steps)  # a resumed run continues after them
                    self._checkpoint()
            final = self._evaluate(cfg.final_eval_episodes)
            self._checkpoint()
        finally:
            self.monitor.close()
            restore_algorithms()
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

    def _truncate_eval_log(self) -> None:
        """Drop evaluations logged after the checkpoint being resumed (the run died after
        them), so ``eval.jsonl`` stays one line per evaluation of the continued run."""
        path = self.run_dir / "eval.jsonl"
        if not path.exists():
            return
        lines = path.read_text().splitlines()
        kept = [line for line in lines if line and json.loads(line)["step"] <= self.env_steps]
        path.write_text("".join(f"{line}\n" for line in kept))
