"""A population's envs (``rlnorm.stacking.MemberEnvs``): a native env split into members
steps each member's sub-envs exactly as that member's env alone steps them, resets and
random streams included, and saves and restores each member's state as its env alone."""

from __future__ import annotations

import pytest
import torch

from rlnorm import envs
from rlnorm.env import TorchVecEnv
from rlnorm.errors import EnvError
from rlnorm.stacking import MemberEnvs

SEEDS = [3, 11, 4]
PER_MEMBER = 5


def maker(env_id: str, **kwargs: object):
    return lambda n: envs.make(env_id, num_envs=n, **kwargs)


def random_actions(env: TorchVecEnv, generator: torch.Generator) -> torch.Tensor:
    space = env.single_action_space
    if hasattr(space, "n"):
        return torch.randint(int(space.n), (env.num_envs,), generator=generator)
    low, high = (torch.as_tensor(b, dtype=torch.float32) for b in (space.low, space.high))
    return low + (high - low) * torch.rand((env.num_envs, *space.shape), generator=generator)


@pytest.mark.parametrize(
    "env_id",
    ["CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_split_members_step_as_their_envs_alone(env_id: str, dtype: torch.dtype) -> None:
    # Short episodes, so that every member autoresets many times over the steps below.
    make = maker(env_id, dtype=dtype, max_episode_steps=7)
    together = MemberEnvs(make, PER_MEMBER, SEEDS)
    assert together.joined is not None  # one env, split
    alone = [make(PER_MEMBER) for _ in SEEDS]
    obs = together.reset()[0]
    firsts = [env.reset(seed=seed)[0] for env, seed in zip(alone, SEEDS, strict=True)]
    assert torch.equal(obs, torch.cat(firsts))
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        actions = random_actions(together, generator)
        outs = together.step(actions)
        parts = [env.step(a) for env, a in zip(alone, actions.split(PER_MEMBER), strict=True)]
        for i in range(4):  # obs, reward, terminated, truncated
            assert torch.equal(outs[i], torch.cat([part[i] for part in parts]))
    for k, env in enumerate(alone):
        saved, own = together.member_state_dict(k), env.state_dict()
        assert saved.keys() == own.keys()
        assert all(torch.equal(saved[key], own[key]) for key in own)


def test_a_member_restores_its_state_and_continues_as_its_env_alone() -> None:
    make = maker("CartPole-v1", max_episode_steps=9)
    together = MemberEnvs(make, PER_MEMBER, SEEDS)
    together.reset()
    generator = torch.Generator().manual_seed(1)
    for _ in range(13):
        together.step(random_actions(together, generator))
    saved = [together.member_state_dict(k) for k in range(len(SEEDS))]
    restored = MemberEnvs(make, PER_MEMBER, SEEDS)
    restored.reset()
    for k in reversed(range(len(SEEDS))):
        restored.load_member_state_dict(k, saved[k])
    alone = together.member_env(1)  # member 1 on its own, from the same state
    for _ in range(20):
        actions = random_actions(together, generator)
        expected = together.step(actions)
        got = restored.step(actions)
        own = alone.step(actions[PER_MEMBER : 2 * PER_MEMBER])
        assert all(torch.equal(e, g) for e, g in zip(expected[:4], got[:4], strict=True))
        assert torch.equal(own[0], got[0][PER_MEMBER : 2 * PER_MEMBER])


def test_a_split_env_refuses_a_single_seed_and_a_foreign_member() -> None:
    together = MemberEnvs(maker("CartPole-v1"), 2, SEEDS)
    with pytest.raises(ValueError, match="its own seed"):
        together.reset(seed=0)
    with pytest.raises(EnvError, match="seed_members"):
        together.joined.reset(seed=0)  # type: ignore[union-attr]
    with pytest.raises(EnvError, match="member 3 of an env of 3 members"):
        together.member_state_dict(3)


def test_sparse_autoreset_members_are_stepped_one_by_one() -> None:
    """Sparse autoresets draw every sub-env's fresh state from one generator, so their
    members are not split (their episodes would change): each steps its own env."""
    together = MemberEnvs(maker("CartPole-v1", fast=True), 4, SEEDS)
    assert together.joined is None and len(together.envs) == len(SEEDS)
    obs = together.reset()[0]
    alone = envs.make("CartPole-v1", num_envs=4, fast=True)
    assert torch.equal(obs[4:8], alone.reset(seed=SEEDS[1])[0])
