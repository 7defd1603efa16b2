"""Proximal Policy Optimization (Schulman et al. 2017) with GAE, clipped objective.

Read top to bottom, this file is the algorithm:

1. ``act``: sample an action from the policy, record its log-probability and the value
   (a deterministic act, for evaluation, takes the most likely action and runs no critic).
2. ``update``: compute GAE advantages over the rollout, bootstrapping a truncated episode
   from the value of its final observation; then for ``epochs`` passes over shuffled
   minibatches, minimize the clipped surrogate + value loss - entropy bonus.

What is specific to normalization:

- ``act`` runs in eval mode (the rollout manager guarantees it), ``update`` in train mode.
  With BatchNorm the two modes are two different functions, so the importance ratio at
  epoch 0 is not 1: the *train/eval gap*. It is logged as ``norm/gap/policy_kl`` (KL
  between the train-mode and eval-mode policy on the first minibatch) and, on the first
  minibatch of the first epoch, before any gradient step (the parameters have not moved, so
  any deviation from 1 is the gap, not learning): the ratio's mean
  ``norm/ppo/first_minibatch_ratio``, the fraction of it the clipped objective already clips
  ``norm/ppo/first_minibatch_clip_fraction``, and the mean and max of ``|ratio - 1|``
  (``norm/ppo/first_minibatch_ratio_deviation``,
  ``norm/ppo/first_minibatch_max_ratio_deviation``; all in ``docs/metrics.md``).
- ``norm_update = "frozen"`` makes the two paths one function: during the update every
  mode-dependent norm layer normalizes with its running statistics
  (:func:`rlnorm.safety.frozen_statistics`), so the policy being optimized is exactly the
  policy that acted; after the update one train-mode pass over the rollout refreshes the
  running statistics, before the next rollout acts. The first-minibatch ratio is then 1 to
  float precision for ``batch`` and ``batch_renorm``, with either ``old_log_prob``
  (``tests/test_ppo.py`` asserts ``|ratio - 1| <= 1e-6``).
  ``"batch"`` is plain train mode: each minibatch is normalized with its own statistics,
  gradients flow through them, and the policy being optimized is not the one that acted.
- ``norm_statistics = "cumulative"`` (default) averages running statistics over every
  rollout instead of BatchNorm's exponential average, so the acting function settles
  rather than shifting with each rollout's state distribution.
- ``old_log_prob = "recompute"`` (default) recomputes the ratio's denominator before the
  first epoch with the network as the update runs it (train mode on the whole rollout, or
  frozen statistics), so the first ratio is 1 (exactly with frozen statistics; with
  ``norm_update = "batch"`` only when a minibatch is the whole rollout, since smaller
  minibatches have their own statistics). ``"behaviour"`` keeps the
  log-probabilities of the eval-mode acting pass (the textbook importance ratio); with
  ``norm_update = "batch"`` BatchNorm's gap then shows up as spurious clipping.
  Without a mode-dependent norm all settings coincide.

Why ``frozen`` is the default (``benchmarks/ppo_norm_update_study.py``, results and
numbers in ``benchmarks/results/ppo_norm_update_study.md``): over 5 seeds on CartPole-v1
and Acrobot-v1, with ``batch`` and ``batch_renorm``, it ended better than train mode in
every setting and its first-minibatch ratio never deviated from 1. In train mode with
minibatches smaller than the rollout, each normalized with its own statistics, the ratio
deviates before any step and the clipped objective clips some of the first minibatch for
nothing. With one minibatch (old log-probabilities recomputed on it) the first ratio is ~1
in train mode too, and train mode still fails: the policy it improves (batch statistics) is
not the one that acts (running statistics). Earlier, on CartPole with 2 seeds
(``benchmarks/ppo_batchnorm_variants.py``, ``benchmarks/results/ppo_batchnorm_variants.md``):
frozen statistics with an exponential average learned and then collapsed on one seed; a
cumulative average reached the maximum return on both.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import gymnasium as gym
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal, kl_divergence

from rlnorm import members, optim
from rlnorm import norm as norms
from rlnorm.agent import ActOutput, Agent, OnPolicy, network_dtype
from rlnorm.agents import register
from rlnorm.config import check_ranges
from rlnorm.env import space_shape
from rlnorm.errors import ConfigError
from rlnorm.member_adam import stepping
from rlnorm.metrics import (
    GAP_POLICY_KL,
    PPO_FIRST_CLIP_FRACTION,
    PPO_FIRST_MAX_RATIO_DEVIATION,
    PPO_FIRST_RATIO,
    PPO_FIRST_RATIO_DEVIATION,
)
from rlnorm.minibatches import Minibatch, ValidSamples
from rlnorm.nets import mlp, orthogonal_init
from rlnorm.rollout import Rollout
from rlnorm.safety import frozen_statistics, label_layers, train_and_eval_outputs


@dataclass
class PPOConfig:
    """PPO hyperparameters (defaults: rl-baselines3-zoo's tuned CartPole-v1 values)."""

    rollout_steps: int = 32  # steps per sub-env between updates
    epochs: int = 20
    minibatch_size: int = 256
    gamma: float = 0.98
    gae_lambda: float = 0.8
    clip_range: float = 0.2
    lr: float = 1e-3
    anneal_lr: bool = True  # linear decay of the learning rate to 0 over training
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalize_advantages: bool = True
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = 0.0  # continuous actions: initial log standard deviation
    old_log_prob: str = "recompute"  # "recompute" or "behaviour" (see the module docstring)
    norm_update: str = "frozen"  # "frozen" or "batch" (see the module docstring)
    norm_statistics: str = "cumulative"  # running statistics: "cumulative" or "ema" (momentum 0.1)

    def __post_init__(self) -> None:
        check_ranges(
            self,
            choices={
                "old_log_prob": ("recompute", "behaviour"),
                "norm_update": ("frozen", "batch"),
                "norm_statistics": ("cumulative", "ema"),
            },
            positive=("rollout_steps", "epochs", "minibatch_size", "lr", "clip_range", "hidden"),
            non_negative=("ent_coef", "vf_coef", "max_grad_norm"),
            unit_interval=("gamma", "gae_lambda"),
        )


class Policy(nn.Module):
    """An MLP producing the parameters of the action distribution.

    Discrete actions: logits. Continuous actions: the mean, with a state-independent
    learnable log standard deviation.
    """

    def __init__(self, obs_dim: int, action_space: gym.spaces.Space, cfg: PPOConfig, norm: str):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        out_dim = (
            int(action_space.n)
            if isinstance(action_space, gym.spaces.Discrete)
            else space_shape(action_space)[0]
        )
        self.body = mlp(obs_dim, out_dim, cfg.hidden, norm, cfg.activation)
        orthogonal_init(self.body, out_gain=0.01)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((out_dim,), float(cfg.log_std_init)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Distribution parameters (logits, or the Gaussian mean) for a batch of states."""
        return self.body(obs)

    def distribution(self, params: torch.Tensor) -> Distribution:
        """The action distribution for ``forward``'s output.

        Argument validation is off: it checks values on the host, a sync per call on a GPU.
        """
        if self.discrete:
            return Categorical(logits=params, validate_args=False)
        return Normal(params, self.log_std.exp().expand_as(params), validate_args=False)


def log_prob(dist: Distribution, action: torch.Tensor) -> torch.Tensor:
    """Log-probability of each sample, summed over action dimensions for a Gaussian."""
    lp = dist.log_prob(action)
    return lp if isinstance(dist, Categorical) else lp.sum(-1)


def entropy(dist: Distribution) -> torch.Tensor:
    """Entropy of each sample's distribution, summed over action dimensions for a Gaussian."""
    ent = dist.entropy()
    return ent if isinstance(dist, Categorical) else ent.sum(-1)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Generalized advantage estimates, ``(T, N)``, from ``T + 1`` rows of values.

    ``values[t + 1]`` is the value of the observation that followed step ``t``: after a
    truncation it is the episode's final observation, so the cut-off return is bootstrapped;
    after a termination the next value is zeroed. The recursion stops at every episode end.
    """
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        next_value = values[t + 1] * ~terminated[t]
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running * ~(terminated[t] | truncated[t])
        advantages[t] = running
    return advantages


@register
class PPO(Agent):
    """Clipped PPO with separate actor and critic MLPs, each with the chosen normalization."""

    name = "ppo"
    Config = PPOConfig
    trains_as_population = True

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        config: PPOConfig,
        norm: str,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(observation_space, action_space, config, norm, device)
        if not isinstance(action_space, gym.spaces.Discrete | gym.spaces.Box):
            raise ConfigError(f"ppo supports Discrete and Box actions, not {action_space}")
        self.batch_dependent = norms.get(norm).batch_dependent
        obs_dim = int(torch.Size(space_shape(observation_space)).numel())
        self.actor = Policy(obs_dim, action_space, config, norm).to(self.device)
        self.critic = mlp(obs_dim, 1, config.hidden, norm, config.activation).to(self.device)
        orthogonal_init(self.critic, out_gain=1.0)
        self.dtype = network_dtype(self)  # float32, unless built under another default dtype
        if config.norm_statistics == "cumulative":
            for net in (self.actor, self.critic):
                norms.use_cumulative_statistics(net)
        self.optimizer = optim.adam(self.params, lr=config.lr, eps=1e-5)
        if isinstance(action_space, gym.spaces.Box):
            self.low = torch.as_tensor(action_space.low, device=self.device)
            self.high = torch.as_tensor(action_space.high, device=self.device)
        label_layers(self.modules())

    def modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic}

    @property
    def params(self) -> list[nn.Parameter]:
        """Every trained weight: the actor's, then the critic's (the optimizer's order)."""
        return [*self.actor.parameters(), *self.critic.parameters()]

    def acting_modules(self) -> list[nn.Module]:
        return [self.actor, self.critic]

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    @property
    def collection(self) -> OnPolicy:
        return OnPolicy(self.config.rollout_steps)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        if obs.dtype != self.dtype or obs.dim() != 2:  # two dispatches saved per step
            obs = obs.to(self.dtype).flatten(1)
        population = self.draws.members
        if population is not None:  # member-major sub-env rows -> (K, N, obs_dim)
            obs = obs.reshape(population, -1, obs.shape[-1])
        params = self.actor(obs)
        if deterministic:
            # Evaluation: the most likely action, the argmax of the logits or the mean. No
            # distribution, log-probability or critic: the learner stores those only when
            # it collects, and here they would cost as much as the actor itself.
            if self.actor.discrete:
                return ActOutput(self._rows(params.argmax(-1)))
            return ActOutput(self._rows(torch.clamp(params, self.low, self.high)))
        dist = self.actor.distribution(params)
        sample = self.draws.sample(dist)  # a population: each member from its own generator
        env_action = sample if self.actor.discrete else torch.clamp(sample, self.low, self.high)
        value = self.critic(obs).squeeze(-1)
        extras = {"sample": sample, "log_prob": log_prob(dist, sample), "value": value}
        return ActOutput(self._rows(env_action), {k: self._rows(v) for k, v in extras.items()})

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """A population's ``(K, N, ...)`` outputs as member-major sub-env rows."""
        return x if self.draws.members is None else x.flatten(0, 1)

    def update(self, batch: Rollout, progress: float) -> dict[str, float]:
        cfg = self.config
        # 1. Advantages and returns over the whole rollout (time-major), then keep the steps
        #    that were real transitions (not autoreset steps).
        values = batch.extras["value"]
        advantages = gae(
            batch.rewards, values, batch.terminated, batch.truncated, cfg.gamma, cfg.gae_lambda
        )
        returns = advantages + values[:-1]
        # A population's members each keep their own valid steps (rlnorm.minibatches).
        steps = ValidSamples(batch.valid, self.draws.members)
        obs = steps.take(batch.obs[:-1].to(self.dtype).flatten(2))
        samples = steps.take(batch.extras["sample"][:-1])
        old_log_prob = steps.take(batch.extras["log_prob"][:-1])
        advantages, returns = steps.take(advantages), steps.take(returns)

        # 2. The network as the update runs it: plain train mode, or norm layers frozen at their
        #    running statistics so it is the very function that acted (see the module doc).
        frozen = cfg.norm_update == "frozen"
        with frozen_statistics(self.actor, self.critic) if frozen else nullcontext():
            metrics = self._optimize(
                steps, obs, samples, old_log_prob, advantages, returns, progress
            )
        if frozen:  # refresh the running statistics for the next rollout
            with torch.no_grad(), steps.masked():
                self.actor(obs)
                self.critic(obs)

        with torch.no_grad():
            explained = 1 - steps.variance(returns - steps.take(values[:-1])) / steps.variance(
                returns
            ).clamp_min(1e-8)
            metrics["loss/explained_variance"] = explained.mean()
        return {k: float(v) for k, v in metrics.items()}

    def _optimize(
        self,
        steps: ValidSamples,
        obs: torch.Tensor,
        samples: torch.Tensor,
        old_log_prob: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        progress: float,
    ) -> dict[str, torch.Tensor]:
        """Epochs of clipped-surrogate minibatch steps; returns metrics as tensors."""
        cfg = self.config
        if cfg.old_log_prob == "recompute":
            with torch.no_grad(), steps.masked():
                old_log_prob = log_prob(self.actor.distribution(self.actor(obs)), samples)

        lr = cfg.lr * (1.0 - progress) if cfg.anneal_lr else cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        # 3. Epochs of clipped-surrogate minibatch updates. Minibatches are near-equal splits
        #    of a permutation, never a remainder of one sample (BatchNorm needs >= 2). In a
        #    population, losses are summed over members, each gradient clipped by its own norm.
        clip_grad_norm_ = (
            optim.clip_grad_norm_ if self.draws.members is None else members.clip_grad_norm_
        )
        weights = self.params
        stats: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
        }
        diagnostics: dict[str, torch.Tensor] = {}
        per_member = 1 / (self.draws.members or 1)  # loss metrics: the members' average
        # A member with fewer minibatches skips the last steps of an epoch; a train-mode pass
        # it skipped would still count in BatchNorm's shared pass counter.
        may_skip = cfg.norm_update == "frozen" or not norms.get(self.norm).mode_dependent
        for _ in range(cfg.epochs):
            for mb in steps.minibatches(
                cfg.minibatch_size, self.draws, self.batch_dependent, may_skip
            ):
                mb_obs = mb.take(obs)
                with mb.masked():
                    if not diagnostics:
                        # On the first minibatch, before any forward pass whose autograd graph
                        # the diagnostic's buffer restore could invalidate.
                        diagnostics[GAP_POLICY_KL] = self._train_eval_gap(mb_obs, mb)
                    params = self.actor(mb_obs)
                    values = self.critic(mb_obs).squeeze(-1)
                dist = self.actor.distribution(params)
                new_log_prob = log_prob(dist, mb.take(samples))
                log_ratio = new_log_prob - mb.take(old_log_prob)
                ratio = log_ratio.exp()

                adv = mb.take(advantages)
                if cfg.normalize_advantages:
                    adv = mb.standardize(adv)
                policy_loss = mb.loss(
                    torch.max(
                        -adv * ratio, -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)
                    )
                )
                value_loss = 0.5 * mb.loss((values - mb.take(returns)).pow(2))
                ent = mb.loss(entropy(dist))
                loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * ent

                if PPO_FIRST_RATIO not in diagnostics:
                    # What the clipped objective reads as policy change before any step: 1 and
                    # no clipping when the update runs the function that acted.
                    diagnostics |= self._first_minibatch_ratio(ratio.detach(), mb)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clip_grad_norm_(weights, cfg.max_grad_norm)
                with stepping(self.optimizer, mb.active):  # a population's skipping members
                    self.optimizer.step()

                with torch.no_grad():
                    stats["policy_loss"].append(policy_loss.detach())
                    stats["value_loss"].append(value_loss.detach())
                    stats["entropy"].append(ent.detach())
                    stats["approx_kl"].append(mb.average((ratio - 1) - log_ratio))
                    stats["clip_fraction"].append(
                        mb.average(((ratio - 1).abs() > cfg.clip_range).to(ratio.dtype))
                    )

        metrics = {f"loss/{k}": torch.stack(v).mean() for k, v in stats.items()}
        if self.draws.members is not None:
            for k in ("policy_loss", "value_loss", "entropy"):
                metrics[f"loss/{k}"] = metrics[f"loss/{k}"] * per_member
        return metrics | diagnostics | {"train/learning_rate": torch.tensor(lr)}

    def _first_minibatch_ratio(self, ratio: torch.Tensor, mb: Minibatch) -> dict[str, torch.Tensor]:
        """Importance ratios of the first minibatch of the first epoch, before any step.

        The parameters have not moved yet, so any deviation from 1 is the train/eval gap
        (or the minibatch-vs-rollout statistics gap), not learning; a clip fraction above 0
        means the clipped objective is already discarding gradient for it.
        """
        deviation = (ratio - 1).abs()
        return {
            PPO_FIRST_RATIO: mb.average(ratio),
            PPO_FIRST_CLIP_FRACTION: mb.average((deviation > self.config.clip_range).float()),
            PPO_FIRST_MAX_RATIO_DEVIATION: mb.max(deviation),
            PPO_FIRST_RATIO_DEVIATION: mb.average(deviation),
        }

    def _train_eval_gap(self, obs: torch.Tensor, mb: Minibatch) -> torch.Tensor:
        """KL(train-mode policy || eval-mode policy) on the same states (0 without BatchNorm)."""
        train_params, eval_params = train_and_eval_outputs(self.actor, obs)
        with torch.no_grad():
            gap = kl_divergence(
                self.actor.distribution(train_params), self.actor.distribution(eval_params)
            )
            return mb.average(gap if self.actor.discrete else gap.sum(-1))
