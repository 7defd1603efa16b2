"""What SAC, TD3 (and DDPG) and CrossQ share: the off-policy base.

Each algorithm is its own file plus this one. :class:`OffPolicyAgent` owns the parts that
are the same in all three: the replay buffer, how the learner collects (``learning_starts``
random steps, then ``steps_per_env`` steps per sub-env between updates), the update loop
(``gradient_steps`` minibatches from the replay, each one :meth:`_gradient_step`, metrics
averaged), acting through the actor in eval mode, and the fields every off-policy config
has (:class:`OffPolicyConfig`). An algorithm's file adds its networks, its own config
fields and its ``_gradient_step``: the algorithm, read top to bottom.

The building blocks below are shared too: the squashed-Gaussian actor and entropy
temperature (SAC, CrossQ), the critic ensemble, the action scaling between ``[-1, 1]`` and
the env's Box, and the critic's normalization diagnostics (``norm/gap/critic``,
``norm/drift/critic/...``: ``docs/metrics.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from rlnorm import diagnostics, metrics
from rlnorm import norm as norms
from rlnorm.agent import ActOutput, Agent, OffPolicy
from rlnorm.config import check_ranges
from rlnorm.draws import GLOBAL, Draws
from rlnorm.env import space_shape
from rlnorm.errors import ConfigError
from rlnorm.nets import mlp
from rlnorm.optim import adam as rlnorm_adam
from rlnorm.replay import ReplayBuffer, Transitions
from rlnorm.safety import frozen_statistics, label_layers
from rlnorm.targets import StepCounter

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


# -- config ----------------------------------------------------------------------------------


@dataclass
class OffPolicyConfig:
    """The fields every off-policy agent has; an agent's Config subclasses it, adds its own
    fields and may change a default by declaring the field again."""

    buffer_size: int = 1_000_000
    learning_starts: int = 100  # env steps of uniform random actions before any update
    steps_per_env: int = 1  # steps per sub-env between updates
    gradient_steps: int = -1  # per update; -1: one per env step collected (update-to-data 1)
    batch_size: int = 256
    gamma: float = 0.99
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    activation: str = "relu"
    n_critics: int = 2
    diagnostics_every: int = 100  # gradient steps between norm/ diagnostics (0: never)


def check_off_policy(
    cfg: OffPolicyConfig,
    choices: dict[str, tuple[str, ...]],
    positive: tuple[str, ...] = (),
    unit_interval: tuple[str, ...] = (),
) -> None:
    """Range checks for an off-policy config: the fields of :class:`OffPolicyConfig`, plus
    the agent's own (as :func:`rlnorm.config.check_ranges` takes them)."""
    check_ranges(
        cfg,
        choices=choices,
        positive=(
            "buffer_size",
            "steps_per_env",
            "batch_size",
            "actor_lr",
            "critic_lr",
            "n_critics",
            *positive,
        ),
        non_negative=("learning_starts", "diagnostics_every"),
        unit_interval=("gamma", *unit_interval),
    )
    if cfg.gradient_steps < 1 and cfg.gradient_steps != -1:
        raise ConfigError(f"agent.gradient_steps: must be >= 1 or -1, got {cfg.gradient_steps}")
    if cfg.batch_size < 2:
        raise ConfigError(
            f"agent.batch_size: must be >= 2 (batch statistics), got {cfg.batch_size}"
        )


# -- building blocks -------------------------------------------------------------------------


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


