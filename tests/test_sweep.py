"""``rlnorm sweep``: SPEC checking with line numbers, a local sweep killed with SIGKILL and
resumed, a rerun that trains nothing, a failed trial that does not stop the others, the
rliable report, and the Ray backend giving the local backend's per-trial results.

The sweeps are tiny (768 steps, 2-episode evaluations) so the file runs in well under a
minute on two cores; every trial is still a full ``rlnorm train`` process.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlnorm import cli
from rlnorm.errors import RlnormError
from rlnorm.plot import read_curve
from rlnorm.sweep import ray_backend, runner
from rlnorm.sweep import spec as specs

TINY = (
    "steps: 768, train.eval_every: 256, train.checkpoint_every: 256, train.eval_episodes: 2, "
    "train.final_eval_episodes: 2, train.eval_num_envs: 2"
)
SPEC = f"""\
train: {{agent: ppo, env: CartPole-v1, {TINY}}}
grid: {{norm: [none, batch], seed: [0, 1]}}
"""


def sweep(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``rlnorm sweep ARGS`` as a separate process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "rlnorm.cli", "sweep", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "trials.csv", newline="") as f:
        return {row["trial"]: row for row in csv.DictReader(f)}


def processes_writing(out: Path) -> list[int]:
    """Pids of live processes whose command line names ``out`` (trials of that sweep)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(out) in (proc / "cmdline").read_text():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


# -- the SPEC ------------------------------------------------------------------------------
def test_the_minimal_spec_expands_to_named_trials() -> None:
    spec = specs.parse(
        "train: {agent: ppo, env: CartPole-v1, steps: 8192}\n"
        "grid: {norm: [none, batch], seed: [0, 1, 2]}\n"
    )
    assert [t.name for t in spec.trials][:4] == [
        "norm=none__seed=0",
        "norm=none__seed=1",
        "norm=none__seed=2",
        "norm=batch__seed=0",
    ]
    assert len(spec.trials) == 6
    argv = spec.trials[0].train_argv(Path("out/t"), threads=1)
    assert argv[argv.index("--steps") + 1] == "8192" and "--resume" not in argv


def test_a_list_of_trials_is_crossed_with_the_grid() -> None:
    spec = specs.parse(
        "train: {agent: ppo}\n"
        "trials:\n  - {agent.lr: 1.0e-3}\n  - {agent.lr: 3.0e-4, norm: batch}\n"
        "grid: {seed: [0, 1]}\n"
    )
    assert [t.name for t in spec.trials] == [
        "agent.lr=0.001__seed=0",
        "agent.lr=0.001__seed=1",
        "agent.lr=0.0003__norm=batch__seed=0",
        "agent.lr=0.0003__norm=batch__seed=1",
    ]
    assert "agent.lr=0.0003" in spec.trials[2].train_argv(Path("t"), 1)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            "train: {agent: ppo}\ngrid: {seed: [0]}\nresources: {}\nsweeps: 3\n",
            4,
            "unknown spec key",
        ),
        ("train:\n  agent: ppo\n  stepz: 100\ngrid: {seed: [0]}\n", 3, "Did you mean 'steps'"),
        ("train: {agent: ppo}\ngrid: {}\n", 2, "empty grid"),
        ("train: {agent: ppo}\ngrid:\n  norm: []\n", 3, "non-empty list"),
        ("train: {agent: ppo}\ngrid:\n  seed:\n    - 0\n    - 1\n    - 0\n", 6, "twice"),
        ("train: {agent: ppo}\n", 1, "nothing to run"),
        ("train: {steps: -5}\ngrid: {seed: [0]}\n", 1, "positive"),
        ("train: {norm: batch}\ngrid:\n  norm: [none]\n", 3, "both fixed"),
        ("grid: {seed: [0, 1]}\ntrials: [{seed: 2}]\n", 2, "also a grid key"),
        ("grid: {seed: [0\n", 2, "malformed YAML"),
        ("grid:\n  seed: [0]\n  norm: [none]\n  seed: [1]\n", 4, "given twice"),
    ],
)
def test_a_bad_spec_names_its_line(text: str, line: int, words: str) -> None:
    with pytest.raises(specs.SpecError, match=rf"SPEC, line {line}: .*{words}"):
        specs.parse(text)


