"""The torch Pendulum, MountainCar, MountainCarContinuous and Acrobot against gymnasium.

Parity runs in float64 against gymnasium's own envs: one step from thousands of random
states (the state copied in, the same action), and free-running trajectories from the
same start state over several episodes, with controllers that make episodes terminate as
well as truncate. Then reward conventions and termination thresholds, autoreset,
truncation, spaces, dtypes, seeding, the settable state, bad inputs, ``make`` and the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlnorm import cli
from rlnorm.envs import (
    ENV_REGISTRY,
    Acrobot,
    MountainCar,
    MountainCarContinuous,
    Pendulum,
    TorchVecEnv,
    env_ids,
    make,
)
from rlnorm.errors import EnvError

F64 = torch.float64
IDS = ["Pendulum-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Acrobot-v1"]
CONTINUOUS = {"Pendulum-v1", "MountainCarContinuous-v0"}
OBS_DIM = {"Pendulum-v1": 3, "MountainCar-v0": 2, "MountainCarContinuous-v0": 2, "Acrobot-v1": 6}
PI = math.pi


def gym_state(env: gym.Env) -> np.ndarray:
    """Gymnasium's state in float64 (MountainCar keeps a tuple, the continuous car float32)."""
    return np.asarray(env.unwrapped.state, dtype=np.float64)


def obs_of(env_id: str, state: np.ndarray) -> np.ndarray:
    """Gymnasium's observation of ``state``, computed in float64 (gymnasium rounds to float32)."""
    if env_id == "Pendulum-v1":
        return np.array([np.cos(state[0]), np.sin(state[0]), state[1]])
    if env_id == "Acrobot-v1":
        c, s = np.cos(state[:2]), np.sin(state[:2])
        return np.array([c[0], s[0], c[1], s[1], state[2], state[3]])
    return state


def torch_actions(env_id: str, actions: np.ndarray | list) -> torch.Tensor:
    """A batch of actions in the env's shape: ``(N, 1)`` float64 or ``(N,)`` int64."""
    if env_id in CONTINUOUS:
        return torch.tensor(np.asarray(actions, dtype=np.float64)).reshape(-1, 1)
    return torch.tensor(np.asarray(actions, dtype=np.int64))


def gym_action(env_id: str, action: float) -> np.ndarray | int:
    """One action as gymnasium's step takes it (a float64 array, so it computes in float64)."""
    return np.array([action], dtype=np.float64) if env_id in CONTINUOUS else int(action)


def uniform(rng: np.random.Generator, low: list[float], high: list[float], n: int) -> np.ndarray:
    return rng.uniform(low, high, size=(n, len(low)))


