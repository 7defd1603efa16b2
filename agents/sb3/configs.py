"""The configs of the ``sb3:`` adapters: SB3's hyperparameter names with SB3's defaults.

One dataclass per algorithm (``SB3PPOConfig`` for ``sb3:PPO``, ...), named apart from the
native agents' configs (``rlnorm.agents.ppo.PPOConfig``), and built on shared bases so a
field common to several algorithms is declared once: :class:`SB3Config` (every adapter),
:class:`SB3OnPolicyConfig` (PPO, A2C), :class:`SB3OffPolicyConfig` (SAC, TD3, CrossQ, DQN),
:class:`SB3ActorCriticConfig` (SAC, TD3, CrossQ) and :class:`SB3MaxEntropyConfig` (SAC,
CrossQ). A subclass that redeclares a field only changes its default. Values are checked
when a config is built, so a bad one fails before SB3 is imported. :func:`sb3_kwargs`
translates a config into SB3's constructor arguments and ``policy_kwargs``.

Checkpoints record a config as its field values (``meta.json``'s ``agent_config``) and the
agent's name, never the class name, so the classes can be renamed without breaking them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, ClassVar

from rlnorm.config import check_ranges
from rlnorm.errors import ConfigError, UnknownNameError
from rlnorm.nets import resolve_activation

_SCHEDULES = ("constant", "linear")


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
    check_ranges(
        config,
        choices=choices,
        positive=ranges.get("positive", ()),
        non_negative=ranges.get("non_negative", ()),
        unit_interval=ranges.get("unit_interval", ()),
    )


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


# -- the bases: each field declared once ------------------------------------------------------
@dataclass
class SB3Config:
    """The fields of every adapter config.

    A subclass declares its own range checks in :attr:`ranges` (``check_ranges``'s keyword
    arguments: field names per range); the checks every config shares are added to them.
    """

    ranges: ClassVar[dict[str, tuple[str, ...]]] = {}

    learning_rate: float = 3e-4
    learning_rate_schedule: str = "constant"  # or "linear": decays to 0 over training
    gamma: float = 0.99
    net_arch: tuple[int, ...] = (64, 64)  # hidden widths of the policy (or Q) network
    activation_fn: str = "tanh"

    def __post_init__(self) -> None:
        _check_common(self, **self.ranges)


@dataclass
class SB3OnPolicyConfig(SB3Config):
    """The fields PPO and A2C share (with PPO's defaults)."""

    n_steps: int = 2048  # steps per sub-env between updates
    gae_lambda: float = 0.95
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalize_advantage: bool = True
    critic_net_arch: tuple[int, ...] = (64, 64)  # hidden widths of the value network
    ortho_init: bool = True
    log_std_init: float = 0.0
    norm_update: str = "frozen"  # "frozen" or "batch": see SB3OnPolicy
    norm_statistics: str = "cumulative"  # "cumulative" or "ema" (BatchNorm's momentum 0.1)


@dataclass
class SB3OffPolicyConfig(SB3Config):
    """The fields SAC, TD3, CrossQ and DQN share: replay, collection and update sizes."""

    learning_rate: float = 1e-3
    buffer_size: int = 1_000_000
    learning_starts: int = 100  # env steps of uniform random actions before any update
    batch_size: int = 256
    train_freq: int = 1  # steps per sub-env between updates
    gradient_steps: int = 1  # per update; -1: one per env step collected
    net_arch: tuple[int, ...] = (256, 256)
    activation_fn: str = "relu"

    def __post_init__(self) -> None:
        _check_off_policy(self, **self.ranges)


@dataclass
class SB3ActorCriticConfig(SB3OffPolicyConfig):
    """The fields of the continuous-action actor-critics (SAC, TD3, CrossQ)."""

    critic_net_arch: tuple[int, ...] = (256, 256)
    action_noise_std: float = 0.0  # Gaussian exploration noise in [-1, 1] action units
    n_critics: int = 2


@dataclass
class SB3MaxEntropyConfig(SB3ActorCriticConfig):
    """The entropy-regularized actor-critics' fields (SAC, CrossQ)."""

    ent_coef: float = 1.0  # the initial value when learned, else the fixed coefficient
    learn_ent_coef: bool = True  # SB3's ent_coef="auto_<ent_coef>"
    log_std_init: float = -3.0


# -- one config per algorithm ---------------------------------------------------------------
@dataclass
class SB3PPOConfig(SB3OnPolicyConfig):
    """stable-baselines3 PPO hyperparameters, with SB3's names and defaults."""

    batch_size: int = 64
    n_epochs: int = 10
    clip_range: float = 0.2
    clip_range_vf: float = 0.0  # 0: no value clipping (SB3's None)
    target_kl: float = 0.0  # 0: no early stopping (SB3's None)

    ranges: ClassVar[dict[str, tuple[str, ...]]] = {
        "positive": ("n_steps", "batch_size", "n_epochs", "clip_range"),
        "non_negative": ("clip_range_vf", "ent_coef", "vf_coef", "max_grad_norm", "target_kl"),
        "unit_interval": ("gamma", "gae_lambda"),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.normalize_advantage and self.batch_size < 2:
            raise ConfigError("agent.batch_size: must be >= 2 with normalize_advantage")


@dataclass
class SB3A2CConfig(SB3OnPolicyConfig):
    """stable-baselines3 A2C hyperparameters, with SB3's names and defaults."""

    learning_rate: float = 7e-4
    n_steps: int = 5
    gae_lambda: float = 1.0
    normalize_advantage: bool = False
    rms_prop_eps: float = 1e-5
    use_rms_prop: bool = True  # RMSprop (as in the A2C paper), else Adam

    ranges: ClassVar[dict[str, tuple[str, ...]]] = {
        "positive": ("n_steps", "rms_prop_eps"),
        "non_negative": ("ent_coef", "vf_coef", "max_grad_norm"),
        "unit_interval": ("gamma", "gae_lambda"),
    }


@dataclass
class SB3SACConfig(SB3MaxEntropyConfig):
    """stable-baselines3 SAC hyperparameters, with SB3's names and defaults."""

    learning_rate: float = 3e-4
    tau: float = 0.005
    target_update_interval: int = 1  # gradient steps between target updates

    ranges: ClassVar[dict[str, tuple[str, ...]]] = {
        "positive": ("ent_coef", "target_update_interval", "n_critics"),
        "non_negative": ("action_noise_std",),
    }


@dataclass
class SB3CrossQConfig(SB3MaxEntropyConfig):
    """sb3-contrib CrossQ hyperparameters, with its names and defaults. Its Batch Renorm
    layers are rlnorm's ``--norm``: ``--norm batch_renorm`` for the paper's choice."""

    critic_net_arch: tuple[int, ...] = (1024, 1024)
    policy_delay: int = 3

    ranges: ClassVar[dict[str, tuple[str, ...]]] = {
        "positive": ("ent_coef", "policy_delay", "n_critics"),
        "non_negative": ("action_noise_std",),
    }


@dataclass
class SB3TD3Config(SB3ActorCriticConfig):
    """stable-baselines3 TD3 hyperparameters, with SB3's names and defaults (SB3 adds no
    exploration noise by default: set ``action_noise_std``, 0.1 is usual)."""

    net_arch: tuple[int, ...] = (400, 300)
    critic_net_arch: tuple[int, ...] = (400, 300)
    tau: float = 0.005
    policy_delay: int = 2  # critic steps per actor and target update
    target_policy_noise: float = 0.2
    target_noise_clip: float = 0.5

    ranges: ClassVar[dict[str, tuple[str, ...]]] = {
        "positive": ("policy_delay", "n_critics"),
        "non_negative": ("target_policy_noise", "target_noise_clip", "action_noise_std"),
    }


@dataclass
class SB3DQNConfig(SB3OffPolicyConfig):
    """stable-baselines3 DQN hyperparameters, with SB3's names and defaults."""

    learning_rate: float = 1e-4
    batch_size: int = 32
    train_freq: int = 4
    net_arch: tuple[int, ...] = (64, 64)
    tau: float = 1.0
    target_update_interval: int = 10_000  # env steps between target updates
    exploration_fraction: float = 0.1  # of training over which epsilon decays
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.05
    max_grad_norm: float = 10.0

    ranges: ClassVar[dict[str, tuple[str, ...]]] = {
        "positive": ("target_update_interval", "max_grad_norm"),
        "unit_interval": (
            "exploration_fraction",
            "exploration_initial_eps",
            "exploration_final_eps",
        ),
    }


# -- translation to SB3 ---------------------------------------------------------------------
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
