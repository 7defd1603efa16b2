"""The gymnasium adapter: any gymnasium id behind the native envs' tensor API.

CartPole through the adapter is checked against the native torch CartPole step for step;
then autoreset, seeding, the tensor API, bad actions, ``make``'s backends, async workers,
the rollout manager, and a MuJoCo env when MuJoCo is installed.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlnorm import envs
from rlnorm.agents.ppo import PPO
from rlnorm.config import build_config
from rlnorm.envs import (
    CartPole,
    GymnasiumVecEnv,
    TorchVecEnv,
    gymnasium_adapter,
    gymnasium_env_ids,
    make,
)
from rlnorm.errors import EnvError, UnknownNameError
from rlnorm.rollout import RolloutManager, evaluate

F64 = torch.float64


def gym_states(env: GymnasiumVecEnv) -> torch.Tensor:
    """The float64 states of the adapter's gymnasium CartPoles, ``(num_envs, 4)``."""
    return torch.tensor(np.stack([e.unwrapped.state for e in env.vector_env.envs]))


def test_adapter_and_native_cartpole_agree_step_for_step() -> None:
    """Same actions, same start states: identical rewards and flags, and observations
    equal to float32 rounding, through terminations, truncations and autoresets.

    The two draw fresh states from different generators (numpy per sub-env, torch for
    the batch), so the native env's state is set to gymnasium's at the start and after
    each autoreset; every other step runs freely in both.
    """
    n, limit = 8, 30
    adapter = make("CartPole-v1", n, backend="gymnasium", max_episode_steps=limit)
    native = make("CartPole-v1", n, dtype=F64, max_episode_steps=limit)
    assert isinstance(adapter, GymnasiumVecEnv) and isinstance(native, CartPole)
    adapter.reset(seed=0)
    native.reset(seed=0)
    native.state = gym_states(adapter)
    rng = np.random.default_rng(0)
    resets = terminations = truncations = 0
    was_done = torch.zeros(n, dtype=torch.bool)
    for _ in range(120):
        balance = (native.state[:, 2] + 0.5 * native.state[:, 3] > 0).long()
        actions = torch.where(torch.from_numpy(rng.random(n) < 0.7), balance, 1 - balance)
        a_obs, a_reward, a_term, a_trunc, _ = adapter.step(actions)
        n_obs, n_reward, n_term, n_trunc, _ = native.step(actions)
        assert torch.equal(a_reward, n_reward.float())
        assert torch.equal(a_term, n_term) and torch.equal(a_trunc, n_trunc)
        live = ~was_done
        torch.testing.assert_close(a_obs[live], n_obs[live].float(), rtol=1e-6, atol=1e-7)
        # Autoreset steps: both returned a fresh state (reward 0, no flags); align them.
        assert (a_obs[was_done].abs() <= 0.05).all() and (n_obs[was_done].abs() <= 0.05).all()
        native.state[was_done] = gym_states(adapter)[was_done]
        resets += int(was_done.sum())
        terminations += int(a_term.sum())
        truncations += int(a_trunc.sum())
        was_done = a_term | a_trunc
    assert resets > 15 and terminations > 5 and truncations > 5


def set_adapter_state(env: GymnasiumVecEnv, i: int, state: list[float]) -> None:
    env.vector_env.envs[i].unwrapped.state = np.array(state)


def set_native_state(env: CartPole, i: int, state: list[float]) -> None:
    env.state[i] = torch.tensor(state)


@pytest.mark.parametrize(
    ("backend", "set_state"), [("gymnasium", set_adapter_state), ("native", set_native_state)]
)
def test_autoreset_keeps_the_final_observation_then_resets_like_native(
    backend: str, set_state: Callable[[TorchVecEnv, int, list[float]], None]
) -> None:
    """The same expectations for both backends: the ending step returns the final
    observation with reward 1 and the flag; the next step ignores its action and returns
    a fresh state with reward 0 and both flags False."""

    def run(reset_action: int) -> tuple[tuple, tuple]:
        env = make("CartPole-v1", 2, backend=backend)
        env.reset(seed=3)
        set_state(env, 1, [2.399, 1.0, 0.0, 0.0])  # leaves the track on the next step
        return env.step(torch.tensor([1, 1])), env.step(torch.tensor([0, reset_action]))

    (obs1, r1, te1, tr1, _), (obs2, r2, te2, tr2, _) = run(reset_action=0)
    assert te1.tolist() == [False, True] and not tr1.any() and r1.tolist() == [1.0, 1.0]
    assert obs1[1, 0] > 2.4  # the final observation, past the edge of the track
    assert r2.tolist() == [1.0, 0.0] and not te2.any() and not tr2.any()
    assert obs2[1].abs().max() <= 0.05  # a fresh state
    _, (obs3, *_) = run(reset_action=1)  # another action on the reset step: ignored
    assert torch.equal(obs3, obs2)