def random_states(env_id: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """States over the whole reachable space, plus edge cases of each env's clipping."""
    if env_id == "Pendulum-v1":  # unwrapped angles; speeds up to and past the +-8 clip
        return uniform(rng, [-4 * PI, -9.0], [4 * PI, 9.0], n)
    if env_id == "Acrobot-v1":
        states = uniform(rng, [-PI, -PI, -4 * PI, -9 * PI], [PI, PI, 4 * PI, 9 * PI], n)
        states[: n // 10, :2] *= 2.5  # angles outside [-pi, pi], wrapped by several turns
        return states
    states = uniform(rng, [-1.2, -0.07], [0.6, 0.07], n)
    states[: n // 10] = uniform(rng, [-1.2, -0.07], [-1.15, -0.01], n // 10)  # at the left wall
    states[n // 10 : n // 5] = uniform(rng, [0.4, 0.0], [0.6, 0.07], n // 10)  # near the goal
    return states


def random_actions(env_id: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """Actions of the whole range; continuous ones also beyond it, where gymnasium clips."""
    if env_id == "Pendulum-v1":
        return rng.uniform(-3.0, 3.0, n)
    if env_id == "MountainCarContinuous-v0":
        return rng.uniform(-1.5, 1.5, n)
    return rng.integers(0, 3, n)


@pytest.mark.parametrize("env_id", IDS)
def test_one_step_parity_with_gymnasium_over_random_states(env_id: str) -> None:
    """From 2,000 random states each, one step gives gymnasium's state, obs, reward and
    terminated: to 1e-9 for the state and reward, exactly for the flag.

    Exception: gymnasium's MountainCarContinuous stores its new state as float32, so the
    torch env's float64 state, rounded to float32, must equal gymnasium's exactly (its
    reward and flag are computed before that rounding, so they match to 1e-9 as well).
    """
    n = 2000
    rng = np.random.default_rng(IDS.index(env_id))
    ref = gym.make(env_id).unwrapped
    ref.reset(seed=0)
    states, actions = random_states(env_id, rng, n), random_actions(env_id, rng, n)
    env = make(env_id, num_envs=n, dtype=F64)
    env.reset(seed=0)
    env.state = torch.from_numpy(states)
    obs, reward, terminated, truncated, info = env.step(torch_actions(env_id, actions))
    assert info == {} and not truncated.any()
    new_state = env.state.numpy()
    for i in range(n):
        ref.state = states[i].copy()
        g_obs, g_reward, g_term, g_trunc, _ = ref.step(gym_action(env_id, actions[i]))
        g_state = gym_state(ref)
        if env_id == "MountainCarContinuous-v0":
            np.testing.assert_array_equal(new_state[i].astype(np.float32), ref.state)
        else:
            np.testing.assert_allclose(new_state[i], g_state, rtol=0, atol=1e-9)
            np.testing.assert_allclose(obs[i].numpy(), obs_of(env_id, g_state), rtol=0, atol=1e-9)
        np.testing.assert_allclose(obs[i].float().numpy(), g_obs, rtol=1e-6, atol=1e-7)
        assert abs(reward[i].item() - g_reward) <= 1e-9
        assert bool(terminated[i]) == g_term and not g_trunc
    if env_id != "Pendulum-v1":  # the others terminate from some of these states
        assert 50 <= int(terminated.sum()) < n - 50
    if env_id.startswith("MountainCar"):  # left-wall collisions stopped some cars
        assert (new_state[:, 0] == -1.2).sum() > 20


def pump(speed_index: int, noise: float) -> Callable[[np.ndarray, np.random.Generator], float]:
    """Push in the direction of a velocity (``state[speed_index]``): it adds energy, so
    mountain cars reach the goal and the acrobot swings up. A ``noise`` fraction of the
    actions are random instead."""

    def policy(state: np.ndarray, rng: np.random.Generator) -> float:
        if rng.random() < noise:
            return int(rng.integers(0, 3))
        return 2 if state[speed_index] >= 0 else 0

    return policy


def random_discrete(state: np.ndarray, rng: np.random.Generator) -> float:
    return int(rng.integers(0, 3))


def random_torque(state: np.ndarray, rng: np.random.Generator) -> float:
    return float(rng.uniform(-2.5, 2.5))  # beyond +-2: gymnasium clips


def weak_force(state: np.ndarray, rng: np.random.Generator) -> float:
    return float(np.float32(rng.uniform(-0.3, 0.3)))  # too weak to climb: episodes truncate


def pumping_force(state: np.ndarray, rng: np.random.Generator) -> float:
    return float(np.float32(np.sign(state[1] + 1e-12) * rng.uniform(0.5, 1.2)))


# env id -> (one controller per sub-env, steps, tolerance on the state, resyncs allowed).
TRAJECTORIES = {
    "Pendulum-v1": ([random_torque] * 4, 420, 1e-9, 0),
    "MountainCar-v0": ([pump(1, 0.1)] * 2 + [random_discrete] * 2, 420, 1e-9, 0),
    # Gymnasium stores this car's state as float32 after every step and, from such a
    # state, does part of its arithmetic in float32; the torch env keeps float64, so the
    # trajectories differ by accumulated float32 rounding (4e-7 at most here, up to 1e-5
    # in other 999-step runs).
    "MountainCarContinuous-v0": ([pumping_force, weak_force, weak_force], 1100, 1e-5, 0),
    # Acrobot is chaotic: a rounding difference of 1e-16 (vectorized sin/cos, the order of
    # the RK4 sums) can grow by 1e3 or more in a step near a swing-up (5e-2 after one
    # episode of other seeds). When the free trajectory leaves 1e-9 of gymnasium's, the
    # state is copied in again and counted; every other step must match to 1e-9. With
    # these seeds no copy was needed (largest error 6e-10), but another CPU's sin/cos
    # can round differently.
    "Acrobot-v1": ([pump(3, 0.2)] * 2 + [random_discrete] * 2, 560, 1e-9, 12),
}


@pytest.mark.parametrize("env_id", IDS)
def test_trajectories_match_gymnasium(env_id: str) -> None:
    """Sub-envs run freely next to gym.make(env_id) envs started from the same states,
    through terminations, 200/500/999-step truncations and autoresets.

    On an autoreset step the torch sub-env returns a fresh state with reward 0 and no
    flags; its gymnasium twin is then reset (seeded) and that state copied in.
    """
    controllers, steps, tol, max_resyncs = TRAJECTORIES[env_id]
    k = len(controllers)
    rng = np.random.default_rng(7)
    refs = [gym.make(env_id) for _ in range(k)]
    for i, ref in enumerate(refs):
        ref.reset(seed=i)
    env = make(env_id, num_envs=k, dtype=F64)
    env.reset(seed=0)
    env.state = np.stack([gym_state(ref) for ref in refs])
    ended = np.zeros(k, dtype=bool)
    transitions = terminations = truncations = resyncs = 0
    for _ in range(steps):
        actions = [c(gym_state(ref), rng) for c, ref in zip(controllers, refs, strict=True)]
        _, reward, terminated, truncated, _ = env.step(torch_actions(env_id, actions))
        for i, ref in enumerate(refs):
            if ended[i]:
                assert reward[i].item() == 0.0 and not terminated[i] and not truncated[i]
                ref.reset(seed=int(rng.integers(2**31)))
                env.state[i] = torch.from_numpy(gym_state(ref))
                ended[i] = False
                continue
            _, g_reward, g_term, g_trunc, _ = ref.step(gym_action(env_id, actions[i]))
            assert abs(reward[i].item() - g_reward) <= 1e-9
            assert (bool(terminated[i]), bool(truncated[i])) == (g_term, g_trunc)
            error = float(np.abs(env.state[i].numpy() - gym_state(ref)).max())
            if error > tol:
                assert resyncs < max_resyncs, f"state error {error:.2e} > {tol:g}"
                env.state[i] = torch.from_numpy(gym_state(ref))
                resyncs += 1
            transitions += 1
            terminations += g_term
            truncations += g_trunc
            ended[i] = g_term or g_trunc
    assert transitions >= 1000
    assert terminations >= (0 if env_id == "Pendulum-v1" else 3)
    assert truncations >= 2
    for ref in refs:
        ref.close()


def step_one(env_id: str, state: list[float], action: float, **kwargs: float) -> tuple:
    """One float64 step of the torch env and of gymnasium's from ``state``:
    ``((state, reward, terminated), (gym_state, gym_reward, gym_terminated))``."""
    env = make(env_id, num_envs=1, dtype=F64, **kwargs)
    env.reset(seed=0)
    env.state = torch.tensor([state], dtype=F64)
    _, reward, terminated, _, _ = env.step(torch_actions(env_id, [action]))
    ref = gym.make(env_id, **kwargs).unwrapped
    ref.reset(seed=0)
    ref.state = np.array(state, dtype=np.float64)
    _, g_reward, g_term, _, _ = ref.step(gym_action(env_id, action))
    mine = (env.state[0].tolist(), reward.item(), bool(terminated))
    return mine, (gym_state(ref).tolist(), float(g_reward), g_term)


@pytest.mark.parametrize(
    ("env_id", "goal"), [("MountainCar-v0", 0.5), ("MountainCarContinuous-v0", 0.45)]
)
def test_mountain_car_goal_thresholds_are_exact(env_id: str, goal: float) -> None:
    """A car clipped at the top speed 0.07 lands exactly on the goal: that terminates
    (>=); one ulp short does not. The velocity test is >= goal_velocity, exactly."""
    push = 2 if env_id == "MountainCar-v0" else 1.0
    start = goal - 0.07
    assert start + 0.07 == goal  # so the new position is exactly the goal
    (state, reward, term), (_, g_reward, g_term) = step_one(env_id, [start, 0.07], push)
    assert state == [goal, 0.07] and term and (reward, term) == (g_reward, g_term)
    short = math.nextafter(start, -1.0)
    (state, reward, term), (_, g_reward, g_term) = step_one(env_id, [short, 0.07], push)
    assert state[0] < goal and not term and (reward, term) == (g_reward, g_term)
    for goal_velocity, expected in ((0.07, True), (math.nextafter(0.07, 1.0), False)):
        mine, ref = step_one(env_id, [start, 0.07], push, goal_velocity=goal_velocity)
        assert mine[2] == ref[2] == expected


def test_mountain_car_rewards_minus_one_on_every_step_the_last_too() -> None:
    env = MountainCar(num_envs=2, dtype=F64)
    env.reset(seed=0)
    env.state = torch.tensor([[0.43, 0.07], [-0.5, 0.0]], dtype=F64)
    _, reward, terminated, _, _ = env.step(torch.tensor([2, 1]))
    assert terminated.tolist() == [True, False] and reward.tolist() == [-1.0, -1.0]


def test_mountain_car_continuous_rewards_cost_the_unclipped_action_plus_goal_bonus() -> None:
    """Reward = 100 on reaching the goal - 0.1 a^2, with ``a`` as given: gymnasium clips
    the action for the push only. So 3.0 pushes like 1.0 but costs 0.9."""
    cases = ((3.0, 0.38, True), (1.0, 0.38, True), (-3.0, -0.5, False), (0.5, -0.5, False))
    for action, start, expected_term in cases:
        (_, reward, term), (_, g_reward, g_term) = step_one(
            "MountainCarContinuous-v0", [start, 0.07], action
        )
        assert (reward, term) == (g_reward, g_term) and term == expected_term
        assert reward == (100.0 if term else 0.0) - action**2 * 0.1
    clipped, _ = step_one("MountainCarContinuous-v0", [-0.5, 0.01], 3.0)
    at_bound, _ = step_one("MountainCarContinuous-v0", [-0.5, 0.01], 1.0)
    assert clipped[0] == at_bound[0]  # the same push...
    assert clipped[1] == -(3.0**2 * 0.1) and at_bound[1] == -0.1  # ... but not the same cost


def test_acrobot_rewards_and_termination_threshold() -> None:
    """Reward -1 per step, 0 on the terminating one; terminated iff the tip is above
    ``-cos(theta1) - cos(theta1 + theta2) > 1``. Bisecting the start angle brackets the
    threshold within 1e-12 after a step, and both sides agree with gymnasium."""
    # Hanging at rest (not terminal) and pointing up (terminal through the step).
    for state, expected in (([0.0, 0.0, 0.0, 0.0], -1.0), ([PI, 0.0, 0.0, 0.0], 0.0)):
        (_, reward, term), (_, g_reward, g_term) = step_one("Acrobot-v1", state, 1)
        assert reward == g_reward == expected and term == g_term == (expected == 0.0)

    def height_after_step(theta1: float) -> float:
        s = step_one("Acrobot-v1", [theta1, 0.0, 0.0, 0.0], 1)[1][0]
        return -math.cos(s[0]) - math.cos(s[0] + s[1])

    low, high = 1.0, 2.5  # the tip ends below the line from low, above it from high
    while high - low > 1e-12:
        mid = (low + high) / 2
        low, high = (mid, high) if height_after_step(mid) <= 1.0 else (low, mid)
    for theta1, expected in ((low, False), (high, True)):
        (_, reward, term), (_, g_reward, g_term) = step_one("Acrobot-v1", [theta1, 0, 0, 0], 1)
        assert term == g_term == expected and reward == g_reward == (0.0 if expected else -1.0)
    assert abs(height_after_step(low) - 1.0) < 1e-9


def test_pendulum_reward_normalizes_the_angle_and_costs_the_clipped_torque() -> None:
    """-(angle_normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2) of the state before the
    step, u clipped to +-2; pi normalizes to -pi, 3 pi/2 to -pi/2, -7 to 2 pi - 7."""
    cases = [  # state, torque, the angle normalized, the torque clipped
        ([PI, 0.0], 5.0, -PI, 2.0),
        ([3 * PI / 2, 2.0], -1.0, -PI / 2, -1.0),
        ([-7.0, -8.0], -7.5, 2 * PI - 7.0, -2.0),
        ([0.0, 0.0], 0.0, 0.0, 0.0),
    ]
    for state, torque, angle, clipped in cases:
        (_, reward, term), (_, g_reward, g_term) = step_one("Pendulum-v1", state, torque)
        assert abs(reward - g_reward) <= 1e-12 and not term and not g_term
        assert abs(reward + angle**2 + 0.1 * state[1] ** 2 + 0.001 * clipped**2) <= 1e-12


def ending_setup(env_id: str) -> tuple[dict, torch.Tensor, list]:
    """Constructor kwargs, a 3-row start state whose middle sub-env ends on the first step
    (all three for Pendulum, which only truncates), and the first step's actions."""
    if env_id == "Pendulum-v1":  # no termination: a one-step time limit ends every episode
        start = [[0.1, 0.0], [1.0, 2.0], [-2.0, 0.5]]
        return {"max_episode_steps": 1}, torch.tensor(start, dtype=F64), [0.5, 1.0, -1.0]
    if env_id == "Acrobot-v1":
        start = [[0.05, 0.0, 0.1, 0.0], [PI, 0.0, 0.0, 0.0], [0.0, 0.05, 0.0, -0.1]]
        return {}, torch.tensor(start, dtype=F64), [0, 2, 1]
    start = [[-0.5, 0.0], [0.43, 0.07], [-0.3, -0.02]]
    push = 1.0 if env_id in CONTINUOUS else 2
    return {}, torch.tensor(start, dtype=F64), [push, push, push]


@pytest.mark.parametrize("env_id", IDS)
def test_autoreset_returns_final_obs_then_fresh_state_and_leaves_others_alone(env_id: str) -> None:
    """End step: the final observation and the flag. Next step: action ignored, reward 0,
    flags False, a fresh state from the reset distribution. Other sub-envs step as if
    alone."""
    kwargs, start, first = ending_setup(env_id)

    def ending_env() -> TorchVecEnv:
        env = make(env_id, num_envs=3, dtype=F64, **kwargs)
        env.reset(seed=0)
        env.state = start
        obs, reward, terminated, truncated, _ = env.step(torch_actions(env_id, first))
        ended = terminated | truncated
        assert ended[1] and (env_id == "Pendulum-v1" or not ended[[0, 2]].any())
        assert reward[1].item() != 0.0 or env_id == "Acrobot-v1"  # Acrobot's last reward is 0
        final = env.state[1].numpy()
        assert not np.array_equal(final, start[1].numpy())  # the episode's last step moved
        np.testing.assert_allclose(obs[1].numpy(), obs_of(env_id, final), rtol=0, atol=1e-15)
        return env

    env = ending_env()
    alone = make(env_id, num_envs=2, dtype=F64, **kwargs)
    alone.reset(seed=5)
    alone.state = env.state[[0, 2]]
    second = [first[2], first[0]]
    alone_obs, *_ = alone.step(torch_actions(env_id, [second[0], second[1]]))

    actions = [second[0], first[1], second[1]]
    obs2, reward2, terminated2, truncated2, _ = env.step(torch_actions(env_id, actions))
    assert reward2[1].item() == 0.0
    assert not terminated2[1] and not truncated2[1]
    assert in_reset_distribution(env_id, env.state[1:2])
    if env_id != "Pendulum-v1":  # the others did not end, so they stepped normally
        torch.testing.assert_close(obs2[[0, 2]], alone_obs, rtol=0, atol=1e-12)

    twin = ending_env()  # the same history, another action on the reset step
    other = -first[1] if env_id in CONTINUOUS else (first[1] + 1) % 3
    obs3, *_ = twin.step(torch_actions(env_id, [second[0], other, second[1]]))
    torch.testing.assert_close(obs3[1], obs2[1], rtol=0, atol=0)


def in_reset_distribution(env_id: str, states: torch.Tensor) -> bool:
    """Whether every row of ``states`` could come from the env's default reset."""
    s = states.to(F64)
    if env_id == "Pendulum-v1":
        return bool((s[:, 0].abs() <= PI).all() and (s[:, 1].abs() <= 1.0).all())
    if env_id == "Acrobot-v1":
        return bool((s.abs() <= 0.1).all())
    return bool(((s[:, 0] >= -0.6) & (s[:, 0] <= -0.4) & (s[:, 1] == 0)).all())


@pytest.mark.parametrize("env_id", IDS)
def test_reset_distribution_is_gymnasiums_for_resets_and_autoresets(env_id: str) -> None:
    n = 4096
    env = make(env_id, num_envs=n, dtype=F64, max_episode_steps=1)
    env.reset(seed=0)
    first = env.state.clone()
    assert in_reset_distribution(env_id, first)
    # The draws fill their ranges: extremes within 1% of each bound.
    random_rows = {"Pendulum-v1": [0, 1], "Acrobot-v1": [0, 1, 2, 3]}.get(env_id, [0])
    for row in random_rows:
        lo, hi = first[:, row].min().item(), first[:, row].max().item()
        width = {"Pendulum-v1": [2 * PI, 2.0]}.get(env_id, [0.2] * 4)[row]
        assert hi - lo > 0.98 * width
    env.step(torch_actions(env_id, [0] * n))  # every episode truncates...
    env.step(torch_actions(env_id, [0] * n))  # ... and restarts from fresh draws
    assert in_reset_distribution(env_id, env.state)
    assert not torch.equal(env.state, first)


@pytest.mark.parametrize(
    ("env_id", "options", "low", "high"),
    [
        ("MountainCar-v0", {"low": -0.3, "high": -0.2}, [-0.3, 0.0], [-0.2, 0.0]),
        ("MountainCarContinuous-v0", {"low": 0.1, "high": 0.2}, [0.1, 0.0], [0.2, 0.0]),
        ("Acrobot-v1", {"low": 0.2, "high": 0.3}, [0.2] * 4, [0.3] * 4),
        ("Pendulum-v1", {"x_init": 0.5, "y_init": 0.25}, [-0.5, -0.25], [0.5, 0.25]),
        ("Pendulum-v1", {"y_init": 0.0}, [-PI, 0.0], [PI, 0.0]),
    ],
)
def test_reset_options_set_the_bounds_of_later_autoresets_too(
    env_id: str, options: dict, low: list[float], high: list[float]
) -> None:
    env = make(env_id, num_envs=256, dtype=F64, max_episode_steps=1)
    lo, hi = torch.tensor(low, dtype=F64), torch.tensor(high, dtype=F64)
    env.reset(seed=0, options=options)
    assert ((env.state >= lo) & (env.state <= hi)).all()
    env.step(torch_actions(env_id, [0] * 256))
    env.step(torch_actions(env_id, [0] * 256))  # all autoreset with the same options
    assert ((env.state >= lo) & (env.state <= hi)).all()
    env.reset(seed=0)  # no options: back to gymnasium's defaults
    assert in_reset_distribution(env_id, env.state)


@pytest.mark.parametrize(
    ("env_id", "options", "message"),
    [
        ("MountainCar-v0", {"low": -0.3, "high": -0.5}, "low <= high"),
        ("Acrobot-v1", {"low": "a"}, "'low' must be a number"),
        ("Pendulum-v1", {"x_init": [1.0, 2.0]}, "'x_init' must be a number"),
    ],
)
def test_bad_reset_options_raise_env_error(env_id: str, options: dict, message: str) -> None:
    with pytest.raises(EnvError, match=message):
        make(env_id).reset(options=options)


@pytest.mark.parametrize("env_id", IDS)
def test_truncation_counts_steps_per_episode_and_restarts_after_autoreset(env_id: str) -> None:
    """With a limit of 3: truncated on the 3rd step, reset (reward 0) on the 4th, again on
    the 7th. No episode terminates from a fresh state in three steps."""
    env = make(env_id, num_envs=2, max_episode_steps=3)
    env.reset(seed=0)
    actions = torch_actions(env_id, [0.5, 1.0] if env_id in CONTINUOUS else [0, 1])
    flags = []
    for _ in range(7):
        _, reward, terminated, truncated, _ = env.step(actions)
        assert not terminated.any()
        flags.append((truncated.tolist(), (reward == 0).tolist()))
    no, yes = [False, False], [True, True]
    episode = [(no, no), (no, no), (yes, no)]
    assert flags == [*episode, (no, yes), *episode]


@pytest.mark.parametrize("env_id", IDS)
def test_spaces_and_attributes_match_gymnasium(env_id: str) -> None:
    env = make(env_id, num_envs=5)
    ref = gym.make(env_id)
    ref_vec = gym.make_vec(env_id, num_envs=5, vectorization_mode="sync")
    assert isinstance(env, TorchVecEnv) and isinstance(env, ENV_REGISTRY[env_id])
    assert env.env_id == env_id and env.num_envs == 5
    assert env.single_observation_space == ref.observation_space
    assert env.single_action_space == ref.action_space
    assert env.observation_space == ref_vec.observation_space
    assert env.action_space == ref_vec.action_space
    assert env.max_episode_steps == ref.spec.max_episode_steps
    assert env_id in repr(env)
    ref.close()
    ref_vec.close()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("env_id", IDS)
def test_shapes_dtypes_and_devices(env_id: str, dtype: torch.dtype) -> None:
    n = 7
    env = make(env_id, num_envs=n, dtype=dtype, max_episode_steps=10)
    obs, info = env.reset(seed=0)
    assert info == {}
    assert obs.shape == (n, OBS_DIM[env_id]) and obs.dtype == dtype and obs.device == env.device
    assert env.state.shape == (n, len(env.state_names)) and env.state.dtype == dtype
    assert env.observation_space.contains(obs.float().numpy())
    gen = torch.Generator().manual_seed(0)
    for _ in range(25):  # through autoresets
        if env_id in CONTINUOUS:
            actions = torch.rand(n, 1, generator=gen, dtype=dtype) * 2 - 1
        else:
            actions = torch.randint(0, 3, (n,), generator=gen)
        out = env.step(actions)
        obs, reward, terminated, truncated, _ = out
        assert obs.shape == (n, OBS_DIM[env_id]) and obs.dtype == dtype and obs.is_contiguous()
        assert reward.shape == (n,) and reward.dtype == dtype
        assert terminated.shape == truncated.shape == (n,)
        assert terminated.dtype == truncated.dtype == torch.bool
        assert all(t.device == env.device and not t.requires_grad for t in out[:4])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("env_id", IDS)
def test_half_precision_dtypes_step_and_reset(env_id: str, dtype: torch.dtype) -> None:
    env = make(env_id, num_envs=16, dtype=dtype, max_episode_steps=20)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == dtype
    actions = torch_actions(env_id, [1] * 16)
    actions = actions.to(dtype) if env_id in CONTINUOUS else actions
    for _ in range(45):
        obs, reward, *_ = env.step(actions)
        assert obs.dtype == reward.dtype == dtype and torch.isfinite(obs).all()


@pytest.mark.parametrize("env_id", IDS)
def test_seeding_is_reproducible(env_id: str) -> None:
    def rollout(seed: int | None) -> list[torch.Tensor]:
        env = make(env_id, num_envs=8, max_episode_steps=10)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        out = [obs]
        for _ in range(35):  # through three autoresets
            out.append(env.step(torch_actions(env_id, random_actions(env_id, rng, 8)))[0])
        return out

    first, again, other = rollout(3), rollout(3), rollout(4)
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[-1], other[-1])
    assert not torch.equal(rollout(None)[0], rollout(None)[0])  # unseeded envs differ

    env = make(env_id, num_envs=8)
    obs_a, _ = env.reset(seed=11)
    env.reset(seed=12)
    obs_b, _ = env.reset(seed=11)
    torch.testing.assert_close(obs_a, obs_b, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("env_id", "names"),
    [
        ("Pendulum-v1", "theta, theta_dot"),
        ("MountainCar-v0", "position, velocity"),
        ("MountainCarContinuous-v0", "position, velocity"),
        ("Acrobot-v1", "theta1, theta2, dtheta1, dtheta2"),
    ],
)
def test_state_is_settable_and_validated(env_id: str, names: str) -> None:
    env = make(env_id, num_envs=3, dtype=F64)
    env.reset(seed=0)
    dim = len(names.split(", "))
    env.state = np.zeros((3, dim))  # numpy is accepted and converted
    assert env.state.dtype == F64 and env.state.abs().sum().item() == 0.0
    row = torch.full((dim,), 0.25, dtype=F64)
    env.state[1] = row  # in-place writes take effect
    assert torch.equal(env.state[1], row)
    obs, *_ = env.step(torch_actions(env_id, [1, 1, 1]))
    assert not torch.equal(obs[1], obs[0])
    with pytest.raises(
        EnvError, match=rf"shape \(3, {dim}\) \(num_envs, \[{names}\]\), got \({dim}, 3\)"
    ):
        env.state = torch.zeros(dim, 3)
    with pytest.raises(EnvError, match=r"got \(3,\)"):
        env.state = torch.zeros(3)


BAD_ACTIONS = [
    ("Pendulum-v1", torch.zeros(3), r"shape \(3, 1\).*got \(3,\); add the last axis"),
    ("Pendulum-v1", torch.zeros(3, 2), r"shape \(3, 1\).*got \(3, 2\)"),
    ("Pendulum-v1", torch.tensor(0.0), r"shape \(3, 1\).*got \(\)"),
    ("Pendulum-v1", torch.tensor([[0.0], [math.nan], [1.0]]), r"contain NaN \(sub-envs 1\)"),
    ("Pendulum-v1", torch.zeros(3, 1, dtype=torch.complex64), "real numbers"),
    ("MountainCarContinuous-v0", torch.full((3, 1), math.nan), r"contain NaN \(sub-envs 0, 1, 2\)"),
    ("MountainCarContinuous-v0", [0.0, 0.5, 1.0], r"shape \(3, 1\).*got \(3,\)"),
    ("MountainCar-v0", torch.tensor([[0], [1], [2]]), r"shape \(3,\).*got \(3, 1\)"),
    ("MountainCar-v0", torch.tensor([0, 1]), r"shape \(3,\).*got \(2,\)"),
    ("MountainCar-v0", torch.tensor([0, 3, 1]), r"in \{0, 1, 2\}, got values \[0, 1, 3\]"),
    ("MountainCar-v0", torch.tensor([0.0, 1.0, 2.0]), r"integers in \{0, 1, 2\}.*torch.float32"),
    ("Acrobot-v1", torch.tensor([0, -1, 1]), r"in \{0, 1, 2\}, got values \[-1, 0, 1\]"),
    ("Acrobot-v1", torch.tensor([0.0, math.nan, 1.0]), "contain NaN and must be integers"),
    ("Acrobot-v1", np.array([[1, 1, 1]]), r"shape \(3,\).*got \(1, 3\)"),
]


@pytest.mark.parametrize(("env_id", "actions", "message"), BAD_ACTIONS)
def test_bad_actions_raise_env_error(env_id: str, actions: object, message: str) -> None:
    env = make(env_id, num_envs=3)
    env.reset(seed=0)
    state = env.state.clone()
    with pytest.raises(EnvError, match=message):
        env.step(actions)
    torch.testing.assert_close(env.state, state)  # a rejected step changes nothing


@pytest.mark.parametrize("env_id", IDS)
def test_step_before_reset_raises(env_id: str) -> None:
    with pytest.raises(EnvError, match="reset"):
        make(env_id, num_envs=2).step(torch_actions(env_id, [0, 1]))


@pytest.mark.parametrize(
    ("env_id", "actions", "bound"),
    [
        ("Pendulum-v1", [5.0, -3.0, math.inf, -math.inf], 2.0),
        ("MountainCarContinuous-v0", [3.0, -1.5, math.inf, -math.inf], 1.0),
    ],
)
def test_out_of_range_continuous_actions_are_clipped_like_gymnasium(
    env_id: str, actions: list[float], bound: float
) -> None:
    """Outside the Box, the next state is that of the nearest bound, and the state and reward
    equal gymnasium's. The caller's action tensor is left as it was."""
    n = len(actions)
    start = np.array([[0.3, 0.5], [-1.0, -0.4], [2.0, 1.0], [-0.2, 0.0]])
    if env_id == "MountainCarContinuous-v0":
        start = np.array([[-0.5, 0.01], [-0.9, -0.02], [0.1, 0.03], [-0.4, 0.0]])
    given = torch_actions(env_id, actions)
    kept = given.clone()
    env = make(env_id, num_envs=n, dtype=F64)
    env.reset(seed=0)
    env.state = start
    _, reward, *_ = env.step(given)
    torch.testing.assert_close(given, kept, rtol=0, atol=0)
    clipped = make(env_id, num_envs=n, dtype=F64)
    clipped.reset(seed=0)
    clipped.state = start
    clipped.step(torch_actions(env_id, np.clip(actions, -bound, bound)))
    torch.testing.assert_close(env.state, clipped.state, rtol=0, atol=0)
    for i, action in enumerate(actions):
        ref = gym.make(env_id).unwrapped
        ref.reset(seed=0)
        ref.state = start[i].copy()
        _, g_reward, *_ = ref.step(np.array([action]))
        np.testing.assert_allclose(env.state[i].numpy(), gym_state(ref), rtol=0, atol=1e-7)
        assert reward[i].item() == pytest.approx(g_reward, abs=1e-12)  # -inf where gymnasium's


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("Pendulum-v1", {"g": 9.81}),
        ("MountainCar-v0", {"goal_velocity": 0.01}),
        ("MountainCarContinuous-v0", {"goal_velocity": 0.01}),
    ],
)
def test_env_parameters_match_gymnasiums(env_id: str, kwargs: dict[str, float]) -> None:
    """gymnasium.make's env parameters mean the same here, step for step."""
    rng = np.random.default_rng(3)
    states, actions = random_states(env_id, rng, 300), random_actions(env_id, rng, 300)
    env = make(env_id, num_envs=300, dtype=F64, **kwargs)
    env.reset(seed=0)
    env.state = states
    _, reward, terminated, _, _ = env.step(torch_actions(env_id, actions))
    ref = gym.make(env_id, **kwargs).unwrapped
    ref.reset(seed=0)
    for i in range(300):
        ref.state = states[i].copy()
        _, g_reward, g_term, _, _ = ref.step(gym_action(env_id, actions[i]))
        np.testing.assert_allclose(env.state[i].numpy(), gym_state(ref), rtol=0, atol=1e-7)
        assert abs(reward[i].item() - g_reward) <= 1e-9 and bool(terminated[i]) == g_term
    default = make(env_id, num_envs=300, dtype=F64)
    default.reset(seed=0)
    default.state = states
    _, _, default_term, _, _ = default.step(torch_actions(env_id, actions))
    assert not torch.equal(default.state, env.state) or not torch.equal(default_term, terminated)


def test_make_builds_every_new_env() -> None:
    assert set(IDS) < set(env_ids()) and "CartPole-v1" in env_ids()
    classes = [Pendulum, MountainCar, MountainCarContinuous, Acrobot]
    for env_id, cls in zip(IDS, classes, strict=True):
        env = make(env_id, num_envs=np.int64(2), dtype=F64, max_episode_steps=10)
        assert type(env) is cls and env.dtype == F64 and env.max_episode_steps == 10
        assert env.num_envs == 2


@pytest.mark.parametrize("env_id", IDS)
def test_inference_mode_on_either_side_of_construction(env_id: str) -> None:
    with torch.inference_mode():
        env = make(env_id, num_envs=2)
    env.reset(seed=0)
    env.step(torch_actions(env_id, [0, 1]))
    with torch.inference_mode():
        env.step(torch_actions(env_id, [0, 1]))
        env.reset(seed=1)
    obs, *_ = env.step(torch_actions(env_id, [0, 1]))
    assert obs.shape == (2, OBS_DIM[env_id]) and not obs.is_inference()


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "Acrobot-v1"])
def test_cli_trains_ppo(env_id: str, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """``rlnorm train --agent ppo`` runs end to end (no learning target here)."""
    argv = ["train", "--agent", "ppo", "--env", env_id, "--steps", "2048"]
    argv += ["--run-dir", str(tmp_path / "run"), "--quiet"]
    argv += ["--set", "train.eval_every=0", "--set", "train.final_eval_episodes=2"]
    assert cli.main(argv) == 0
    assert f"on {env_id}" in capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("env_id", IDS)
def test_cuda_matches_cpu_without_host_syncs(env_id: str) -> None:
    """On CUDA every output lives on the device, a step never syncs with the host, and
    one step equals the CPU env's in float64."""
    cpu = make(env_id, num_envs=64, dtype=F64)
    gpu = make(env_id, num_envs=64, device="cuda", dtype=F64)
    cpu.reset(seed=0)
    gpu.reset(seed=0)
    rng = np.random.default_rng(0)
    fresh = torch.zeros(64, dtype=torch.bool)  # rows on an autoreset step: random states
    for _ in range(50):
        gpu.state = cpu.state
        a = torch_actions(env_id, random_actions(env_id, rng, 64))
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
