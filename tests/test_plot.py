"""``rlnorm plot``: the aggregation's numbers, the PNG, run discovery, and an error naming the
problem for every kind of bad input.

Run directories are written by hand (``config.yaml`` as ``config.dump`` writes it, and
``eval.jsonl``): no training, so the whole file runs in a few seconds.
"""

from __future__ import annotations

import argparse
import json
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from rlnorm import plot, plot_command
from rlnorm.errors import ConfigError, RlnormError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(
    run_dir: Path,
    means: Sequence[float],
    steps: Sequence[int] | None = None,
    *,
    norm: str = "batch",
    env: str = "CartPole-v1",
    seed: int = 0,
    lr: float = 0.001,
    num_envs: int = 8,
) -> Path:
    """A run directory as ``rlnorm train`` leaves it, as far as the plot reads it."""
    steps = list(steps) if steps is not None else [1000 * (i + 1) for i in range(len(means))]
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(
        f"# agent: ppo\n# env: {env}\n# seed: {seed}\n# device: cpu\n"
        f"norm: {norm}\n"
        f"train:\n  total_steps: {steps[-1]}\n  num_envs: {num_envs}\n"
        f"agent:\n  lr: {lr}\n  hidden: [64, 64]\n"
    )
    lines = [
        json.dumps({"step": s, "mean": m, "std": 1.0, "episodes": 20, "seed": seed + 1_000_003})
        for s, m in zip(steps, means, strict=True)
    ]
    (run_dir / "eval.jsonl").write_text("".join(line + "\n" for line in lines))
    return run_dir


def curve(steps: Sequence[int], values: Sequence[float], source: str = "run") -> plot.Curve:
    return plot.Curve(np.array(steps), np.array(values, dtype=float), source)


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """Two norms, three seeds each, all evaluated at steps 1000, 2000, 3000."""
    means = {
        "batch": [[10, 20, 30], [40, 50, 60], [70, 80, 90]],
        "none": [[100, 200, 300], [100, 250, 500], [100, 300, 400]],
    }
    for norm, per_seed in means.items():
        for seed, values in enumerate(per_seed):
            write_run(tmp_path / "study" / norm / f"seed{seed}", values, norm=norm, seed=seed)
    return tmp_path / "study"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header, after checking it is one."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --------------------------------------------------------------------------- aggregation


def test_aggregate_same_steps_gives_mean_min_max_per_step() -> None:
    groups = {
        "batch": [curve([1, 2, 3], [10, 20, 30]), curve([1, 2, 3], [40, 50, 60])],
        "none": [curve([1, 2, 3], [100, 200, 300])],
    }
    out = plot.aggregate(groups)
    assert list(out) == ["batch", "none"]
    np.testing.assert_array_equal(out["batch"].steps, [1, 2, 3])
    np.testing.assert_allclose(out["batch"].mean, [25, 35, 45])
    np.testing.assert_allclose(out["batch"].min, [10, 20, 30])
    np.testing.assert_allclose(out["batch"].max, [40, 50, 60])
    assert out["batch"].runs == 2
    # One run: the band collapses onto the line.
    for field in ("mean", "min", "max"):
        np.testing.assert_allclose(getattr(out["none"], field), [100, 200, 300])


def test_aggregate_different_steps_interpolates_on_the_shared_range() -> None:
    a = curve([0, 10, 20], [0, 10, 20])
    b = curve([5, 15, 25], [100, 200, 300])
    out = plot.aggregate({"g": [a, b]})["g"]
    # Union of the steps, cut to [latest start, earliest end] = [5, 20]: nothing extrapolated.
    np.testing.assert_array_equal(out.steps, [5, 10, 15, 20])
    # a interpolated: 5, 10, 15, 20; b interpolated: 100, 150, 200, 250.
    np.testing.assert_allclose(out.min, [5, 10, 15, 20])
    np.testing.assert_allclose(out.max, [100, 150, 200, 250])
    np.testing.assert_allclose(out.mean, [52.5, 80, 107.5, 135])


def test_aggregate_runs_sharing_no_steps_is_an_error_naming_them() -> None:
    early = curve([1, 2], [1, 2], source="early/eval.jsonl")
    late = curve([5, 6], [1, 2], source="late/eval.jsonl")
    with pytest.raises(RlnormError, match=r"'g'.*early/eval.jsonl ends at step 2.*late/eval"):
        plot.aggregate({"g": [early, late]})


def test_curves_from_run_directories(study: Path) -> None:
    runs = [plot.load_run(d) for d in plot.find_runs([study])]
    groups = plot.group_runs(runs)
    out = plot.aggregate({k: [r.curve for r in v] for k, v in groups.items()})
    np.testing.assert_allclose(out["batch"].mean, [40, 50, 60])
    np.testing.assert_allclose(out["batch"].min, [10, 20, 30])
    np.testing.assert_allclose(out["batch"].max, [70, 80, 90])
    np.testing.assert_allclose(out["none"].mean, [100, 250, 400])
    np.testing.assert_allclose(out["none"].min, [100, 200, 300])
    np.testing.assert_allclose(out["none"].max, [100, 300, 500])