def test_a_bad_spec_exits_2_before_anything_runs(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("train: {agent: ppo, env: CartPole-v1}\ngrid:\n  agent.lrr: [0.1]\n")
    assert cli.main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{spec}, line 3" in err and "lrr" in err and "Did you mean 'lr'" in err
    assert not (tmp_path / "out").exists()


# -- planning: what a rerun does with each trial, read from its run directory ---------------
def test_a_rerun_plans_each_trial_from_its_run_directory(tmp_path: Path) -> None:
    spec = specs.parse("train: {agent: ppo}\ngrid: {seed: [0, 1, 2, 3]}\n")
    out = tmp_path / "out"
    (out / "seed=0").mkdir(parents=True)
    (out / "seed=0" / "summary.json").write_text(
        json.dumps({"final_eval": {"mean": 1.5, "std": 0.0}, "env_steps": 8, "wall_time_s": 1})
    )
    (out / "seed=1" / "checkpoints" / "last").mkdir(parents=True)  # interrupted
    (out / "seed=2" / "tb").mkdir(parents=True)  # killed before its first checkpoint
    (out / "trials.csv").write_text("trial,status,seed,error\nseed=3,failed,3,boom\n")

    def planned(retry_failed: bool) -> dict[str, list[str]]:
        sweep = runner.SweepDir(out, spec)
        try:
            return {j.trial.name: j.train_argv for j in runner.plan(sweep, 1, retry_failed)}
        finally:
            sweep.close()

    jobs = planned(retry_failed=False)
    assert set(jobs) == {"seed=1", "seed=2"}
    assert jobs["seed=1"][:3] == ["train", "--resume", str(out / "seed=1")]
    assert jobs["seed=2"][:3] == ["train", "--run-dir", str(out / "seed=2")]
    assert not (out / "seed=2").exists()  # a fresh trial starts in a directory not yet there
    assert set(planned(retry_failed=True)) == {"seed=1", "seed=2", "seed=3"}


def test_a_second_sweep_in_the_same_directory_is_refused(tmp_path: Path) -> None:
    spec = specs.parse("train: {agent: ppo}\ngrid: {seed: [0]}\n")
    first = runner.SweepDir(tmp_path, spec)
    try:
        with pytest.raises(RlnormError, match="another sweep is running"):
            runner.SweepDir(tmp_path, spec)
    finally:
        first.close()
    other = specs.parse("train: {agent: sac}\ngrid: {seed: [0]}\n")
    with pytest.raises(specs.SpecError, match="other fixed train arguments"):
        runner.SweepDir(tmp_path, other)


def test_a_ray_node_that_does_not_see_the_sweep_directory_says_so(tmp_path: Path) -> None:
    trial = specs.parse("grid: {seed: [0]}\n").trials[0]
    job = runner.Job(trial, trial.train_argv(tmp_path / "t", 1), tmp_path / "t.log", 1)
    outcome = ray_backend._task(job, str(tmp_path / "elsewhere"))
    assert outcome.returncode == 1 and "does not see the sweep directory" in outcome.error
    assert not (tmp_path / "t").exists()


# -- running -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SPEC run on the local backend, SIGKILLed once mid-way and run again to the end.

    The killed run has one worker: the kill then comes as its second trial reaches its first
    checkpoint, and no other trial has started only to be thrown away (with two workers, two
    trials finished together and both of the next pair were killed, one before its first
    checkpoint). The rerun has two."""
    root = tmp_path_factory.mktemp("sweep")
    spec, out = root / "spec.yaml", root / "local"
    spec.write_text(SPEC)
    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlnorm.cli",
            "sweep",
            str(spec),
            "--out",
            str(out),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    names = [t.name for t in specs.parse(SPEC).trials]
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            finished = [n for n in names if (out / n / "summary.json").exists()]
            mid_way = [
                n
                for n in names
                if (out / n / "checkpoints" / "last").exists() and n not in finished
            ]
            if finished and mid_way:
                break
            time.sleep(0.02)
        assert driver.poll() is None, "the sweep ended before it could be killed mid-way"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        driver.kill()
    time.sleep(0.5)
    assert processes_writing(out) == [], "trials outlived the SIGKILLed sweep"
    # Read again: a trial seen mid-way may have finished before the kill landed.
    finished = [n for n in names if (out / n / "summary.json").exists()]
    mid_way = [
        n for n in names if (out / n / "checkpoints" / "last").exists() and n not in finished
    ]
    before = {n: (out / n / "summary.json").stat().st_mtime_ns for n in finished}

    result = sweep(str(spec), "--out", str(out), "--workers", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(finished)} already ended" in result.stdout
    assert ("resumed from their last checkpoint" in result.stdout) == bool(mid_way)
    for name in finished:  # finished trials were not touched again
        assert (out / name / "summary.json").stat().st_mtime_ns == before[name]
    for name in mid_way:
        assert (
            "resuming" in (out / name / "train.log").read_text()
            or "--resume" in (out / name / "command.txt").read_text()
        )
    return out


def test_a_killed_sweep_resumes_and_a_rerun_trains_nothing(local_sweep: Path) -> None:
    table = rows(local_sweep)
    assert [r["status"] for r in table.values()] == ["done"] * 4
    assert set(table) == {t.name for t in specs.parse(SPEC).trials}
    assert all(int(r["env_steps"]) == 768 for r in table.values())
    for name in table:  # ordinary run directories
        assert {"config.yaml", "eval.jsonl", "summary.json", "checkpoints"} <= {
            p.name for p in (local_sweep / name).iterdir()
        }
    start = time.perf_counter()
    spec = local_sweep.parent / "spec.yaml"
    again = sweep(str(spec), "--out", str(local_sweep))
    assert again.returncode == 0 and "4 already ended, 0 to run" in again.stdout
    assert time.perf_counter() - start < 30  # a process start and a directory scan
    assert rows(local_sweep) == table


def test_the_report_has_rliable_statistics_and_figures(local_sweep: Path, capsys) -> None:
    out = local_sweep / "stats" / "r.md"
    assert cli.main(["sweep", "report", str(local_sweep), "-o", str(out), "--reps", "200"]) == 0
    printed = capsys.readouterr().out
    assert "## ppo on CartPole-v1" in printed and "P(> norm=none)" in printed
    assert "| norm=batch | 2 |" in printed and "IQM" in printed
    assert out.read_text().startswith("# Sweep report")
    assert out.with_suffix(".csv").read_text().startswith("group,config,runs,iqm,iqm_low,")
    assert (out.parent / "r-ppo_CartPole-v1.png").stat().st_size > 10_000
    # --reps as above: the default 2000 resamples cost 7 s more and test nothing else.
    auc = ["sweep", "report", str(local_sweep), "--metric", "auc", "-o", str(out), "--reps", "200"]
    assert cli.main(auc) == 0
    assert "AUC" in capsys.readouterr().out


def test_a_failed_trial_is_recorded_and_the_others_finish(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "spec.yaml"
    # Train-mode BatchNorm on minibatches of one: rlnorm's guard stops that trial.
    spec.write_text(
        f"train: {{agent: ppo, env: CartPole-v1, {TINY}, agent.norm_update: batch}}\n"
        "trials:\n  - {norm: batch, agent.minibatch_size: 1}\n  - {norm: none}\n"
    )
    # The sweep runs in this process (its trials are processes still): a process of its own
    # would only add its start.
    status = cli.main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--workers", "2"])
    printed = capsys.readouterr()
    assert status == 1 and "1 done, 1 failed" in printed.out, printed.out + printed.err
    table = rows(tmp_path / "out")
    failed, done = table["norm=batch__agent.minibatch_size=1"], table["norm=none"]
    assert failed["status"] == "failed" and "too few for batch statistics" in failed["error"]
    assert done["status"] == "done" and done["final_return"]


def test_the_ray_backend_gives_the_local_results(local_sweep: Path) -> None:
    # Two of the local sweep's trials (same names, same arguments) on a local Ray of 2 CPUs.
    spec, out = local_sweep.parent / "ray.yaml", local_sweep.parent / "ray"
    spec.write_text(SPEC.replace("seed: [0, 1]", "seed: [1]"))
    result = sweep(
        str(spec),
        "--out",
        str(out),
        "--backend",
        "ray",
        "--workers",
        "2",
        timeout=420,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    local, ray = rows(local_sweep), rows(out)
    assert set(ray) == {"norm=none__seed=1", "norm=batch__seed=1"}
    for name, row in ray.items():
        assert row["status"] == "done" and row["final_return"] == local[name]["final_return"]
        curves = [read_curve(d / name / "eval.jsonl") for d in (out, local_sweep)]
        assert curves[0].steps.tolist() == curves[1].steps.tolist() == [256, 512, 768]
        assert curves[0].values.tolist() == curves[1].values.tolist(), name
    assert processes_writing(out) == []


def test_group_seeds_plans_one_population_per_variant(tmp_path: Path) -> None:
    """With ``--group-seeds``, fresh trials that differ only in their seed become one
    ``rlnorm train --seeds`` job whose run-dir template names each trial's directory; a
    trial to resume, and an agent that trains no population (PPO), stay alone."""
    spec = specs.parse(
        "train: {agent: sac, env: Pendulum-v1}\ngrid: {norm: [none, batch], seed: [0, 1, 2]}\n"
    )
    out = tmp_path / "out"
    (out / "norm=batch__seed=2" / "checkpoints" / "last").mkdir(parents=True)  # interrupted
    sweep_dir = runner.SweepDir(out, spec)
    try:
        jobs = runner.plan(sweep_dir, 1, retry_failed=False, group_seeds=True)
    finally:
        sweep_dir.close()
    by_first = {job.trial.name: job for job in jobs}
    none = by_first["norm=none__seed=0"]
    assert [t.name for t in none.trials] == [
        "norm=none__seed=0",
        "norm=none__seed=1",
        "norm=none__seed=2",
    ]
    argv = none.train_argv
    assert argv[argv.index("--seeds") + 1] == "0,1,2" and "--seed" not in argv
    assert argv[argv.index("--run-dir") + 1] == str(out / "norm=none__seed={seed}")
    batch = by_first["norm=batch__seed=0"]
    assert [t.name for t in batch.trials] == ["norm=batch__seed=0", "norm=batch__seed=1"]
    assert by_first["norm=batch__seed=2"].train_argv[:2] == ["train", "--resume"]

    adapter = specs.parse("train: {agent: 'sb3:PPO'}\ngrid: {seed: [0, 1]}\n")
    sweep_dir = runner.SweepDir(tmp_path / "sb3", adapter)
    try:
        assert len(runner.plan(sweep_dir, 1, retry_failed=False, group_seeds=True)) == 2
    finally:
        sweep_dir.close()


def test_a_grouped_sweep_writes_every_trial_as_its_own_run(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "train: {agent: sac, env: Pendulum-v1, steps: 300, agent.learning_starts: 200, "
        "agent.hidden: [16, 16], train.eval_every: 0, train.final_eval_episodes: 2, "
        "train.eval_num_envs: 2}\ngrid: {norm: [batch], seed: [0, 1]}\n"
    )
    out = tmp_path / "out"
    # In this process, as above: a sweep process of its own would import torch to group.
    status = cli.main(["sweep", str(spec), "--out", str(out), "--workers", "1", "--group-seeds"])
    printed = capsys.readouterr()
    assert status == 0 and "2 done, 0 failed" in printed.out, printed.out + printed.err
    table = rows(out)
    assert {name: row["status"] for name, row in table.items()} == {
        "norm=batch__seed=0": "done",
        "norm=batch__seed=1": "done",
    }
    for seed in (0, 1):
        summary = json.loads((out / f"norm=batch__seed={seed}" / "summary.json").read_text())
        assert summary["population"]["seeds"] == [0, 1]
    assert (out / "logs" / "norm=batch__seed=population.log").is_file()  # one process
