"""Nothing lost when a run dies: resumable checkpoints, exact resumption, determinism, a
SIGKILL mid-run, and training stopped (last good checkpoint kept) by NaNs.

Runs are small PPO CartPole runs through ``rlnorm.cli.main`` in-process, except the SIGKILL
test, which needs a real process to kill.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from rlnorm import checkpoint, cli
from rlnorm.learner import Learner

# 4 envs x 32 steps = 128 env steps per update; 24 updates. Evaluations at 768, 1536, 2304;
# resumable checkpoints every 1024 steps (and at every evaluation).
SMALL = [
    "--norm", "batch", "--steps", "3072", "--quiet",
    "--set", "train.num_envs=4", "--set", "train.eval_every=768",
    "--set", "train.checkpoint_every=1024", "--set", "train.eval_episodes=4",
    "--set", "train.final_eval_episodes=4", "--set", "train.eval_num_envs=4",
    "--set", "agent.minibatch_size=64", "--set", "agent.epochs=2",
]  # fmt: skip


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(run_dir / "checkpoints" / "last" / "weights.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def eval_log(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]


class Interrupt(Exception):
    """Stands in for a crash between two updates."""


def interrupt_after(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """Make the learner crash at its ``calls``-th collect/update step."""
    real_step = Learner._step
    count = {"n": 0}

    def step(self: Learner) -> dict[str, float]:
        count["n"] += 1
        if count["n"] == calls:
            raise Interrupt
        return real_step(self)

    monkeypatch.setattr(Learner, "_step", step)


@pytest.mark.parametrize(
    "extra",
    [[], ["--set", "train.normalize_obs=true", "--set", "train.normalize_reward=true"]],
    ids=["plain", "obs-and-reward-normalization"],
)
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(
    extra: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert run_main(["train", "--run-dir", str(whole), *SMALL, *extra])[0] == 0

    # Crash at the 20th step (2560 env steps): the last checkpoint is at 2304 (evaluation),
    # the one before at 2048; nothing after 2304 may survive into the resumed run.
    with monkeypatch.context() as m:
        interrupt_after(m, 20)
        with pytest.raises(Interrupt):
            cli.main(["train", "--run-dir", str(broken), *SMALL, *extra])
    meta = checkpoint.read_meta(broken / "checkpoints" / "last")
    assert meta.counters["env_steps"] == 2304

    rc, out, _ = run_main(["train", "--resume", str(broken), "--quiet"])
    assert rc == 0
    assert "resuming" in out and "2304" in out
    assert_same_weights(whole, broken)
    assert eval_log(broken) == eval_log(whole)
    assert [e["step"] for e in eval_log(broken)] == [768, 1536, 2304, 3072]
    summary = json.loads((broken / "summary.json").read_text())
    assert summary["env_steps"] == 3072
    # Periodic snapshots: keep-last-3 of the checkpoints written along the way.
    snapshots = sorted(p.name for p in (broken / "checkpoints").glob("step-*"))
    assert snapshots == ["step-0000002048", "step-0000002304", "step-0000003072"]


def test_same_seed_same_run_and_another_seed_differs(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    argv = ["--steps", "1024", "--norm", "batch", *SMALL[4:]]
    assert run_main(["train", "--run-dir", str(a), "--seed", "3", *argv])[0] == 0
    assert run_main(["train", "--run-dir", str(b), "--seed", "3", *argv])[0] == 0
    assert run_main(["train", "--run-dir", str(c), "--seed", "4", *argv])[0] == 0
    assert_same_weights(a, b)
    assert eval_log(a) == eval_log(b)
    wa, wc = weights(a), weights(c)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_deterministic_flag_is_recorded_enabled_during_the_run_and_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    real_step = Learner._step

    def step(self: Learner) -> dict[str, float]:
        seen.append(torch.are_deterministic_algorithms_enabled())
        return real_step(self)

    monkeypatch.setattr(Learner, "_step", step)
    a, b = tmp_path / "a", tmp_path / "b"
    argv = ["--steps", "1024", "--norm", "batch", *SMALL[4:]]
    assert run_main(["train", "--run-dir", str(a), *argv])[0] == 0
    assert not any(seen)
    seen.clear()
    assert run_main(["train", "--run-dir", str(b), "--deterministic", *argv])[0] == 0
    assert seen and all(seen)
    assert not torch.are_deterministic_algorithms_enabled()
    assert "deterministic: true" in (b / "config.yaml").read_text()
    assert_same_weights(a, b)  # CPU runs are deterministic either way


def test_sigkill_mid_run_then_resume_finishes_with_continuous_steps(tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    argv = [
        sys.executable, "-m", "rlnorm.cli", "train", "--run-dir", str(run_dir),
        "--norm", "batch", "--steps", "40000", "--quiet",
        "--set", "train.checkpoint_every=512", "--set", "train.eval_every=0",
        "--set", "train.final_eval_episodes=4",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = run_dir / "checkpoints" / "last"
    deadline = time.monotonic() + 120
    killed_at = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(Exception):
                killed_at = checkpoint.read_meta(last).counters["env_steps"]
            if killed_at >= 2048:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    # Whatever instant the kill hit, a complete checkpoint is there (reading it checks every
    # file against its checksum), with its training state.
    meta = checkpoint.read_meta(last)
    resumed_from = meta.counters["env_steps"]
    assert 2048 <= resumed_from < 40000
    assert checkpoint.load_training_state(last)

    rc, out, err = run_main(["train", "--resume", str(run_dir), "--steps", "6144", "--quiet"])
    assert rc == 0, err
    assert f"at env step {resumed_from}" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 6144
    final = checkpoint.read_meta(last).counters
    # Steps are continuous: 8 envs x 32 steps = 256 per update from wherever it resumed.
    assert final["env_steps"] == 6144
    assert final["updates"] == 6144 // 256


# --------------------------------------------------------------------------- NaN


class NaNRewardCartPole:
    """Wraps a native CartPole; sub-env 2 gets a NaN reward at its 40th step."""

    def __init__(self, env: Any) -> None:
        self.env, self.count = env, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def step(self, actions: torch.Tensor) -> Any:
        obs, reward, term, trunc, info = self.env.step(actions)
        self.count += 1
        if self.count == 40:
            reward = reward.clone()
            reward[2] = float("nan")
        return obs, reward, term, trunc, info


def test_nan_reward_stops_the_run_naming_env_and_step_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rlnorm import envs

    real_make = envs.make
    made = {"n": 0}

    def make(env_id: str, num_envs: int, **kwargs: Any) -> Any:
        env = real_make(env_id, num_envs=num_envs, **kwargs)
        made["n"] += 1
        return NaNRewardCartPole(env) if made["n"] == 2 else env  # the training env

    monkeypatch.setattr(envs, "make", make)
    run_dir = tmp_path / "nan"
    argv = ["train", "--run-dir", str(run_dir), "--norm", "batch", "--steps", "2048", "--quiet",
            "--set", "train.checkpoint_every=256", "--set", "train.eval_every=0"]  # fmt: skip
    rc, _, err = run_main(argv)
    assert rc == 2
    # 8 envs x 32 steps per rollout: step 40 is rollout step 7 of the rollout from 256.
    assert "non-finite reward at rollout step 7, env index 2" in err
    assert "env step 256" in err
    meta = checkpoint.read_meta(run_dir / "checkpoints" / "last")
    assert meta.counters["env_steps"] == 256

    made["n"] = 0
    with pytest.warns(RuntimeWarning, match="non-finite reward"):
        rc, _, _ = run_main([*argv[:2], str(tmp_path / "warn"), *argv[3:], "--nan-policy", "warn"])
    assert rc == 0


def spoil_third_update(
    monkeypatch: pytest.MonkeyPatch, spoil: Callable[[Any, dict[str, float]], None]
) -> None:
    """Make PPO's third update call ``spoil(agent, metrics)`` after it ran."""
    from rlnorm.agents.ppo import PPO

    real_update = PPO.update
    calls = {"n": 0}

    def update(self: PPO, batch: Any, progress: float) -> dict[str, float]:
        metrics = real_update(self, batch, progress)
        calls["n"] += 1
        if calls["n"] == 3:
            spoil(self, metrics)
        return metrics

    monkeypatch.setattr(PPO, "update", update)


