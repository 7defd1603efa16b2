"""rlnorm's norm injected into stable-baselines3's policies.

SB3's MLPs have no norm option. Each factory here subclasses an SB3 policy class and
overrides the methods that build its networks, so SB3 then builds its optimizers and
target networks over the normalized nets itself. The norm goes where :func:`rlnorm.nets.mlp`
puts it: both rebuild each hidden layer with :func:`rlnorm.nets.hidden_block`
(``Linear -> norm -> activation``), so a norm is placed one way everywhere in rlnorm.
``--norm none`` leaves SB3's networks exactly as SB3 builds them.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

from rlnorm import norm as norms
from rlnorm.nets import hidden_block


def normalize_hidden(
    net: nn.Sequential, kind: norms.NormKind, *, has_output: bool
) -> nn.Sequential:
    """``net`` with ``kind`` after each hidden Linear: ``Linear -> norm -> activation``.

    ``has_output``: the last Linear is the net's output layer (a Q-value or action head),
    which stays unnormalized; otherwise every Linear is hidden (SB3's latent nets, whose
    heads are separate modules). Each hidden Linear and the activation that follows it
    (SB3 puts one after every hidden Linear) become one :func:`~rlnorm.nets.hidden_block`;
    SB3's own Linear layers are kept unless the kind replaces the linear map itself (weight
    and cosine normalization). Layer order and names are those of an ``mlp``-built net.
    """
    modules = list(net)
    linears = [i for i, m in enumerate(modules) if isinstance(m, nn.Linear)]
    hidden = set(linears[:-1] if has_output else linears)
    layers: list[nn.Module] = []
    i = 0
    while i < len(modules):
        module = modules[i]
        if i not in hidden or not isinstance(module, nn.Linear):
            layers.append(module)
            i += 1
            continue
        after = modules[i + 1] if i + 1 < len(modules) else None
        activation = None if isinstance(after, nn.Linear) else after
        layers += hidden_block(
            kind, module.in_features, module.out_features, activation, linear=module
        )
        i += 1 if activation is None else 2
    return nn.Sequential(*layers)


def _normalize_critics(critic: nn.Module, kind: norms.NormKind) -> None:
    """Normalize each Q-network of an SB3 critic (registered as ``qf<i>`` and listed in
    ``q_networks``: both must see the new net)."""
    q_networks: list[nn.Sequential] = critic.q_networks  # type: ignore[assignment]
    for i, q_net in enumerate(q_networks):
        normalized = normalize_hidden(q_net, kind, has_output=True)
        critic.add_module(f"qf{i}", normalized)
        q_networks[i] = normalized


def set_statistics_mode(module: nn.Module, mode: bool) -> None:
    """Put every mode-dependent norm layer of ``module`` (BatchNorm, Batch Renorm) in train
    (``mode`` True) or eval mode. CrossQ calls this as its ``set_bn_training_mode``, whose
    own version only knows sb3-contrib's BatchRenorm1d."""
    for m in module.modules():
        kind = norms.kind_of(m)
        if kind is not None and kind.mode_dependent:
            m.train(mode)


def actor_critic_policy(base: type, kind: norms.NormKind) -> type:
    """SB3's ActorCriticPolicy (PPO, A2C) with ``kind`` in its policy and value MLPs."""

    class NormalizedActorCriticPolicy(base):
        #: set by the adapter during ``train()`` when its ``norm_update`` is ``"frozen"``
        freeze_statistics = False

        def set_training_mode(self, mode: bool) -> None:
            # SB3's train() calls this first thing, which would undo frozen_statistics.
            super().set_training_mode(mode)
            if mode and self.freeze_statistics:
                set_statistics_mode(self, False)

        def _build_mlp_extractor(self) -> None:
            super()._build_mlp_extractor()
            extractor = self.mlp_extractor
            extractor.policy_net = normalize_hidden(extractor.policy_net, kind, has_output=False)
            extractor.value_net = normalize_hidden(extractor.value_net, kind, has_output=False)

    return NormalizedActorCriticPolicy


def sac_policy(base: type, kind: norms.NormKind) -> type:
    """SB3's SACPolicy or sb3-contrib's CrossQPolicy with ``kind`` in the actor's latent MLP
    and every critic; CrossQ's mode switches reach rlnorm's norm layers."""

    class NormalizedSACPolicy(base):
        def make_actor(self, features_extractor: Any = None) -> Any:
            actor = super().make_actor(features_extractor)
            actor.latent_pi = normalize_hidden(actor.latent_pi, kind, has_output=False)
            if hasattr(actor, "set_bn_training_mode"):
                actor.set_bn_training_mode = partial(set_statistics_mode, actor)
            return actor

        def make_critic(self, features_extractor: Any = None) -> Any:
            critic = super().make_critic(features_extractor)
            _normalize_critics(critic, kind)
            if hasattr(critic, "set_bn_training_mode"):
                critic.set_bn_training_mode = partial(set_statistics_mode, critic)
            return critic

    return NormalizedSACPolicy


def td3_policy(base: type, kind: norms.NormKind) -> type:
    """SB3's TD3Policy with ``kind`` in the actor (its last Linear is the action head)
    and every critic."""

    class NormalizedTD3Policy(base):
        def make_actor(self, features_extractor: Any = None) -> Any:
            actor = super().make_actor(features_extractor)
            actor.mu = normalize_hidden(actor.mu, kind, has_output=True)
            return actor

        def make_critic(self, features_extractor: Any = None) -> Any:
            critic = super().make_critic(features_extractor)
            _normalize_critics(critic, kind)
            return critic

    return NormalizedTD3Policy


def dqn_policy(base: type, kind: norms.NormKind) -> type:
    """SB3's DQNPolicy with ``kind`` in the Q-network (online and target)."""

    class NormalizedDQNPolicy(base):
        def make_q_net(self) -> Any:
            q_net = super().make_q_net()
            q_net.q_net = normalize_hidden(q_net.q_net, kind, has_output=True)
            return q_net

    return NormalizedDQNPolicy
