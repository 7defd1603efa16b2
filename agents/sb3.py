"""stable-baselines3 algorithms as rlnorm agents: ``rlnorm train --agent sb3:PPO``.

``sb3:PPO``, ``sb3:A2C``, ``sb3:SAC``, ``sb3:TD3``, ``sb3:DQN`` (stable-baselines3) and
``sb3:CrossQ`` (sb3-contrib) train with SB3's own loss code, unchanged, inside rlnorm's
harness: rollouts, evaluation, checkpoints, TensorBoard and the CLI are rlnorm's. Each
adapter is an ordinary :class:`~rlnorm.agents.base.Agent`:

- **Networks.** The SB3 policy is built with rlnorm's ``--norm`` placed as
  :func:`rlnorm.nets.mlp` places it, after each hidden Linear (``Linear -> norm ->
  activation``; SB3's MLPs have no norm option). The policy's own factory methods are
  overridden, so SB3 then builds its optimizers and target networks over the normalized
  nets itself. ``--norm none`` leaves SB3's networks exactly as SB3 builds them. CrossQ's
  built-in Batch Renorm is switched off: the norm is rlnorm's, placed like everywhere else.
- **Acting.** Only through :meth:`act`, which rlnorm's rollout manager calls in eval mode:
  SB3's ``collect_rollouts`` never runs. Continuous actions of SAC, TD3 and CrossQ are
  squashed to [-1, 1] by the policy and rescaled to the env's bounds here.
- **Updates.** On-policy (PPO, A2C): :meth:`SB3OnPolicy.update` fills a fresh SB3
  ``RolloutBuffer`` from rlnorm's :class:`~rlnorm.rollout.Rollout` and calls ``train()``.
  With a mode-dependent norm, ``norm_update: frozen`` (the default, as in rlnorm's PPO) runs
  ``train()`` with every BatchNorm on its running statistics, the function that acted, then
  refreshes the statistics with one train-mode pass over the rollout; ``batch`` is SB3's
  textbook train mode. ``norm_statistics: cumulative`` (default) averages the statistics
  over all batches, ``ema`` keeps BatchNorm's momentum of 0.1.
  Off-policy (SAC, TD3, CrossQ, DQN): the learner fills rlnorm's replay buffer, and SB3's
  ``train(gradient_steps, batch_size)`` samples it through a view in SB3's layout.
- **Targets.** Inside the update every target network normalizes with its copied running
  statistics (:func:`rlnorm.safety.frozen_statistics`): rlnorm's ``training`` context puts
  every submodule of the policy in train mode, and SB3's ``set_training_mode`` leaves the
  targets alone. At each of SB3's target updates *every* buffer of the online net is copied
  into the target, not only those named ``running_*`` as SB3 does (which misses
  ``num_batches_tracked`` and every other norm state).
- **Checkpoints.** :meth:`modules` holds the SB3 policy (all parameters and buffers, targets
  included) and the algorithm's own state (update counters, DQN's exploration rate, the
  learned entropy coefficient), :meth:`optimizers` every SB3 optimizer: an rlnorm
  checkpoint (safetensors, no pickle) restores an adapter exactly, and building one needs
  only the spaces, no env.
- **Logs.** SB3's logger is replaced by one that writes nothing; what ``train()`` records
  comes back as rlnorm metrics: losses under ``loss/``, schedules and counters under
  ``train/``.

The config of ``sb3:<Algo>`` is the dataclass below of the same name: SB3's hyperparameter
names with SB3's defaults, checked when the config is built (an unknown key names the
valid ones). ``net_arch``/``critic_net_arch`` and ``activation_fn``, ``ortho_init``,
``log_std_init`` and ``n_critics`` go into SB3's ``policy_kwargs``. SB3 keeps exploration
outside its policy; these adapters implement it in :meth:`act` from SB3's settings: DQN's
epsilon-greedy with SB3's schedule (a coin per sub-env, so one env's action never depends
on the others in the batch) and ``action_noise_std``, SB3's ``NormalActionNoise`` in the
scaled action space.

stable-baselines3 is imported only when an ``sb3:`` agent is asked for
(:func:`agent_class`), so rlnorm itself imports without it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import asdict, dataclass
from functools import partial
from types import ModuleType
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlnorm import norm as norms
from rlnorm.agent import ActOutput, Agent, OffPolicy, OnPolicy
from rlnorm.config import check_ranges
from rlnorm.errors import ConfigError, RlnormError, UnknownNameError
from rlnorm.nets import resolve_activation
from rlnorm.replay import ReplayBuffer
from rlnorm.rollout import Rollout
from rlnorm.safety import frozen_statistics, label_layers

#: Agent names of the adapters are this prefix and the SB3 class name: ``sb3:PPO``.
PREFIX = "sb3:"

_SCHEDULES = ("constant", "linear")


class MissingDependencyError(RlnormError, ImportError):
    """An ``sb3:`` agent was asked for, but the package providing it is not installed."""


# -- configs ---------------------------------------------------------------------------------
def _check_common(config: Any, **ranges: tuple[str, ...]) -> None:
    """Range checks shared by every adapter config, plus the algorithm's own ``ranges``."""
    try:
        resolve_activation(config.activation_fn)
    except UnknownNameError as e:
        raise ConfigError(f"agent.activation_fn: {e}") from None
    ranges["positive"] = (*ranges.get("positive", ()), "learning_rate", "net_arch")
    if hasattr(config, "critic_net_arch"):
        ranges["positive"] += ("critic_net_arch",)
    choices: dict[str, tuple[str, ...]] = {"learning_rate_schedule": _SCHEDULES}
    if hasattr(config, "norm_update"):
        choices |= {"norm_update": ("frozen", "batch"), "norm_statistics": ("cumulative", "ema")}
    check_ranges(config, choices=choices, **ranges)


