"""Soft Actor-Critic (Haarnoja et al. 2018): twin critics, a tanh-squashed Gaussian actor,
automatic entropy tuning, Polyak-averaged target critics.

Read top to bottom, ``_gradient_step`` is the algorithm, on a minibatch from the replay:

1. critic: fit each ``Q_j(s, a)`` to ``r + gamma (1 - d) (min_j Q'_j(s', a') - alpha log
   pi(a'|s'))`` with ``a' ~ pi(.|s')`` and ``Q'`` the target critics;
2. actor: minimize ``alpha log pi(a|s) - min_j Q_j(s, a)`` with ``a ~ pi(.|s)``
   (reparameterized);
3. temperature: move ``log alpha`` so the policy's entropy tracks ``-|A|``;
4. targets: ``Q' <- (1 - tau) Q' + tau Q``, and every normalization buffer copied.

The replay, the update loop, acting and the shared networks are the off-policy base's
(:mod:`rlnorm.agents.offpolicy`). What is specific to normalization (see
:mod:`rlnorm.targets` for the target side):

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
- Acting runs in eval mode through the rollout manager; ``norm/gap/critic`` and
  ``norm/drift/critic/...`` are logged every ``diagnostics_every`` gradient steps
  (``docs/metrics.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch

from rlnorm.agents.base import register
from rlnorm.agents.offpolicy import (
    OffPolicyAgent,
    OffPolicyConfig,
    SquashedGaussianActor,
    Temperature,
    adam,
    check_off_policy,
    flat,
    mlp_critics,
    optimize,
    resolve_streams,
)
from rlnorm.replay import Transitions
from rlnorm.safety import frozen_statistics, label_layers
from rlnorm.targets import CRITIC_STREAMS, StepCounter, TargetNetwork, critic_pass


@dataclass
class SACConfig(OffPolicyConfig):
    """SAC hyperparameters (defaults: the paper's, as stable-baselines3 ships them); the
    shared ones are :class:`~rlnorm.agents.offpolicy.OffPolicyConfig`'s."""

    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    tau: float = 0.005  # Polyak coefficient of the target critics
    alpha_lr: float = 3e-4
    init_alpha: float = 1.0  # initial entropy temperature
    autotune_alpha: bool = True  # learn alpha towards the target entropy -|A|
    hidden: tuple[int, ...] = (256, 256)
    critic_streams: str = "joint"  # "joint", "separate" or "per_stream" (module docstring)

    def __post_init__(self) -> None:
        check_off_policy(
            self,
            choices={"critic_streams": CRITIC_STREAMS},
            positive=("alpha_lr", "init_alpha", "hidden"),
            unit_interval=("tau",),
        )


@register
class SAC(OffPolicyAgent):
    """SAC with an MLP squashed-Gaussian actor and ``n_critics`` MLP critics."""

    name = "sac"
    Config = SACConfig
    module_names = ("actor", "critic", "critic_target", "temperature", "counter")

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
        self.target_entropy = -float(self.action_dim)
        self.critic_streams = resolve_streams(cfg.critic_streams, norm)

        self.actor = SquashedGaussianActor(
            self.obs_dim, self.action_dim, cfg.hidden, norm, cfg.activation
        )
        self.critic = mlp_critics(
            cfg.n_critics,
            self.obs_dim + self.action_dim,
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

        self.actor_optimizer = adam(self.actor, cfg.actor_lr)
        self.critic_optimizer = adam(self.critic, cfg.critic_lr)
        self.alpha_optimizer = adam(self.temperature, cfg.alpha_lr)
        label_layers(self.modules())

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
            alpha_loss = self.temperature.loss(log_prob, self.target_entropy)
            optimize(self.alpha_optimizer, alpha_loss)
            metrics["loss/alpha_loss"] = alpha_loss.detach()

        # 4. Targets: Polyak parameters, every buffer copied.
        self.critic_target.update(self.critic, cfg.tau)

        step = self.counter.tick()
        return (
            metrics
            | self._critic_diagnostics(inputs, next_inputs, step)
            | {
                "loss/critic_loss": critic_loss.detach(),
                "loss/actor_loss": actor_loss.detach(),
                "train/alpha": alpha,
                "train/entropy": -log_prob.detach().mean(),
                "train/q": q.detach().mean(),
            }
        )
