"""The base of every ``sb3:`` adapter: an SB3 algorithm built from spaces alone, with
rlnorm's norm in its networks, as an ordinary :class:`~rlnorm.agent.Agent`.

Also what every adapter needs around SB3: importing SB3 (or sb3-contrib) only when an
``sb3:`` agent is asked for, with a clear error when it is missing (:func:`require`);
the copy of *every* online buffer into a target net at SB3's target updates
(:class:`CopyAllBuffers`); and the algorithm state SB3 keeps outside its policy, as
tensors a checkpoint carries (:class:`AlgorithmState`).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, ClassVar

import gymnasium as gym
import torch
from torch import nn

from rlnorm import norm as norms
from rlnorm.agent import Agent
from rlnorm.agents.sb3.configs import sb3_kwargs
from rlnorm.errors import ConfigError, MissingDependencyError
from rlnorm.safety import frozen_statistics, label_layers

#: Agent names of the adapters are this prefix and the SB3 class name: ``sb3:PPO``.
PREFIX = "sb3:"


def require(package: str, algorithm: str) -> ModuleType:
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


class AlgorithmState(nn.Module):
    """What an SB3 algorithm keeps outside its policy that training depends on, as tensors
    an rlnorm checkpoint carries, so a loaded or resumed adapter continues SB3's schedules.

    Always the gradient-step count ``n_updates`` (it paces TD3's and CrossQ's delayed actor
    updates); the adapters register more: DQN's env-step count and exploration rate, the
    learned log entropy coefficient of SAC and CrossQ.
    """

    n_updates: torch.Tensor
    n_calls: torch.Tensor  # DQN only, as the next two
    exploration_rate: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.int64))


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
        algorithm_cls = getattr(require(self.package, self.algorithm), self.algorithm)
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