def _check_off_policy(config: Any, **ranges: tuple[str, ...]) -> None:
    """Range checks of the off-policy configs: replay, collection and update sizes."""
    if config.gradient_steps < 1 and config.gradient_steps != -1:
        raise ConfigError(
            "agent.gradient_steps: must be >= 1, or -1 (one per env step collected), "
            f"got {config.gradient_steps}"
        )
    ranges["positive"] = (*ranges.get("positive", ()), "buffer_size", "batch_size", "train_freq")
    ranges["non_negative"] = (*ranges.get("non_negative", ()), "learning_starts")
    ranges["unit_interval"] = (*ranges.get("unit_interval", ()), "gamma")
    if hasattr(config, "tau"):  # CrossQ has no target networks
        ranges["unit_interval"] += ("tau",)
    _check_common(config, **ranges)


@dataclass
class PPOConfig:
    """stable-baselines3 PPO hyperparameters, with SB3's names and defaults."""

    learning_rate: float = 3e-4
    learning_rate_schedule: str = "constant"  # or "linear": decays to 0 over training
    n_steps: int = 2048  # steps per sub-env between updates
    batch_size: int = 64
    n_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    clip_range_vf: float = 0.0  # 0: no value clipping (SB3's None)
    normalize_advantage: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float = 0.0  # 0: no early stopping (SB3's None)
    net_arch: tuple[int, ...] = (64, 64)  # hidden widths of the policy network
    critic_net_arch: tuple[int, ...] = (64, 64)  # hidden widths of the value network
    activation_fn: str = "tanh"
    ortho_init: bool = True
    log_std_init: float = 0.0
    norm_update: str = "frozen"  # "frozen" or "batch": see SB3OnPolicy
    norm_statistics: str = "cumulative"  # "cumulative" or "ema" (BatchNorm's momentum 0.1)

    def __post_init__(self) -> None:
        _check_common(
            self,
            positive=("n_steps", "batch_size", "n_epochs", "clip_range"),
            non_negative=("clip_range_vf", "ent_coef", "vf_coef", "max_grad_norm", "target_kl"),
            unit_interval=("gamma", "gae_lambda"),
        )
        if self.normalize_advantage and self.batch_size < 2:
            raise ConfigError("agent.batch_size: must be >= 2 with normalize_advantage")


@dataclass
class A2CConfig:
    """stable-baselines3 A2C hyperparameters, with SB3's names and defaults."""

    learning_rate: float = 7e-4
    learning_rate_schedule: str = "constant"  # or "linear": decays to 0 over training
    n_steps: int = 5  # steps per sub-env between updates
    gamma: float = 0.99
    gae_lambda: float = 1.0
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    rms_prop_eps: float = 1e-5
    use_rms_prop: bool = True  # RMSprop (as in the A2C paper), else Adam
    normalize_advantage: bool = False
    net_arch: tuple[int, ...] = (64, 64)
    critic_net_arch: tuple[int, ...] = (64, 64)
    activation_fn: str = "tanh"
    ortho_init: bool = True
    log_std_init: float = 0.0
    norm_update: str = "frozen"  # "frozen" or "batch": see SB3OnPolicy
    norm_statistics: str = "cumulative"  # "cumulative" or "ema" (BatchNorm's momentum 0.1)

    def __post_init__(self) -> None:
        _check_common(
            self,
            positive=("n_steps", "rms_prop_eps"),
            non_negative=("ent_coef", "vf_coef", "max_grad_norm"),
            unit_interval=("gamma", "gae_lambda"),
        )


@dataclass
class SACConfig:
    """stable-baselines3 SAC hyperparameters, with SB3's names and defaults."""

    learning_rate: float = 3e-4
    learning_rate_schedule: str = "constant"
    buffer_size: int = 1_000_000
    learning_starts: int = 100  # env steps of uniform random actions before any update
    batch_size: int = 256
    tau: float = 0.005
    gamma: float = 0.99
    train_freq: int = 1  # steps per sub-env between updates
    gradient_steps: int = 1  # per update; -1: one per env step collected
    ent_coef: float = 1.0  # the initial value when learned, else the fixed coefficient
    learn_ent_coef: bool = True  # SB3's ent_coef="auto_<ent_coef>"
    target_update_interval: int = 1  # gradient steps between target updates
    action_noise_std: float = 0.0  # Gaussian exploration noise in [-1, 1] action units
    net_arch: tuple[int, ...] = (256, 256)
    critic_net_arch: tuple[int, ...] = (256, 256)
    activation_fn: str = "relu"
    log_std_init: float = -3.0
    n_critics: int = 2

    def __post_init__(self) -> None:
        _check_off_policy(
            self,
            positive=("ent_coef", "target_update_interval", "n_critics"),
            non_negative=("action_noise_std",),
        )


