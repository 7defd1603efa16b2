"""Acting costs nothing, and stays as safe: the mode contexts' submodule cache, PPO's
critic-free deterministic act, and an evaluate whose results are those of the plain loop."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import rlnorm
from rlnorm import envs
from rlnorm.agents import get
from rlnorm.agents.ppo import PPO
from rlnorm.config import build_config
from rlnorm.env import TorchVecEnv
from rlnorm.nets import MLP, mlp
from rlnorm.rollout import RolloutManager, act, evaluate
from rlnorm.safety import _submodules

CONTEXTS = [rlnorm.acting, rlnorm.training]


def _modes(net: nn.Module) -> list[tuple[str, bool]]:
    return [(name, m.training) for name, m in net.named_modules()]


def _add(net: nn.Sequential) -> None:
    net.add_module("extra", nn.BatchNorm1d(3).train())


def _swap_in_place(net: nn.Sequential) -> None:
    net._modules["1"] = nn.BatchNorm1d(8)  # a write into _modules, as quantization's swaps do


def _replace_dict(net: nn.Sequential) -> None:
    net._modules = dict(net._modules)  # a new dict with the same children, then a new child
    net._modules["extra"] = nn.LayerNorm(3)


def _parametrize(net: nn.Sequential) -> None:
    torch.nn.utils.parametrizations.weight_norm(net[0])


def _delete(net: nn.Sequential) -> None:
    del net[1]


def _deep(net: nn.Sequential) -> None:
    net[2].add_module("inner", nn.Sequential(nn.BatchNorm1d(8), nn.Dropout()))


MUTATIONS: list[Callable[[nn.Sequential], None]] = [
    _add,
    _swap_in_place,
    _replace_dict,
    _parametrize,
    _delete,
    _deep,
]


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda f: f.__name__.strip("_"))
def test_mode_cache_follows_a_changed_tree_and_restores_exactly(context, mutate) -> None:
    net = mlp(5, 3, (8, 8), norm="batch")
    with context(net):  # caches the tree as it was
        pass
    removed = dict(net.named_modules())
    mutate(net)
    removed = [m for m in removed.values() if all(m is not k for k in net.modules())]
    # mixed modes, on old and new submodules alike
    for i, m in enumerate(net.modules()):
        m.train(i % 2 == 0)
    for m in removed:
        m.train(True)
    before = _modes(net)
    wanted = context is rlnorm.training
    with context(net):
        assert all(m.training == wanted for m in net.modules())
        if not wanted:
            assert all(m.training for m in removed)  # no longer in the tree: untouched
    assert _modes(net) == before
    assert all(m.training for m in removed)


def test_an_unchanged_tree_is_not_walked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    net = mlp(5, 3, norm="batch")
    walks = []
    original = MLP.modules

    def counting(self: nn.Module):  # type: ignore[no-untyped-def]
        walks.append(self)
        return original(self)

    monkeypatch.setattr(MLP, "modules", counting)
    for _ in range(5):
        with rlnorm.acting(net), rlnorm.training(net):
            pass
    assert len(walks) == 1
    net.add_module("extra", nn.Identity())
    with rlnorm.acting(net):
        assert not net.extra.training
    assert len(walks) == 2


class _WriteSpy(nn.Module):
    """Records every write of its ``training`` flag."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bool] = []

    def __setattr__(self, name: str, value: object) -> None:
        if name == "training":
            self.writes.append(bool(value))
        super().__setattr__(name, value)


def test_flags_already_in_the_wanted_mode_are_not_written() -> None:
    spy = _WriteSpy()
    net = nn.Sequential(nn.Linear(2, 2), spy).eval()
    spy.writes.clear()
    with rlnorm.acting(net):
        pass
    assert spy.writes == []
    with rlnorm.training(net):
        assert spy.training
    assert spy.writes == [True, False]


def test_shared_submodules_are_listed_once_and_dead_roots_are_forgotten() -> None:
    shared = nn.BatchNorm1d(4)
    a, b = nn.Sequential(nn.Linear(4, 4), shared), nn.Sequential(shared, nn.Tanh())
    subs = _submodules((a, b))
    assert len(subs) == len({id(m) for m in subs}) == 5
    ref = weakref.ref(a)
    with rlnorm.acting(a):
        pass
    del a, subs
    gc.collect()
    assert ref() is None  # the cache holds no root alive


