"""Soft Actor-Critic (Haarnoja et al. 2018): twin critics, a tanh-squashed Gaussian actor,
automatic entropy tuning, Polyak-averaged target critics.

Read top to bottom, ``_gradient_step`` is the algorithm, on a minibatch from the replay:

1. critic: fit each ``Q_j(s, a)`` to ``r + gamma (1 - d) (min_j Q'_j(s', a') - alpha log
   pi(a'|s'))`` with ``a' ~ pi(.|s')`` and ``Q'`` the target critics;
2. actor: minimize ``alpha log pi(a|s) - min_j Q_j(s, a)`` with ``a ~ pi(.|s)``
   (reparameterized);
3. temperature: move ``log alpha`` so the policy's entropy tracks ``-|A|``;
4. targets: ``Q' <- (1 - tau) Q' + tau Q``, and every normalization buffer copied.

What is specific to normalization (see :mod:`rlnorm.targets` for the target side):

- The critic's two streams. With a batch-dependent norm (BatchNorm, Batch Renorm) the
  online critic normalizes ``(s, a)`` and ``(s', a')`` as one merged batch by default
  (``critic_streams = "joint"``), so the running statistics the target critic inherits
  describe both of the streams it is read with. ``"separate"`` is the textbook pass over
  ``(s, a)`` alone; ``"per_stream"`` gives each stream its own statistics.
- The critic in the actor loss runs with frozen statistics (its norm layers in eval mode):
  the ``(s, pi(s))`` batch is a third stream which must not move the critic's running
  statistics, and with running statistics each state's action gradient depends on that
  state alone rather than on the rest of the minibatch (CrossQ makes the same choice).
- The next actions ``a' ~ pi(.|s')`` are drawn with the actor's statistics frozen too:
  the TD target then uses the policy that acts (eval mode), and the actor's running
  statistics follow only the states of its own loss.
- Acting runs in eval mode through the rollout manager; ``norm/critic_train_eval_gap``
  and ``norm/stat_drift`` are logged every ``diagnostics_every`` gradient steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from rlnorm import norm as norms
from rlnorm.agent import ActOutput, Agent, OffPolicy
from rlnorm.agents import register
from rlnorm.config import check_ranges
from rlnorm.diagnostics import stat_drift, train_eval_gap
from rlnorm.errors import ConfigError
from rlnorm.nets import mlp
from rlnorm.replay import ReplayBuffer, Transitions
from rlnorm.safety import frozen_statistics, label_layers
from rlnorm.targets import CRITIC_STREAMS, StepCounter, TargetNetwork, critic_pass

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


@dataclass
class SACConfig:
    """SAC hyperparameters (defaults: the paper's, as stable-baselines3 ships them)."""

    buffer_size: int = 1_000_000
    learning_starts: int = 100  # env steps of uniform random actions before any update
    steps_per_env: int = 1  # steps per sub-env between updates
    gradient_steps: int = -1  # per update; -1: one per env step collected (update-to-data 1)
    batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005  # Polyak coefficient of the target critics
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    init_alpha: float = 1.0  # initial entropy temperature
    autotune_alpha: bool = True  # learn alpha towards the target entropy -|A|
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    n_critics: int = 2
    critic_streams: str = "joint"  # "joint", "separate" or "per_stream" (module docstring)
    diagnostics_every: int = 100  # gradient steps between norm/ diagnostics (0: never)

    def __post_init__(self) -> None:
        check_off_policy(
            self,
            choices={"critic_streams": CRITIC_STREAMS},
            positive=("alpha_lr", "init_alpha", "n_critics", "hidden"),
            unit_interval=("tau",),
        )


def check_off_policy(
    cfg: Any,
    choices: dict[str, tuple[str, ...]],
    positive: tuple[str, ...] = (),
    unit_interval: tuple[str, ...] = (),
) -> None:
    """Range checks for an off-policy config: the fields SAC, TD3 and CrossQ share, plus
    the agent's own (as :func:`rlnorm.agents.base.check_ranges` takes them)."""
    check_ranges(
        cfg,
        choices=choices,
        positive=("buffer_size", "steps_per_env", "batch_size", "actor_lr", "critic_lr", *positive),
        non_negative=("learning_starts", "diagnostics_every"),
        unit_interval=("gamma", *unit_interval),
    )
    if cfg.gradient_steps < 1 and cfg.gradient_steps != -1:
        raise ConfigError(f"agent.gradient_steps: must be >= 1 or -1, got {cfg.gradient_steps}")
    if cfg.batch_size < 2:
        raise ConfigError(
            f"agent.batch_size: must be >= 2 (batch statistics), got {cfg.batch_size}"
        )


class ActionScale:
    """Maps the networks' actions in ``[-1, 1]`` to a Box's ``[low, high]`` and back."""

    def __init__(self, space: gym.spaces.Space, device: torch.device) -> None:
        if not (isinstance(space, gym.spaces.Box) and space.is_bounded()):
            raise ConfigError(f"off-policy agents need a bounded Box action space, not {space}")
        low = torch.as_tensor(space.low, dtype=torch.float32, device=device)
        high = torch.as_tensor(space.high, dtype=torch.float32, device=device)
        self.mid, self.half = (high + low) / 2, (high - low) / 2

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        return self.mid + self.half * action

    def from_env(self, action: torch.Tensor) -> torch.Tensor:
        return ((action - self.mid) / self.half).clamp(-1.0, 1.0)


def flat(obs: torch.Tensor) -> torch.Tensor:
    """A batch of observations as the networks take it: float32, one row per sample."""
    return obs.to(torch.float32).flatten(1)


class SquashedGaussianActor(nn.Module):
    """``a = tanh(u)``, ``u ~ N(mu(s), sigma(s))``: an MLP gives ``mu`` and ``log sigma``."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: tuple[int, ...],
        norm: str,
        activation: str,
        **layout: bool,
    ) -> None:
        super().__init__()
        self.body = mlp(obs_dim, 2 * action_dim, hidden, norm, activation, **layout)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, log_std)`` of the pre-squash Gaussian."""
        mean, log_std = self.body(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized action in ``(-1, 1)`` and its log-probability, summed over
        action dimensions (the tanh's change of variables included)."""
        mean, log_std = self(obs)
        noise = torch.randn_like(mean)
        u = mean + log_std.exp() * noise
        gaussian = -0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
        # log(1 - tanh(u)^2), written so it stays finite where tanh saturates
        log_det = 2 * (math.log(2) - u - F.softplus(-2 * u))
        return torch.tanh(u), (gaussian - log_det).sum(-1)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action ``tanh(mean)``."""
        return torch.tanh(self(obs)[0])


class Critics(nn.Module):
    """An ensemble of Q-networks read together: ``(B, in) -> (B, n)``.

    Each network takes ``cat(s, a)`` as one tensor, so :func:`rlnorm.nets.joint_forward`
    can merge several ``(s, a)`` batches along the batch dimension. Keyword arguments
    (``stream=i`` for per-stream statistics) go to every network.
    """

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return torch.cat([net(x, **kwargs) for net in self.nets], dim=-1)


def mlp_critics(
    n: int,
    in_dim: int,
    hidden: tuple[int, ...],
    norm: str,
    activation: str,
    streams: str,
    **layout: bool,
) -> Critics:
    """``n`` MLP critics; two sets of norm statistics each for ``streams = "per_stream"``;
    ``layout``: :func:`rlnorm.nets.mlp`'s ``normalize_input`` and ``norm_after_activation``."""
    k = 2 if streams == "per_stream" else 1
    return Critics(
        [mlp(in_dim, 1, hidden, norm, activation, streams=k, **layout) for _ in range(n)]
    )


class Temperature(nn.Module):
    """The entropy temperature, learned in log space: ``alpha = exp(log_alpha)``."""

    def __init__(self, init_alpha: float) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha)))

    def forward(self) -> torch.Tensor:
        return self.log_alpha.exp()


