"""Small-budget learning: PPO must actually learn CartPole with every foundation norm.

The full default budget (150k steps) reaches a 100-episode mean of 500 (README); here a
third of it must already clear 195, gymnasium's old 'solved' bar for CartPole, in a
deterministic eval-mode evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlnorm.cli import main


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_ppo_learns_cartpole_on_a_small_budget(norm: str, tmp_path: Path) -> None:
    status = main(
        [
            "train",
            "--agent",
            "ppo",
            "--env",
            "CartPole-v1",
            "--norm",
            norm,
            "--seed",
            "0",
            "--steps",
            "50000",
            "--run-dir",
            str(tmp_path),
            "--quiet",
            "--set",
            "train.eval_every=0",
            "--set",
            "train.final_eval_episodes=20",
        ]
    )
    assert status == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["final_eval"]["episodes"] == 20
    assert summary["final_eval"]["mean"] >= 195, summary