def _ppo(env: TorchVecEnv, norm: str = "batch") -> PPO:
    return PPO(env.single_observation_space, env.single_action_space, build_config(PPO), norm)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_deterministic_act_runs_no_critic_and_collecting_does(env_id: str) -> None:
    env = envs.make(env_id, 4)
    agent = _ppo(env)
    calls = []
    agent.critic.register_forward_hook(lambda *_: calls.append(1))
    result = evaluate(agent, env, 4, deterministic=True, seed=0)
    assert len(result.returns) == 4 and calls == []
    with rlnorm.acting(*agent.acting_modules()):
        out = agent.act(torch.zeros(4, *env.single_observation_space.shape))
        assert out.actions.shape[0] == 4 and "value" in out.extras
    rollout = RolloutManager(agent, env).collect(3)
    assert len(calls) == 1 + 3 + 1 and rollout.extras["value"].shape == (4, 4)


def test_collected_rollouts_are_ordinary_tensors_the_update_can_use() -> None:
    """The loop runs under inference mode, its buffers do not: the update differentiates
    through them."""
    torch.manual_seed(0)
    env = envs.make("CartPole-v1", 8)
    agent = _ppo(env)
    rollout = RolloutManager(agent, env).collect(16)
    tensors = [rollout.obs, rollout.actions, rollout.rewards, *rollout.extras.values()]
    assert not any(t.is_inference() for t in tensors)
    with rlnorm.training(*agent.modules().values()):
        metrics = agent.update(rollout, 0.0)
    assert np.isfinite(metrics["loss/policy_loss"])


def _reference_evaluate(agent, env, episodes: int, deterministic: bool, seed: int):  # type: ignore[no-untyped-def]
    """The plain per-step loop evaluate replaced: acting around every act, each episode's
    return summed step by step in float64, the first ``quota`` episodes of each sub-env."""
    n = env.num_envs
    quota = [episodes // n + (i < episodes % n) for i in range(n)]
    returns: list[list[float]] = [[] for _ in range(n)]
    lengths: list[list[int]] = [[] for _ in range(n)]
    ret = torch.zeros(n, dtype=torch.float64)
    length = torch.zeros(n, dtype=torch.int64)
    prev_done = torch.zeros(n, dtype=torch.bool)
    obs, _ = env.reset(seed=seed)
    steps, max_steps = 0, (env.max_episode_steps + 1) * max(quota) + 1
    while steps < max_steps and (
        any(len(r) < q for r, q in zip(returns, quota, strict=True)) or steps % 8
    ):
        obs, reward, term, trunc, _ = env.step(act(agent, obs, deterministic).actions)
        steps += 1
        ret += reward
        length += ~prev_done
        prev_done = term | trunc
        for i in prev_done.nonzero().flatten().tolist():
            if len(returns[i]) < quota[i]:
                returns[i].append(float(ret[i]))
                lengths[i].append(int(length[i]))
        ret.masked_fill_(prev_done, 0.0)
        length.masked_fill_(prev_done, 0)
    return np.concatenate(returns), np.concatenate(lengths)


@pytest.mark.parametrize(
    ("agent_name", "env_id", "n", "episodes", "deterministic"),
    [
        ("ppo", "CartPole-v1", 5, 13, True),
        ("ppo", "CartPole-v1", 7, 7, False),
        ("ppo", "Acrobot-v1", 3, 4, True),
        ("sac", "Pendulum-v1", 4, 9, True),
    ],
)
def test_evaluate_is_bit_identical_to_the_plain_loop(
    agent_name: str, env_id: str, n: int, episodes: int, deterministic: bool
) -> None:
    cls = get(agent_name)
    env = envs.make(env_id, n)
    agent = cls(env.single_observation_space, env.single_action_space, build_config(cls), "batch")
    torch.manual_seed(1)
    result = evaluate(agent, env, episodes, deterministic=deterministic, seed=3)
    after = env.reset()[0]  # the env's random stream: both took the same number of steps
    torch.manual_seed(1)
    returns, lengths = _reference_evaluate(agent, env, episodes, deterministic, seed=3)
    assert np.array_equal(result.returns, returns) and result.returns.dtype == np.float64
    assert np.array_equal(result.lengths, lengths)
    assert torch.equal(env.reset()[0], after)