def test_tensor_api_dtypes_devices_and_fresh_outputs() -> None:
    env = make("Pendulum-v1", 3, backend="gymnasium")
    assert (env.env_id, env.num_envs, env.dtype) == ("Pendulum-v1", 3, torch.float32)
    assert env.device == torch.device("cpu")
    assert env.max_episode_steps == 200
    assert env.single_observation_space == gym.make("Pendulum-v1").observation_space
    assert env.observation_space.shape == (3, 3) and env.action_space.shape == (3, 1)
    obs, info = env.reset(seed=0)
    assert obs.dtype == torch.float32 and obs.shape == (3, 3) and isinstance(info, dict)
    kept = obs.clone()
    out = env.step(torch.zeros(3, 1))
    assert torch.equal(obs, kept)  # a step does not write into earlier outputs
    obs, reward, terminated, truncated, info = out
    assert obs.dtype == reward.dtype == torch.float32
    assert terminated.dtype == truncated.dtype == torch.bool and reward.shape == (3,)
    # numpy and list actions are accepted too, and float64 is available on request.
    env.step(np.zeros((3, 1)))
    env.step([[0.0], [1.0], [-1.0]])
    env64 = make("Pendulum-v1", 2, dtype=F64, backend="gymnasium", g=9.81)
    obs64, _ = env64.reset(seed=0)
    assert obs64.dtype == F64 and env64.step(torch.zeros(2, 1))[1].dtype == F64
    assert env64.vector_env.envs[0].unwrapped.g == 9.81  # env parameters reach gymnasium
    discrete = make("FrozenLake-v1", 2)  # an integer observation space: int64 tensors
    assert discrete.reset(seed=0)[0].dtype == torch.int64


def test_seeding_is_reproducible_and_unseeded_resets_differ() -> None:
    def rollout(seed: int | None) -> list[torch.Tensor]:
        env = make("Acrobot-v1", 4, backend="gymnasium")
        out = [env.reset(seed=seed)[0]]
        actions = torch.Generator().manual_seed(0)
        out += [env.step(torch.randint(0, 3, (4,), generator=actions))[0] for _ in range(10)]
        return out

    first, again = rollout(5), rollout(5)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], rollout(6)[0])
    assert not torch.equal(rollout(None)[0], rollout(None)[0])


BAD_ACTIONS = [
    ("CartPole-v1", torch.tensor([[0], [1], [0]]), r"shape \(3,\).*got \(3, 1\)"),
    ("CartPole-v1", torch.tensor([0.0, 1.0, 1.0]), r"integers.*float32.*\.long\(\)"),
    ("CartPole-v1", torch.tensor([0, 2, 1]), r"in Discrete\(2\), got values \[0, 1, 2\]"),
    ("CartPole-v1", torch.tensor([0.0, math.nan, 1.0]), r"NaN \(sub-envs 1\)"),
    ("Pendulum-v1", torch.zeros(3), r"shape \(3, 1\).*got \(3,\)"),
    ("Pendulum-v1", torch.tensor([[0.0], [0.0], [math.nan]]), r"NaN \(sub-envs 2\)"),
    ("Pendulum-v1", torch.zeros(3, 1, dtype=torch.complex64), "real numbers"),
]


@pytest.mark.parametrize(("env_id", "actions", "message"), BAD_ACTIONS)
def test_bad_actions_raise_env_error_before_stepping(
    env_id: str, actions: torch.Tensor, message: str
) -> None:
    env = make(env_id, 3, backend="gymnasium")
    with pytest.raises(EnvError, match="reset"):
        env.step(actions)
    env.reset(seed=0)
    with pytest.raises(EnvError, match=message):
        env.step(actions)
    ok = torch.zeros(3, 1) if env_id == "Pendulum-v1" else torch.zeros(3, dtype=torch.long)
    twin = make(env_id, 3, backend="gymnasium")
    twin.reset(seed=0)
    torch.testing.assert_close(env.step(ok)[0], twin.step(ok)[0], rtol=0, atol=0)