def test_nan_loss_stops_the_run_naming_the_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spoil_third_update(monkeypatch, lambda agent, m: m.update({"loss/value_loss": float("nan")}))
    run_dir = tmp_path / "nanloss"
    rc, _, err = run_main(
        [
            "train",
            "--run-dir",
            str(run_dir),
            "--steps",
            "2048",
            "--quiet",
            "--set",
            "train.checkpoint_every=256",
            "--set",
            "train.eval_every=0",
        ]
    )
    assert rc == 2
    assert "non-finite loss/value_loss after update 3 (env step 768)" in err
    assert checkpoint.read_meta(run_dir / "checkpoints" / "last").counters["env_steps"] == 512


def test_a_nan_weight_never_reaches_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weight made NaN by an update whose losses were finite is caught right after that
    update (before the policy acts with it, though no checkpoint is due), named, and
    ``last`` keeps the previous good weights."""

    def poison_a_weight(agent: Any, metrics: dict[str, float]) -> None:
        with torch.no_grad():
            next(agent.actor.parameters()).view(-1)[0] = float("nan")

    spoil_third_update(monkeypatch, poison_a_weight)
    run_dir = tmp_path / "nanweight"
    argv = ["train", "--run-dir", str(run_dir), "--steps", "2048", "--quiet",
            "--set", "train.checkpoint_every=512", "--set", "train.eval_every=0"]  # fmt: skip
    rc, _, err = run_main(argv)
    assert rc == 2
    assert "non-finite weight actor." in err and "after update 3 (env step 768)" in err
    last = run_dir / "checkpoints" / "last"
    assert checkpoint.read_meta(last).counters["env_steps"] == 512
    weights = safetensors.torch.load_file(last / "weights.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


# --------------------------------------------------------------------------- resume errors


def test_resume_errors_name_the_problem(tmp_path: Path) -> None:
    rc, _, err = run_main(["train", "--resume", str(tmp_path / "nope")])
    assert rc == 2 and "no such run directory" in err
    (tmp_path / "empty").mkdir()
    rc, _, err = run_main(["train", "--resume", str(tmp_path / "empty")])
    assert rc == 2 and "no checkpoints/last" in err
    rc, _, err = run_main(["train", "--resume", str(tmp_path / "empty"), "--norm", "layer"])
    assert rc == 2 and "drop --norm" in err


def test_a_full_disk_stops_the_run_with_a_clear_error_and_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    real_save_file = safetensors.torch.save_file
    calls = {"n": 0}

    def save_file(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 6:  # two checkpoints of three files each, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save_file(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    run_dir = tmp_path / "full"
    rc, _, err = run_main(
        [
            "train",
            "--run-dir",
            str(run_dir),
            "--steps",
            "2048",
            "--quiet",
            "--set",
            "train.checkpoint_every=256",
            "--set",
            "train.eval_every=0",
            "--set",
            "train.keep_checkpoints=0",
        ]
    )
    assert rc == 2
    assert "cannot write checkpoint" in err and "No space left on device" in err
    monkeypatch.setattr(safetensors.torch, "save_file", real_save_file)
    meta = checkpoint.read_meta(run_dir / "checkpoints" / "last")
    assert meta.counters["env_steps"] == 512
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))


def test_an_unwritable_run_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rc, _, err = run_main(["train", "--run-dir", str(blocker / "run"), "--steps", "256"])
    assert rc == 2
    assert f"cannot write the run directory {blocker / 'run'}" in err
