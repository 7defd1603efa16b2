"""What the CLI prints can be used as printed: hints that run when copied, run directories
without ``:``, a clear word for a run killed before its first checkpoint, marked extras."""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlnorm import cli, envs


def test_hints_name_the_programs_as_they_can_be_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    beside = (Path(sys.executable).parent / "rlnorm").resolve()
    monkeypatch.setenv("PATH", "")
    program = Path(cli._program("rlnorm"))
    assert program.resolve() == beside
    assert os.access(program, os.X_OK)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    assert cli._program("rlnorm") == "rlnorm"
    # Another environment's program first on PATH: the hint names this environment's.
    other = tmp_path / "rlnorm"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{Path(sys.executable).parent}")
    assert Path(cli._program("rlnorm")).resolve() == beside


def test_report_hints_run_when_copied_with_spaces_in_the_paths(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = Path("my runs/ppo run")
    cfg = SimpleNamespace(agent="ppo", norm="batch", env="CartPole-v1")
    result = SimpleNamespace(
        final_eval=SimpleNamespace(mean=500.0, std=0.0, returns=[500.0]),
        env_steps=512,
        wall_time=1.0,
        tb_dir=run / "tb",
        last_checkpoint=run / "checkpoints" / "last",
    )
    assert cli._report(cfg, result) == 0
    lines = capsys.readouterr().out.splitlines()
    hints = [line.rsplit("(", 1)[1].rstrip(")").removeprefix("view: ") for line in lines]
    assert shlex.split(hints[-2])[1:] == ["--logdir", str(run / "tb")]
    assert shlex.split(hints[-1])[1:] == ["eval", str(run / "checkpoints" / "last")]


def test_sb3_run_directory_has_no_colon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = "train --agent sb3:PPO --steps 256 --quiet --set train.eval_every=0"
    assert cli.main([*argv.split(), "--set", "train.final_eval_episodes=1"]) == 0
    (run,) = (tmp_path / "runs").glob("*/*/*/*")
    assert run.relative_to(tmp_path / "runs").parts[:2] == ("sb3-PPO", "CartPole-v1")
    assert ":" not in str(run.relative_to(tmp_path))


@pytest.mark.parametrize("command", ["eval", "audit"])
def test_run_killed_before_its_first_checkpoint(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.yaml").write_text(
        "train:\n  total_steps: 50000\n  checkpoint_every: 10000\n"
    )
    assert cli.main([command, str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "has no checkpoint: the run stopped (or is still running) before its first" in err
    assert "env step 10,000" in err


def test_list_marks_envs_that_need_an_extra(capsys: pytest.CaptureFixture[str]) -> None:
    box2d = importlib.util.find_spec("Box2D") is None
    expected = ("box2d", "gymnasium[box2d]") if box2d else None
    assert envs.missing_extra("LunarLander-v3") == expected
    assert envs.missing_extra("CartPole-v1") is None
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert ("LunarLander-v3 (needs box2d)" in out) == box2d
    install = f"{cli._program('pip')} install 'gymnasium[box2d]'"  # this environment's pip
    assert (f"(needs box2d): not installed here; {install}" in out) == box2d


def test_off_policy_agent_on_a_discrete_env_names_the_agents_that_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--agent", "sac", "--env", "CartPole-v1", "--run-dir", str(tmp_path)]
    assert cli.main([*argv, "--steps", "64", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Box action space" in err and "for a Discrete action space: ppo, sb3:DQN, sb3:A2C" in err