# --------------------------------------------------------------------------- config and groups


def test_config_header_comments_become_keys(study: Path) -> None:
    run = plot.load_run(study / "none" / "seed2")
    assert run.config["env"] == "CartPole-v1"
    assert run.config["seed"] == 2
    assert run.config["norm"] == "none"
    assert run.config["train"]["num_envs"] == 8
    # The body's `agent` section shadows the header's agent name, which is kept apart.
    assert run.config["agent"]["lr"] == 0.001
    assert run.agent == "ppo"


def test_group_by_dotted_keys_sorts_numbers_numerically(tmp_path: Path) -> None:
    for i, lr in enumerate([1e-3, 3e-4, 1e-4, 3e-4]):
        write_run(tmp_path / f"r{i}", [1, 2], lr=lr, num_envs=4 + 4 * (i % 2))
    runs = [plot.load_run(d) for d in plot.find_runs([tmp_path])]
    by_lr = plot.group_runs(runs, "agent.lr")
    assert list(by_lr) == ["0.0001", "0.0003", "0.001"]
    assert [len(v) for v in by_lr.values()] == [1, 2, 1]
    assert list(plot.group_runs(runs, "train.num_envs")) == ["4", "8"]
    assert list(plot.group_runs(runs, "agent.hidden")) == ["[64, 64]"]
    assert list(plot.group_runs(runs, "seed")) == ["0"]


# --------------------------------------------------------------------------- the PNG


def test_plot_runs_writes_a_png(study: Path, tmp_path: Path) -> None:
    out = plot.plot_runs([study], tmp_path / "figs" / "curves.png")
    assert out == tmp_path / "figs" / "curves.png"
    width, height = png_size(out)
    assert width > 0 and height > 0
    assert out.stat().st_size > 1000


def test_cli_command(study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="rlnorm")
    plot_command.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "lr.png"
    args = parser.parse_args(
        [
            "plot",
            str(study / "batch"),
            str(study / "none" / "seed0"),
            "-o",
            str(out),
            "--group-by",
            "seed",
            "--title",
            "by seed",
        ]
    )
    assert plot_command.run(args) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    png_size(out)


def write_scalars(
    run_dir: Path, tag: str, points: Sequence[tuple[int, float]], *, resumed: bool = False
) -> None:
    """TensorBoard events as the monitor writes them, one event file per call. ``resumed``:
    as a resumed run adds its file, from a later process: its name (``events.out.tfevents.
    <time>.<host>.<pid>.<count>``, read in name order) sorts after the run's other files, as a
    later second does; from this process, in the same second, a count that gained a digit
    (9 -> 10, 99 -> 100) would sort it first."""
    from torch.utils.tensorboard import SummaryWriter

    tb = run_dir / "tb"
    before = set(tb.glob("events.out.tfevents.*"))
    with SummaryWriter(str(tb)) as writer:
        for step, value in points:
            writer.add_scalar(tag, value, step)
    if resumed:
        (new,) = set(tb.glob("events.out.tfevents.*")) - before
        parts = new.name.split(".")
        parts[3] = f"{max(int(p.name.split('.')[3]) for p in before) + 1:010d}"
        new.rename(new.with_name(".".join(parts)))


def test_tensorboard_tags_one_panel_each(study: Path, tmp_path: Path) -> None:
    gaps = {"batch": [0.3, 0.2, 0.1], "none": [0.0, 0.0, 0.0]}
    for norm, values in gaps.items():
        for seed in range(3):
            points = [(1000 * (i + 1), v + 0.01 * seed) for i, v in enumerate(values)]
            write_scalars(study / norm / f"seed{seed}", "norm/gap/policy_kl", points)
            write_scalars(study / norm / f"seed{seed}", "losses/value", points)
    # A resumed run logs steps after its last checkpoint again: the later value wins.
    write_scalars(study / "batch" / "seed0", "norm/gap/policy_kl", [(3000, 0.5)], resumed=True)

    curve0 = plot.read_scalars(study / "batch" / "seed0", "norm/gap/policy_kl")
    assert curve0.steps.tolist() == [1000, 2000, 3000]
    np.testing.assert_allclose(curve0.values, [0.3, 0.2, 0.5], rtol=1e-6)

    out = plot.plot_runs(
        [study], tmp_path / "tags.png", tags=["norm/gap/policy_kl", "losses/value"]
    )
    one = plot.plot_runs([study], tmp_path / "one.png", tags=["norm/gap/policy_kl"])
    (wide, high), (single, _) = png_size(out), png_size(one)
    assert wide > 1.8 * single and high > 0  # two panels side by side


