"""Twin Delayed DDPG (Fujimoto et al. 2018), with DDPG (Lillicrap et al. 2016) as a setting.

Read top to bottom, ``_gradient_step`` is the algorithm, on a minibatch from the replay:

1. critic: fit each ``Q_j(s, a)`` to ``r + gamma (1 - d) min_j Q'_j(s', a')`` where
   ``a' = clip(mu'(s') + clip(eps, -c, c), -1, 1)``, ``eps ~ N(0, target_noise)``
   (target policy smoothing) and ``mu'``, ``Q'`` are the target networks;
2. every ``policy_delay`` gradient steps: the actor maximizes ``Q_1(s, mu(s))``, then
   every target moves by Polyak averaging (delayed actor and target updates).

Acting adds Gaussian exploration noise ``N(0, exploration_noise)`` (in units of half the
action range) to ``mu(s)``; evaluation acts with ``mu(s)`` alone.

**DDPG** is TD3 with one critic, no target smoothing and no delay: ``n_critics = 1``,
``target_noise = 0``, ``policy_delay = 1`` (``configs/td3/ddpg-Pendulum-v1.yaml``, or those
three ``--set agent....`` overrides). ``bn_placement = "ddpg"`` puts the normalization
where the DDPG paper put BatchNorm: on the state input and every hidden layer of the actor,
and in the critic on the state input and the layer before the action enters (the action
joins at the second hidden layer; the layers after it are not normalized).
``bn_placement = "crossq"`` (default) is CrossQ's placement as sbx builds it
(:func:`rlnorm.nets.crossq_layout`): a batch-dependent norm on the raw input (the state, or
the critic's ``(s, a)``), then ``Linear -> ReLU -> norm`` for every hidden layer of both.
``"hidden"`` is :func:`rlnorm.nets.mlp`'s default, ``Linear -> norm -> ReLU`` with nothing on
the input. ``"crossq"`` is the default because with ``--norm batch`` on Pendulum-v1 it ended
better than ``"hidden"`` on every seed tried, as it does for CrossQ
(``benchmarks/results/offpolicy_pendulum.md``).

The replay, the update loop and the critic ensemble are the off-policy base's
(:mod:`rlnorm.agents.offpolicy`). Normalization is handled as in :mod:`rlnorm.agents.sac`:
the critic's ``(s, a)`` and ``(s', a')`` streams (``critic_streams``), frozen critic
statistics in the actor loss, targets that run in eval mode and receive every buffer
(:mod:`rlnorm.targets`).

``actor_norm_update`` decides which function the actor loss improves. ``"batch"``
(default): the actor in train mode, its BatchNorm on the minibatch's statistics, while it
acts on its running statistics. ``"frozen"``: PPO's fix, the actor's norm layers on their
running statistics during the loss (the very policy that acts), then one train-mode pass
without gradient to move them. It did not pay on Pendulum-v1 with ``--norm batch`` over three
seeds, so ``"batch"`` stays the default (``benchmarks/results/offpolicy_pendulum.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rlnorm import norm as norms
from rlnorm.agent import ActOutput
from rlnorm.agents import offpolicy, register
from rlnorm.agents.offpolicy import OffPolicyAgent, OffPolicyConfig, adam, optimize
from rlnorm.errors import ConfigError
from rlnorm.nets import MLP, crossq_layout, mlp, resolve_activation
from rlnorm.replay import Transitions
from rlnorm.safety import frozen_statistics
from rlnorm.targets import CRITIC_STREAMS, TargetNetwork, critic_pass


@dataclass
class TD3Config(OffPolicyConfig):
    """TD3 hyperparameters (defaults: the TD3 paper's, as stable-baselines3 ships them); the
    shared ones are :class:`~rlnorm.agents.offpolicy.OffPolicyConfig`'s (DDPG:
    ``n_critics = 1``)."""

    tau: float = 0.005  # Polyak coefficient of the targets
    hidden: tuple[int, ...] = (400, 300)
    policy_delay: int = 2  # gradient steps per actor and target update; DDPG: 1
    target_noise: float = 0.2  # target policy smoothing std; DDPG: 0
    target_noise_clip: float = 0.5
    exploration_noise: float = 0.1  # Gaussian std when acting (half action range = 1)
    bn_placement: str = "crossq"  # "crossq", "hidden" or "ddpg" (module docstring)
    actor_norm_update: str = "batch"  # "batch" or "frozen" (module docstring)
    critic_streams: str = "joint"  # "joint", "separate" or "per_stream" (rlnorm.targets)

    def __post_init__(self) -> None:
        offpolicy.check_off_policy(
            self,
            choices={
                "critic_streams": CRITIC_STREAMS,
                "bn_placement": ("crossq", "hidden", "ddpg"),
                "actor_norm_update": ("frozen", "batch"),
            },
            positive=("policy_delay", "hidden"),
            unit_interval=("tau",),
        )
        if min(self.target_noise, self.target_noise_clip, self.exploration_noise) < 0:
            raise ConfigError("agent.target_noise, target_noise_clip, exploration_noise: >= 0")
        if self.bn_placement == "ddpg" and (
            self.critic_streams == "per_stream" or len(self.hidden) < 2
        ):
            raise ConfigError(
                "agent.bn_placement=ddpg: needs two or more hidden layers (the action joins "
                "the critic at the second) and critic_streams joint or separate"
            )


def input_norm(norm: str, features: int) -> nn.Module:
    """The norm layer of ``norm`` over raw inputs (identity for kinds without a layer)."""
    layer = norms.get(norm).layer
    return nn.Identity() if layer is None else layer(features)


class DeterministicActor(nn.Module):
    """``mu(s) = tanh(body(s))`` in ``[-1, 1]``; with ``ddpg_input`` the state is
    normalized before the first layer (DDPG's placement); ``layout`` goes to the body's
    :func:`rlnorm.nets.mlp`."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        cfg: TD3Config,
        norm: str,
        ddpg_input: bool,
        **layout: bool,
    ) -> None:
        super().__init__()
        self.input = input_norm(norm, obs_dim) if ddpg_input else nn.Identity()
        self.body = mlp(obs_dim, action_dim, cfg.hidden, norm, cfg.activation, **layout)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(self.input(obs)))