@dataclass
class TD3Config:
    """stable-baselines3 TD3 hyperparameters, with SB3's names and defaults (SB3 adds no
    exploration noise by default: set ``action_noise_std``, 0.1 is usual)."""

    learning_rate: float = 1e-3
    learning_rate_schedule: str = "constant"
    buffer_size: int = 1_000_000
    learning_starts: int = 100
    batch_size: int = 256
    tau: float = 0.005
    gamma: float = 0.99
    train_freq: int = 1
    gradient_steps: int = 1
    policy_delay: int = 2  # critic steps per actor and target update
    target_policy_noise: float = 0.2
    target_noise_clip: float = 0.5
    action_noise_std: float = 0.0
    net_arch: tuple[int, ...] = (400, 300)
    critic_net_arch: tuple[int, ...] = (400, 300)
    activation_fn: str = "relu"
    n_critics: int = 2

    def __post_init__(self) -> None:
        _check_off_policy(
            self,
            positive=("policy_delay", "n_critics"),
            non_negative=("target_policy_noise", "target_noise_clip", "action_noise_std"),
        )


@dataclass
class DQNConfig:
    """stable-baselines3 DQN hyperparameters, with SB3's names and defaults."""

    learning_rate: float = 1e-4
    learning_rate_schedule: str = "constant"
    buffer_size: int = 1_000_000
    learning_starts: int = 100
    batch_size: int = 32
    tau: float = 1.0
    gamma: float = 0.99
    train_freq: int = 4
    gradient_steps: int = 1
    target_update_interval: int = 10_000  # env steps between target updates
    exploration_fraction: float = 0.1  # of training over which epsilon decays
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.05
    max_grad_norm: float = 10.0
    net_arch: tuple[int, ...] = (64, 64)
    activation_fn: str = "relu"

    def __post_init__(self) -> None:
        _check_off_policy(
            self,
            positive=("target_update_interval", "max_grad_norm"),
            unit_interval=(
                "exploration_fraction",
                "exploration_initial_eps",
                "exploration_final_eps",
            ),
        )


@dataclass
class CrossQConfig:
    """sb3-contrib CrossQ hyperparameters, with its names and defaults. Its Batch Renorm
    layers are rlnorm's ``--norm``: ``--norm batch_renorm`` for the paper's choice."""

    learning_rate: float = 1e-3
    learning_rate_schedule: str = "constant"
    buffer_size: int = 1_000_000
    learning_starts: int = 100
    batch_size: int = 256
    gamma: float = 0.99
    train_freq: int = 1
    gradient_steps: int = 1
    ent_coef: float = 1.0
    learn_ent_coef: bool = True
    policy_delay: int = 3
    action_noise_std: float = 0.0
    net_arch: tuple[int, ...] = (256, 256)
    critic_net_arch: tuple[int, ...] = (1024, 1024)
    activation_fn: str = "relu"
    log_std_init: float = -3.0
    n_critics: int = 2

    def __post_init__(self) -> None:
        _check_off_policy(
            self,
            positive=("ent_coef", "policy_delay", "n_critics"),
            non_negative=("action_noise_std",),
        )


#: Config fields that go into SB3's ``policy_kwargs``.
_POLICY_KWARGS = ("activation_fn", "ortho_init", "log_std_init", "n_critics")
#: Fields with no SB3 keyword of their own: the adapter translates them.
_ADAPTER_FIELDS = (
    "learning_rate_schedule",
    "net_arch",
    "critic_net_arch",
    "learn_ent_coef",
    "action_noise_std",
    "norm_update",
    "norm_statistics",
)


def _linear_schedule(initial: float, progress_remaining: float) -> float:
    return initial * progress_remaining


