"""Every reproduction runs at the tests' tiny budget (one seed, seconds) and shows, measured,
what it reproduces: the numbers come from the runs, never from the test."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from rlnorm import cli, norm, reproduce


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def run_tiny(name: str, tmp_path: Path) -> list[dict[str, str]]:
    out = reproduce.run(name, budget="tiny", out=tmp_path / name)
    for file in ("results.csv", "curves.csv", "figure.png", "README.md"):
        assert (out / file).stat().st_size > 0, file
    readme = (out / "README.md").read_text()
    assert "tiny budget, not the full result" in readme
    assert "## Published numbers" in readme and "rliable" in readme
    return rows(out)


def test_list_names_the_six(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    for name in (
        "perils-acting",
        "perils-checkpoint",
        "perils-shared-stats",
        "ddpg-bn",
        "crossq",
        "norms",
    ):
        assert name in listed


def test_an_unknown_reproduction_or_env_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["reproduce", "perils-actin", "--out", str(tmp_path / "a")]) == 2
    assert "perils-acting" in capsys.readouterr().err
    assert cli.main(["reproduce", "ddpg-bn", "--envs", "Pendulum-v0", "--out", str(tmp_path)]) == 2
    assert "Pendulum-v1" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_all_runs_every_reproduction_into_its_folder_and_times_the_suite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, Path, int, str]] = []

    def fake_run(
        name: str, seeds: int | None, budget: str, out: Path, workers: int, command: str
    ) -> Path:
        calls.append((name, out, workers, budget))
        return out

    monkeypatch.setattr(reproduce, "run", fake_run)
    argv = ["reproduce", "all", "--budget", "full", "--workers", "2", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    assert calls == [(n, tmp_path / n, 2, "full") for n in reproduce.names()]
    suite = (tmp_path / "suite.md").read_text()
    assert "rlnorm reproduce all --budget full --workers 2" in suite
    assert all(f"[{n}]({n}/README.md)" in suite for n in reproduce.names())
    assert "**whole suite**" in suite and "the suite took" in capsys.readouterr().out
    # --envs names env ids of one reproduction: refused before anything runs.
    calls.clear()
    assert cli.main(["reproduce", "all", "--envs", "CartPole-v1", "--out", str(tmp_path)]) == 2
    assert calls == [] and "--envs" in capsys.readouterr().err


def test_perils_acting_train_mode_on_one_state_gives_every_state_one_action(
    tmp_path: Path,
) -> None:
    results = run_tiny("perils-acting", tmp_path)
    assert {r["variant"] for r in results} == {
        "eval mode (rlnorm)",
        "train mode, batch of 1 (BUG)",
        "train mode, batch of 8 (BUG)",
    }
    for r in results:
        # measured on 64 distinct states with the trained weights of every variant
        assert float(r["spread_train_batch1"]) == 0.0
        if r["env"] == "Pendulum-v1":
            assert float(r["spread_eval"]) > 0.0  # eval mode tells the states apart
        bug = "BUG" in r["variant"]
        assert ("left in train mode" in r["audit_end"]) == bug, r["variant"]


def test_perils_checkpoint_naive_reload_acts_in_train_mode(tmp_path: Path) -> None:
    envs = ("CartPole-v1", "Pendulum-v1")
    results = run_tiny("perils-checkpoint", tmp_path)
    by = {(r["env"], r["variant"]): r for r in results}
    for env_id in envs:
        naive_one = by[env_id, "naive torch.load, batch of 1"]
        assert naive_one["in_train_mode"] == "True"
        assert "NormalizationError" in naive_one["error"]  # a lone state in train mode
        assert "left in train mode" in naive_one["audit"]
        for variant in ("rlnorm.load, batch of 1", "rlnorm.load, batch of 10"):
            assert by[env_id, variant]["in_train_mode"] == "False"
            assert float(by[env_id, variant]["differ_fraction"]) == 0.0
            assert by[env_id, variant]["audit"] == ""
    # TF 1's train mode on a lone state: every action of the continuous policy changes
    tf1 = by["Pendulum-v1", "naive torch.load, batch of 1, TF1 train mode"]
    assert float(tf1["differ_fraction"]) > 0.5
    # six rows per trial (one per way of loading); the README counts each trial's time once
    trained = sum(float(by[e, "saved policy (reference)"]["wall_s"]) for e in envs)
    readme = (tmp_path / "perils-checkpoint" / "README.md").read_text()
    match = re.search(r"training time (\d+) s", readme)
    assert match is not None and abs(int(match.group(1)) - trained) <= 1


def test_perils_shared_stats_sharing_costs_accuracy_the_fixes_do_not(tmp_path: Path) -> None:
    results = run_tiny("perils-shared-stats", tmp_path)
    accuracy = {
        r["variant"]: float(r["final_return"])
        for r in results
        if r["env"] == "two-domain classification"
    }
    shared = accuracy["separate passes, shared statistics (BUG)"]
    assert shared < accuracy["joint pass (rlnorm default)"]
    assert shared < accuracy["per-stream statistics"]
    audits = {
        r["variant"]: r["audit_end"] for r in results if r["env"] == "two-domain classification"
    }
    assert "separate train-mode passes" in audits["separate passes, shared statistics (BUG)"]
    assert audits["joint pass (rlnorm default)"] == audits["per-stream statistics"] == ""
    envs = {r["env"] for r in results}
    assert {"Pendulum-v1", "InvertedPendulum-v5"} <= envs  # MuJoCo through gymnasium
    for r in results:
        if r["env"] != "two-domain classification" and r["variant"] == "no BatchNorm":
            assert float(r["critic_gap_sa"]) == 0.0  # nothing mode-dependent, no gap


def test_ddpg_bn_without_target_networks_has_none_in_effect(tmp_path: Path) -> None:
    results = run_tiny("ddpg-bn", tmp_path)
    assert len(results) == 4
    for r in results:
        gap = float(r["target_gap"])
        assert (gap == 0.0) == ("no target" in r["variant"]), r["variant"]
        assert r["normalized"] != ""


def test_crossq_has_no_target_network_and_sac_does(tmp_path: Path) -> None:
    results = run_tiny("crossq", tmp_path)
    for r in results:
        assert (r["has_target_network"] == "True") == r["variant"].startswith("SAC")
    check_rerun_reads_back_finished_trials(tmp_path / "crossq", results)


def check_rerun_reads_back_finished_trials(out: Path, before: list[dict[str, str]]) -> None:
    """A reproduction run again into the same folder reads its finished trials back from
    ``trials/`` (their files untouched, their rows the same to the last digit) and trains
    only the missing or unreadable ones (written anew)."""
    import json

    stored = sorted((out / "trials").glob("*.json"))
    assert len(stored) == len(before)
    kept = {path: (path.stat().st_mtime_ns, path.read_text()) for path in stored[2:]}
    stored[0].unlink()
    stored[1].write_text('{"trial": ')  # a file cut off mid-write is not used
    reproduce.run("crossq", budget="tiny", out=out)
    for path, (mtime, text) in kept.items():
        assert (path.stat().st_mtime_ns, path.read_text()) == (mtime, text)
    for path in stored[:2]:
        assert json.loads(path.read_text())["row"]["steps"] > 0  # trained and kept again
    after = rows(out)
    key = ("variant", "env", "seed")
    kept_keys = [tuple(str(json.loads(text)["row"][k]) for k in key) for _, text in kept.values()]
    for row in after:
        assert row["commit"] and row["commit"] in (out / "README.md").read_text()
        if tuple(row[k] for k in key) in kept_keys:
            assert row in before


def test_a_trial_stored_is_found_only_by_the_same_trial(tmp_path: Path) -> None:
    from dataclasses import replace

    from rlnorm.reproduce import crossq, runner

    store = runner.TrialStore(tmp_path)
    trial = crossq.trials(1, "tiny")[0]
    result = runner.TrialResult({"seed": 0, "final_return": float("nan")}, [{"step": 1.0}])
    store.save(trial, result)
    loaded = store.load(trial)
    assert loaded is not None and loaded.curve == result.curve
    assert loaded.row["final_return"] != loaded.row["final_return"]  # NaN kept
    for other in (
        replace(trial, steps=trial.steps + 1),
        replace(trial, seed=1),
        replace(trial, overrides=("agent.lr=0.1",)),
        replace(trial, post=None),
    ):
        assert store.load(other) is None
    from rlnorm.reproduce import perils_acting

    acting = perils_acting.trials(1, "tiny")  # variants told apart by a partial's argument
    assert len({store.path(t) for t in acting}) == len(acting)
    edited = tmp_path / "edited.yaml"
    assert trial.config_file is not None
    edited.write_text(Path(trial.config_file).read_text())
    copy = replace(trial, config_file=str(edited))
    store.save(copy, result)
    assert store.load(copy) is not None
    edited.write_text(edited.read_text() + "\n# edited\n")
    assert store.load(copy) is None  # same file name, other content


def test_norms_runs_every_kind_and_rliable_aggregates_them(tmp_path: Path) -> None:
    results = run_tiny("norms", tmp_path)
    assert {r["norm"] for r in results} == set(norm.names())
    readme = (tmp_path / "norms" / "README.md").read_text()
    for kind in norm.names():
        assert f"| {kind} |" in readme


def test_the_seeds_of_a_variant_train_as_one_population() -> None:
    """Seeds of a variant built by its registered class form one group (PPO's too); a
    reproduction's unsafe variant (its own agent factory) trains one seed per process."""
    from rlnorm.reproduce import norms as norms_study
    from rlnorm.reproduce import perils_shared_stats, runner

    trials = perils_shared_stats.trials(3, "tiny")
    for group in runner.populations(trials):
        variants = {trials[i].variant for i in group}
        assert len(variants) == 1
        together = trials[group[0]].make_agent is None
        assert [trials[i].seed for i in group] == (
            [0, 1, 2] if together else [trials[group[0]].seed]
        )
    study = norms_study.trials(2, "quick")
    for group in runner.populations(study):
        assert len(group) == 2


def test_a_population_measures_each_seed_as_its_own_trial_would() -> None:
    """In float64 (see tests/test_population.py), the rows of seeds trained together equal
    those of the same trials trained one per process."""
    import torch

    from rlnorm.reproduce import crossq, runner

    torch.set_default_dtype(torch.float64)
    try:
        trials = [
            t for t in crossq.trials(2, "tiny") if t.variant == crossq.trials(1, "tiny")[0].variant
        ]
        together = runner.train_population(trials)
        alone = [runner.train_trial(t) for t in trials]
    finally:
        torch.set_default_dtype(torch.float32)
    for pop, single in zip(together, alone, strict=True):
        for key in ("seed", "steps", "has_target_network"):
            assert pop.row[key] == single.row[key]
        assert pop.row["final_return"] == pytest.approx(single.row["final_return"], abs=1e-4)
        assert pop.row["auc"] == pytest.approx(single.row["auc"], abs=1e-4)