class DDPGCritic(nn.Module):
    """DDPG's critic on ``cat(s, a)``: the state is normalized at the input and after the
    first hidden layer; the action joins at the second hidden layer, which and whose
    successors are plain Linear layers."""

    def __init__(self, obs_dim: int, action_dim: int, cfg: TD3Config, norm: str) -> None:
        super().__init__()
        kind, first = norms.get(norm), cfg.hidden[0]
        self.obs_dim = obs_dim
        self.state = MLP(
            input_norm(norm, obs_dim),
            kind.linear(obs_dim, first),
            input_norm(norm, first),
            resolve_activation(cfg.activation)(),
        )
        self.head = mlp(first + action_dim, 1, cfg.hidden[1:], "none", cfg.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        obs, action = x[..., : self.obs_dim], x[..., self.obs_dim :]
        return self.head(torch.cat([self.state(obs), action], -1))


@register
class TD3(OffPolicyAgent):
    """TD3 (and DDPG, as a setting) with an MLP deterministic actor and ``n_critics`` MLP
    critics, each with a Polyak-averaged target network that receives every normalization
    buffer (:class:`rlnorm.targets.TargetNetwork`)."""

    name = "td3"
    Config = TD3Config
    module_names = ("actor", "critic", "actor_target", "critic_target", "counter")

    def build(self, cfg: TD3Config, norm: str) -> None:
        obs_dim, action_dim = self.obs_dim, self.action_dim
        self.critic_streams = offpolicy.resolve_streams(cfg.critic_streams, norm)
        ddpg = cfg.bn_placement == "ddpg"
        layout = crossq_layout(norm) if cfg.bn_placement == "crossq" else {}
        self.actor = DeterministicActor(obs_dim, action_dim, cfg, norm, ddpg_input=ddpg, **layout)
        if ddpg:
            nets = [DDPGCritic(obs_dim, action_dim, cfg, norm) for _ in range(cfg.n_critics)]
            self.critic = offpolicy.Critics(nets)
        else:
            self.critic = self._mlp_critics(cfg.hidden, norm, cfg.critic_streams, **layout)
        self.actor.to(self.device)
        self.critic.to(self.device)
        self.actor_target = TargetNetwork(self.actor)
        self.critic_target = TargetNetwork(self.critic)

        self.actor_optimizer = adam(self.actor, cfg.actor_lr)
        self.critic_optimizer = adam(self.critic, cfg.critic_lr)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        action = self.actor(self._flat(obs))
        if not deterministic:
            noise = self.config.exploration_noise * self.draws.randn_like(action)
            action = (action + noise).clamp(-1.0, 1.0)
        return ActOutput(self._rows(self.scale.to_env(action)))

    def _gradient_step(self, batch: Transitions) -> dict[str, torch.Tensor | float]:
        cfg = self.config
        obs, next_obs, inputs = self._unpack(batch)

        # 1. Critic: TD target from the target critics at the smoothed target action.
        with torch.no_grad():
            next_actions = self.actor_target(next_obs)
            noise = (cfg.target_noise * self.draws.randn_like(next_actions)).clamp(
                -cfg.target_noise_clip, cfg.target_noise_clip
            )
            next_actions = (next_actions + noise).clamp(-1.0, 1.0)
        next_inputs = torch.cat([next_obs, next_actions], -1)
        q, next_q = critic_pass(
            self.critic, self.critic_target, inputs, next_inputs, self.critic_streams
        )
        target = batch.rewards + cfg.gamma * ~batch.terminated * next_q.min(-1).values
        critic_loss = (q - target[..., None]).pow(2).mean(-2).sum()
        optimize(self.critic_optimizer, critic_loss)
        metrics: dict[str, torch.Tensor | float] = {
            "loss/critic_loss": critic_loss.detach(),
            "train/q": q.detach().mean(),
        }

        # 2. Delayed: the actor climbs Q_1 (critic statistics frozen), then the targets move.
        #    With actor_norm_update "frozen" the actor's norm layers use their running
        #    statistics too, so the policy improved is the one that acts; one train-mode
        #    pass without gradient then moves those statistics towards the batch.
        step = self.counter.tick()
        if step % cfg.policy_delay == 0:
            frozen = cfg.actor_norm_update == "frozen"
            with frozen_statistics(self.critic, *([self.actor] if frozen else [])):
                q_pi = self.critic.nets[0](torch.cat([obs, self.actor(obs)], -1)).squeeze(-1)
                actor_loss = -offpolicy.batch_mean(q_pi)
            optimize(self.actor_optimizer, actor_loss)
            if frozen:
                with torch.no_grad():
                    self.actor(obs)
            self.actor_target.update(self.actor, cfg.tau)
            self.critic_target.update(self.critic, cfg.tau)
            metrics["loss/actor_loss"] = actor_loss.detach()

        return metrics | self._critic_diagnostics(inputs, next_inputs, step)