def sb3_kwargs(config: Any, critic_key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The SB3 constructor's keyword arguments and ``policy_kwargs`` for an adapter config.

    Every field that is not translated here is an SB3 keyword of the same name, passed as
    it is. ``critic_key`` names the critic's entry of SB3's ``net_arch`` dict (``"vf"`` for
    actor-critic policies, ``"qf"`` for off-policy ones).
    """
    values = asdict(config)
    policy_kwargs = {k: values.pop(k) for k in _POLICY_KWARGS if k in values}
    policy_kwargs["activation_fn"] = resolve_activation(policy_kwargs["activation_fn"])
    net_arch = list(values["net_arch"])
    if "critic_net_arch" in values:
        policy_kwargs["net_arch"] = {"pi": net_arch, critic_key: list(values["critic_net_arch"])}
    else:
        policy_kwargs["net_arch"] = net_arch
    if values["learning_rate_schedule"] == "linear":
        values["learning_rate"] = partial(_linear_schedule, values["learning_rate"])
    if "learn_ent_coef" in values:
        ent_coef = values["ent_coef"]
        values["ent_coef"] = f"auto_{ent_coef}" if values["learn_ent_coef"] else ent_coef
    for key in ("clip_range_vf", "target_kl"):  # 0 stands for SB3's None: off
        if values.get(key) == 0:
            values[key] = None
    for key in _ADAPTER_FIELDS:
        values.pop(key, None)
    return values, policy_kwargs


# -- norm injection --------------------------------------------------------------------------
def normalize_hidden(
    net: nn.Sequential, kind: norms.NormKind, *, has_output: bool
) -> nn.Sequential:
    """``net`` with ``kind`` after each hidden Linear: ``Linear -> norm -> activation``.

    ``has_output``: the last Linear is the net's output layer (a Q-value or action head),
    which stays unnormalized; otherwise every Linear is hidden (SB3's latent nets, whose
    heads are separate modules). SB3's own Linear layers are kept unless the kind replaces
    the linear map itself (weight and cosine normalization).
    """
    linears = [i for i, m in enumerate(net) if isinstance(m, nn.Linear)]
    hidden = set(linears[:-1] if has_output else linears)
    layers: list[nn.Module] = []
    for i, module in enumerate(net):
        if i in hidden:
            if kind.linear is not nn.Linear:
                module = kind.linear(module.in_features, module.out_features)
            layers.append(module)
            if kind.layer is not None:
                layers.append(kind.layer(module.out_features))
        else:
            layers.append(module)
    return nn.Sequential(*layers)


def _normalize_critics(critic: nn.Module, kind: norms.NormKind) -> None:
    """Normalize each Q-network of an SB3 critic (registered as ``qf<i>`` and listed in
    ``q_networks``: both must see the new net)."""
    for i, q_net in enumerate(critic.q_networks):
        q_net = normalize_hidden(q_net, kind, has_output=True)
        critic.add_module(f"qf{i}", q_net)
        critic.q_networks[i] = q_net


def set_statistics_mode(module: nn.Module, mode: bool) -> None:
    """Put every mode-dependent norm layer of ``module`` (BatchNorm, Batch Renorm) in train
    (``mode`` True) or eval mode. CrossQ calls this as its ``set_bn_training_mode``, whose
    own version only knows sb3-contrib's BatchRenorm1d."""
    for m in module.modules():
        kind = norms.kind_of(m)
        if kind is not None and kind.mode_dependent:
            m.train(mode)


def _actor_critic_policy(base: type, kind: norms.NormKind) -> type:
    """SB3's ActorCriticPolicy (PPO, A2C) with ``kind`` in its policy and value MLPs."""

    class NormalizedActorCriticPolicy(base):  # type: ignore[misc, valid-type]
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


def _sac_policy(base: type, kind: norms.NormKind) -> type:
    """SB3's SACPolicy or sb3-contrib's CrossQPolicy with ``kind`` in the actor's latent MLP
    and every critic; CrossQ's mode switches reach rlnorm's norm layers."""

    class NormalizedSACPolicy(base):  # type: ignore[misc, valid-type]
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


def _td3_policy(base: type, kind: norms.NormKind) -> type:
    """SB3's TD3Policy with ``kind`` in the actor (its last Linear is the action head)
    and every critic."""

    class NormalizedTD3Policy(base):  # type: ignore[misc, valid-type]
        def make_actor(self, features_extractor: Any = None) -> Any:
            actor = super().make_actor(features_extractor)
            actor.mu = normalize_hidden(actor.mu, kind, has_output=True)
            return actor

        def make_critic(self, features_extractor: Any = None) -> Any:
            critic = super().make_critic(features_extractor)
            _normalize_critics(critic, kind)
            return critic

    return NormalizedTD3Policy


def _dqn_policy(base: type, kind: norms.NormKind) -> type:
    """SB3's DQNPolicy with ``kind`` in the Q-network (online and target)."""

    class NormalizedDQNPolicy(base):  # type: ignore[misc, valid-type]
        def make_q_net(self) -> Any:
            q_net = super().make_q_net()
            q_net.q_net = normalize_hidden(q_net.q_net, kind, has_output=True)
            return q_net

    return NormalizedDQNPolicy


# -- what SB3 needs from rlnorm --------------------------------------------------------------
class CopyAllBuffers:
    """Stands in for an SB3 algorithm's ``batch_norm_stats`` list (its ``*_target`` partner
    becomes empty).

    Right after each target-network update SB3 runs ``polyak_update(batch_norm_stats,
    batch_norm_stats_target, 1.0)``, with lists holding only the buffers whose name contains
    ``running_``. Iterating this object copies every buffer of ``online`` into ``target``,
    by position, at exactly that moment (integer counters included, which a Polyak average
    cannot take), and yields nothing, so SB3's loop has nothing left to do.
    """

    def __init__(self, online: nn.Module, target: nn.Module) -> None:
        self.online, self.target = online, target

    def __iter__(self) -> Any:
        with torch.no_grad():
            for target, source in zip(self.target.buffers(), self.online.buffers(), strict=True):
                target.copy_(source)
        return iter(())


class ReplayView:
    """What SB3's off-policy ``train()`` samples from: minibatches of rlnorm's replay buffer
    (which stays on the env's device and is checkpointed with the run) in SB3's layout.

    Box actions are scaled to [-1, 1], as SB3 stores them for its squashed policies;
    discrete actions become a column of indices; ``dones`` are terminations only, since a
    truncated transition's next observation is its episode's final one (the bootstrap).
    """

    def __init__(self, replay: ReplayBuffer, action_space: gym.spaces.Space) -> None:
        from stable_baselines3.common.type_aliases import ReplayBufferSamples

        self.replay, self.samples = replay, ReplayBufferSamples
        self.box = isinstance(action_space, gym.spaces.Box)
        if self.box:
            self.low = torch.as_tensor(action_space.low, dtype=torch.float32, device=replay.device)
            self.high = torch.as_tensor(
                action_space.high, dtype=torch.float32, device=replay.device
            )

    def sample(self, batch_size: int, env: Any = None) -> Any:
        """``batch_size`` transitions as SB3's ``ReplayBufferSamples`` (``env``, SB3's
        VecNormalize, is unused: rlnorm normalizes observations before storing them)."""
        t = self.replay.sample(batch_size)
        if self.box:
            actions = 2.0 * (t.actions - self.low) / (self.high - self.low) - 1.0
        else:
            actions = t.actions.reshape(-1, 1)
        return self.samples(
            observations=t.obs.float(),
            actions=actions,
            next_observations=t.next_obs.float(),
            dones=t.terminated.float().reshape(-1, 1),
            rewards=t.rewards.float().reshape(-1, 1),
        )


class AlgorithmState(nn.Module):
    """What an SB3 algorithm keeps outside its policy that training depends on, as tensors
    an rlnorm checkpoint carries, so a loaded or resumed adapter continues SB3's schedules.

    Always the gradient-step count ``n_updates`` (it paces TD3's and CrossQ's delayed actor
    updates); the adapters register more: DQN's env-step count and exploration rate, the
    learned log entropy coefficient of SAC and CrossQ.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.int64))


def _require(package: str, algorithm: str) -> ModuleType:
    """Import ``package``, which must provide ``algorithm``; a clear error if it cannot."""
    pip_name = package.replace("_", "-")
    try:
        module = importlib.import_module(package)
    except ImportError as e:
        raise MissingDependencyError(
            f"agent {PREFIX}{algorithm} needs {pip_name}, which cannot be imported ({e}); "
            f"install it with: pip install {pip_name}"
        ) from None
    if not hasattr(module, algorithm):
        raise MissingDependencyError(
            f"agent {PREFIX}{algorithm}: the installed {pip_name} {module.__version__} has no "
            f"{algorithm}; upgrade it with: pip install -U {pip_name}"
        )
    return module


# -- the adapters ----------------------------------------------------------------------------
class SB3Agent(Agent):
    """An SB3 algorithm built from spaces alone, with rlnorm's norm in its networks.

    Subclasses name the algorithm, its package, the action spaces it takes, its policy
    factory (:meth:`_policy_class`), its optimizers and its target networks.
    """

    algorithm: ClassVar[str]
    package: ClassVar[str] = "stable_baselines3"
    action_spaces: ClassVar[tuple[type[gym.spaces.Space], ...]]
    #: the critic's key in SB3's ``net_arch`` dict
    critic_key: ClassVar[str] = "qf"

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        config: Any,
        norm: str,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(observation_space, action_space, config, norm, device)
        if not isinstance(action_space, self.action_spaces):
            valid = " or ".join(s.__name__ for s in self.action_spaces)
            raise ConfigError(f"{self.name} needs {valid} actions, not {action_space}")
        if isinstance(action_space, gym.spaces.Discrete) and action_space.start != 0:
            raise ConfigError(f"{self.name} needs discrete actions starting at 0: {action_space}")
        if isinstance(action_space, gym.spaces.Box):
            if not action_space.is_bounded():
                raise ConfigError(f"{self.name} needs bounded Box actions, not {action_space}")
            self.low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
            self.high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)
        self.kind = norms.get(norm)
        algorithm_cls = getattr(_require(self.package, self.algorithm), self.algorithm)
        kwargs, policy_kwargs = sb3_kwargs(config, self.critic_key)
        policy_cls = self._policy_class(algorithm_cls.policy_aliases["MlpPolicy"])
        # No env: SB3 gets the spaces directly, then builds its networks, as its own load() does.
        self.model: Any = algorithm_cls(
            policy_cls,
            None,
            policy_kwargs=policy_kwargs | self._extra_policy_kwargs(),
            device=self.device,
            _init_setup_model=False,
            **kwargs,
            **self._extra_kwargs(),
        )
        self.model.observation_space, self.model.action_space = observation_space, action_space
        self.model.n_envs = 1  # SB3 sizes nothing by it here: rlnorm collects
        self._before_setup()
        self.model._setup_model()
        from stable_baselines3.common.logger import Logger

        self.model.set_logger(Logger(folder=None, output_formats=[]))  # records, writes nothing
        self.state = AlgorithmState().to(self.device)
        self._targets: list[nn.Module] = []
        for attribute, online, target in self._target_pairs():
            setattr(self.model, attribute, CopyAllBuffers(online, target))
            setattr(self.model, f"{attribute}_target", ())
            self._targets.append(target)
        self._after_setup()
        label_layers(self.modules())

    # -- per algorithm -------------------------------------------------------------------
    def _policy_class(self, base: type) -> type:
        """SB3's MlpPolicy ``base`` with rlnorm's norm injected."""
        raise NotImplementedError

    def _extra_kwargs(self) -> dict[str, Any]:
        """SB3 constructor arguments that do not come from the config."""
        return {}

    def _extra_policy_kwargs(self) -> dict[str, Any]:
        """SB3 ``policy_kwargs`` that do not come from the config."""
        return {}

    def _before_setup(self) -> None:
        """Runs before SB3 builds its networks and buffers."""

    def _after_setup(self) -> None:
        """Runs after SB3 built them and the state module exists."""

    def _target_pairs(self) -> list[tuple[str, nn.Module, nn.Module]]:
        """``(batch_norm_stats attribute, online net, target net)`` for each target net."""
        return []

    # -- the agent contract --------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {"policy": self.model.policy, "algorithm": self.state}

    def acting_modules(self) -> list[nn.Module]:
        return [self.model.policy]

    def _train(self, progress: float, **kwargs: int) -> dict[str, float]:
        """SB3's ``train(**kwargs)`` at ``progress``, with targets frozen; its logs as metrics."""
        model = self.model
        model._current_progress_remaining = 1.0 - progress
        model._n_updates = int(self.state.n_updates)
        with frozen_statistics(*self._targets):
            model.train(**kwargs)
        self.state.n_updates.fill_(model._n_updates)
        return self._metrics()

    def _metrics(self) -> dict[str, float]:
        """What SB3 recorded during the update: losses under ``loss/``, the rest (learning
        rate, clip range, entropy coefficient, policy std, counters) under ``train/``."""
        logger = self.model.logger
        recorded = dict(logger.name_to_value)
        logger.dump()  # no output formats: this only clears the records
        settings = {"learning_rate", "clip_range", "clip_range_vf", "ent_coef", "std"}
        settings |= {"n_updates", "exploration_rate"}
        metrics = {}
        for key, value in recorded.items():
            name = key.rpartition("/")[2]
            metrics[f"train/{name}" if name in settings else f"loss/{name}"] = float(value)
        return metrics


class SB3OnPolicy(SB3Agent):
    """PPO and A2C: rlnorm collects ``n_steps`` per sub-env; SB3's ``train()`` updates on
    an SB3 ``RolloutBuffer`` filled from that rollout."""

    action_spaces = (gym.spaces.Discrete, gym.spaces.Box)
    critic_key = "vf"

    def _policy_class(self, base: type) -> type:
        return _actor_critic_policy(base, self.kind)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy": self.model.policy.optimizer}

    @property
    def collection(self) -> OnPolicy:
        return OnPolicy(self.config.n_steps)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        sample, value, log_prob = self.model.policy(obs, deterministic=deterministic)
        # SB3 clips a Gaussian sample to the bounds for the env, and learns on the sample.
        box = isinstance(self.action_space, gym.spaces.Box)
        actions = sample.clamp(self.low, self.high) if box else sample
        return ActOutput(
            actions, {"sample": sample, "value": value.flatten(), "log_prob": log_prob}
        )

    def _after_setup(self) -> None:
        if self.config.norm_statistics == "cumulative":
            norms.use_cumulative_statistics(self.model.policy)

    def update(self, batch: Rollout, progress: float) -> dict[str, float]:
        buffer = self.model.rollout_buffer = self._rollout_buffer(batch)
        # SB3 draws minibatch permutations from numpy's global generator: seeded from torch's
        # (which the learner seeds and checkpoints), a seeded run is reproducible and resumable.
        np.random.seed(int(torch.randint(2**31 - 1, ())))
        policy = self.model.policy
        if self.config.norm_update == "batch":
            return self._train(progress)
        # Frozen: SB3's loss runs on the very function that acted (running statistics), so
        # PPO's first ratio is exactly 1; then one train-mode pass over the rollout refreshes
        # the statistics for the next rollout, as rlnorm's own PPO does.
        policy.freeze_statistics = True
        try:
            metrics = self._train(progress)
        finally:
            policy.freeze_statistics = False
        obs = torch.as_tensor(buffer.observations, device=policy.device)  # train() flattened it
        obs = obs.reshape(-1, *self.observation_space.shape)[: buffer.buffer_size]
        if obs.shape[0] > 1:  # a train-mode BatchNorm pass needs a batch
            policy.set_training_mode(True)
            with torch.no_grad():
                policy.get_distribution(obs)
                policy.predict_values(obs)
        return metrics

    def _minibatch_size(self) -> int | None:
        """Minibatch size of SB3's ``train()`` (None: the whole rollout)."""
        return None

    def _rollout_buffer(self, batch: Rollout) -> Any:
        """An SB3 RolloutBuffer holding the rollout's transitions, with SB3's GAE computed.

        rlnorm's rollout is ``(T, N)`` with autoreset steps that are no transitions; SB3's
        buffer has every row a transition. The valid steps of each sub-env are laid end to
        end as one stream (one "env" of ``n`` steps, so the minibatches mix all sub-envs, as
        SB3's do). Where a segment is cut off without a termination (a truncated episode, or
        the rollout's end) the value of the next observation is folded into its reward and
        the next transition starts an episode: what SB3 does for truncation, so its
        GAE recursion bootstraps correctly and never runs across two segments.
        """
        from stable_baselines3.common.buffers import RolloutBuffer

        gamma = self.config.gamma
        values = batch.extras["value"].float()
        cut = batch.terminated | batch.truncated
        cut[-1] = True
        rewards = batch.rewards.float() + gamma * values[1:] * (cut & ~batch.terminated)
        keep = batch.valid.T.reshape(-1)

        def stream(x: torch.Tensor) -> torch.Tensor:
            return x.transpose(0, 1).reshape(-1, *x.shape[2:])[keep]

        cuts = stream(cut)
        n = cuts.shape[0]
        buffer = RolloutBuffer(
            n,
            self.observation_space,
            self.action_space,
            device=self.model.device,
            gae_lambda=self.config.gae_lambda,
            gamma=gamma,
            n_envs=1,
        )
        fields = {
            "observations": stream(batch.obs[:-1]),
            "actions": stream(batch.extras["sample"][:-1]),
            "rewards": stream(rewards),
            "episode_starts": torch.cat([cuts.new_ones(1), cuts[:-1]]),
            "values": stream(values[:-1]),
            "log_probs": stream(batch.extras["log_prob"][:-1]),
        }
        for name, value in fields.items():
            array = getattr(buffer, name)
            array[:] = value.cpu().numpy().reshape(array.shape)
        buffer.pos, buffer.full = n, True
        buffer.compute_returns_and_advantage(
            last_values=torch.zeros(1), dones=np.ones(1, dtype=bool)
        )
        size = self._minibatch_size()
        if self.kind.batch_dependent and size is not None and n > 1 and n % size == 1:
            # The last minibatch would hold one sample, which has no batch statistics: leave
            # the stream's last transition out of this update (SB3 draws indices < buffer_size).
            buffer.buffer_size = n - 1
        return buffer


class SB3OffPolicy(SB3Agent):
    """SAC, TD3, CrossQ and DQN: the learner fills :attr:`replay` (rlnorm's), SB3's
    ``train(gradient_steps, batch_size)`` samples it through a :class:`ReplayView`."""

    action_spaces = (gym.spaces.Box,)

    def _before_setup(self) -> None:
        cfg = self.config
        self.replay = ReplayBuffer(
            cfg.buffer_size, self.observation_space, self.action_space, self.device
        )
        self.model.replay_buffer = ReplayView(self.replay, self.action_space)

    @property
    def collection(self) -> OffPolicy:
        return OffPolicy(self.config.train_freq, self.config.learning_starts)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        scaled = self.model.policy._predict(obs, deterministic=deterministic)
        noise = self.config.action_noise_std
        if noise > 0 and not deterministic:
            scaled = (scaled + noise * torch.randn_like(scaled)).clamp(-1.0, 1.0)
        return ActOutput(self.low + 0.5 * (scaled + 1.0) * (self.high - self.low))

    def update(self, batch: ReplayBuffer, progress: float) -> dict[str, float]:
        steps = self.config.gradient_steps
        if steps == -1:
            steps = batch.last_added_steps
        return self._train(progress, gradient_steps=steps, batch_size=self.config.batch_size)


class SB3PPO(SB3OnPolicy):
    """stable-baselines3's PPO."""

    name = "sb3:PPO"
    algorithm = "PPO"
    Config = PPOConfig

    def _minibatch_size(self) -> int | None:
        return self.config.batch_size


class SB3A2C(SB3OnPolicy):
    """stable-baselines3's A2C."""

    name = "sb3:A2C"
    algorithm = "A2C"
    Config = A2CConfig


class SB3SAC(SB3OffPolicy):
    """stable-baselines3's SAC."""

    name = "sb3:SAC"
    algorithm = "SAC"
    Config = SACConfig

    def _policy_class(self, base: type) -> type:
        return _sac_policy(base, self.kind)

    def _extra_kwargs(self) -> dict[str, Any]:
        return _entropy_target(self)

    def _target_pairs(self) -> list[tuple[str, nn.Module, nn.Module]]:
        policy = self.model.policy
        return [("batch_norm_stats", policy.critic, policy.critic_target)]

    def _after_setup(self) -> None:
        _hold_entropy_coefficient(self)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return _actor_critic_optimizers(self)


class SB3CrossQ(SB3OffPolicy):
    """sb3-contrib's CrossQ (no target networks)."""

    name = "sb3:CrossQ"
    algorithm = "CrossQ"
    package = "sb3_contrib"
    Config = CrossQConfig

    def _policy_class(self, base: type) -> type:
        return _sac_policy(base, self.kind)

    def _extra_kwargs(self) -> dict[str, Any]:
        return _entropy_target(self)

    def _extra_policy_kwargs(self) -> dict[str, Any]:
        return {"batch_norm": False}  # its Batch Renorm gives way to rlnorm's norm

    def _after_setup(self) -> None:
        _hold_entropy_coefficient(self)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return _actor_critic_optimizers(self)


class SB3TD3(SB3OffPolicy):
    """stable-baselines3's TD3."""

    name = "sb3:TD3"
    algorithm = "TD3"
    Config = TD3Config

    def _policy_class(self, base: type) -> type:
        return _td3_policy(base, self.kind)

    def _target_pairs(self) -> list[tuple[str, nn.Module, nn.Module]]:
        policy = self.model.policy
        return [
            ("critic_batch_norm_stats", policy.critic, policy.critic_target),
            ("actor_batch_norm_stats", policy.actor, policy.actor_target),
        ]

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return _actor_critic_optimizers(self)


class SB3DQN(SB3OffPolicy):
    """stable-baselines3's DQN, epsilon-greedy with SB3's schedule."""

    name = "sb3:DQN"
    algorithm = "DQN"
    Config = DQNConfig
    action_spaces = (gym.spaces.Discrete,)

    def _policy_class(self, base: type) -> type:
        return _dqn_policy(base, self.kind)

    def _target_pairs(self) -> list[tuple[str, nn.Module, nn.Module]]:
        policy = self.model.policy
        return [("batch_norm_stats", policy.q_net, policy.q_net_target)]

    def _after_setup(self) -> None:
        self.state.register_buffer(
            "n_calls", torch.zeros((), dtype=torch.int64, device=self.device)
        )
        self.state.register_buffer(
            "exploration_rate", torch.ones((), dtype=torch.float32, device=self.device)
        )

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"q_net": self.model.policy.optimizer}

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        greedy = self.model.policy._predict(obs, deterministic=True)
        if deterministic:
            return ActOutput(greedy)
        explore = torch.rand(greedy.shape, device=greedy.device) < self.state.exploration_rate
        random = torch.randint_like(greedy, int(self.action_space.n))
        return ActOutput(torch.where(explore, random, greedy))

    def update(self, batch: ReplayBuffer, progress: float) -> dict[str, float]:
        # SB3 calls _on_step after every env step it collects: it counts the step, updates
        # the target every target_update_interval steps and moves epsilon along its schedule.
        # Here the count starts with the first update, after the warm-up steps.
        model = self.model
        model._current_progress_remaining = 1.0 - progress
        model._n_calls = int(self.state.n_calls)
        for _ in range(batch.last_added_steps):
            model._on_step()
        self.state.n_calls.fill_(model._n_calls)
        self.state.exploration_rate.fill_(model.exploration_rate)
        return super().update(batch, progress)


