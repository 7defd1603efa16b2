"""The agent contract: what an agent exposes and how rlnorm drives it.

An agent owns its networks and optimizers. rlnorm's shared machinery composes it:

- the :class:`~rlnorm.rollout.RolloutManager` calls :meth:`Agent.act` on batched
  observations, always inside :func:`rlnorm.acting` over :meth:`Agent.acting_modules`;
- the :class:`~rlnorm.learner.Learner` calls :meth:`Agent.update` on what was collected,
  always inside :func:`rlnorm.training` over every module in :meth:`Agent.modules`;
- the checkpointer saves and restores :meth:`Agent.modules` and :meth:`Agent.optimizers`.

An agent never switches modes itself: the two context managers own that, and restore the
exact previous mode of every submodule afterwards.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import gymnasium as gym
import torch
from torch import nn

from rlnorm.errors import ConfigError, UnknownNameError
from rlnorm.normalize import ObservationNormalizer


@dataclass
class ActOutput:
    """What :meth:`Agent.act` returns: the actions, and per-sample extras for the learner.

    ``extras`` holds tensors with the same leading batch dimension as ``actions`` (PPO:
    ``log_prob`` and ``value``); the rollout manager stores them beside the transitions.
    """

    actions: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class OnPolicy:
    """Collect ``steps_per_env`` steps from every sub-env, then update once on all of them.

    The learner calls ``agent.update(rollout, progress)`` with the :class:`Rollout`.
    """

    steps_per_env: int


@dataclass(frozen=True)
class OffPolicy:
    """Collect ``steps_per_env`` steps from every sub-env into the agent's replay buffer,
    then update from the buffer.

    Until ``learning_starts`` environment steps have been collected, actions are drawn
    uniformly from the action space and no update runs (the buffer fills first). After
    that the learner calls ``agent.update(agent.replay, progress)``; the agent samples its
    own minibatches, as many gradient steps as it likes.
    """

    steps_per_env: int
    learning_starts: int


class Agent:
    """Base class of rlnorm agents. Subclasses set ``name`` and ``Config`` and implement the
    methods below; :func:`register` makes them available to the CLI and to :func:`rlnorm.load`.

    Args:
        observation_space: gymnasium space of one observation.
        action_space: gymnasium space of one action.
        config: an instance of the agent's ``Config`` dataclass.
        norm: a name from :mod:`rlnorm.norm`.
        device: where the networks live (the env's device).
    """

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        config: Any,
        norm: str,
        device: torch.device | str = "cpu",
    ) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self.config = config
        self.norm = norm
        self.device = torch.device(device)
        #: progress counters restored from a checkpoint (env steps, updates), else empty.
        self.counters: dict[str, int] = {}
        #: set by the learner when ``train.normalize_obs`` is on; applied before every act.
        self.obs_normalizer: ObservationNormalizer | None = None

    # -- what the agent exposes ------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """Every network of the agent by name: checkpointed, audited, trained."""
        raise NotImplementedError

    def acting_modules(self) -> list[nn.Module]:
        """The networks :meth:`act` runs; the rollout manager puts them in eval mode."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer by name, checkpointed with the weights."""
        raise NotImplementedError

    @property
    def collection(self) -> OnPolicy | OffPolicy:
        """How the learner collects data for this agent. An :class:`OffPolicy` agent also
        has a ``replay`` attribute, a :class:`rlnorm.replay.ReplayBuffer` the learner fills
        (and checkpoints, so a resumed run continues with the same buffer)."""
        raise NotImplementedError

    # -- what the agent does ---------------------------------------------------------------
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        """Actions for a batch of observations ``(B, *obs_shape)``; batch-independent.

        Called only inside :func:`rlnorm.acting`, so every norm layer is in eval mode.
        """
        raise NotImplementedError

    def update(self, batch: Any, progress: float) -> dict[str, float]:
        """One update on collected data; returns scalar metrics for the monitor.

        Called only inside :func:`rlnorm.training`. ``progress`` runs from 0 at the start of
        training to 1 at its end, for schedules.
        """
        raise NotImplementedError


_REGISTRY: dict[str, type[Agent]] = {}


def register(cls: type[Agent]) -> type[Agent]:
    """Class decorator: make an agent available by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Agent]:
    """The agent class registered as ``name``; an unknown name lists the valid ones.

    ``sb3:<Algo>`` (``sb3:PPO``, ``sb3:SAC``, ...) is the stable-baselines3 adapter of that
    algorithm (:mod:`rlnorm.agents.sb3`); stable-baselines3 is imported only then.
    """
    _load_builtin()
    from rlnorm.agents import sb3

    if name.startswith(sb3.PREFIX) and name not in _REGISTRY:
        return sb3.agent_class(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("agent", name, names()) from None


def names() -> list[str]:
    """Names of every registered agent, and of the stable-baselines3 adapters whose package
    is installed."""
    _load_builtin()
    from rlnorm.agents import sb3

    return sorted({*_REGISTRY, *sb3.available_names()})


def _load_builtin() -> None:
    # Imported lazily: the agent modules import this one to register themselves.
    from rlnorm.agents import crossq, ppo, sac, td3  # noqa: F401

    _load_entry_points()


#: Entry-point group through which installed packages provide agents.
ENTRY_POINT_GROUP = "rlnorm.agents"
_entry_points_loaded = False


def _load_entry_points() -> None:
    """Register the agents of installed packages, once: every entry point in the
    ``rlnorm.agents`` group names an :class:`Agent` subclass (``pkg.module:MyAgent``)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
        except Exception as e:  # a broken plug-in must not take the built-in agents down
            warnings.warn(f"agent entry point {entry.value!r} failed to load: {e!r}", stacklevel=3)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Agent)):
            warnings.warn(
                f"agent entry point {entry.value!r} is not an Agent subclass", stacklevel=3
            )
            continue
        if entry.name != cls.name:
            warnings.warn(
                f"agent entry point {entry.name!r} loads an agent named {cls.name!r}; "
                f"it is registered as {cls.name!r}",
                stacklevel=3,
            )
        _REGISTRY.setdefault(cls.name, cls)  # a plug-in never shadows a built-in agent


