"""The ``rlnorm`` command: what `train` writes, `eval` reproducing the run's evaluation in a
fresh process, config round trips, `list`, and exit status 2 with a useful message for every
kind of invalid input.

Runs are tiny (512 env steps: two PPO updates), in-process through ``rlnorm.cli.main``.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import rlnorm
from rlnorm import cli

NORMS = ["batch", "layer", "none"]
FINAL_EPISODES = 5
TINY = shlex.split(
    f"--steps 512 --quiet --set train.eval_every=0 --set train.final_eval_episodes={FINAL_EPISODES}"
)


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """``cli.main(argv)`` with its stdout and stderr captured (usable outside a test body)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int, str]]:
    """One tiny training run per norm: norm -> (run_dir, exit status, stdout)."""
    out = {}
    for norm in NORMS:
        run_dir = tmp_path_factory.mktemp(f"run-{norm}")
        rc, stdout, _ = run_main(["train", "--norm", norm, "--run-dir", str(run_dir), *TINY])
        out[norm] = (run_dir, rc, stdout)
    return out


# --------------------------------------------------------------------------- train


@pytest.mark.parametrize("norm", NORMS)
def test_train_writes_every_artefact(norm: str, runs: dict[str, tuple[Path, int, str]]) -> None:
    run_dir, rc, stdout = runs[norm]
    assert rc == 0

    events = list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    last = run_dir / "checkpoints" / "last"
    assert (last / "weights.safetensors").is_file() and (last / "meta.json").is_file()
    meta = json.loads((last / "meta.json").read_text())
    assert meta["norm"] == norm and meta["env_id"] == "CartPole-v1"
    assert meta["counters"]["env_steps"] >= 512
    assert rlnorm.load(last).norm == norm

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["norm"] == norm
    assert cfg["train"]["total_steps"] == 512
    assert cfg["train"]["eval_every"] == 0
    assert cfg["train"]["final_eval_episodes"] == FINAL_EPISODES
    assert cfg["agent"]["lr"] == 0.001 and cfg["agent"]["hidden"] == [64, 64]  # resolved, full

    assert (run_dir / "command.txt").read_text().startswith("rlnorm")

    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert len(evals) == 1  # eval_every=0: only the final evaluation
    assert evals[-1]["episodes"] == FINAL_EPISODES and evals[-1]["step"] >= 512

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] >= 512
    assert summary["final_eval"] == {
        "mean": evals[-1]["mean"],
        "std": evals[-1]["std"],
        "episodes": FINAL_EPISODES,
    }

    assert str(run_dir / "tb") in stdout
    assert str(last) in stdout
    assert f"({norm} norm)" in stdout


def test_command_txt_records_the_command_that_was_run(
    runs: dict[str, tuple[Path, int, str]],
) -> None:
    """command.txt records the arguments given to ``main`` (shell-quoted), also when a run
    is started in-process (tests, scripts, notebooks), not the host process's argv."""
    run_dir, _, _ = runs["batch"]
    words = shlex.split((run_dir / "command.txt").read_text())
    assert words[:2] == ["rlnorm", "train"]
    assert "--norm" in words and words[words.index("--norm") + 1] == "batch"
    assert words[words.index("--steps") + 1] == "512"


# --------------------------------------------------------------------------- eval


