"""The rollout manager, evaluation, predict, GAE, and the PPO update's mode discipline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import rlnorm
from rlnorm import envs
from rlnorm.agent import ActOutput
from rlnorm.agents.ppo import PPO, gae
from rlnorm.config import build_config
from rlnorm.rollout import RolloutManager, evaluate


def make_ppo(norm: str = "batch", **overrides: Any) -> PPO:
    env = envs.make("CartPole-v1", 1)
    cfg = build_config(PPO, overrides)
    return PPO(env.single_observation_space, env.single_action_space, cfg, norm)


class SpyAgent(PPO):
    """PPO that records the mode of its networks and the autograd state at every act."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[bool, bool]] = []

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> ActOutput:
        any_training = any(m.training for net in self.modules().values() for m in net.modules())
        self.seen.append((any_training, torch.is_inference_mode_enabled()))
        return super().act(obs, deterministic)


def test_every_act_runs_in_eval_and_inference_mode_and_modes_come_back() -> None:
    env = envs.make("CartPole-v1", 4)
    agent = SpyAgent(
        env.single_observation_space, env.single_action_space, build_config(PPO), "batch"
    )
    for net in agent.modules().values():
        net.train()
    manager = RolloutManager(agent, env, envs.make("CartPole-v1", 3))
    manager.collect(16)
    manager.evaluate(3)
    rlnorm.predict(agent, np.zeros(4, dtype=np.float32))
    assert len(agent.seen) > 16
    assert all(not training and inference for training, inference in agent.seen)
    assert all(m.training for net in agent.modules().values() for m in net.modules())


def test_rollout_shapes_flags_and_final_observations() -> None:
    torch.manual_seed(0)
    env = envs.make("CartPole-v1", 6)
    manager = RolloutManager(make_ppo(), env)
    manager.reset(seed=3)
    r = manager.collect(200)
    assert r.obs.shape == (201, 6, 4) and r.actions.shape == (200, 6)
    assert r.extras["value"].shape == (201, 6) and r.extras["log_prob"].shape == (201, 6)
    assert r.num_steps == 1200
    done = r.terminated | r.truncated
    assert done.any(), "a random-ish policy must end some CartPole episodes in 200 steps"
    # next-step autoreset: the step after an episode end is not a transition
    assert torch.equal(r.valid[1:], ~done[:-1])
    assert r.valid[0].all()
    # the observation after a terminal step is the final observation, outside the bounds
    final = r.obs[1:][r.terminated]
    out_of_bounds = (final[:, 0].abs() > 2.4) | (final[:, 2].abs() > 12 * 2 * np.pi / 360)
    assert out_of_bounds.all()
    assert (r.rewards[~r.valid] == 0).all()


def test_episode_returns_equal_episode_lengths_on_cartpole() -> None:
    env = envs.make("CartPole-v1", 5)
    manager = RolloutManager(make_ppo("none"), env)
    manager.reset(seed=0)
    manager.collect(300)
    returns, lengths = list(manager.episode_returns), list(manager.episode_lengths)
    assert len(returns) > 5
    assert returns == [float(n) for n in lengths]
    assert all(8 <= n <= 500 for n in lengths)


def test_rollout_is_continuous_across_collect_calls() -> None:
    torch.manual_seed(0)
    manager = RolloutManager(make_ppo(), envs.make("CartPole-v1", 3))
    first = manager.collect(20)
    second = manager.collect(20)
    assert torch.equal(first.obs[-1], second.obs[0])
    first_done = first.terminated[-1] | first.truncated[-1]
    assert torch.equal(second.valid[0], ~first_done)


class BadShapeEnv:
    """Wraps CartPole and returns observations of the wrong shape after reset."""

    def __init__(self, n: int) -> None:
        self.inner = envs.make("CartPole-v1", n)
        self.__dict__.update(
            {
                k: getattr(self.inner, k)
                for k in (
                    "env_id",
                    "num_envs",
                    "device",
                    "dtype",
                    "single_observation_space",
                    "single_action_space",
                    "max_episode_steps",
                )
            }
        )

    def reset(self, **kwargs: Any):
        return self.inner.reset(**kwargs)

    def step(self, actions: torch.Tensor):
        obs, *rest = self.inner.step(actions)
        return (obs[:, :3], *rest)


