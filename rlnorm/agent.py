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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlnorm.draws import GLOBAL, Draws
from rlnorm.env import space_shape
from rlnorm.errors import EnvError
from rlnorm.normalize import ObservationNormalizer
from rlnorm.safety import acting


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
    methods below; :func:`rlnorm.agents.register` makes them available to the CLI and to
    :func:`rlnorm.load`.

    Args:
        observation_space: gymnasium space of one observation.
        action_space: gymnasium space of one action.
        config: an instance of the agent's ``Config`` dataclass.
        norm: a name from :mod:`rlnorm.norm`.
        device: where the networks live (the env's device).
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    #: Whether ``rlnorm train --seeds`` can train the agent as a population
    #: (:mod:`rlnorm.population`): its ``act`` and ``update`` take member-batched tensors and
    #: draw every random number from :attr:`draws` when a population sets it.
    trains_as_population: ClassVar[bool] = False

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
        #: where every random number the agent draws comes from: torch's global generator,
        #: or one generator per member in a population (:mod:`rlnorm.population`)
        self.draws: Draws = GLOBAL

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

    # -- stable-baselines3's convention ----------------------------------------------------
    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``: actions for one observation or a batch, as numpy, and the
        recurrent ``state`` (rlnorm's agents are not recurrent: it comes back unchanged).

        It lets SB3's tools (``evaluate_policy``, RL Zoo's enjoy scripts) drive an rlnorm
        agent. The actions come from :func:`act_in_eval_mode`, the one path every rollout
        takes, so a BatchNorm policy acts in eval mode here too. ``episode_start`` is only
        meaningful to recurrent policies and is ignored.
        """
        shape = space_shape(self.observation_space)
        x = torch.as_tensor(np.asarray(observation), device=self.device)
        single = tuple(x.shape) == shape
        if not single and not (x.dim() == len(shape) + 1 and tuple(x.shape[1:]) == shape):
            raise EnvError(
                f"observation of shape {tuple(x.shape)} does not fit the agent's observation "
                f"space {shape}: pass one observation or a batch (B, *{shape})"
            )
        batch = x.unsqueeze(0) if single else x
        actions = act_in_eval_mode(self, batch, deterministic).actions.cpu().numpy()
        return (actions[0] if single else actions), state


def network_dtype(agent: Agent) -> torch.dtype:
    """The floating dtype of the agent's acting networks (float32 unless they were built
    under another default dtype, as the float64 exactness checks build them)."""
    for module in agent.acting_modules():
        for param in module.parameters():
            if param.is_floating_point():
                return param.dtype
    return torch.float32


def act_in_eval_mode(agent: Agent, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
    """``agent.act`` on a batch of raw observations inside :func:`rlnorm.acting`: the one
    way a policy acts (observation normalization, when the agent has it, applied frozen).
    The rollout manager, :func:`rlnorm.predict` and :meth:`Agent.predict` all act through it.
    """
    obs = normalize_obs(agent, obs)
    with acting(*agent.acting_modules()):
        return agent.act(obs, deterministic=deterministic)


def normalize_obs(agent: Agent, obs: torch.Tensor) -> torch.Tensor:
    """``obs`` through the agent's observation normalizer, frozen (no statistics update);
    unchanged when it has none."""
    normalizer = getattr(agent, "obs_normalizer", None)  # plug-ins may skip Agent.__init__
    return obs if normalizer is None else normalizer(obs)


#: How the core finds an agent class by its registered name without importing the plug-in
#: folder: the top floor (the CLI, :func:`rlnorm.load`) passes ``rlnorm.agents.get``.
AgentLookup = Callable[[str], type[Agent]]
