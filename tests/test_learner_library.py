"""The Learner as a library user meets it: seeded runs without the CLI, one device for the
agent and its envs, one evaluation seed shared by training and ``rlnorm eval``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlnorm import agents, config, envs
from rlnorm.errors import ConfigError
from rlnorm.learner import Learner

TINY = [
    "train.num_envs=2", "train.eval_every=0", "train.checkpoint_every=0",
    "train.eval_episodes=2", "train.final_eval_episodes=2", "train.eval_num_envs=2",
    "agent.rollout_steps=16", "agent.minibatch_size=16", "agent.epochs=1",
]  # fmt: skip


def make_learner(run_dir: Path, seed: int, steps: int = 64) -> Learner:
    cfg = config.resolve(
        agents.get("ppo"), "CartPole-v1", norm="batch", seed=seed, overrides=TINY,
        total_steps=steps,
    )  # fmt: skip
    env = envs.make("CartPole-v1", num_envs=cfg.train.num_envs)
    eval_env = envs.make("CartPole-v1", num_envs=cfg.train.eval_num_envs)
    return Learner.create(agents.get("ppo"), env, eval_env, cfg, run_dir, quiet=True)


def final_weights(learner: Learner) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{key}": value.clone()
        for name, module in learner.agent.modules().items()
        for key, value in module.state_dict().items()
    }


def test_create_seeds_the_run_from_the_config(tmp_path: Path) -> None:
    torch.manual_seed(12345)  # whatever the caller's global generator holds
    first = make_learner(tmp_path / "a", seed=3)
    first.train()
    torch.manual_seed(999)
    second = make_learner(tmp_path / "b", seed=3)
    second.train()
    other = make_learner(tmp_path / "c", seed=4)
    a, b, c = final_weights(first), final_weights(second), final_weights(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_an_agent_on_another_device_than_its_env_is_refused(tmp_path: Path) -> None:
    cfg = config.resolve(agents.get("ppo"), "CartPole-v1", overrides=TINY)
    env = envs.make("CartPole-v1", num_envs=2)
    agent = agents.get("ppo")(
        env.single_observation_space, env.single_action_space, cfg.agent_config, "none", "meta"
    )
    with pytest.raises(ConfigError, match="agent is on meta but the env on cpu"):
        Learner(agent, env, env, cfg, tmp_path)


def test_the_evaluation_seed_is_one_rule() -> None:
    cfg = config.resolve(agents.get("ppo"), "CartPole-v1", seed=7)
    assert cfg.eval_seed == config.eval_seed(7) != 7
    assert config.eval_seed(8) - config.eval_seed(7) == 1
