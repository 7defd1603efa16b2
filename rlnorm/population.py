"""Many seeds in one process: a population of members trained in lockstep on batched kernels.

Training ``K`` seeds one after another pays the per-op cost of a small network's update ``K``
times; here the ``K`` members' networks are stacked (:mod:`rlnorm.members`: every weight and
normalization statistic gets a leading member dimension), so each op of an update serves
every member at once. Member ``k`` is the run ``--seed k``, not an approximation of it:

- its initial weights are the ones ``Learner.create`` builds under ``torch.manual_seed(k)``;
- its random numbers come from its own generator, started where that run's global generator
  stands after building the agent (:class:`rlnorm.draws.MemberDraws`), and every draw has
  that run's shape and order: warm-up actions, exploration, replay minibatches;
- its env is that run's env, reset with seed ``k`` (:class:`MemberEnvs`), its replay buffer
  holds that run's transitions (:class:`rlnorm.replay.MemberReplay`);
- its losses are reduced per member and summed, so its gradients are its own; Adam is
  elementwise, so one optimizer over the stacked weights is ``K`` independent ones;
- no normalization statistic is shared across members: each member's BatchNorm running
  statistics follow its own batches only (the source post's shared-statistics bug, avoided).

``tests/test_population.py`` checks the weights after several updates against single-seed
runs. Each member gets an ordinary run directory (``config.yaml`` with its seed,
``eval.jsonl``, ``summary.json``, ``checkpoints/last`` with its run's training state,
``best``, ``step-<n>``, TensorBoard evaluation curves) that ``rlnorm eval``, ``audit``,
``plot``, ``train --resume`` (the member continues alone) and :func:`rlnorm.load` read like
any run's; :meth:`PopulationLearner.restore` continues them all together from those
checkpoints. Supported: PPO (ragged valid steps padded and masked, :mod:`rlnorm.minibatches`),
SAC, TD3 and its DDPG setting, CrossQ, every norm, observation and reward normalization,
native and gymnasium envs. A member whose weights stop being finite stops alone
(:mod:`rlnorm.quarantine`). Speed: ``benchmarks/results/seed_population.md``.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rlnorm import checkpoint, members, resume, rundir
from rlnorm.agent import Agent, OffPolicy, network_dtype
from rlnorm.audit import audit
from rlnorm.config import RunConfig
from rlnorm.diagnostics import NormDiagnostics
from rlnorm.draws import deterministic_algorithms
from rlnorm.env import TorchVecEnv, space_shape
from rlnorm.errors import ConfigError, NonFiniteError
from rlnorm.learner import next_due
from rlnorm.monitor import Monitor
from rlnorm.normalize import ObservationNormalizer, RewardScaler
from rlnorm.quarantine import Quarantine
from rlnorm.replay import MemberReplay, ReplayBuffer
from rlnorm.rollout import EvalResult, Rollout, RolloutManager, evaluate
from rlnorm.safety import training
from rlnorm.stacking import (
    NO_POPULATION,
    MemberEnvs,
    member_rollout_state,
    merge_rollout_states,
    population_supported,
    saved_group,
    stack_agents,
    stack_optimizer_states,
    unstack_agent,
)


@dataclass
class MemberResult:
    """Where one member's run directory and artefacts are, and how it ended."""

    seed: int
    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    final_eval: EvalResult


@dataclass
class PopulationResult:
    members: list[MemberResult]
    env_steps: int  # per member
    wall_time: float
    tb_dir: Path