def build_config(cls: type[Agent], values: Mapping[str, Any] | None = None) -> Any:
    """Instantiate ``cls.Config`` from a mapping, checking each key and each value's type.

    An unknown key names the valid ones (with a did-you-mean); a value whose type does not
    match the field's default names the key, the value and the expected type.
    """
    return build_dataclass(cls.Config, values, section="agent", what=f"{cls.name} config key")


def build_dataclass(
    datacls: type, values: Mapping[str, Any] | None, *, section: str, what: str
) -> Any:
    """Instantiate the config dataclass ``datacls`` from a mapping of the ``section`` of a
    config file, type-checking each value against its field's default."""
    defaults = {f.name: f.default for f in fields(datacls)}
    checked: dict[str, Any] = {}
    for key, value in dict(values or {}).items():
        if key not in defaults:
            err = UnknownNameError(what, key, defaults)
            raise ConfigError(f"{section}.{key}: {err}") from None
        checked[key] = _coerce(f"{section}.{key}", value, defaults[key])
    return datacls(**checked)


def _coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of ``default``, or a ConfigError saying why not."""
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is float and isinstance(value, str):
        # YAML 1.1 reads "3e-4" (no dot) as a string; accept any float literal Python accepts.
        try:
            return float(value)
        except ValueError:
            pass
    if expected is tuple and isinstance(value, list | tuple):
        return tuple(value)
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    raise ConfigError(
        f"{key}: expected {expected.__name__} (like the default {default!r}), "
        f"got {type(value).__name__} {value!r}"
    )


def check_ranges(
    config: Any,
    *,
    section: str = "agent",
    choices: Mapping[str, tuple[str, ...]] = {},
    positive: tuple[str, ...] = (),
    non_negative: tuple[str, ...] = (),
    unit_interval: tuple[str, ...] = (),
) -> None:
    """Raise :class:`ConfigError` naming the first field of ``config`` out of its range.

    For an agent Config's ``__post_init__``: ``choices`` maps a field to its valid strings,
    ``positive`` fields must be > 0, ``non_negative`` >= 0, ``unit_interval`` in [0, 1].
    ``section`` prefixes the key in messages (the config file's top-level key).
    """
    for key, valid in choices.items():
        if getattr(config, key) not in valid:
            raise ConfigError(
                f"{section}.{key}: {getattr(config, key)!r} is not one of {', '.join(valid)}"
            )
    bounds = [(k, "> 0", lambda v: v > 0) for k in positive]
    bounds += [(k, ">= 0", lambda v: v >= 0) for k in non_negative]
    bounds += [(k, "in [0, 1]", lambda v: 0 <= v <= 1) for k in unit_interval]
    for key, text, ok in bounds:
        value = getattr(config, key)
        if isinstance(value, tuple):
            if not value or not all(
                isinstance(v, int) and not isinstance(v, bool) and ok(v) for v in value
            ):
                raise ConfigError(
                    f"{section}.{key}: every entry must be an integer {text}, got {list(value)}"
                )
        elif not ok(value):
            raise ConfigError(f"{section}.{key}: must be {text}, got {value!r}")