def test_eval_in_a_fresh_process_reproduces_the_final_evaluation(
    runs: dict[str, tuple[Path, int, str]],
) -> None:
    run_dir, _, _ = runs["batch"]
    recorded = json.loads((run_dir / "eval.jsonl").read_text().splitlines()[-1])
    checkpoint, episodes = str(run_dir / "checkpoints" / "last"), str(recorded["episodes"])
    proc = subprocess.run(
        [sys.executable, "-m", "rlnorm.cli", "eval", checkpoint, "--episodes", episodes, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=run_dir,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["seed"] == recorded["seed"]  # the run's evaluation seed, by default
    assert result["episodes"] == recorded["episodes"]
    assert result["mean_return"] == recorded["mean"]
    assert result["std_return"] == recorded["std"]


def test_eval_reproduces_a_run_with_its_own_number_of_eval_envs(tmp_path: Path) -> None:
    """Episodes are split over the eval env's sub-envs, so `rlnorm eval` must default to the
    run's ``train.eval_num_envs`` (3 here, not the default 20), as it does to its seed."""
    rc, _, err = run_main(
        ["train", "--run-dir", str(tmp_path), *TINY, "--set", "train.eval_num_envs=3"]
    )
    assert rc == 0, err
    recorded = json.loads((tmp_path / "eval.jsonl").read_text().splitlines()[-1])
    rc, out, err = run_main(
        ["eval", str(tmp_path / "checkpoints" / "last"), "--episodes", "5", "--json"]
    )
    assert rc == 0, err
    assert json.loads(out)["mean_return"] == recorded["mean"]
    # ... which matters: 20 sub-envs start other episodes
    _, out, _ = run_main(
        [
            "eval",
            str(tmp_path / "checkpoints" / "last"),
            "--episodes",
            "5",
            "--json",
            "--num-envs",
            "20",
        ]
    )
    assert json.loads(out)["mean_return"] != recorded["mean"]


def test_eval_prints_a_summary_line(runs: dict[str, tuple[Path, int, str]]) -> None:
    run_dir, _, _ = runs["layer"]
    rc, out, _ = run_main(["eval", str(run_dir / "checkpoints" / "last"), "--episodes", "3"])
    assert rc == 0
    assert "ppo (layer norm) on CartPole-v1" in out and "over 3 episodes" in out


def _pickle_file(tmp: Path) -> Path:
    path = tmp / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    return path


@pytest.mark.parametrize(
    ("make_path", "message"),
    [
        (lambda tmp: tmp / "does-not-exist", "no such checkpoint"),
        (lambda tmp: tmp, "meta.json is missing"),
        (_pickle_file, "pickle"),
    ],
    ids=["missing", "empty-dir", "pickle-file"],
)
def test_eval_of_a_non_checkpoint_exits_2(
    make_path, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = make_path(tmp_path)
    assert cli.main(["eval", str(path), "--episodes", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlnorm eval: error:")
    assert message in err and str(path) in err


# --------------------------------------------------------------------------- config


def test_config_file_round_trip_and_float_override(
    runs: dict[str, tuple[Path, int, str]], tmp_path: Path
) -> None:
    """A run's config.yaml is a valid --config; `--set agent.lr=3e-4` (a string to YAML 1.1)
    is read as the float 0.0003, and survives the round trip with the other overrides."""
    first = tmp_path / "first"
    rc, _, err = run_main(
        [
            "train",
            "--norm",
            "layer",
            "--run-dir",
            str(first),
            *TINY,
            *shlex.split("--set agent.lr=3e-4 --set agent.epochs=3"),
        ]
    )
    assert rc == 0, err
    cfg = yaml.safe_load((first / "config.yaml").read_text())
    assert cfg["agent"]["lr"] == pytest.approx(3e-4) and isinstance(cfg["agent"]["lr"], float)
    assert cfg["agent"]["epochs"] == 3 and cfg["norm"] == "layer"
    meta = json.loads((first / "checkpoints" / "last" / "meta.json").read_text())
    assert meta["agent_config"]["lr"] == pytest.approx(3e-4)

    second = tmp_path / "second"  # no --norm, --steps or --set: all from the file
    rc, _, err = run_main(
        ["train", "--config", str(first / "config.yaml"), "--run-dir", str(second), "--quiet"]
    )
    assert rc == 0, err
    assert yaml.safe_load((second / "config.yaml").read_text()) == cfg

    for norm in NORMS:  # and the shipped-defaults runs' files, unchanged
        run_dir, _, _ = runs[norm]
        again = tmp_path / f"again-{norm}"
        rc, _, err = run_main(
            [
                "train",
                "--config",
                str(run_dir / "config.yaml"),
                "--run-dir",
                str(again),
                *shlex.split("--quiet --steps 256"),
            ]
        )
        assert rc == 0, err
        resolved = yaml.safe_load((again / "config.yaml").read_text())
        original = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert resolved["norm"] == norm and resolved["agent"] == original["agent"]


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


# Each case: extra argv (built from tmp_path), substrings stderr must contain.
INVALID = {
    "unknown-agent": (lambda t: ["--agent", "nope"], ["unknown agent 'nope'", "ppo"]),
    "unknown-env": (
        lambda t: ["--env", "CartPole-v9"],
        ["unknown env 'CartPole-v9'", "CartPole-v1"],
    ),
    "unknown-norm": (
        lambda t: ["--norm", "batchnorm"],
        [
            "unknown norm 'batchnorm'",
            "Did you mean 'batch'?",
            "batch, batch_renorm, cosine, layer, none, rms, weight",
        ],
    ),
    "unknown-agent-key": (
        lambda t: ["--set", "agent.learning_rate=1"],
        ["agent.learning_rate", "Did you mean 'lr'?", "clip_range", "epochs", "minibatch_size"],
    ),
    "unknown-train-key": (
        lambda t: ["--set", "train.num_env=4"],
        ["train.num_env", "Did you mean 'num_envs'?", "total_steps"],
    ),
    "unknown-top-level-key": (
        lambda t: ["--set", "optimizer.lr=1"],
        ["unknown top-level config key 'optimizer'", "agent, norm, train"],
    ),
    "wrong-type": (
        lambda t: ["--set", "agent.epochs=abc"],
        ["agent.epochs", "expected int", "'abc'"],
    ),
    "wrong-type-float": (
        lambda t: ["--set", "agent.lr=fast"],
        ["agent.lr", "expected float", "'fast'"],
    ),
    "out-of-range": (
        lambda t: ["--set", "train.num_envs=0"],
        ["train.num_envs", "must be > 0", "got 0"],
    ),
    "set-without-equals": (
        lambda t: ["--set", "agent.lr"],
        ["'agent.lr'", "key=value"],
    ),
    "malformed-yaml": (
        lambda t: ["--config", str(_write(t, "bad.yaml", "norm: batch\nagent:\n  lr: [1e-3\n"))],
        ["bad.yaml", "malformed YAML", "line 4"],
    ),
    "yaml-not-a-mapping": (
        lambda t: ["--config", str(_write(t, "list.yaml", "- norm\n- batch\n"))],
        ["list.yaml", "mapping", "list"],
    ),
    "missing-config-file": (
        lambda t: ["--config", str(t / "absent.yaml")],
        ["absent.yaml", "No such file"],
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_input_exits_2_naming_the_problem(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_args, expected = INVALID[case]
    run_dir = tmp_path / "run"
    rc = cli.main(["train", "--run-dir", str(run_dir), *TINY, *make_args(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("rlnorm train: error:")
    for text in expected:
        assert text in err, f"{text!r} missing from: {err}"
    assert not run_dir.exists(), "an invalid command should write nothing"


def test_yaml_cannot_construct_python_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "MARKER"
    evil = _write(tmp_path, "evil.yaml", f'!!python/object/apply:os.system ["touch {marker}"]\n')
    nested = _write(
        tmp_path,
        "nested.yaml",
        f'agent:\n  lr: !!python/object/apply:os.system ["touch {marker}"]\n',
    )
    for path in (evil, nested):
        rc = cli.main(["train", "--config", str(path), "--run-dir", str(tmp_path / "run"), *TINY])
        err = capsys.readouterr().err
        assert rc == 2
        assert path.name in err and "python/object/apply:os.system" in err
    assert not marker.exists(), "a config file ran a command"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("agent.epochs=0", "agent.epochs"),
        ("agent.minibatch_size=0", "agent.minibatch_size"),
        ("agent.rollout_steps=0", "agent.rollout_steps"),
        ("agent.lr=-1", "agent.lr"),
        ("agent.norm_statistics=exponential", "agent.norm_statistics"),
        ("agent.hidden=[64, wide]", "agent.hidden"),
    ],
)
def test_out_of_range_agent_values_exit_2(
    override: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Out-of-range agent values exit 2 naming the key before the run starts, instead of
    crashing mid-training (ZeroDivisionError, KeyError) or being silently accepted."""
    run_dir = tmp_path / "run"
    try:
        rc = cli.main(["train", "--run-dir", str(run_dir), *TINY, "--set", override])
    except Exception as e:  # a traceback instead of a message
        pytest.fail(f"--set {override} raised {type(e).__name__}: {e}")
    err = capsys.readouterr().err
    assert rc == 2, f"--set {override} was accepted"
    assert err.startswith("rlnorm train: error:") and key in err


# --------------------------------------------------------------------------- list, device


def test_list_names_agents_envs_and_norm_contracts(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()

    def line_of(name: str) -> str:
        found = [ln for ln in lines if ln.split() and ln.split()[0] == name]
        assert len(found) == 1, f"no single line for {name!r} in:\n{out}"
        return found[0]

    ppo = lines.index(line_of("ppo"))
    assert lines[ppo + 1].split()[0] == "configs:" and "CartPole-v1" in lines[ppo + 1]
    line_of("CartPole-v1")
    assert "[batch-dependent, mode-dependent]" in line_of("batch")
    for name in ("none", "layer"):
        assert "dependent" not in line_of(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["train", "eval"])
def test_cuda_device_without_cuda_exits_2(
    command: str,
    runs: dict[str, tuple[Path, int, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if command == "train":
        argv = ["train", "--run-dir", str(tmp_path / "run"), *TINY, "--device", "cuda"]
    else:
        argv = ["eval", str(runs["none"][0] / "checkpoints" / "last"), "--device", "cuda"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "CUDA is not available" in err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- eval extras


def test_eval_accepts_a_run_directory_and_uses_its_best_checkpoint(
    runs: dict[str, tuple[Path, int, str]],
) -> None:
    run_dir = runs["batch"][0]
    by_run = run_main(["eval", str(run_dir), "--json"])
    by_checkpoint = run_main(["eval", str(run_dir / "checkpoints" / "best"), "--json"])
    assert by_run[0] == by_checkpoint[0] == 0
    assert json.loads(by_run[1]) == json.loads(by_checkpoint[1])


def test_eval_render_writes_an_animated_gif_of_one_episode(
    runs: dict[str, tuple[Path, int, str]], tmp_path: Path
) -> None:
    pytest.importorskip("pygame", reason="rendering classic control needs pygame (render extra)")
    from PIL import Image

    gif = tmp_path / "episode.gif"
    rc, out, err = run_main(
        ["eval", str(runs["layer"][0]), "--episodes", "1", "--render", str(gif)]
    )
    assert rc == 0, err
    frames = int(out.split("rendered one episode (")[1].split(" frames")[0])
    with Image.open(gif) as image:
        assert image.format == "GIF"
        # PIL merges consecutive identical frames (a pole at rest), so at most `frames`.
        assert 2 <= image.n_frames <= frames


def test_gif_frames_keep_every_colour_exactly_when_256_suffice() -> None:
    import numpy as np

    from rlnorm.render import _palette_images

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
    frames = [colours[rng.integers(0, 256, size=(8, 5))] for _ in range(3)]
    images = _palette_images(frames)
    assert images is not None
    for image, frame in zip(images, frames, strict=True):
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image.convert("RGB")), frame)
    frames.append(rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8))  # > 256 colours
    assert _palette_images(frames) is None


def test_plot_draws_the_runs_learning_curves(
    runs: dict[str, tuple[Path, int, str]], tmp_path: Path
) -> None:
    out = tmp_path / "curves.png"
    rc, _, err = run_main(["plot", *(str(runs[n][0]) for n in NORMS), "-o", str(out)])
    assert rc == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, _, err = run_main(["plot", str(tmp_path / "missing"), "-o", str(out)])
    assert rc == 2 and "missing" in err


def test_audit_reports_a_clean_run_and_a_checkpoint_with_nan_statistics(
    runs: dict[str, tuple[Path, int, str]], tmp_path: Path
) -> None:
    rc, out, _ = run_main(["audit", str(runs["none"][0])])
    assert rc == 0
    assert "no findings" in out
    rc, out, _ = run_main(["audit", str(runs["batch"][0])])
    assert rc == 0
    assert "info" in out and "batch-dependent" in out.lower()

    agent = rlnorm.load(runs["batch"][0] / "checkpoints" / "last")
    agent.actor.body[1].running_mean[0] = float("nan")
    bad = rlnorm.save(agent, tmp_path / "nan", env_id="CartPole-v1")
    rc, out, _ = run_main(["audit", str(bad)])
    assert rc == 1
    assert "error" in out and "actor.body.1" in out


def test_the_cli_reference_page_is_current() -> None:
    page = Path(__file__).parent.parent / "docs" / "cli.md"
    assert page.read_text() == cli.reference(), (
        "docs/cli.md is stale: regenerate it with "
        "python -c \"from rlnorm import cli; print(cli.reference(), end='')\" > docs/cli.md"
    )


def test_every_shipped_config_is_valid_and_builds_its_agent() -> None:
    """Every ``configs/<agent>/<env>.yaml`` (``configs/sb3/<Algo>-<env>.yaml``) resolves
    through the schema and builds its agent on its env's spaces: a typo in a shipped file
    fails here, not in a user's run."""
    from rlnorm import agents, config, envs

    checked = 0
    for agent in agents.names():
        for name in config.packaged_config_names(agent):
            env_id = "Pendulum-v1" if name in ("default", "paper") else name.removeprefix("ddpg-")
            family, _, algo = agent.partition(":")
            path = (
                config.packaged_configs_dir() / family / f"{algo}{'-' if algo else ''}{name}.yaml"
            )
            cfg = config.resolve(agents.get(agent), env_id, config_file=path)
            env = envs.make(env_id, num_envs=1)
            cls = agents.get(agent)
            cls(env.single_observation_space, env.single_action_space, cfg.agent_config, cfg.norm)
            checked += 1
    assert checked >= 17