def test_missing_tensorboard_tag_names_the_logged_ones(study: Path) -> None:
    write_scalars(study / "none" / "seed0", "norm/gap/policy_kl", [(1000, 0.0)])
    with pytest.raises(
        RlnormError,
        match=r"scalar 'norm/gap/policy_kp'. Did you mean 'norm/gap/policy_kl'",
    ):
        plot.read_scalars(study / "none" / "seed0", "norm/gap/policy_kp")
    with pytest.raises(RlnormError, match=r"seed1.tb: missing"):
        plot.read_scalars(study / "none" / "seed1", "norm/gap/policy_kl")


def test_find_runs_accepts_runs_and_parents_and_counts_each_run_once(study: Path) -> None:
    direct = study / "batch" / "seed1"
    found = plot.find_runs([direct, study])
    assert len(found) == 6
    assert found[0] == direct
    assert sorted(found[1:]) == sorted(
        p.parent for p in study.rglob("eval.jsonl") if p != direct / "eval.jsonl"
    )


# --------------------------------------------------------------------------- errors


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(RlnormError, match=r"nothing-here: no such file or directory"):
        plot.plot_runs([tmp_path / "nothing-here"], tmp_path / "x.png")


def test_directory_without_runs(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(RlnormError, match=r"empty: no runs in it \(no eval.jsonl"):
        plot.plot_runs([tmp_path / "empty"], tmp_path / "x.png")


def test_empty_eval_file(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [1.0])
    (run / "eval.jsonl").write_text("")
    with pytest.raises(RlnormError, match=r"run/eval.jsonl: empty"):
        plot.plot_runs([run], tmp_path / "x.png")


@pytest.mark.parametrize(
    ("second_line", "problem"),
    [
        ('{"step": 2000, "mean": 1', r"line 2: not valid JSON"),
        ("[1, 2]", r"line 2: expected a JSON object"),
        ('{"step": 2000, "std": 1.0}', r"line 2: no 'mean' field \(fields: std, step\)"),
        ('{"mean": 1.0}', r"line 2: no 'step' field"),
        ('{"step": "2000", "mean": 1.0}', r"line 2: 'step' must be a non-negative integer"),
        ('{"step": 2000, "mean": null}', r"line 2: 'mean' must be a finite number, got None"),
        ('{"step": 2000, "mean": NaN}', r"line 2: 'mean' must be a finite number, got nan"),
        ('{"step": 1000, "mean": 1.0}', r"line 2: step 1000 does not come after .* 1000"),
    ],
)
def test_malformed_eval_line_names_file_and_line(
    tmp_path: Path, second_line: str, problem: str
) -> None:
    run = write_run(tmp_path / "run", [1.0])
    with open(run / "eval.jsonl", "a") as f:
        f.write(second_line + "\n")
    with pytest.raises(RlnormError, match=r"run/eval.jsonl, " + problem):
        plot.plot_runs([run], tmp_path / "x.png")


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (
            "agent.learning_rate",
            "'agent.learning_rate': unknown agent key 'learning_rate'. Did you mean 'lr'? "
            "Valid agent keys: hidden, lr",
        ),
        (
            "nrom",
            "'nrom': unknown config key 'nrom'. Did you mean 'norm'? "
            "Valid config keys: agent, device, env, norm, seed, train",
        ),
        ("norm.kind", "'norm.kind': 'norm' is a value ('batch'), not a section"),
    ],
)
def test_missing_group_key_names_it_and_the_available_keys(
    study: Path, tmp_path: Path, key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        plot.plot_runs([study], tmp_path / "x.png", group_by=key)
    assert str(info.value) == f"{study / 'batch' / 'seed0' / 'config.yaml'}: {problem}"


def test_group_key_naming_a_section(study: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'train' is a section.*train.num_envs"):
        plot.plot_runs([study], tmp_path / "x.png", group_by="train")


def test_missing_config(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [1.0])
    (run / "config.yaml").unlink()
    with pytest.raises(ConfigError, match=r"run/config.yaml: missing"):
        plot.plot_runs([run], tmp_path / "x.png")


def test_mixed_envs_refused_unless_allowed(tmp_path: Path) -> None:
    write_run(tmp_path / "runs" / "cart", [1.0, 2.0])
    write_run(tmp_path / "runs" / "acro", [-500.0, -100.0], env="Acrobot-v1")
    with pytest.raises(
        RlnormError,
        match=r"2 different environments \(Acrobot-v1: 1 run.*"
        r"CartPole-v1: 1 run.*--allow-mixed-envs",
    ):
        plot.plot_runs([tmp_path / "runs"], tmp_path / "x.png")
    out = plot.plot_runs([tmp_path / "runs"], tmp_path / "x.png", allow_mixed_envs=True)
    png_size(out)
