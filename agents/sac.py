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

import torch

from rlnorm.agents import offpolicy, register
from rlnorm.agents.offpolicy import OffPolicyAgent, OffPolicyConfig, adam, optimize
from rlnorm.replay import Transitions
from rlnorm.targets import CRITIC_STREAMS, TargetNetwork, critic_pass


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
        offpolicy.check_off_policy(
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

    def build(self, cfg: SACConfig, norm: str) -> None:
        self.target_entropy = -float(self.action_dim)
        self.critic_streams = offpolicy.resolve_streams(cfg.critic_streams, norm)
        self.actor = offpolicy.SquashedGaussianActor(
            self.obs_dim, self.action_dim, cfg.hidden, norm, cfg.activation
        ).to(self.device)
        self.critic = self._mlp_critics(cfg.hidden, norm, cfg.critic_streams)
        self.critic_target = TargetNetwork(self.critic)
        self.temperature = offpolicy.Temperature(cfg.init_alpha).to(self.device)

        self.actor_optimizer = adam(self.actor, cfg.actor_lr)
        self.critic_optimizer = adam(self.critic, cfg.critic_lr)
        self.alpha_optimizer = adam(self.temperature, cfg.alpha_lr)

    def _gradient_step(self, batch: Transitions) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        obs, next_obs, inputs = self._unpack(batch)
        alpha = self.temperature().detach()

        # 1. Critic: soft TD target from the target critics at a' ~ pi(.|s').
        next_inputs, next_log_prob = self._soft_next_inputs(next_obs)
        q, next_q = critic_pass(
            self.critic, self.critic_target, inputs, next_inputs, self.critic_streams
        )
        next_v = next_q.min(-1).values - alpha * next_log_prob
        target = batch.rewards + cfg.gamma * ~batch.terminated * next_v
        critic_loss = offpolicy.batch_mean(0.5 * (q - target[..., None]).pow(2).sum(-1))
        optimize(self.critic_optimizer, critic_loss)

        # 2.-3. Actor, then temperature: reparameterized actions scored by the critics with
        #       frozen statistics; alpha rises when the entropy is below -|A|, falls above.
        metrics = self._soft_actor_step(obs, alpha)

        # 4. Targets: Polyak parameters, every buffer copied.
        self.critic_target.update(self.critic, cfg.tau)

        step = self.counter.tick()
        return (
            metrics
            | self._critic_diagnostics(inputs, next_inputs, step)
            | {
                "loss/critic_loss": critic_loss.detach(),
                "train/alpha": alpha.mean(),
                "train/q": q.detach().mean(),
            }
        )
