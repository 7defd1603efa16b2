"""The torch CartPole against gymnasium's CartPole-v1: physics, flags, autoreset, inputs.

Parity tests run in float64 and copy gymnasium's state into the torch env before every
step, so each comparison checks one transition (a chaotic system amplifies rounding
differences of 1e-16 if two trajectories are left to run freely).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv

from rlnorm.envs import ENV_REGISTRY, CartPole, TorchVecEnv, env_ids, make
from rlnorm.errors import EnvError, UnknownNameError

F64 = torch.float64


def assert_fresh(rows: torch.Tensor, bound: float = 0.05) -> None:
    """``rows`` are reset states: within +-``bound`` as rounded to their dtype."""
    assert rows.abs().max() <= torch.tensor(bound, dtype=rows.dtype)


def balancing_action(state: np.ndarray) -> int:
    """A linear controller that keeps the pole up for all 500 steps, noise or not."""
    x, x_dot, theta, theta_dot = state
    return int(theta + 0.5 * theta_dot + 0.05 * x + 0.2 * x_dot > 0)


def test_one_step_parity_with_gymnasium_over_10k_transitions() -> None:
    """obs, reward, terminated and truncated match gym.make("CartPole-v1") to 1e-9.

    Eight sub-envs follow a balancing controller with 20% random actions, so their
    episodes reach gymnasium's 500-step TimeLimit; sixteen act at random and terminate.
    A sub-env whose episode ended is checked for the autoreset step instead, then its
    gymnasium twin is reset.
    """
    n_balanced, n_random, n_steps = 8, 16, 560
    k = n_balanced + n_random
    rng = np.random.default_rng(0)
    gym_envs = [gym.make("CartPole-v1") for _ in range(k)]
    for i, g in enumerate(gym_envs):
        g.reset(seed=i)
    env = CartPole(num_envs=k, dtype=F64)
    env.reset(seed=0)
    ended = np.zeros(k, dtype=bool)
    checked = terminations = truncations = episodes = reset_steps = 0
    for _ in range(n_steps):
        states = np.stack([g.unwrapped.state for g in gym_envs])
        env.state = torch.from_numpy(states)
        actions = rng.integers(0, 2, size=k)
        for i in range(n_balanced):
            if rng.random() >= 0.2:
                actions[i] = balancing_action(states[i])
        obs, reward, terminated, truncated, info = env.step(torch.from_numpy(actions))
        assert info == {}
        for i, g in enumerate(gym_envs):
            if ended[i]:  # the autoreset step: reward 0, no flags, a fresh state
                assert reward[i].item() == 0.0
                assert not terminated[i] and not truncated[i]
                assert_fresh(obs[i])
                g.reset(seed=int(rng.integers(2**31)))
                ended[i] = False
                reset_steps += 1
                continue
            g_obs, g_reward, g_term, g_trunc, _ = g.step(int(actions[i]))
            np.testing.assert_allclose(obs[i].numpy(), g.unwrapped.state, rtol=0, atol=1e-9)
            np.testing.assert_allclose(obs[i].float().numpy(), g_obs, rtol=1e-6, atol=1e-7)
            assert reward[i].item() == g_reward
            assert bool(terminated[i]) == g_term
            assert bool(truncated[i]) == g_trunc
            checked += 1
            terminations += g_term
            truncations += g_trunc
            ended[i] = g_term or g_trunc
            episodes += ended[i]
    assert checked >= 10_000
    assert truncations >= n_balanced  # every balanced episode reached the time limit
    assert terminations >= 200
    assert reset_steps == episodes - ended.sum()  # every ended episode was autoreset
    for g in gym_envs:
        g.close()


def test_parity_with_gymnasium_vector_env_including_autoreset() -> None:
    """Step by step, the flags and rewards equal CartPoleVectorEnv's, autoreset steps too.

    A short time limit makes truncations and terminations both frequent. Rows on an
    autoreset step hold fresh random states in both envs (different generators), so only
    their bounds are compared; every other row must match gymnasium's state.
    """
    n, limit = 16, 40
    rng = np.random.default_rng(1)
    ref = CartPoleVectorEnv(num_envs=n, max_episode_steps=limit)
    ref.reset(seed=1)
    env = CartPole(num_envs=n, dtype=F64, max_episode_steps=limit)
    env.reset(seed=1)
    resets = truncations = 0
    for _ in range(300):
        env.state = torch.from_numpy(ref.state.T.copy())
        was_done = ref.prev_done.copy()
        actions = rng.integers(0, 2, size=n)
        balanced = np.array([balancing_action(s) for s in ref.state.T])
        actions[: n // 2] = balanced[: n // 2]
        obs, reward, terminated, truncated, _ = env.step(torch.from_numpy(actions))
        _, g_reward, g_term, g_trunc, _ = ref.step(actions)
        np.testing.assert_array_equal(reward.numpy(), g_reward)
        np.testing.assert_array_equal(terminated.numpy(), g_term)
        np.testing.assert_array_equal(truncated.numpy(), g_trunc)
        live = ~was_done
        np.testing.assert_allclose(obs.numpy()[live], ref.state.T[live], rtol=0, atol=1e-9)
        assert np.abs(obs.numpy()[was_done]).max(initial=0.0) <= 0.05
        resets += int(was_done.sum())
        truncations += int(g_trunc.sum())
    assert resets > 50 and truncations > 20


def test_terminated_and_truncated_together_on_the_last_step_like_gymnasium() -> None:
    """A pole that falls on step 500 gives terminated and truncated both True in both."""
    g = gym.make("CartPole-v1")
    g.reset(seed=0)
    env = CartPole(num_envs=1, dtype=F64)
    env.reset(seed=0)
    for t in range(500):
        if t == 499:  # cart about to leave the track
            g.unwrapped.state = np.array([2.399, 1.0, 0.0, 0.0])
        env.state = torch.from_numpy(g.unwrapped.state).reshape(1, 4)
        action = balancing_action(g.unwrapped.state)
        _, g_reward, g_term, g_trunc, _ = g.step(action)
        _, reward, terminated, truncated, _ = env.step(torch.tensor([action]))
        assert (bool(terminated), bool(truncated), reward.item()) == (g_term, g_trunc, g_reward)
    assert g_term and g_trunc


def test_autoreset_returns_final_obs_then_fresh_state_and_leaves_others_alone() -> None:
    """End step: final obs, reward 1, flag set. Next step: action ignored, reward 0,
    flags False, a fresh state within +-0.05. Other sub-envs step as if alone."""
    start = torch.tensor([[0.0, 0.0, 0.01, 0.0], [2.399, 1.0, 0.0, 0.0], [0.01, 0.0, -0.02, 0.1]])

    def ending_env() -> tuple[CartPole, torch.Tensor]:
        env = CartPole(num_envs=3)
        env.reset(seed=0)
        env.state = start
        obs, reward, terminated, truncated, _ = env.step(torch.tensor([1, 1, 0]))
        assert terminated.tolist() == [False, True, False]
        assert not truncated.any()
        assert reward.tolist() == [1.0, 1.0, 1.0]
        assert obs[1, 0].item() > 2.4  # the final observation, past the edge of the track
        return env, obs

    env, obs = ending_env()
    # The sub-envs that did not end must behave exactly like an env started from them.
    alone = CartPole(num_envs=2)
    alone.reset(seed=5)
    alone.state = obs[[0, 2]]
    alone_obs, *_ = alone.step(torch.tensor([0, 1]))

    obs2, reward2, terminated2, truncated2, _ = env.step(torch.tensor([0, 0, 1]))
    assert reward2.tolist() == [1.0, 0.0, 1.0]
    assert not terminated2.any() and not truncated2.any()
    assert_fresh(obs2[1])
    assert not torch.equal(obs2[1], start[1])
    torch.testing.assert_close(obs2[[0, 2]], alone_obs, rtol=0, atol=0)

    # The same history with another action for sub-env 1 on its reset step: no change.
    twin, _ = ending_env()
    obs3, *_ = twin.step(torch.tensor([0, 1, 1]))
    torch.testing.assert_close(obs3[1], obs2[1], rtol=0, atol=0)


def test_truncation_counts_steps_per_episode_and_restarts_after_autoreset() -> None:
    """With a limit of 3: truncated on the 3rd step, reset on the 4th, again on the 7th."""
    env = CartPole(num_envs=2, max_episode_steps=3)
    env.reset(seed=0)
    flags = []
    for _ in range(7):
        _, reward, _, truncated, _ = env.step(torch.tensor([0, 1]))
        flags.append((truncated.tolist(), reward.tolist()))
    ones, zeros = [1.0, 1.0], [0.0, 0.0]
    no, yes = [False, False], [True, True]
    episode = [(no, ones), (no, ones), (yes, ones)]
    assert flags == [*episode, (no, zeros), *episode]


def test_spaces_and_attributes_match_gymnasium() -> None:
    env = make("CartPole-v1", num_envs=5)
    ref = gym.make("CartPole-v1")
    ref_vec = gym.make_vec("CartPole-v1", num_envs=5, vectorization_mode="vector_entry_point")
    assert isinstance(env, TorchVecEnv)
    assert env.env_id == "CartPole-v1" and env.num_envs == 5
    assert env.single_observation_space == ref.observation_space
    assert env.single_action_space == ref.action_space
    assert env.observation_space == ref_vec.observation_space
    assert env.action_space == ref_vec.action_space
    assert env.max_episode_steps == ref.spec.max_episode_steps == 500
    np.testing.assert_array_equal(env.single_observation_space.high, ref.observation_space.high)
    ref_vec.close()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_envs", [1, 7])
def test_shapes_dtypes_and_devices(dtype: torch.dtype, num_envs: int) -> None:
    env = make("CartPole-v1", num_envs=num_envs, dtype=dtype)
    obs, info = env.reset(seed=0)
    assert info == {}
    assert obs.shape == (num_envs, 4) and obs.dtype == dtype and obs.device == env.device
    assert env.state.shape == (num_envs, 4) and env.state.dtype == dtype
    assert env.observation_space.contains(obs.float().numpy())
    for _ in range(30):  # through some autoresets
        out = env.step(torch.randint(0, 2, (num_envs,)))
        obs, reward, terminated, truncated, _ = out
        assert obs.shape == (num_envs, 4) and obs.dtype == dtype and obs.is_contiguous()
        assert reward.shape == (num_envs,) and reward.dtype == dtype
        assert terminated.shape == truncated.shape == (num_envs,)
        assert terminated.dtype == truncated.dtype == torch.bool
        assert all(t.device == env.device and not t.requires_grad for t in out[:4])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_dtypes_step_and_reset(dtype: torch.dtype) -> None:
    """Low-precision dtypes draw fresh states in float32 and store them in ``dtype``."""
    env = CartPole(num_envs=32, dtype=dtype)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == dtype
    assert_fresh(obs)
    actions = torch.Generator().manual_seed(0)
    resets = 0
    for _ in range(60):
        obs, reward, *_ = env.step(torch.randint(0, 2, (32,), generator=actions))
        assert obs.dtype == reward.dtype == dtype and torch.isfinite(obs).all()
        resets += int((reward == 0).sum())
    assert resets > 10  # random episodes ended and restarted


def test_returned_tensors_are_not_aliased_with_the_env() -> None:
    """Writing into a returned observation does not move the env, and vice versa."""
    env = CartPole(num_envs=4)
    obs, _ = env.reset(seed=0)
    state = env.state.clone()
    obs.fill_(1.0)
    torch.testing.assert_close(env.state, state)
    obs, *_ = env.step(torch.zeros(4, dtype=torch.long))
    kept = obs.clone()
    env.step(torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(obs, kept)


def test_seeding_is_reproducible() -> None:
    def rollout(seed: int | None) -> list[torch.Tensor]:
        env = CartPole(num_envs=8)
        obs, _ = env.reset(seed=seed)
        actions = torch.Generator().manual_seed(0)
        out = [obs]
        for _ in range(60):  # long enough for random episodes to end and autoreset
            out.append(env.step(torch.randint(0, 2, (8,), generator=actions))[0])
        return out

    first, again, other = rollout(3), rollout(3), rollout(4)
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(rollout(None)[0], rollout(None)[0])  # unseeded envs differ

    env = CartPole(num_envs=8)
    obs_a, _ = env.reset(seed=11)
    env.reset(seed=12)
    obs_b, _ = env.reset(seed=11)
    torch.testing.assert_close(obs_a, obs_b, rtol=0, atol=0)
    assert_fresh(obs_a)


def test_reset_options_set_the_bounds_of_later_autoresets_too() -> None:
    env = CartPole(num_envs=64, dtype=F64)
    obs, _ = env.reset(seed=0, options={"low": 0.1, "high": 0.15})
    assert obs.min().item() >= 0.1 and obs.max().item() <= 0.15
    env.state = torch.tensor([[3.0, 0.0, 0.0, 0.0]]).expand(64, 4)  # all terminal
    env.step(torch.zeros(64, dtype=torch.long))
    obs, reward, *_ = env.step(torch.zeros(64, dtype=torch.long))
    assert reward.sum().item() == 0.0
    assert obs.min().item() >= 0.1 and obs.max().item() <= 0.15
    with pytest.raises(EnvError, match="low <= high"):
        env.reset(options={"low": 0.1, "high": -0.1})


def test_wide_reset_bounds_never_report_a_fresh_state_as_terminated() -> None:
    """Gymnasium clears the flags on the autoreset step even if the fresh state is out."""
    env = CartPole(num_envs=256)
    env.reset(seed=0, options={"low": -3.0, "high": 3.0})
    env.state = torch.tensor([[3.0, 0.0, 0.0, 0.0]]).expand(256, 4)
    env.step(torch.zeros(256, dtype=torch.long))
    obs, _, terminated, truncated, _ = env.step(torch.zeros(256, dtype=torch.long))
    assert (obs[:, 2].abs() > 0.21).any()  # some fresh states are beyond the angle limit
    assert not terminated.any() and not truncated.any()


def test_state_is_settable_and_validated() -> None:
    env = CartPole(num_envs=3, dtype=F64)
    env.reset(seed=0)
    env.state = np.zeros((3, 4))  # numpy is accepted and converted
    assert env.state.dtype == F64 and env.state.abs().sum().item() == 0.0
    env.state[1] = torch.tensor([0.0, 0.0, 0.1, 0.0], dtype=F64)  # in-place writes take effect
    obs, *_ = env.step(torch.tensor([0, 0, 0]))
    assert obs[1, 2].item() == 0.1  # theta moves with the old theta_dot, 0
    assert obs[1, 3].item() > obs[0, 3].item() > 0  # gravity adds to the push's effect
    with pytest.raises(EnvError, match=r"shape \(3, 4\).*got \(4, 3\)"):
        env.state = torch.zeros(4, 3)
    with pytest.raises(EnvError, match=r"got \(3,\)"):
        env.state = torch.zeros(3)


def test_state_set_from_a_tensor_requiring_grad_leaves_outputs_grad_free() -> None:
    env = CartPole(num_envs=2)
    env.reset(seed=0)
    env.state[:] = torch.zeros(2, 4, requires_grad=True)
    assert env.state.abs().sum().item() == 0.0 and not env.state.requires_grad
    obs, reward, *_ = env.step(torch.tensor([0, 1]))
    assert not obs.requires_grad and not reward.requires_grad
    assert not env.state.requires_grad


def test_actions_of_other_integer_types_are_accepted() -> None:
    env = CartPole(num_envs=3)
    expected = None
    for actions in (
        torch.tensor([0, 1, 1]),
        torch.tensor([0, 1, 1], dtype=torch.int32),
        torch.tensor([0, 1, 1], dtype=torch.uint8),
        torch.tensor([False, True, True]),
        np.array([0, 1, 1]),
        [0, 1, 1],
    ):
        env.reset(seed=0)
        obs, *_ = env.step(actions)
        expected = obs if expected is None else expected
        torch.testing.assert_close(obs, expected, rtol=0, atol=0)
    env.reset(seed=0)
    assert not torch.equal(env.step([1, 0, 0])[0], expected)  # the actions did matter


@pytest.mark.parametrize(
    ("actions", "message"),
    [
        (torch.tensor([[0], [1], [0]]), r"shape \(3,\).*got \(3, 1\)"),
        (torch.tensor([0, 1]), r"shape \(3,\).*got \(2,\)"),
        (torch.tensor(1), r"shape \(3,\).*got \(\)"),
        (torch.tensor([0, 2, 1]), r"in \{0, 1\}, got values \[0, 1, 2\]"),
        (torch.tensor([0, -1, 1]), r"in \{0, 1\}, got values \[-1, 0, 1\]"),
        (torch.tensor([0.0, float("nan"), 1.0]), "contain NaN"),
        (torch.tensor([0.0, 1.0, 1.0]), r"integers.*torch.float32"),
    ],
)
def test_bad_actions_raise_env_error(actions: torch.Tensor, message: str) -> None:
    env = CartPole(num_envs=3)
    env.reset(seed=0)
    state = env.state.clone()
    with pytest.raises(EnvError, match=message):
        env.step(actions)
    torch.testing.assert_close(env.state, state)  # a rejected step changes nothing


def test_step_before_reset_raises() -> None:
    with pytest.raises(EnvError, match="reset"):
        CartPole(num_envs=2).step(torch.tensor([0, 1]))


def test_make_registry_and_its_errors() -> None:
    assert "CartPole-v1" in env_ids() and env_ids() == sorted(ENV_REGISTRY)
    env = make("CartPole-v1", num_envs=2, dtype=F64, max_episode_steps=10)
    assert isinstance(env, CartPole) and env.dtype == F64 and env.max_episode_steps == 10
    assert make("CartPole-v1", num_envs=np.int64(3)).num_envs == 3  # numpy ints are ints
    with pytest.raises(
        UnknownNameError, match=r"'cartpole-v1'.*Did you mean 'CartPole-v1'.*Valid envs: "
    ):
        make("cartpole-v1")
    with pytest.raises(EnvError, match=r"num_envs must be an int >= 1, got 0"):
        make("CartPole-v1", num_envs=0)
    with pytest.raises(EnvError, match="num_envs"):
        CartPole(num_envs=-2)
    with pytest.raises(EnvError, match="floating"):
        CartPole(dtype=torch.int64)
    with pytest.raises(EnvError, match="max_episode_steps"):
        CartPole(max_episode_steps=0)


def test_inference_mode_on_either_side_of_construction() -> None:
    """Built inside inference mode and stepped outside it, and the other way round."""
    with torch.inference_mode():
        env = CartPole(num_envs=2)
    env.reset(seed=0)
    env.step(torch.tensor([0, 1]))
    with torch.inference_mode():
        env.step(torch.tensor([0, 1]))
        env.reset(seed=1)
    obs, *_ = env.step(torch.tensor([0, 1]))
    assert obs.shape == (2, 4) and not obs.is_inference()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_without_host_syncs() -> None:
    """On CUDA every output lives on the device, a step never syncs with the host, and
    one step equals the CPU env's in float64."""
    cpu = CartPole(num_envs=64, dtype=F64)
    gpu = CartPole(num_envs=64, device="cuda", dtype=F64)
    cpu.reset(seed=0)
    gpu.reset(seed=0)
    actions = torch.Generator().manual_seed(0)
    fresh = torch.zeros(64, dtype=torch.bool)  # rows on an autoreset step: random states
    for _ in range(50):
        gpu.state = cpu.state
        a = torch.randint(0, 2, (64,), generator=actions)
        a_gpu = a.cuda()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            out_gpu = gpu.step(a_gpu)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        out_cpu = cpu.step(a)
        assert all(t.device.type == "cuda" for t in out_gpu[:4])
        torch.testing.assert_close(out_gpu[0].cpu()[~fresh], out_cpu[0][~fresh], rtol=0, atol=1e-9)
        for got, want in zip(out_gpu[1:4], out_cpu[1:4], strict=True):
            torch.testing.assert_close(got.cpu(), want, rtol=0, atol=1e-9)
        fresh = out_cpu[2] | out_cpu[3]