def test_make_backends_and_their_errors() -> None:
    assert type(make("CartPole-v1")) is CartPole
    assert type(make("CartPole-v1", backend="native")) is CartPole
    assert type(make("CartPole-v1", backend="gymnasium")) is GymnasiumVecEnv
    assert type(make("FrozenLake-v1")) is GymnasiumVecEnv
    assert "Hopper-v5" in gymnasium_env_ids() and "CartPole-v1" not in gymnasium_env_ids()
    assert "CartPole-v1" in envs.env_ids() and "Hopper-v5" not in envs.env_ids()
    with pytest.raises(UnknownNameError, match=r"native env 'FrozenLake-v1'.*Acrobot-v1, Cart"):
        make("FrozenLake-v1", backend="native")
    with pytest.raises(UnknownNameError, match=r"'Hoper-v5'.*Did you mean 'Hopper-v5'"):
        make("Hoper-v5")
    with pytest.raises(UnknownNameError, match=r"gymnasium env 'cartpole'.*'CartPole-v\d'"):
        make("cartpole", backend="gymnasium")
    with pytest.raises(UnknownNameError, match=r"backend 'torch'.*auto, gymnasium, native"):
        make("CartPole-v1", backend="torch")
    with pytest.raises(EnvError, match="num_envs must be an int >= 1"):
        make("FrozenLake-v1", 0)
    with pytest.raises(EnvError, match="vectorization must be one of sync, async"):
        make("FrozenLake-v1", vectorization="threads")
    with pytest.raises(EnvError, match="CliffWalking-v1 is registered without a time limit"):
        make("CliffWalking-v1")
    assert make("CliffWalking-v1", max_episode_steps=10).max_episode_steps == 10
    with pytest.raises(EnvError, match="Blackjack-v1 observes a Tuple space"):
        make("Blackjack-v1", max_episode_steps=10)
    with pytest.raises(EnvError, match="could not make CartPole-v1"):
        make("CartPole-v1", backend="gymnasium", gravity=1.0)  # not a CartPole parameter


def test_async_workers_give_the_same_episodes_as_sync() -> None:
    sync = make("CartPole-v1", 2, backend="gymnasium")
    workers = make("CartPole-v1", 2, backend="gymnasium", vectorization="async")
    try:
        assert torch.equal(sync.reset(seed=1)[0], workers.reset(seed=1)[0])
        for t in range(30):  # through terminations and autoresets
            actions = torch.tensor([t % 2, 1])
            for a, b in zip(sync.step(actions)[:4], workers.step(actions)[:4], strict=True):
                assert torch.equal(a, b)
    finally:
        workers.close()


def test_rollout_manager_collects_and_evaluates_through_the_adapter() -> None:
    """The rollout manager's valid mask and episode bookkeeping follow the adapter's
    next-step autoreset exactly as they do the native env's."""
    torch.manual_seed(0)
    env = make("CartPole-v1", 4, backend="gymnasium", max_episode_steps=15)
    agent = PPO(env.single_observation_space, env.single_action_space, build_config(PPO), "batch")
    manager = RolloutManager(agent, env)
    manager.reset(seed=0)
    r = manager.collect(40)
    done = r.terminated | r.truncated
    assert done.any() and torch.equal(r.valid[1:], ~done[:-1])
    assert all(1 <= length <= 15 for length in manager.episode_lengths)
    result = evaluate(agent, make("CartPole-v1", 3, backend="gymnasium", max_episode_steps=15), 5)
    assert len(result.returns) == 5 and np.array_equal(result.returns, result.lengths)


def test_a_missing_dependency_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def without_mujoco(*args: object) -> gym.Env:
        raise gym.error.DependencyNotInstalled("MuJoCo is not installed")

    monkeypatch.setattr(gymnasium_adapter, "_make_one", without_mujoco)
    with pytest.raises(
        EnvError, match=r"Hopper-v5 needs a package.*pip install \"rlnorm\[mujoco\]"
    ):
        make("Hopper-v5")


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("mujoco", "imageio")),
    reason='MuJoCo is not installed (pip install "rlnorm[mujoco]")',
)
def test_mujoco_inverted_pendulum_through_the_adapter() -> None:
    """InvertedPendulum-v5: Box actions as tensors, float32 observations, reward 1 per
    step the pole stays up (v5 gives 0 on the falling step), terminations followed by
    next-step autoresets (reward 0, no flags)."""
    env = make("InvertedPendulum-v5", 2)
    assert isinstance(env, GymnasiumVecEnv) and env.max_episode_steps == 1000
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 4) and obs.dtype == torch.float32
    pushes = torch.tensor([[3.0], [-3.0]])  # full force one way: the pole falls
    was_done = torch.zeros(2, dtype=torch.bool)
    ends = 0
    for _ in range(60):
        obs, reward, terminated, truncated, _ = env.step(pushes)
        assert torch.equal(reward, (~was_done & ~terminated).float())
        assert not (terminated & was_done).any() and not truncated.any()
        ends += int(terminated.sum())
        was_done = terminated
    assert ends >= 4
