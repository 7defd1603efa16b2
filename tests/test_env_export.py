"""Native envs exported as gymnasium ``VectorEnv``s, checked with gymnasium's own tools.

Gymnasium's ``env_checker`` targets single envs; the checks below are those of its that
apply to a vector env as they stand (seed determinism, reset options, the passive reset
and space checks, no reused output buffers), plus what a vector env must satisfy on top:
batched spaces, outputs inside them, the autoreset metadata, and gymnasium's vector
wrappers working on it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import (
    check_reset_options,
    check_reset_seed_determinism,
    check_returned_data_not_reused,
    data_equivalence,
)
from gymnasium.utils.passive_env_checker import (
    check_action_space,
    check_observation_space,
    env_reset_passive_checker,
)
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from rlnorm.envs import CartPole, env_ids, make, to_gymnasium
from rlnorm.errors import EnvError


@pytest.mark.parametrize("env_id", env_ids())
def test_gymnasium_checks_that_apply_to_vector_envs(env_id: str) -> None:
    venv = to_gymnasium(make(env_id, num_envs=3, dtype=torch.float64))
    assert isinstance(venv, VectorEnv) and venv.num_envs == 3
    assert venv.metadata["autoreset_mode"] is AutoresetMode.NEXT_STEP
    assert venv.observation_space == batch_space(venv.single_observation_space, 3)
    assert venv.action_space == batch_space(venv.single_action_space, 3)
    check_observation_space(venv.observation_space)
    check_action_space(venv.action_space)
    check_reset_seed_determinism(venv)
    check_reset_options(venv)
    env_reset_passive_checker(venv, seed=0)
    check_returned_data_not_reused(to_gymnasium(make(env_id, num_envs=1)))

    venv.action_space.seed(0)
    first, _ = venv.reset(seed=7)
    assert data_equivalence(first, venv.reset(seed=7)[0], exact=True)
    assert not data_equivalence(first, venv.reset(seed=8)[0])
    for _ in range(30):
        obs, reward, terminated, truncated, info = venv.step(venv.action_space.sample())
        assert obs in venv.observation_space  # float32, as the space says, from a float64 env
        assert reward.dtype == np.float64 and reward.shape == (3,)
        assert terminated.dtype == truncated.dtype == np.bool_ and isinstance(info, dict)


def test_steps_equal_the_torch_envs_and_autoreset_is_next_step() -> None:
    """The export returns exactly what the torch env returns, as numpy."""
    torch_env = CartPole(num_envs=4)
    twin = CartPole(num_envs=4)
    venv = to_gymnasium(torch_env)
    obs, _ = venv.reset(seed=1)
    np.testing.assert_array_equal(obs, twin.reset(seed=1)[0].numpy())
    rng = np.random.default_rng(0)
    ended = reset_steps = 0
    was_done = np.zeros(4, dtype=bool)
    for _ in range(80):
        actions = rng.integers(0, 2, size=4)
        out = venv.step(actions)
        for got, want in zip(out[:4], twin.step(torch.from_numpy(actions))[:4], strict=True):
            np.testing.assert_array_equal(got, want.numpy())
        reward, done = out[1], out[2] | out[3]
        assert (reward[was_done] == 0).all() and not done[was_done].any()  # reset steps
        reset_steps += int(was_done.sum())
        ended += int(done.sum())
        was_done = done
    assert ended > 5 and reset_steps >= ended - 4


def test_record_episode_statistics_counts_native_episodes() -> None:
    """Gymnasium's RecordEpisodeStatistics reads the autoreset mode and reports each
    episode's return and length; on CartPole both equal the number of real steps."""
    venv = RecordEpisodeStatistics(to_gymnasium(make("CartPole-v1", num_envs=5)))
    venv.reset(seed=0)
    venv.action_space.seed(0)
    lengths = np.zeros(5, dtype=int)
    was_done = np.zeros(5, dtype=bool)
    episodes = []
    for _ in range(100):
        _, _, terminated, truncated, info = venv.step(venv.action_space.sample())
        lengths = np.where(was_done, 0, lengths + 1)
        done = terminated | truncated
        if done.any():
            mask = info["_episode"]
            assert np.array_equal(mask, done)
            np.testing.assert_array_equal(info["episode"]["l"][mask], lengths[mask])
            np.testing.assert_array_equal(info["episode"]["r"][mask], lengths[mask])
            episodes += lengths[mask].tolist()
        was_done = done
    assert len(episodes) > 10 and len(venv.return_queue) == len(episodes)


def test_seed_lists_and_foreign_envs_are_rejected() -> None:
    venv = to_gymnasium(make("Pendulum-v1", num_envs=2))
    with pytest.raises(EnvError, match="one generator for all its sub-envs"):
        venv.reset(seed=[1, 2])
    with pytest.raises(EnvError, match="takes an rlnorm TorchVecEnv"):
        to_gymnasium(venv)  # type: ignore[arg-type]


def test_close_closes_and_half_precision_envs_export_float32() -> None:
    venv = to_gymnasium(make("Acrobot-v1", num_envs=2, dtype=torch.bfloat16))
    obs, _ = venv.reset(seed=0)
    assert obs.dtype == np.float32 and obs in venv.observation_space
    venv.close()
    assert venv.closed