class PopulationLearner:
    """Trains one member per seed in ``seeds``, each into its run directory.

    ``make_env(num_envs)`` builds one env of the run's env id on its device (called once per
    member for training and once for evaluation); ``population_dir`` receives the shared
    progress log and TensorBoard curves of the training metrics, averaged over members.
    """

    def __init__(
        self,
        agent_cls: type[Agent],
        config: RunConfig,
        seeds: Sequence[int],
        run_dirs: Sequence[Path],
        population_dir: Path,
        make_env: Callable[[int], TorchVecEnv],
        quiet: bool = False,
    ) -> None:
        if len(set(seeds)) != len(seeds) or not seeds:
            raise ConfigError(f"--seeds needs distinct seeds, got {list(seeds)}")
        train = config.train
        if not population_supported(agent_cls):  # checked again when stacking
            raise ConfigError(NO_POPULATION.format(agent=config.agent))
        self.agent_cls, self.configs = agent_cls, [replace(config, seed=seed) for seed in seeds]
        self.run_dirs, self.population_dir = [Path(d) for d in run_dirs], Path(population_dir)
        self.quiet = quiet
        # A replay that holds the whole run never wraps, so a smaller one than the config's
        # stores and samples the same transitions (ReplayBuffer's rule): K members' buffers
        # of a million rows would not fit in memory.
        agent_config, small, capacity = config.agent_config, config.agent_config, None
        if hasattr(agent_config, "buffer_size"):  # off-policy
            capacity = min(
                agent_config.buffer_size,
                train.total_steps + agent_config.steps_per_env * train.num_envs,
            )
            small = replace(agent_config, buffer_size=1)  # the members' own buffers go unused
        self.agents: list[Agent] = []
        generators = []
        env = make_env(1)
        for cfg in self.configs:  # as Learner.create builds the run --seed k
            torch.manual_seed(cfg.seed)
            agent = agent_cls(
                env.single_observation_space, env.single_action_space, small, cfg.norm, env.device
            )
            agent.config = agent_config
            if train.normalize_obs:  # as the learner gives a run one
                shape = space_shape(env.single_observation_space)
                agent.obs_normalizer = ObservationNormalizer(shape).to(env.device)
            for module in agent.modules().values():  # as a run's agent, between updates
                module.eval()
            self.agents.append(agent)
            # the run's global generator on the env's device, as it stands after building
            generator = torch.Generator(device=env.device)
            cuda = env.device.type == "cuda"
            generator.set_state(
                torch.cuda.get_rng_state(env.device) if cuda else torch.get_rng_state()
            )
            generators.append(generator)
        env.close()
        self.capacity = capacity
        self.env = MemberEnvs(make_env, train.num_envs, list(seeds))
        eval_seeds = [cfg.eval_seed for cfg in self.configs]  # each run's evaluation seed
        self.eval_env = MemberEnvs(make_env, train.eval_num_envs, eval_seeds)
        self._stack(generators)
        self.restored = False
        self.env_steps = self.updates = 0
        self.best_means = [-math.inf] * len(seeds)
        train_cfg = config.train
        self.next_eval = train_cfg.eval_every or None
        self.next_save = train_cfg.checkpoint_every or None

    def _stack(self, generators: list[torch.Generator]) -> None:
        self.population = stack_agents(self.agents, generators, self.capacity)
        for module in self.population.modules().values():
            module.eval()
        train, members = self.configs[0].train, len(self.configs)
        self.quarantine = Quarantine(self.population.modules(), members)
        scaler = (
            RewardScaler(self.env.num_envs, train.reward_gamma, members=members).to(self.env.device)
            if train.normalize_reward
            else None
        )
        self.rollouts = RolloutManager(self.population, self.env, None, scaler)

    def restore(self) -> None:
        """Continue the whole population from its members' ``checkpoints/last`` (written
        together, at one env step): each member's weights, optimizer state, generator, env,
        episodes in flight and replay buffer, and the schedule, as if never stopped."""
        lasts = [d / "checkpoints" / "last" for d in self.run_dirs]
        metas = [checkpoint.read_meta(last) for last in lasts]
        counters = {(m.counters.get("env_steps", -1), m.counters.get("updates", -1)) for m in metas}
        if len(counters) != 1 or any(m.learner is None for m in metas):
            raise ConfigError(
                f"the members' last checkpoints stand at different steps {sorted(counters)}: "
                "resume each member alone (rlnorm train --resume MEMBER_DIR)"
            )
        generators, states = [], []
        for agent, last in zip(self.agents, lasts, strict=True):
            saved = checkpoint.load(last, lambda _: self.agent_cls, agent.device)
            for name, module in agent.modules().items():
                module.load_state_dict(saved.modules()[name].state_dict())
            if agent.obs_normalizer is not None and saved.obs_normalizer is not None:
                agent.obs_normalizer.load_state_dict(saved.obs_normalizer.state_dict())
            for name, optimizer in agent.optimizers().items():
                optimizer.load_state_dict(saved.optimizers()[name].state_dict())
            state = checkpoint.load_training_state(last, agent.device)
            generator = torch.Generator(device=agent.device)
            generator.set_state(state.get("rng.cuda", state["rng.torch"]).cpu())
            generators.append(generator)
            states.append(state)
        self._stack(generators)
        stack_optimizer_states(self.population, self.agents)
        self.rollouts.reset()
        replay: MemberReplay | None = getattr(self.population, "replay", None)
        if not self.env.resumable:
            raise ConfigError(f"{self.env.env_id}'s state cannot be restored: resume alone")
        for k, state in enumerate(states):
            self.env.load_member_state_dict(k, saved_group(state, "env"))
            if replay is not None:
                replay.load_member(k, saved_group(state, "replay"))
        parts = [saved_group(state, "rollout") for state in states]
        self.rollouts.load_state_dict(merge_rollout_states(parts))
        (self.env_steps, self.updates), learner = counters.pop(), metas[0].learner
        assert learner is not None
        self.best_means = [m.learner.best_mean for m in metas if m.learner is not None]
        self.next_eval, self.next_save = learner.next_eval, learner.next_checkpoint
        self.restored = True

    # -- per member ------------------------------------------------------------------------
    def member_replay(self, k: int) -> ReplayBuffer:
        """Member ``k``'s replay buffer, as its own run would hold it (a copy)."""
        replay: MemberReplay = self.population.replay  # type: ignore[attr-defined]
        return replay.member(k)

    def _save(self, k: int, name: str, with_state: bool = False, **extra: Any) -> Path:
        """Member ``k``'s checkpoint ``name`` as its own run writes it (the agent must hold
        its weights: :func:`unstack_agent`); ``with_state`` adds the training state that
        ``rlnorm train --resume`` continues the member from, alone, as its own run."""
        cfg = self.configs[k]
        learner = {
            "best_mean": self.best_means[k],
            "next_eval": self.next_eval,
            "next_checkpoint": self.next_save,
        }
        return checkpoint.save(
            self.agents[k],
            self.run_dirs[k] / "checkpoints" / name,
            env_id=cfg.env,
            counters={"env_steps": self.env_steps, "updates": self.updates},
            extra={
                "run_config": cfg.to_dict(),
                "learner": learner,
                "population": self._record(),
                **extra,
            },
            training_state=self._training_state(k) if with_state else None,
        )

    def _checkpoint(self, k: int) -> Path:
        """``last`` with the training state, and a ``step-<n>`` snapshot, as a run keeps."""
        last = self._save(k, "last", with_state=True)
        resume.snapshot(last, self.env_steps, self.configs[k].train.keep_checkpoints)
        return last

    def _training_state(self, k: int) -> dict[str, torch.Tensor]:
        """What member ``k``'s own run saves beside ``checkpoints/last`` (the layout of
        :func:`rlnorm.resume.capture`): its generator's state as that run's global one, its
        env, its sub-envs' episodes in flight and (off-policy) its replay buffer."""
        generator = self.population.draws.generators[k]  # type: ignore[attr-defined]
        key = "rng.cuda" if generator.device.type == "cuda" else "rng.torch"
        state = {key: generator.get_state()}
        if key == "rng.cuda":
            state["rng.torch"] = torch.get_rng_state()
        if self.env.resumable:
            env_state = self.env.member_state_dict(k)
            state |= {f"env.{name}": value for name, value in env_state.items()}
        rollout = member_rollout_state(self.rollouts.state_dict(), k, self.env.per_member)
        state |= {f"rollout.{name}": value for name, value in rollout.items()}
        if not hasattr(self.population, "replay"):
            return state
        replay = self.member_replay(k).state_dict()
        return state | {f"replay.{name}": value for name, value in replay.items()}

    def _record(self) -> dict[str, Any]:
        return {"seeds": [c.seed for c in self.configs], "dir": str(self.population_dir)}

    def _evaluate(self, episodes: int, monitors: list[Monitor]) -> list[EvalResult]:
        """Every member's evaluation, as its run's (its eval env and seed, its quotas), run
        as one batch of the members' eval envs; the members are then unstacked, ready to be
        saved."""
        members = len(self.configs)
        together = evaluate(self.population, self.eval_env, episodes, blocks=members)
        results = []
        for k, (agent, cfg) in enumerate(zip(self.agents, self.configs, strict=True)):
            part = slice(k * episodes, (k + 1) * episodes)
            result = EvalResult(together.returns[part], together.lengths[part])
            results.append(result)
            if k in self.quarantine.stopped:  # its run directory stays as it stopped
                continue
            unstack_agent(self.population, k, agent)
            record = {
                "step": self.env_steps,
                "mean": result.mean,
                "std": result.std,
                "episodes": len(result.returns),
                "seed": cfg.eval_seed,
            }
            monitors[k].scalars(
                {"eval/mean_return": result.mean, "eval/std_return": result.std}, self.env_steps
            )
            with open(self.run_dirs[k] / "eval.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            if result.mean > self.best_means[k]:
                self.best_means[k] = result.mean
                self._save(k, "best", eval=record)
        return results

    def _check_finite(self) -> None:
        """Stop each member whose weights are no longer finite, as its own run would stop
        (:mod:`rlnorm.quarantine`): it goes back to its last good state (that of its last
        evaluation or checkpoint, which stays in its run directory) and never moves again,
        while the others train on. Raise when no member is left."""
        bad = self.quarantine.nonfinite()
        if not bad:
            return
        where = f"after update {self.updates + 1} (env step {self.env_steps} per member)"
        if len(self.quarantine.stopped) + len(bad) == len(self.configs):
            raise NonFiniteError(
                f"non-finite weights {where} in every member left; each member's last good "
                "checkpoint is in its run directory"
            )
        stacked = self.population.modules()
        for k in bad:
            self.quarantine.stopped[k] = f"non-finite weights {where}"
            for name, module in self.agents[k].modules().items():
                members.load_member(stacked[name], k, module, shared_too=False)
            message = (
                f"seed {self.configs[k].seed}: non-finite weights {where}: this member stops; "
                f"its last good checkpoint stays in {self.run_dirs[k]}; the others go on"
            )
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    # -- the loop --------------------------------------------------------------------------
    def _update(self, diagnostics: NormDiagnostics, rollout: Rollout) -> dict[str, float]:
        """One update of every member, as the learner runs it for one (diagnostics included:
        the learner draws their replay sample from the run's generator, so each member
        draws it from its own, and the members' streams stay the runs' streams)."""
        pop, cfg = self.population, self.configs[0].train
        replay: MemberReplay | None = getattr(pop, "replay", None)
        progress = min(1.0, self.env_steps / cfg.total_steps)
        batch = rollout if replay is None else replay
        modules = pop.modules().values()
        with self.quarantine.holding(), training(*modules), diagnostics.watch(self.updates):
            metrics = pop.update(batch, progress=progress)
        self._check_finite()
        if diagnostics.due(self.updates):
            # (K, B, ...): a replay sample, or the rollout's rows member by member
            members = len(self.configs)
            obs = rollout.obs.unflatten(1, (members, -1)).transpose(0, 1).flatten(1, 2)
            obs = obs if replay is None else replay.sample(256).obs
            metrics |= diagnostics.measure(
                self.updates, obs.reshape(*obs.shape[:2], -1).to(network_dtype(pop))
            )
        if self.updates == 0:
            for finding in audit(pop, watch=diagnostics.last_watch):
                if finding.severity != "info":
                    message = f"audit: {finding.path}: {finding.message}; fix: {finding.fix}"
                    warnings.warn(message, RuntimeWarning, stacklevel=3)
        self.updates += 1
        return metrics

    def train(self) -> PopulationResult:
        """Run every member to ``total_steps`` env steps, evaluating and checkpointing each
        as ``train.eval_every`` and ``train.checkpoint_every`` say, then a final evaluation."""
        cfg, pop = self.configs[0].train, self.population
        collection = pop.collection
        learning_starts = collection.learning_starts if isinstance(collection, OffPolicy) else 0
        start = time.perf_counter()
        for run_dir in self.run_dirs:
            run_dir.mkdir(parents=True, exist_ok=True)
        self.population_dir.mkdir(parents=True, exist_ok=True)
        (self.population_dir / rundir.POPULATION_RECORD).write_text(
            json.dumps({**self._record(), "runs": [str(d) for d in self.run_dirs]}, indent=2)
        )
        monitor = Monitor(self.population_dir, cfg.total_steps, quiet=self.quiet)
        member_monitors = [Monitor(d, cfg.total_steps, quiet=True) for d in self.run_dirs]
        restore_algorithms = deterministic_algorithms(cfg.deterministic)
        diagnostics = NormDiagnostics(
            pop.modules(), pop.acting_modules(), every=cfg.norm_diagnostics_every
        )
        try:
            if not self.restored:
                self.rollouts.reset()
            while self.env_steps < cfg.total_steps:
                warming_up = self.env_steps < learning_starts
                rollout = self.rollouts.collect(collection.steps_per_env, warming_up)
                self.env_steps += rollout.num_steps // len(self.configs)
                if hasattr(pop, "replay"):
                    pop.replay.add(rollout)
                if self.env_steps >= learning_starts:
                    monitor.record(self._update(diagnostics, rollout), self.env_steps)
                sps = self.env_steps * len(self.configs) / (time.perf_counter() - start)
                returns = self.rollouts.episode_returns
                if returns and monitor.due(self.env_steps):
                    monitor.record(
                        {"rollout/episode_return": sum(returns) / len(returns)}, self.env_steps
                    )
                    monitor.flush(self.env_steps)
                monitor.progress(self.env_steps, sps, returns[-1] if returns else None)
                if self.env_steps >= cfg.total_steps:
                    break
                evaluate = self.next_eval is not None and self.env_steps >= self.next_eval
                save = self.next_save is not None and self.env_steps >= self.next_save
                if evaluate:  # (unstacks every member)
                    self._evaluate(cfg.eval_episodes, member_monitors)
                    self.next_eval = next_due(self.next_eval, cfg.eval_every, self.env_steps)
                if save:
                    self.next_save = next_due(self.next_save, cfg.checkpoint_every, self.env_steps)
                if evaluate or save:  # as a run: last is written at every evaluation too
                    for k, agent in enumerate(self.agents):
                        if k not in self.quarantine.stopped:
                            unstack_agent(pop, k, agent)
                            self._checkpoint(k)
            finals = self._evaluate(cfg.final_eval_episodes, member_monitors)
            wall = time.perf_counter() - start
            results = []
            for k, (final, run_dir) in enumerate(zip(finals, self.run_dirs, strict=True)):
                stopped = self.quarantine.stopped.get(k)
                last = run_dir / "checkpoints" / "last" if stopped else self._checkpoint(k)
                summary = {
                    "env_steps": self.env_steps,
                    "updates": self.updates,
                    "wall_time_s": wall,
                    "final_eval": {
                        "mean": final.mean,
                        "std": final.std,
                        "episodes": len(final.returns),
                    },
                    "best_eval_mean": self.best_means[k],
                    "population": self._record(),
                    # the final evaluation is then of the member's last good weights
                    **({"stopped": stopped} if stopped else {}),
                }
                (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
                best = run_dir / "checkpoints" / "best"
                results.append(
                    MemberResult(
                        self.configs[k].seed, run_dir, last, best if best.exists() else None, final
                    )
                )
        finally:
            monitor.close()
            for member_monitor in member_monitors:
                member_monitor.close()
            restore_algorithms()
        return PopulationResult(results, self.env_steps, wall, monitor.tb_dir)
