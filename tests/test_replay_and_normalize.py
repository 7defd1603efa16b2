"""The device replay buffer (valid transitions only, final observations, wrap-around, state
round trip) and rollout-side observation normalization (updates only on training data,
frozen in evaluation, restored bit-exactly from a checkpoint)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import rlnorm
from rlnorm.agents.ppo import PPO
from rlnorm.config import build_config
from rlnorm.envs import make
from rlnorm.normalize import ObservationNormalizer, RewardScaler, RunningMoments
from rlnorm.replay import ReplayBuffer
from rlnorm.rollout import Rollout, RolloutManager, uniform_actions

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)


def rollout_from(obs: torch.Tensor, valid: torch.Tensor) -> Rollout:
    """A rollout whose observation row t is ``obs[t]`` and whose action/reward encode t."""
    steps, n = valid.shape
    t = torch.arange(steps, dtype=torch.float32)[:, None].expand(steps, n)
    return Rollout(
        obs=obs,
        actions=t[..., None].clone(),
        rewards=t.clone(),
        terminated=torch.zeros(steps, n, dtype=torch.bool),
        truncated=torch.zeros(steps, n, dtype=torch.bool),
        valid=valid,
        extras={},
    )


def test_replay_keeps_valid_transitions_in_order_with_their_next_observations() -> None:
    steps, n = 4, 2
    obs = torch.arange((steps + 1) * n * 3, dtype=torch.float32).reshape(steps + 1, n, 3)
    valid = torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]], dtype=torch.bool)
    buffer = ReplayBuffer(16, OBS, ACT)
    buffer.add(rollout_from(obs, valid))
    assert len(buffer) == int(valid.sum())
    stored = buffer.storage
    expected_rows = [(t, i) for t in range(steps) for i in range(n) if valid[t, i]]
    for row, (t, i) in enumerate(expected_rows):
        assert torch.equal(stored["obs"][row], obs[t, i])
        assert torch.equal(stored["next_obs"][row], obs[t + 1, i])
        assert stored["rewards"][row] == t


def test_replay_wraps_around_overwriting_the_oldest() -> None:
    buffer = ReplayBuffer(5, OBS, ACT)
    for k in range(4):
        obs = torch.full((3, 1, 3), float(k))
        buffer.add(rollout_from(obs, torch.ones(2, 1, dtype=torch.bool)))
    assert len(buffer) == 5
    # 8 transitions went in; the last 5 (rollouts 1..3, in ring order) remain.
    firsts = sorted(buffer.storage["obs"][:5, 0].tolist())
    assert firsts == [1.0, 2.0, 2.0, 3.0, 3.0]


def test_replay_samples_only_stored_rows_and_round_trips() -> None:
    buffer = ReplayBuffer(100, OBS, ACT)
    obs = torch.randn(4, 3, 3)
    buffer.add(rollout_from(obs, torch.ones(3, 3, dtype=torch.bool)))
    batch = buffer.sample(1000, generator=torch.Generator().manual_seed(0))
    stored = buffer.storage["obs"][:9]
    assert all((stored == row).all(-1).any() for row in batch.obs)

    copy = ReplayBuffer(100, OBS, ACT)
    copy.load_state_dict(buffer.state_dict())
    assert len(copy) == 9 and int(copy.position) == 9
    for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
        assert torch.equal(copy.storage[name][:9], buffer.storage[name][:9])


def test_replay_rejects_a_rollout_bigger_than_itself_and_a_foreign_state() -> None:
    buffer = ReplayBuffer(4, OBS, ACT)
    try:
        buffer.add(rollout_from(torch.zeros(4, 2, 3), torch.ones(3, 2, dtype=torch.bool)))
    except ValueError as e:
        assert "does not fit a replay buffer of 4" in str(e)
    else:
        raise AssertionError("expected a ValueError")
    other = ReplayBuffer(4, gym.spaces.Box(-1, 1, (5,), np.float32), ACT)
    other.add(rollout_from(torch.zeros(2, 1, 5), torch.ones(1, 1, dtype=torch.bool)))
    try:
        buffer.load_state_dict(other.state_dict())
    except ValueError as e:
        assert "replay field 'obs'" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_uniform_actions_cover_the_space() -> None:
    box = uniform_actions(ACT, 10_000, torch.device("cpu"))
    assert box.shape == (10_000, 1) and box.min() >= -2 and box.max() <= 2
    assert box.min() < -1.9 and box.max() > 1.9
    discrete = uniform_actions(gym.spaces.Discrete(3, start=1), 1000, torch.device("cpu"))
    assert set(discrete.tolist()) == {1, 2, 3}


# --------------------------------------------------------------------------- normalization


def test_running_moments_match_the_moments_of_everything_seen() -> None:
    data = torch.randn(1000, 4, dtype=torch.float64) * 3 + 5
    moments = RunningMoments((4,))
    for chunk in data.split(37):
        moments.update(chunk)
    torch.testing.assert_close(moments.mean, data.mean(0))
    torch.testing.assert_close(moments.var, data.var(0, unbiased=False))
    assert moments.count == 1000


def test_reward_scaler_divides_by_the_std_of_the_discounted_return() -> None:
    scaler = RewardScaler(num_envs=1, gamma=0.0)  # gamma 0: the return is the reward itself
    rewards = torch.tensor([1.0, 3.0, 5.0, 7.0])
    for r in rewards:
        out = scaler(r[None], torch.tensor([False]))
    expected_std = torch.sqrt(rewards.double().var(unbiased=False) + 1e-8)
    torch.testing.assert_close(out.double(), rewards[-1:].double() / expected_std)


def make_agent() -> PPO:
    cartpole = make("CartPole-v1", num_envs=1)
    return PPO(
        cartpole.single_observation_space,
        cartpole.single_action_space,
        build_config(PPO, {"rollout_steps": 16}),
        "batch",
    )


def test_statistics_update_while_collecting_and_freeze_in_evaluation(tmp_path: Path) -> None:
    agent = make_agent()
    agent.obs_normalizer = ObservationNormalizer((4,))
    manager = RolloutManager(agent, make("CartPole-v1", 4), make("CartPole-v1", 3))
    manager.reset(seed=0)
    rollout = manager.collect(16)
    moments = agent.obs_normalizer.moments
    assert moments.count == 16 * 4  # the 16 acting observations of each sub-env
    # Stored observations are the normalized ones the networks saw.
    assert rollout.obs.abs().max() <= 10.0
    before = {k: v.clone() for k, v in agent.obs_normalizer.state_dict().items()}
    manager.evaluate(6, seed=1)
    rlnorm.predict(agent, torch.zeros(4))
    for key, value in agent.obs_normalizer.state_dict().items():
        assert torch.equal(value, before[key]), key

    path = rlnorm.save(agent, tmp_path / "ckpt", env_id="CartPole-v1")
    loaded = rlnorm.load(path)
    raw = torch.randn(64, 4) * 2
    assert torch.equal(loaded.obs_normalizer(raw), agent.obs_normalizer(raw))
    assert torch.equal(rlnorm.predict(loaded, raw), rlnorm.predict(agent, raw))


def test_an_agent_without_a_normalizer_saves_none() -> None:
    agent = make_agent()
    assert agent.obs_normalizer is None
    obs = torch.randn(5, 4)
    with rlnorm.acting(agent.actor):
        direct = agent.actor(obs).argmax(-1)
    assert torch.equal(rlnorm.predict(agent, obs), direct)