def test_wrong_observation_shape_is_caught_at_the_first_step() -> None:
    manager = RolloutManager(make_ppo(), BadShapeEnv(2))  # type: ignore[arg-type]
    with pytest.raises(rlnorm.EnvError, match=r"shape \(2, 3\), expected \(2, 4\)"):
        manager.collect(5)


class NaNRewardEnv(BadShapeEnv):
    def step(self, actions: torch.Tensor):
        obs, reward, term, trunc, info = self.inner.step(actions)
        self.t = getattr(self, "t", 0) + 1
        if self.t == 3:
            reward = reward.clone()
            reward[1] = float("nan")
        return obs, reward, term, trunc, info


def test_nan_reward_names_step_and_env() -> None:
    manager = RolloutManager(make_ppo(), NaNRewardEnv(3))  # type: ignore[arg-type]
    with pytest.raises(rlnorm.EnvError, match="non-finite reward at rollout step 2, env index 1"):
        manager.collect(5)


@pytest.mark.parametrize("episodes,num_envs", [(7, 3), (3, 5), (20, 20)])
def test_evaluate_runs_exactly_the_requested_episodes(episodes: int, num_envs: int) -> None:
    agent = make_ppo()
    result = evaluate(agent, envs.make("CartPole-v1", num_envs), episodes, seed=1)
    assert result.returns.shape == (episodes,)
    np.testing.assert_array_equal(result.returns, result.lengths.astype(float))
    again = evaluate(agent, envs.make("CartPole-v1", num_envs), episodes, seed=1)
    np.testing.assert_array_equal(result.returns, again.returns)


def test_predict_single_state_and_batch_agree_and_keep_shapes() -> None:
    torch.manual_seed(0)
    agent = make_ppo("batch")
    manager = RolloutManager(agent, envs.make("CartPole-v1", 8))
    rollout = manager.collect(32)
    with rlnorm.training(*agent.modules().values()):
        agent.update(rollout, progress=0.0)  # running statistics now differ from defaults
    states = torch.randn(10, 4) * 0.5
    batch_actions = rlnorm.predict(agent, states)
    assert batch_actions.shape == (10,)
    single = [rlnorm.predict(agent, s) for s in states]
    assert all(a.shape == () for a in single)
    assert torch.equal(torch.stack(single), batch_actions)
    as_numpy = rlnorm.predict(agent, states.numpy())
    assert isinstance(as_numpy, np.ndarray) and as_numpy.shape == (10,)
    assert isinstance(rlnorm.predict(agent, [0.0, 0.1, 0.0, -0.1]), np.ndarray)


@pytest.mark.parametrize("bad", [(3,), (2, 5), (2, 2, 4)])
def test_predict_rejects_wrong_shapes(bad: tuple[int, ...]) -> None:
    with pytest.raises(rlnorm.EnvError, match=r"does not fit the agent's observation space \(4,\)"):
        rlnorm.predict(make_ppo(), torch.zeros(bad))


def naive_gae(rewards, values, terminated, truncated, gamma, lam):
    """Per-env, per-step reference: restart the sum at every episode end."""
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            total, discount = 0.0, 1.0
            for k in range(t, T):
                nv = 0.0 if terminated[k, i] else values[k + 1, i]
                delta = rewards[k, i] + gamma * nv - values[k, i]
                total += discount * delta
                if terminated[k, i] or truncated[k, i]:
                    break
                discount *= gamma * lam
            adv[t, i] = total
    return adv