def num_gradient_steps(cfg: Any, replay: ReplayBuffer) -> int:
    """Gradient steps for this update: as configured, or one per env step just collected."""
    return replay.last_added_steps if cfg.gradient_steps == -1 else cfg.gradient_steps


def optimize(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimizer step on ``loss`` (gradients of other modules it reached are left
    behind and cleared before their own optimizer's next step)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def critic_diagnostics(
    critic: nn.Module, inputs: torch.Tensor, step: int, every: int
) -> dict[str, float]:
    """Every ``every`` gradient steps, how far the critic's train-mode function is from its
    eval-mode one on ``inputs`` (what it trains on), and its statistics' drift."""
    if every == 0 or step % every or not any(map(norms.uses_running_statistics, critic.modules())):
        return {}
    gap = {"norm/critic_train_eval_gap": train_eval_gap(critic, inputs)}
    return gap | {k: v for k, v in stat_drift({"critic": critic}).items() if k.count("/") == 1}


def mean_metrics(steps: list[dict[str, torch.Tensor | float]]) -> dict[str, float]:
    """Each metric averaged over the gradient steps that reported it."""
    values: dict[str, list[float]] = {}
    for step in steps:
        for key, value in step.items():
            values.setdefault(key, []).append(float(value))
    return {key: sum(v) / len(v) for key, v in values.items()}


def resolve_streams(streams: str, norm: str) -> str:
    """The critic pass to run: a joint pass changes nothing without a batch-dependent norm
    (each row is normalized by itself), so it then runs as the cheaper separate pass."""
    if streams == "joint" and not norms.get(norm).batch_dependent:
        return "separate"
    return streams


@register
class SAC(Agent):
    """SAC with an MLP squashed-Gaussian actor and ``n_critics`` MLP critics."""

    name = "sac"
    Config = SACConfig

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        config: SACConfig,
        norm: str,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(observation_space, action_space, config, norm, device)
        cfg = config
        self.scale = ActionScale(action_space, self.device)
        obs_dim = int(torch.Size(observation_space.shape).numel())
        action_dim = int(action_space.shape[0])
        self.target_entropy = -float(action_dim)
        self.critic_streams = resolve_streams(cfg.critic_streams, norm)

        self.actor = SquashedGaussianActor(obs_dim, action_dim, cfg.hidden, norm, cfg.activation)
        self.critic = mlp_critics(
            cfg.n_critics,
            obs_dim + action_dim,
            cfg.hidden,
            norm,
            cfg.activation,
            cfg.critic_streams,
        )
        self.actor.to(self.device)
        self.critic.to(self.device)
        self.critic_target = TargetNetwork(self.critic)
        self.temperature = Temperature(cfg.init_alpha).to(self.device)
        self.counter = StepCounter().to(self.device)

        self.actor_optimizer = torch.optim.Adam(
            self.actor.parameters(), lr=cfg.actor_lr, foreach=True
        )
        self.critic_optimizer = torch.optim.Adam(
            self.critic.parameters(), lr=cfg.critic_lr, foreach=True
        )
        self.alpha_optimizer = torch.optim.Adam(
            self.temperature.parameters(), lr=cfg.alpha_lr, foreach=True
        )
        self.replay = ReplayBuffer(cfg.buffer_size, observation_space, action_space, self.device)
        label_layers(self.modules())

    def modules(self) -> dict[str, nn.Module]:
        return {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "temperature": self.temperature,
            "counter": self.counter,
        }

    def acting_modules(self) -> list[nn.Module]:
        return [self.actor]

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = {"actor": self.actor_optimizer, "critic": self.critic_optimizer}
        if self.config.autotune_alpha:
            optimizers["alpha"] = self.alpha_optimizer
        return optimizers

    @property
    def collection(self) -> OffPolicy:
        return OffPolicy(self.config.steps_per_env, self.config.learning_starts)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        obs = flat(obs)
        action = self.actor.mode(obs) if deterministic else self.actor.sample(obs)[0]
        return ActOutput(self.scale.to_env(action))

    def update(self, batch: ReplayBuffer, progress: float) -> dict[str, float]:
        steps = [
            self._gradient_step(batch.sample(self.config.batch_size))
            for _ in range(num_gradient_steps(self.config, batch))
        ]
        return mean_metrics(steps)

    def _gradient_step(self, batch: Transitions) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        obs, next_obs = flat(batch.obs), flat(batch.next_obs)
        actions = self.scale.from_env(batch.actions)
        alpha = self.temperature().detach()

        # 1. Critic: soft TD target from the target critics at a' ~ pi(.|s').
        with torch.no_grad(), frozen_statistics(self.actor):
            next_actions, next_log_prob = self.actor.sample(next_obs)
        inputs = torch.cat([obs, actions], -1)
        next_inputs = torch.cat([next_obs, next_actions], -1)
        q, next_q = critic_pass(
            self.critic, self.critic_target, inputs, next_inputs, self.critic_streams
        )
        next_v = next_q.min(-1).values - alpha * next_log_prob
        target = batch.rewards + cfg.gamma * ~batch.terminated * next_v
        critic_loss = 0.5 * (q - target[:, None]).pow(2).sum(-1).mean()
        optimize(self.critic_optimizer, critic_loss)

        # 2. Actor: reparameterized actions scored by the critics with frozen statistics.
        new_actions, log_prob = self.actor.sample(obs)
        with frozen_statistics(self.critic):
            q_pi = self.critic(torch.cat([obs, new_actions], -1)).min(-1).values
        actor_loss = (alpha * log_prob - q_pi).mean()
        optimize(self.actor_optimizer, actor_loss)

        # 3. Temperature: raise alpha when the entropy is below -|A|, lower it above.
        metrics: dict[str, torch.Tensor | float] = {}
        if cfg.autotune_alpha:
            alpha_loss = -(
                self.temperature.log_alpha * (log_prob.detach() + self.target_entropy)
            ).mean()
            optimize(self.alpha_optimizer, alpha_loss)
            metrics["loss/alpha_loss"] = alpha_loss.detach()

        # 4. Targets: Polyak parameters, every buffer copied.
        self.critic_target.update(self.critic, cfg.tau)

        step = self.counter.tick()
        joint = torch.cat([inputs, next_inputs]) if self.critic_streams == "joint" else inputs
        return (
            metrics
            | critic_diagnostics(self.critic, joint, step, cfg.diagnostics_every)
            | {
                "loss/critic_loss": critic_loss.detach(),
                "loss/actor_loss": actor_loss.detach(),
                "train/alpha": alpha,
                "train/entropy": -log_prob.detach().mean(),
                "train/q": q.detach().mean(),
            }
        )
