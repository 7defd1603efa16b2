"""A third-party agent, installed as a package with an ``rlnorm.agents`` entry point, is
found by the registry and trains through ``rlnorm train --agent <its name>``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rlnorm import agents
from rlnorm.cli import main

AGENT_MODULE = '''
"""A one-layer softmax policy trained by REINFORCE: the smallest complete rlnorm agent."""

from dataclasses import dataclass

import torch
from torch import nn

from rlnorm.agent import ActOutput, Agent, OnPolicy


@dataclass
class TinyConfig:
    rollout_steps: int = 16
    lr: float = 0.01


class TinyAgent(Agent):
    name = "tiny-reinforce"
    Config = TinyConfig

    def __init__(self, observation_space, action_space, config, norm, device="cpu"):
        super().__init__(observation_space, action_space, config, norm, device)
        self.policy = nn.Linear(observation_space.shape[0], int(action_space.n))
        self.optimizer = torch.optim.SGD(self.policy.parameters(), lr=config.lr)

    def modules(self):
        return {"policy": self.policy}

    def acting_modules(self):
        return [self.policy]

    def optimizers(self):
        return {"optimizer": self.optimizer}

    @property
    def collection(self):
        return OnPolicy(self.config.rollout_steps)

    def act(self, obs, deterministic=False):
        logits = self.policy(obs)
        if deterministic:
            return ActOutput(logits.argmax(-1))
        return ActOutput(torch.distributions.Categorical(logits=logits).sample())

    def update(self, batch, progress):
        obs, actions = batch.obs[:-1], batch.actions
        returns = batch.rewards.flip(0).cumsum(0).flip(0)
        logp = torch.distributions.Categorical(logits=self.policy(obs)).log_prob(actions)
        loss = -(logp * (returns - returns.mean()) * batch.valid).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return {"loss/policy": float(loss.detach())}
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "rlnorm-tiny-agent"
version = "0.0.1"

[project.entry-points."rlnorm.agents"]
tiny-reinforce = "tiny_agent:TinyAgent"

[tool.setuptools]
py-modules = ["tiny_agent"]
"""


def test_an_installed_entry_point_agent_trains_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "tiny_agent.py").write_text(textwrap.dedent(AGENT_MODULE))
    (package / "pyproject.toml").write_text(PYPROJECT)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(package)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(site)}
    listing = subprocess.run(
        [sys.executable, "-m", "rlnorm.cli", "list"], env=env, capture_output=True, text=True
    )
    assert "tiny-reinforce" in listing.stdout

    # Trained in this process, with the package on sys.path as PYTHONPATH puts it (the
    # listing above and the evaluation below are the fresh processes), into a copy of the
    # registry holding the built-in agents (they register once, on import): no later test
    # meets the plug-in.
    agents._load_builtin()
    monkeypatch.setattr(agents, "_REGISTRY", dict(agents._REGISTRY))
    monkeypatch.setattr(agents, "_entry_points_loaded", False)
    monkeypatch.syspath_prepend(str(site))
    run_dir = tmp_path / "run"
    status = main(
        ["train", "--agent", "tiny-reinforce", "--norm", "none", "--steps", "1024", "--quiet",
         "--run-dir", str(run_dir), "--set", "train.eval_every=0", "--set",
         "train.final_eval_episodes=4", "--set", "agent.lr=0.05"]
    )  # fmt: skip
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "trained tiny-reinforce" in printed.out
    meta = json.loads((run_dir / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["agent"] == "tiny-reinforce"
    assert meta["agent_config"] == {"rollout_steps": 16, "lr": 0.05}
    # The checkpoint reloads through the same entry point in a fresh process.
    evaluated = subprocess.run(
        [sys.executable, "-m", "rlnorm.cli", "eval", str(run_dir), "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["episodes"] == 4