def flat(obs: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A batch of observations as the networks take it: ``dtype``, one row per sample."""
    return obs.to(dtype).flatten(1)


def batch_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean over the samples (the last dim) of a loss term, summed over a population's
    members: one run's ``x.mean()``, and in a population (``(K, B)``) the sum of the
    members' own means, so each member's gradient is exactly its own loss's."""
    return x.mean(-1).sum()


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

    def sample(self, obs: torch.Tensor, draws: Draws = GLOBAL) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterized action in ``(-1, 1)`` and its log-probability, summed over
        action dimensions (the tanh's change of variables included); the noise comes from
        ``draws`` (a population's member generators, or torch's global one)."""
        mean, log_std = self(obs)
        noise = draws.randn_like(mean)
        u = mean + log_std.exp() * noise
        gaussian = -0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
        # log(1 - tanh(u)^2), written so it stays finite where tanh saturates
        log_det = 2 * (math.log(2) - u - F.softplus(-2 * u))
        return torch.tanh(u), (gaussian - log_det).sum(-1)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action ``tanh(mean)``."""
        return torch.tanh(self(obs)[0])

    def act(self, obs: torch.Tensor, deterministic: bool, draws: Draws = GLOBAL) -> torch.Tensor:
        """The action to take in ``[-1, 1]``: the mode, or a sample."""
        return self.mode(obs) if deterministic else self.sample(obs, draws)[0]


class Temperature(nn.Module):
    """The entropy temperature, learned in log space: ``alpha = exp(log_alpha)``."""

    def __init__(self, init_alpha: float) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha)))

    def forward(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def loss(self, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
        """Raises alpha when the policy's entropy is below ``target_entropy``, lowers it
        above."""
        return -batch_mean(self.log_alpha * (log_prob.detach() + target_entropy))


class Critics(nn.Module):
    """An ensemble of Q-networks read together: ``(B, in) -> (B, n)``.

    Each network takes ``cat(s, a)`` as one tensor, so :func:`rlnorm.nets.joint_forward`
    can merge several ``(s, a)`` batches along the batch dimension. Keyword arguments
    (``stream=i`` for per-stream statistics) go to every network.
    """

    def __init__(self, nets: Sequence[nn.Module]) -> None:
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


def resolve_streams(streams: str, norm: str) -> str:
    """The critic pass to run: a joint pass changes nothing without a batch-dependent norm
    (each row is normalized by itself), so it then runs as the cheaper separate pass."""
    if streams == "joint" and not norms.get(norm).batch_dependent:
        return "separate"
    return streams


def adam(
    module: nn.Module, lr: float, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.Adam:
    """Adam over ``module``'s parameters (torch's default betas unless given)."""
    return rlnorm_adam(module.parameters(), lr=lr, betas=betas)


def optimize(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimizer step on ``loss`` (gradients of other modules it reached are left
    behind and cleared before their own optimizer's next step)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# -- diagnostics and metrics -----------------------------------------------------------------


def critic_diagnostics(
    critic: nn.Module, inputs: torch.Tensor, step: int, every: int
) -> dict[str, float]:
    """Every ``every`` gradient steps, how far the critic's train-mode function is from its
    eval-mode one on ``inputs`` (what it trains on), and its statistics' drift (the means
    over its layers; the learner logs every layer's)."""
    if every == 0 or step % every or not any(map(norms.uses_running_statistics, critic.modules())):
        return {}
    drift = diagnostics.stat_drift({"critic": critic})
    return {metrics.GAP_CRITIC: diagnostics.train_eval_gap(critic, inputs)} | {
        critic_name: drift[name]
        for name, critic_name in (
            (metrics.DRIFT_MEAN, metrics.DRIFT_CRITIC_MEAN),
            (metrics.DRIFT_LOG_VAR, metrics.DRIFT_CRITIC_LOG_VAR),
        )
        if name in drift
    }


def mean_metrics(steps: list[dict[str, torch.Tensor | float]]) -> dict[str, float]:
    """Each metric averaged over the gradient steps that reported it."""
    values: dict[str, list[float]] = {}
    for step in steps:
        for key, value in step.items():
            values.setdefault(key, []).append(float(value))
    return {key: sum(v) / len(v) for key, v in values.items()}


# -- the base agent --------------------------------------------------------------------------


class OffPolicyAgent(Agent):
    """An agent that learns from a replay buffer. A subclass builds its networks and their
    optimizers in :meth:`build` (at least ``actor``, ``critic``, ``actor_optimizer`` and
    ``critic_optimizer``) and writes :meth:`_gradient_step`, the algorithm.

    ``module_names`` lists the attributes that are the agent's modules, in checkpoint order.
    An agent with an entropy temperature (``temperature``, ``target_entropy``) also sets
    ``alpha_optimizer``, checkpointed while the config's ``autotune_alpha`` is on.
    """

    module_names: ClassVar[tuple[str, ...]]
    trains_as_population = True

    actor: Any
    critic: Critics
    actor_optimizer: torch.optim.Optimizer
    critic_optimizer: torch.optim.Optimizer
    temperature: Temperature  # SAC, CrossQ
    target_entropy: float  # SAC, CrossQ

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        config: Any,
        norm: str,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(observation_space, action_space, config, norm, device)
        self.scale = ActionScale(action_space, self.device)
        #: the networks' dtype: torch's default when built (float32, or float64 for the
        #: exactness checks of seed populations)
        self.dtype = torch.get_default_dtype()
        self.obs_dim = int(torch.Size(space_shape(observation_space)).numel())
        self.action_dim = space_shape(action_space)[0]
        self.replay = ReplayBuffer(config.buffer_size, observation_space, action_space, self.device)
        self.alpha_optimizer: torch.optim.Optimizer | None = None
        #: how the critic reads (s, a) and (s', a'): ``rlnorm.targets.CRITIC_STREAMS``
        self.critic_streams = "separate"
        #: gradient steps taken, a buffer (checkpointed): schedules delays and diagnostics
        self.counter = StepCounter().to(self.device)
        self.build(config, norm)
        label_layers(self.modules())

    def build(self, cfg: Any, norm: str) -> None:
        """Create the networks (on ``self.device``) and their optimizers."""
        raise NotImplementedError

    def _mlp_critics(
        self, hidden: tuple[int, ...], norm: str, streams: str, **layout: bool
    ) -> Critics:
        """``n_critics`` MLP critics on ``cat(s, a)`` (:func:`mlp_critics`), on the device."""
        cfg, in_dim = self.config, self.obs_dim + self.action_dim
        n, activation = cfg.n_critics, cfg.activation
        critics = mlp_critics(n, in_dim, hidden, norm, activation, streams, **layout)
        return critics.to(self.device)

    def modules(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in self.module_names}

    def acting_modules(self) -> list[nn.Module]:
        return [self.actor]

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = {"actor": self.actor_optimizer, "critic": self.critic_optimizer}
        if self.alpha_optimizer is not None and self.config.autotune_alpha:
            optimizers["alpha"] = self.alpha_optimizer
        return optimizers

    @property
    def collection(self) -> OffPolicy:
        return OffPolicy(self.config.steps_per_env, self.config.learning_starts)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        action = self.actor.act(self._flat(obs), deterministic, self.draws)
        return ActOutput(self._rows(self.scale.to_env(action)))

    def _flat(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations as the networks take them: ``(B, obs_dim)``; in a population
        ``(K, B, obs_dim)``, from member-major sub-env rows or a member-batched minibatch."""
        if self.draws.members is None:
            return flat(obs, self.dtype)
        return obs.to(self.dtype).reshape(self.draws.members, -1, self.obs_dim)

    def _rows(self, actions: torch.Tensor) -> torch.Tensor:
        """A population's ``(K, N, ...)`` actions as the ``K * N`` member-major sub-env rows
        its env steps (a single run's are rows already)."""
        return actions if self.draws.members is None else actions.flatten(0, 1)

    def update(self, batch: ReplayBuffer, progress: float) -> dict[str, float]:
        """As many gradient steps as configured (or one per env step just collected), each
        on a fresh minibatch from the replay; every metric averaged over them."""
        cfg = self.config
        n = batch.last_added_steps if cfg.gradient_steps == -1 else cfg.gradient_steps
        return mean_metrics([self._gradient_step(batch.sample(cfg.batch_size)) for _ in range(n)])

    def _gradient_step(self, batch: Transitions) -> dict[str, torch.Tensor | float]:
        """One step of the algorithm on a minibatch; returns its metrics."""
        raise NotImplementedError

    # -- pieces of a gradient step ---------------------------------------------------------

    def _unpack(self, batch: Transitions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``s``, ``s'`` and the critic's input ``cat(s, a)`` of a minibatch, as the networks
        take them (actions in ``[-1, 1]``)."""
        obs, next_obs = self._flat(batch.obs), self._flat(batch.next_obs)
        return obs, next_obs, torch.cat([obs, self.scale.from_env(batch.actions)], -1)

    def _soft_next_inputs(self, next_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``cat(s', a')`` with ``a' ~ pi(.|s')``, and ``log pi(a'|s')``, for a soft TD target
        (SAC, CrossQ). Drawn without gradient and with the actor's statistics frozen: the
        target uses the policy that acts, and the actor's running statistics follow only the
        states of its own loss."""
        with torch.no_grad(), frozen_statistics(self.actor):
            next_actions, next_log_prob = self.actor.sample(next_obs, self.draws)
        return torch.cat([next_obs, next_actions], -1), next_log_prob

    def _soft_actor_step(
        self, obs: torch.Tensor, alpha: torch.Tensor
    ) -> dict[str, torch.Tensor | float]:
        """The entropy-regularized actor step and the temperature step (SAC, CrossQ).

        The actor minimizes ``alpha log pi(a|s) - min_j Q_j(s, a)`` with ``a ~ pi(.|s)``
        reparameterized, the critic's statistics frozen (the ``(s, pi(s))`` batch is a third
        stream that must not move them); then, with ``autotune_alpha``, ``log alpha`` moves so
        the entropy tracks ``target_entropy``.
        """
        new_actions, log_prob = self.actor.sample(obs, self.draws)
        with frozen_statistics(self.critic):
            q_pi = self.critic(torch.cat([obs, new_actions], -1)).min(-1).values
        actor_loss = batch_mean(alpha * log_prob - q_pi)
        optimize(self.actor_optimizer, actor_loss)
        metrics: dict[str, torch.Tensor | float] = {
            "loss/actor_loss": actor_loss.detach(),
            "train/entropy": -log_prob.detach().mean(),
        }
        if self.config.autotune_alpha and self.alpha_optimizer is not None:
            alpha_loss = self.temperature.loss(log_prob, self.target_entropy)
            optimize(self.alpha_optimizer, alpha_loss)
            metrics["loss/alpha_loss"] = alpha_loss.detach()
        return metrics

    def _critic_diagnostics(
        self, inputs: torch.Tensor, next_inputs: torch.Tensor, step: int
    ) -> dict[str, float]:
        """:func:`critic_diagnostics` on what the critic trained on this step: the merged
        ``(s, a)`` and ``(s', a')`` batch of a joint pass, else ``(s, a)``."""
        joint = torch.cat([inputs, next_inputs], -2) if self.critic_streams == "joint" else inputs
        return critic_diagnostics(self.critic, joint, step, self.config.diagnostics_every)