def test_gae_matches_reference_and_bootstraps_truncation() -> None:
    g = torch.Generator().manual_seed(0)
    T, N = 12, 3
    rewards = torch.rand(T, N, generator=g, dtype=torch.float64)
    values = torch.rand(T + 1, N, generator=g, dtype=torch.float64)
    terminated = torch.zeros(T, N, dtype=torch.bool)
    truncated = torch.zeros(T, N, dtype=torch.bool)
    terminated[4, 0] = True
    truncated[6, 1] = True
    terminated[9, 2] = truncated[9, 2] = True
    got = gae(rewards, values, terminated, truncated, 0.9, 0.8)
    want = naive_gae(
        rewards.numpy(), values.numpy(), terminated.numpy(), truncated.numpy(), 0.9, 0.8
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    # a truncated step bootstraps from the final observation's value, a terminated one does not
    assert got[6, 1] == pytest.approx(rewards[6, 1] + 0.9 * values[7, 1] - values[6, 1])
    assert got[4, 0] == pytest.approx(rewards[4, 0] - values[4, 0])


@pytest.mark.parametrize("norm_update", ["frozen", "batch"])
def test_ppo_update_metrics_and_norm_diagnostics(norm_update: str) -> None:
    torch.manual_seed(0)
    agent = make_ppo("batch", norm_update=norm_update, epochs=2)
    with torch.no_grad():  # a sharp policy, as after some training (the init is near-uniform)
        agent.actor.body[-1].weight *= 300
    manager = RolloutManager(agent, envs.make("CartPole-v1", 8))
    for _ in range(3):
        rollout = manager.collect(32)
        with rlnorm.training(*agent.modules().values()):
            metrics = agent.update(rollout, progress=0.5)
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics["norm/gap/policy_kl"] > 1e-3, "BatchNorm's train/eval gap must be visible"
    assert metrics["norm/ppo/first_minibatch_ratio_deviation"] < 1e-5, (
        "recomputed old log-probs: ratio starts at 1"
    )
    assert metrics["train/learning_rate"] == pytest.approx(0.5e-3)


def test_ppo_without_norm_has_no_train_eval_gap() -> None:
    agent = make_ppo("none", old_log_prob="behaviour", epochs=1)
    with torch.no_grad():
        agent.actor.body[-1].weight *= 300
    manager = RolloutManager(agent, envs.make("CartPole-v1", 8))
    with rlnorm.training(*agent.modules().values()):
        metrics = agent.update(manager.collect(32), progress=0.0)
    assert metrics["norm/gap/policy_kl"] == pytest.approx(0.0, abs=1e-9)
    assert metrics["norm/ppo/first_minibatch_ratio_deviation"] < 1e-5


def test_behaviour_log_probs_expose_batchnorm_gap_in_batch_mode() -> None:
    torch.manual_seed(0)
    agent = make_ppo("batch", norm_update="batch", old_log_prob="behaviour", epochs=1)
    with torch.no_grad():
        agent.actor.body[-1].weight *= 300
    manager = RolloutManager(agent, envs.make("CartPole-v1", 8))
    with rlnorm.training(*agent.modules().values()):
        metrics = agent.update(manager.collect(32), progress=0.0)
    assert metrics["norm/ppo/first_minibatch_ratio_deviation"] > 1e-3


def test_frozen_update_refreshes_running_statistics() -> None:
    agent = make_ppo("batch", epochs=1)
    bn: nn.BatchNorm1d = agent.actor.body[1]
    before = bn.running_mean.clone()
    manager = RolloutManager(agent, envs.make("CartPole-v1", 8))
    with rlnorm.training(*agent.modules().values()):
        agent.update(manager.collect(32), progress=0.0)
    assert not torch.equal(before, bn.running_mean)
    assert bn.momentum is None  # cumulative average by default


def test_ppo_config_errors_name_the_key() -> None:
    with pytest.raises(rlnorm.ConfigError, match=r"norm_update.*frozen"):
        make_ppo(norm_update="sometimes")
    with pytest.raises(rlnorm.ConfigError, match=r"agent\.epochs: expected int"):
        make_ppo(epochs="many")
    with pytest.raises(rlnorm.ConfigError, match=r"agent\.learning_rate.*Did you mean 'lr'"):
        make_ppo(learning_rate=1e-3)


@pytest.mark.parametrize("action_space", ["Box"])
def test_ppo_continuous_actions_are_clipped_for_the_env(action_space: str) -> None:
    import gymnasium as gym

    space = gym.spaces.Box(-2.0, 2.0, (1,), dtype=np.float32)
    agent = PPO(
        gym.spaces.Box(-np.inf, np.inf, (3,)),
        space,
        build_config(PPO, {"log_std_init": 2.0}),
        "batch",
    )
    with rlnorm.acting(*agent.acting_modules()):
        out = agent.act(torch.randn(256, 3))
    assert out.actions.shape == (256, 1)
    assert (out.actions.abs() <= 2.0).all() and (out.extras["sample"].abs() > 2.0).any()
