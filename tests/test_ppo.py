"""PPO's first-minibatch importance ratio: 1 when the update runs the function that acted.

With a batch-dependent norm, PPO acts in eval mode (running statistics) but a plain
train-mode update normalizes each minibatch with its own statistics, so before any
gradient step the ratio already differs from 1 and clipping fires on nothing but the
train/eval gap. ``norm_update="frozen"`` (the default) must remove that exactly.
"""

from __future__ import annotations

import pytest
import torch

from rlnorm import envs
from rlnorm.agents.ppo import PPO
from rlnorm.config import build_config
from rlnorm.rollout import RolloutManager
from rlnorm.safety import training

RATIO_KEYS = (
    "norm/ppo/first_minibatch_ratio",
    "norm/ppo/first_minibatch_clip_fraction",
    "norm/ppo/first_minibatch_max_ratio_deviation",
    "norm/ppo/first_minibatch_ratio_deviation",
)


def update_metrics(norm: str, updates: int = 3, **overrides: object) -> list[dict[str, float]]:
    """Metrics of ``updates`` PPO updates on CartPole (8 envs x 32 steps, 2 minibatches)."""
    torch.manual_seed(0)
    env = envs.make("CartPole-v1", 8)
    cfg = build_config(PPO, {"minibatch_size": 128, "epochs": 2, **overrides})
    agent = PPO(env.single_observation_space, env.single_action_space, cfg, norm)
    manager = RolloutManager(agent, env)
    manager.reset(seed=0)
    metrics = []
    for i in range(updates):
        rollout = manager.collect(cfg.rollout_steps)
        with training(*agent.modules().values()):
            metrics.append(agent.update(rollout, progress=i / updates))
    return metrics


@pytest.mark.parametrize("old_log_prob", ["recompute", "behaviour"])
@pytest.mark.parametrize("norm", ["batch", "batch_renorm"])
def test_frozen_update_starts_at_ratio_one(norm: str, old_log_prob: str) -> None:
    for m in update_metrics(norm, norm_update="frozen", old_log_prob=old_log_prob):
        assert set(RATIO_KEYS) <= set(m)
        assert abs(m["norm/ppo/first_minibatch_ratio"] - 1) <= 1e-6, m
        assert m["norm/ppo/first_minibatch_max_ratio_deviation"] <= 1e-6, m
        assert m["norm/ppo/first_minibatch_clip_fraction"] == 0.0, m


@pytest.mark.parametrize("old_log_prob", ["recompute", "behaviour"])
@pytest.mark.parametrize("norm", ["batch", "batch_renorm"])
def test_train_mode_update_starts_off_ratio_one(norm: str, old_log_prob: str) -> None:
    # "behaviour": eval-mode log-probs against a train-mode update (the textbook gap);
    # "recompute": whole-rollout statistics against a half-rollout minibatch's.
    # Measurably: at least 100x (max) and 10x (mean) the frozen path's 1e-6 tolerance, even
    # on the first update, whose policy is still near uniform (measured: 4.8e-4 and 1.5e-4).
    for m in update_metrics(norm, norm_update="batch", old_log_prob=old_log_prob):
        assert m["norm/ppo/first_minibatch_max_ratio_deviation"] > 1e-4, m
        assert m["norm/ppo/first_minibatch_ratio_deviation"] > 1e-5, m


def test_without_a_mode_dependent_norm_every_setting_starts_at_ratio_one() -> None:
    for m in update_metrics("layer", updates=1, norm_update="batch", old_log_prob="behaviour"):
        assert m["norm/ppo/first_minibatch_max_ratio_deviation"] <= 1e-6, m
        assert m["norm/ppo/first_minibatch_clip_fraction"] == 0.0, m