def _actor_critic_optimizers(agent: SB3Agent) -> dict[str, torch.optim.Optimizer]:
    """The actor's and critic's optimizers, and the entropy coefficient's when learned."""
    policy = agent.model.policy
    optimizers = {"actor": policy.actor.optimizer, "critic": policy.critic.optimizer}
    if getattr(agent.model, "ent_coef_optimizer", None) is not None:
        optimizers["ent_coef"] = agent.model.ent_coef_optimizer
    return optimizers


def _entropy_target(agent: SB3Agent) -> dict[str, Any]:
    """SAC's and CrossQ's default target entropy, -dim(A): SB3 reads its "auto" off an
    env, which an adapter does not have."""
    return {"target_entropy": -float(np.prod(agent.action_space.shape))}


def _hold_entropy_coefficient(agent: SB3Agent) -> None:
    """Move a learned log entropy coefficient (a bare tensor of the SB3 algorithm) into
    the state module as a parameter, so checkpoints carry it, and rebuild its optimizer
    over that parameter with SB3's settings."""
    model = agent.model
    if model.log_ent_coef is None:
        return
    agent.state.log_ent_coef = nn.Parameter(model.log_ent_coef.detach().clone())
    model.log_ent_coef = agent.state.log_ent_coef
    optimizer = model.ent_coef_optimizer
    model.ent_coef_optimizer = type(optimizer)([model.log_ent_coef], **optimizer.defaults)


_AGENTS: dict[str, type[SB3Agent]] = {
    cls.algorithm: cls for cls in (SB3A2C, SB3CrossQ, SB3DQN, SB3PPO, SB3SAC, SB3TD3)
}


def available_names() -> list[str]:
    """The ``sb3:`` agent names whose package is installed (found without importing it)."""
    return [
        cls.name for cls in _AGENTS.values() if importlib.util.find_spec(cls.package) is not None
    ]


def agent_class(name: str) -> type[SB3Agent]:
    """The adapter for ``sb3:<Algo>``, once its package imports.

    Raises :class:`UnknownNameError` listing the valid names for an unknown algorithm, and
    :class:`MissingDependencyError` when stable-baselines3 (or sb3-contrib) is missing.
    """
    algorithm = name.removeprefix(PREFIX)
    if algorithm not in _AGENTS:
        raise UnknownNameError(
            "stable-baselines3 algorithm", name, [cls.name for cls in _AGENTS.values()]
        )
    cls = _AGENTS[algorithm]
    _require(cls.package, algorithm)
    return cls
