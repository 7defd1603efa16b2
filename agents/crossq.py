"""CrossQ (Bhatt et al. 2024): SAC without target networks, made stable by normalizing the
critic's current and next state-action pairs together.

Read top to bottom, ``_gradient_step`` is the algorithm, on a minibatch from the replay:

1. critic: draw ``a' ~ pi(.|s')`` and run the critic in train mode **once** on the merged
   batch ``[(s, a); (s', a')]`` (:func:`rlnorm.nets.joint_forward`), so its batch
   normalization sees both streams with one set of statistics; fit each ``Q_j(s, a)`` to
   ``r + gamma (1 - d) (min_j Q_j(s', a') - alpha log pi(a'|s'))``, the second half of
   the same pass, without gradient. No target network: the running statistics and the
   bootstrapped values come from one function;
2. every ``policy_delay`` gradient steps: the actor minimizes ``alpha log pi(a|s) -
   min_j Q_j(s, a)`` with the critic in eval mode (its running statistics frozen: the
   ``(s, pi(s))`` batch is neither of the streams the critic was normalized on, and must
   not move its statistics), and the temperature tracks the entropy target ``-|A|``.

Defaults from the paper: Batch Renormalization in actor and critic (``norm: batch_renorm``
in the shipped configs), Adam with ``beta1 = 0.5``, policy delay 3, learning rate 1e-3.
Batch Renorm's warm-up, during which it is plain BatchNorm (momentum 0.01), is 100k
train-mode passes as in sbx's CrossQ, not the layer's default 1k, so a run shorter than
100k gradient steps trains with BatchNorm throughout.

``bn_placement = "crossq"`` (default) places the norm layers as sbx's CrossQ does: on the
raw ``(s, a)`` (the state, for the actor) before the first Linear, and after each hidden
activation (``Linear -> ReLU -> norm``); the input layer is added only for batch-dependent
kinds (``batch``, ``batch_renorm``), whose running statistics standardize each input
feature, since a per-sample norm (``layer``, ``rms``) of a raw state would discard its
magnitude. ``"hidden"`` is :func:`rlnorm.nets.mlp`'s default, ``Linear -> norm -> ReLU``
with nothing on the input. ``"crossq"`` is the default because on Pendulum-v1 with
``batch_renorm`` it met the target where ``"hidden"`` missed it
(``benchmarks/results/offpolicy_pendulum.md``).

The paper's critic is 2048 units wide (``configs/crossq/paper.yaml``); the default is narrow
enough to train on a CPU. The replay, the update loop, the squashed-Gaussian actor, the
critic ensemble and the temperature are the off-policy base's, shared with SAC
(:mod:`rlnorm.agents.offpolicy`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlnorm import norm as norms
from rlnorm.agents import offpolicy, register
from rlnorm.agents.offpolicy import OffPolicyAgent, OffPolicyConfig, adam, optimize
from rlnorm.nets import crossq_layout, joint_forward
from rlnorm.replay import Transitions


@dataclass
class CrossQConfig(OffPolicyConfig):
    """CrossQ hyperparameters (defaults: the CrossQ paper's, critic narrowed for a CPU); the
    shared ones are :class:`~rlnorm.agents.offpolicy.OffPolicyConfig`'s."""

    alpha_lr: float = 1e-3
    adam_beta1: float = 0.5  # the paper's: lower momentum for a target-free critic
    init_alpha: float = 1.0
    autotune_alpha: bool = True
    actor_hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)  # the paper: (2048, 2048)
    policy_delay: int = 3  # critic steps per actor (and temperature) step
    renorm_warmup_steps: int = 100_000  # Batch Renorm: train passes as plain BatchNorm (sbx's)
    bn_placement: str = "crossq"  # "crossq" (sbx's layout) or "hidden" (module docstring)

    def __post_init__(self) -> None:
        offpolicy.check_off_policy(
            self,
            choices={"bn_placement": ("crossq", "hidden")},
            positive=(
                "alpha_lr",
                "init_alpha",
                "policy_delay",
                "renorm_warmup_steps",
                "actor_hidden",
                "critic_hidden",
            ),
            unit_interval=("adam_beta1",),
        )


@register
class CrossQ(OffPolicyAgent):
    """CrossQ with an MLP squashed-Gaussian actor and ``n_critics`` MLP critics, and no
    target network: the critic bootstraps from its own joint pass."""

    name = "crossq"
    Config = CrossQConfig
    module_names = ("actor", "critic", "temperature", "counter")

    def build(self, cfg: CrossQConfig, norm: str) -> None:
        self.target_entropy = -float(self.action_dim)
        self.critic_streams = "joint"  # always: CrossQ's one pass over (s, a) and (s', a')
        layout = crossq_layout(norm) if cfg.bn_placement == "crossq" else {}
        self.actor = offpolicy.SquashedGaussianActor(
            self.obs_dim, self.action_dim, cfg.actor_hidden, norm, cfg.activation, **layout
        ).to(self.device)
        self.critic = self._mlp_critics(cfg.critic_hidden, norm, "joint", **layout)
        for layer in [*self.actor.modules(), *self.critic.modules()]:
            if (kind := norms.kind_of(layer)) is not None and kind.name == "batch_renorm":
                layer.warmup_steps = cfg.renorm_warmup_steps
        self.temperature = offpolicy.Temperature(cfg.init_alpha).to(self.device)

        betas = (cfg.adam_beta1, 0.999)
        self.actor_optimizer = adam(self.actor, cfg.actor_lr, betas)
        self.critic_optimizer = adam(self.critic, cfg.critic_lr, betas)
        self.alpha_optimizer = adam(self.temperature, cfg.alpha_lr, betas)

    def _gradient_step(self, batch: Transitions) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        obs, next_obs, inputs = self._unpack(batch)
        alpha = self.temperature().detach()

        # 1. Critic: one train-mode pass over (s, a) and (s', a') merged; no target network.
        #    a' ~ pi(.|s') is drawn with the actor's statistics frozen, as in SAC.
        next_inputs, next_log_prob = self._soft_next_inputs(next_obs)
        q, next_q = joint_forward(self.critic, inputs, next_inputs)
        next_v = next_q.detach().min(-1).values - alpha * next_log_prob
        target = batch.rewards + cfg.gamma * ~batch.terminated * next_v
        critic_loss = offpolicy.batch_mean(0.5 * (q - target[..., None]).pow(2).sum(-1))
        optimize(self.critic_optimizer, critic_loss)
        metrics: dict[str, torch.Tensor | float] = {
            "loss/critic_loss": critic_loss.detach(),
            "train/q": q.detach().mean(),
            "train/alpha": alpha.mean(),
        }

        # 2. Delayed: actor and temperature, the critic in eval mode (statistics frozen: the
        #    (s, pi(s)) batch is neither of the streams it was normalized on).
        step = self.counter.tick()
        if step % cfg.policy_delay == 0:
            metrics |= self._soft_actor_step(obs, alpha)

        return metrics | self._critic_diagnostics(inputs, next_inputs, step)
