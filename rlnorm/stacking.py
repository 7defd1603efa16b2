"""Stacking a population: ``K`` single agents into one agent whose modules, optimizers and
replay buffer carry a leading member dimension, ``K`` envs into one batch of sub-envs, and
back again (a member's weights, optimizer state and training state as its own run's).
:mod:`rlnorm.population` trains what this builds."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch

from rlnorm import members
from rlnorm.agent import Agent
from rlnorm.draws import MemberDraws
from rlnorm.env import MemberSplitEnv, ResumableEnv, TorchVecEnv
from rlnorm.errors import ConfigError
from rlnorm.member_adam import MemberAdam
from rlnorm.normalize import ObservationNormalizer
from rlnorm.optim import Adam
from rlnorm.replay import MemberReplay

NO_POPULATION = (
    "--seeds trains the native agents (ppo, sac, td3, crossq) as one population; "
    "{agent} runs one seed per process (leave out --seeds, or use rlnorm sweep)"
)


def population_supported(agent_cls: type[Agent]) -> bool:
    """Whether ``agent_cls`` trains as a population (:attr:`Agent.trains_as_population`:
    PPO, SAC, TD3 and CrossQ do; the stable-baselines3 adapter does not)."""
    return agent_cls.trains_as_population


class MemberEnvs(TorchVecEnv):
    """Each member's env, stepped as one batch of ``K * N`` sub-envs, member-major.

    Member ``k``'s env is ``make_env(num_envs)`` reset with seed ``seeds[k]``, as the run
    ``--seed k`` builds and resets its env; a seed given to ``reset`` is refused (each member
    has its own). A native env is built once for all members and split
    (:class:`rlnorm.env.MemberSplitEnv`), so a step is one env step however many members
    there are; other envs are stepped one after another.
    """

    def __init__(
        self, make_env: Callable[[int], TorchVecEnv], num_envs: int, seeds: Sequence[int]
    ) -> None:
        if not seeds:
            raise ValueError("a population needs at least one member seed")
        self.make_env, self.seeds, self.per_member = make_env, list(seeds), num_envs
        first = make_env(num_envs)
        self.joined: TorchVecEnv | None = None
        if isinstance(first, MemberSplitEnv):
            joined = make_env(num_envs * len(seeds))
            if cast(MemberSplitEnv, joined).split_members(len(seeds), first):
                self.joined = joined
            else:
                joined.close()
        if self.joined is None:
            self.envs = [first, *(make_env(num_envs) for _ in seeds[1:])]
        else:
            first.close()
        self.env_id, self.device, self.dtype = first.env_id, first.device, first.dtype
        self.num_envs = num_envs * len(seeds)
        self.single_observation_space = first.single_observation_space
        self.single_action_space = first.single_action_space
        self.observation_space, self.action_space = first.observation_space, first.action_space
        self._max_episode_steps = first.max_episode_steps

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if seed is not None:
            raise ValueError("a population's env resets each member with its own seed")
        if self.joined is not None:
            cast(MemberSplitEnv, self.joined).seed_members(self.seeds)
            return self.joined.reset(options=options)
        obs = [
            env.reset(seed=s, options=options)[0]
            for env, s in zip(self.envs, self.seeds, strict=True)
        ]
        return torch.cat(obs), {}

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        if self.joined is not None:
            return self.joined.step(actions)
        steps = [
            env.step(a) for env, a in zip(self.envs, actions.split(self.per_member), strict=True)
        ]
        obs, reward, terminated, truncated = (
            torch.cat(parts) for parts in list(zip(*steps, strict=True))[:4]
        )
        return obs, reward, terminated, truncated, {}

    @property
    def resumable(self) -> bool:
        """Whether the members' env states can be saved and restored."""
        return self.joined is not None or isinstance(self.envs[0], ResumableEnv)

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s env state, as its own env's ``state_dict()`` gives it."""
        if self.joined is not None:
            return cast(MemberSplitEnv, self.joined).state_dict(k)
        return cast(ResumableEnv, self.envs[k]).state_dict()

    def load_member_state_dict(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Restore member ``k``'s env from what its own env's ``state_dict()`` gave."""
        if self.joined is not None:
            cast(MemberSplitEnv, self.joined).load_state_dict(state, k)
        else:
            cast(ResumableEnv, self.envs[k]).load_state_dict(state)

    def member_env(self, k: int) -> TorchVecEnv:
        """Member ``k``'s env on its own, in the state it has now (the caller closes it)."""
        if self.joined is None:
            return self.envs[k]
        env = self.make_env(self.per_member)
        env.reset(seed=self.seeds[k])
        cast(ResumableEnv, env).load_state_dict(self.member_state_dict(k))
        return env

    def close(self) -> None:
        for env in [self.joined] if self.joined is not None else self.envs:
            env.close()


def stack_agents(
    agents: Sequence[Agent], generators: Sequence[torch.Generator], capacity: int | None
) -> Agent:
    """One agent training ``agents`` as members: the same class and config, every module
    stacked, each optimizer rebuilt with its hyperparameters over the stacked weights, for
    an off-policy agent a :class:`MemberReplay` of ``capacity`` transitions per member, and
    member ``k`` drawing from ``generators[k]``."""
    first = agents[0]
    if not population_supported(type(first)) or (capacity is None) == hasattr(first, "replay"):
        raise ConfigError(NO_POPULATION.format(agent=first.name))
    population = copy.copy(first)
    population.draws = MemberDraws(generators)
    population.counters = {}
    stacked = {
        name: members.stack([agent.modules()[name] for agent in agents]) for name in first.modules()
    }
    for name, module in stacked.items():
        setattr(population, name, module)
    if any(population.modules()[name] is not module for name, module in stacked.items()):
        raise ConfigError(
            f"{first.name}: --seeds needs modules() to return the agent's module attributes "
            "by their names, so that the stacked modules replace them"
        )
    for attr, optimizer in list(vars(first).items()):
        if isinstance(optimizer, torch.optim.Optimizer):
            setattr(population, attr, _restacked(optimizer, first.modules(), stacked))
    normalizers = [a.obs_normalizer for a in agents if a.obs_normalizer is not None]
    if normalizers:  # each member's observation statistics, of its own rows only
        one = normalizers[0]
        population.obs_normalizer = ObservationNormalizer(
            tuple(one.moments.mean.shape), one.clip, one.eps, members=len(agents)
        ).to(first.device)
        for name, buffer in population.obs_normalizer.moments.named_buffers():
            buffer.copy_(torch.stack([n.moments.get_buffer(name) for n in normalizers]))
    if capacity is not None:
        population.replay = MemberReplay(  # type: ignore[attr-defined]
            len(agents),
            capacity,
            first.observation_space,
            first.action_space,
            population.draws,
            first.device,
        )
    return population


def _restacked(
    optimizer: torch.optim.Optimizer,
    single: dict[str, torch.nn.Module],
    stacked: dict[str, torch.nn.Module],
) -> torch.optim.Optimizer:
    """``optimizer``'s class, hyperparameters and groups over the stacked copies of the
    parameters it holds, each found by its place in the agent's modules (a stacked module
    lists its parameters in its original's order)."""
    where = {
        id(p): (name, i)
        for name, module in single.items()
        for i, p in enumerate(module.parameters())
    }
    params = {name: list(module.parameters()) for name, module in stacked.items()}
    groups = []
    for group in optimizer.param_groups:
        if any(id(p) not in where for p in group["params"]):
            raise ConfigError(
                f"cannot stack {type(optimizer).__name__}: it holds parameters of no module in "
                "the agent's modules(), so a population cannot tell which stacked weights it "
                "should hold"
            )
        stacked_group = [params[name][i] for name, i in (where[id(p)] for p in group["params"])]
        groups.append({**group, "params": stacked_group})
    if type(optimizer) in (torch.optim.Adam, Adam):  # a step count per member
        return MemberAdam(groups, **optimizer.defaults)
    return type(optimizer)(groups, **optimizer.defaults)


def unstack_agent(population: Agent, k: int, into: Agent) -> None:
    """Write member ``k``'s weights, statistics and optimizer state into ``into``, an agent
    built like the members (its own config, seed ``k``'s), so it can act, be evaluated and
    be saved as its own run would be."""
    stacked = population.modules()
    for name, module in into.modules().items():
        members.unstack(stacked[name], k, module)
    if into.obs_normalizer is not None and population.obs_normalizer is not None:
        for name, buffer in into.obs_normalizer.moments.named_buffers():
            buffer.copy_(population.obs_normalizer.moments.get_buffer(name)[k])
    for attr, optimizer in vars(into).items():
        if isinstance(optimizer, torch.optim.Optimizer):
            _unstack_optimizer(getattr(population, attr), k, optimizer)


def _unstack_optimizer(stacked: torch.optim.Optimizer, k: int, into: torch.optim.Optimizer) -> None:
    """Member ``k``'s slice of each stacked parameter's optimizer state (Adam's moments and
    its step count, torch Adam's scalar) as ``into``'s state. A stacked module's
    parameters come in the order of the originals', so the two lists pair up."""
    pairs = zip(
        (p for group in stacked.param_groups for p in group["params"]),
        (p for group in into.param_groups for p in group["params"]),
        strict=True,
    )
    for stacked_param, param in pairs:
        state = stacked.state.get(stacked_param)
        if not state:
            continue
        into.state[param] = {
            key: value[k].to(torch.get_default_dtype())  # member k's count, as torch keeps it
            if key == "step" and isinstance(stacked, MemberAdam)
            else value[k].reshape(param.shape).clone()
            if value.shape == stacked_param.shape  # a per-element moment, member k's slice
            else value.clone()  # a count the members share
            for key, value in state.items()
        }


def stack_optimizer_states(population: Agent, agents: Sequence[Agent]) -> None:
    """The members' optimizer states (``agents[k]``'s, e.g. restored from member ``k``'s
    checkpoint) as the population's: the inverse of :func:`unstack_agent`'s optimizer part.
    Any other count the members share must be the same in every member."""
    for attr, stacked in vars(population).items():
        if not isinstance(stacked, torch.optim.Optimizer):
            continue
        own = [getattr(agent, attr) for agent in agents]
        member_params = [[p for g in o.param_groups for p in g["params"]] for o in own]
        stacked_params = [p for g in stacked.param_groups for p in g["params"]]
        for i, stacked_param in enumerate(stacked_params):
            states = [o.state.get(params[i]) for o, params in zip(own, member_params, strict=True)]
            if not any(states):
                continue
            if not all(states) or any(set(s) != set(states[0]) for s in states):
                raise ConfigError(f"{attr}: the members' optimizer states differ in kind")
            merged = {}
            for key, first in states[0].items():
                if key == "step" and isinstance(stacked, MemberAdam):  # one count per member
                    merged[key] = torch.stack([s[key].to(torch.float64) for s in states])
                # a per-element moment; Adam's step is a count even for a scalar parameter
                elif key != "step" and first.shape == member_params[0][i].shape:
                    merged[key] = torch.stack(
                        [s[key].reshape(stacked_param.shape[1:]) for s in states]
                    )
                elif all(torch.equal(s[key], first) for s in states):
                    merged[key] = first.clone()
                else:
                    raise ConfigError(
                        f"{attr}: the members' optimizer {key!r} differs; resume them one by one"
                    )
            stacked.state[stacked_param] = merged


#: Rollout state with one entry per sub-env, and with one per member (the rest is the
#: population's, or empty).
_COLUMNS = ("obs", "episode_return", "episode_length", "prev_done", "reward_scaler.returns")
_PER_MEMBER = "reward_scaler.moments."


def member_rollout_state(
    state: dict[str, torch.Tensor], k: int, per_member: int
) -> dict[str, torch.Tensor]:
    """Member ``k``'s part of a population's rollout state (:meth:`RolloutManager.state_dict`),
    as its own run's rollout manager holds it: its sub-envs' columns, its own statistics.
    The recent finished episodes (logging only) are the population's, so they are left out."""
    columns = slice(k * per_member, (k + 1) * per_member)
    part = {}
    for name, value in state.items():
        if name.startswith("recent_"):
            value = value[:0]
        elif name in _COLUMNS:
            value = value[columns]
        elif name.startswith(_PER_MEMBER):
            value = value[k]
        part[name] = value.clone()
    return part


def merge_rollout_states(parts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The population's rollout state from its members' (the inverse of
    :func:`member_rollout_state`; what is not per member is the first member's)."""
    merged = {}
    for name, value in parts[0].items():
        values = [part[name] for part in parts]
        if name in _COLUMNS:
            value = torch.cat(values)
        elif name.startswith(_PER_MEMBER):
            value = torch.stack(values)
        merged[name] = value
    return merged


def saved_group(state: dict[str, torch.Tensor], group: str) -> dict[str, torch.Tensor]:
    """The ``group.name`` entries of a saved training state (``env``, ``rollout``,
    ``replay``), by ``name``."""
    return {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(group + ".")}
