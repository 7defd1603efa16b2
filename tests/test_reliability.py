"""Hostile and careless inputs (issue 12, reproductions 1-8): each is a clear error in
bounded time, and nothing is lost.

1. run directories: a second run into a used directory is refused (``--overwrite`` moves
   the old one aside), a live run's lock is respected and a killed run's taken over;
2. YAML alias bombs and deep nesting (YAML and meta.json) are refused in under a second;
3. checkpoint tensors of another dtype, or NaN/inf, are refused naming the tensor;
4. malformed checkpoint metadata is a CheckpointError / exit 2, never a traceback;
5. ``--resume`` on an unwritable run directory is exit 2 with a message;
6. a gradient-tracking action never reaches an env's state, and a refused step or reset
   leaves the env exactly as it was;
7. ``reset_mask``, unknown reset options, out-of-range bounds and non-int seeds;
8. every checkpoint file gets the mode the umask gives.

CLI runs are tiny (512 env steps of PPO on CartPole), in-process through ``cli.main``.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import io
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import rlnorm
from rlnorm import agents, cli, envs
from rlnorm.config import build_config
from rlnorm.errors import CheckpointError, EnvError

TINY = shlex.split(
    "--steps 512 --quiet --set train.eval_every=0 --set train.final_eval_episodes=2 "
    "--set train.eval_num_envs=2 --set train.checkpoint_every=256"
)


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """``cli.main(argv)`` with stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (but the lock) and its SHA-256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".rlnorm.")
    }


@contextlib.contextmanager
def bounded(seconds: float, memory: int = 1 << 30) -> Iterator[None]:
    """Fail (TimeoutError, MemoryError) instead of hanging or eating the machine's memory:
    a deadline by SIGALRM and at most ``memory`` more bytes of address space."""

    def expire(*_: object) -> None:
        raise TimeoutError(f"took more than {seconds} s")

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    previous = signal.signal(signal.SIGALRM, expire)
    resource.setrlimit(resource.RLIMIT_AS, (used + memory, hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny run (never written to by the tests: copy it first)."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    rc, _, err = run_main(["train", "--run-dir", str(run_dir), *TINY])
    assert rc == 0, err
    return run_dir


def copy_run(trained: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    subprocess.run(["cp", "-a", str(trained), str(target)], check=True)
    return target


# ------------------------------------------------------------------ 1. run directories


def test_a_second_training_into_a_used_run_dir_is_refused_and_changes_nothing(
    trained: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(trained, tmp_path)
    before = snapshot(run_dir)
    rc, _, err = run_main(["train", "--run-dir", str(run_dir), *TINY])
    assert rc == 2
    assert "is not empty" in err and "--resume" in err and "--overwrite" in err
    assert snapshot(run_dir) == before  # config, command, last/, best/, logs untouched
    assert not [p for p in run_dir.rglob("*.tmp*")]


def test_overwrite_moves_the_old_run_aside_and_deletes_nothing(
    trained: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(trained, tmp_path)
    before = snapshot(run_dir)
    rc, out, err = run_main(["train", "--run-dir", str(run_dir), "--overwrite", *TINY])
    assert rc == 0, err
    (aside,) = tmp_path.glob("run.replaced-*")
    assert f"moved the previous contents of {run_dir} to {aside}" in out
    assert snapshot(aside) == before
    lines = (run_dir / "eval.jsonl").read_text().splitlines()
    assert len(lines) == 1  # the new run's final evaluation alone, not mixed with the old
    assert len(list((run_dir / "checkpoints").glob("step-*"))) == 2


HOLDER = """
import sys, time
from rlnorm import rundir
with rundir.claim(sys.argv[1], command="holder"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_live_runs_lock_is_respected_and_a_killed_runs_lock_is_taken_over(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        rc, _, err = run_main(["train", "--run-dir", str(run_dir), *TINY])
        assert rc == 2
        assert "in use by another rlnorm run" in err and f"pid {holder.pid}" in err
        assert sorted(p.name for p in run_dir.iterdir()) == [".rlnorm.lock", ".rlnorm.owner"]
    finally:
        holder.kill()  # SIGKILL: the holder never releases its lock itself
        holder.wait()
    rc, _, err = run_main(["train", "--run-dir", str(run_dir), *TINY])
    assert rc == 0, err
    assert not (run_dir / ".rlnorm.owner").exists()  # released at the end of the run


# ------------------------------------------------------------------ 2. bounded YAML and JSON


def billion_laughs(levels: int = 9) -> str:
    """The classic alias bomb as one YAML flow list (about 600 bytes): ``levels`` anchors of
    ten aliases each, the last expanding to 10**9 strings."""
    items = [f"&a0 [{','.join(['lol'] * 10)}]"]
    items += [f"&a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "[" + ", ".join(items) + "]"


@pytest.mark.parametrize("key", ["agent.hidden", "train.total_steps"])
@pytest.mark.parametrize("how", ["config", "set"])
def test_a_yaml_alias_bomb_is_refused_in_under_a_second(key: str, how: str, tmp_path: Path) -> None:
    section, name = key.split(".")
    bomb = billion_laughs()
    assert len(bomb) < 700
    if how == "config":
        path = tmp_path / "bomb.yaml"
        path.write_text(f"{section}:\n  {name}: {bomb}\n")
        argv = ["--config", str(path)]
    else:
        argv = ["--set", f"{key}={bomb}"]
    start = time.perf_counter()
    with bounded(seconds=10):  # on a82bf38: formatting the error expands the bomb
        rc, _, err = run_main(["train", "--run-dir", str(tmp_path / "run"), *argv, *TINY])
    assert time.perf_counter() - start < 1.0
    assert rc == 2 and "aliases" in err and len(err) < 500
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_yaml_nested_20000_deep_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("agent:\n  hidden: " + "[" * 20_000 + "]" * 20_000 + "\n")
    start = time.perf_counter()
    rc, _, err = run_main(["train", "--run-dir", str(tmp_path / "run"), "--config", str(path)])
    assert time.perf_counter() - start < 1.0
    assert rc == 2 and "nested more than" in err


def test_meta_json_nested_100000_deep_is_a_clear_error(trained: Path, tmp_path: Path) -> None:
    last = copy_run(trained, tmp_path) / "checkpoints" / "last"
    meta = json.loads((last / "meta.json").read_text())
    text = json.dumps(meta).replace(
        '"extra": {', '"extra": {"deep": ' + "[" * 100_000 + "]" * 100_000 + ", ", 1
    )
    (last / "meta.json").write_text(text)
    start = time.perf_counter()
    rc, _, err = run_main(["eval", str(last)])
    assert time.perf_counter() - start < 1.0
    assert rc == 2 and "nested" in err
    with pytest.raises(CheckpointError, match="nested"):
        rlnorm.load(last)


# ------------------------------------------------------------------ 3. verified tensors


def small_checkpoint(tmp_path: Path, norm: str = "batch") -> Path:
    env = envs.make("CartPole-v1", 2)
    cls = agents.get("ppo")
    agent = cls(env.single_observation_space, env.single_action_space, build_config(cls), norm)
    return rlnorm.save(agent, tmp_path / "ckpt", env_id="CartPole-v1")


def rewrite_tensor(path: Path, name: str, key: str, change: object) -> None:
    """Replace tensor ``key`` of ``path/name`` by ``change(tensor)`` and fix the checksum, as
    a crafted checkpoint would."""
    tensors = safetensors.torch.load_file(path / name)
    tensors[key] = change(tensors[key])
    safetensors.torch.save_file(tensors, path / name)
    meta = json.loads((path / "meta.json").read_text())
    meta["sha256"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("dtype", [torch.bool, torch.int32, torch.float16, torch.float64])
def test_tensors_of_another_dtype_are_refused_naming_the_tensor(
    dtype: torch.dtype, tmp_path: Path
) -> None:
    path = small_checkpoint(tmp_path)
    rewrite_tensor(path, "weights.safetensors", "actor.body.0.weight", lambda t: t.to(dtype))
    with pytest.raises(CheckpointError, match=rf"'actor\.body\.0\.weight' is {dtype}"):
        rlnorm.load(path)
    rc, _, err = run_main(["audit", str(path)])
    assert rc == 2 and "actor.body.0.weight" in err


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("weights.safetensors", "actor.body.0.weight"),
        ("weights.safetensors", "actor.body.1.running_var"),
    ],
)
def test_non_finite_tensors_are_refused_by_load_and_reported_by_audit(
    value: float, name: str, key: str, tmp_path: Path
) -> None:
    path = small_checkpoint(tmp_path)

    def poison(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        t.view(-1)[0] = value
        return t

    rewrite_tensor(path, name, key, poison)
    with pytest.raises(CheckpointError, match=rf"{key.replace('.', '[.]')}' holds NaN or inf"):
        rlnorm.load(path)
    rc, out, _ = run_main(["audit", str(path)])
    assert rc == 1 and "error" in out and key.rsplit(".", 1)[0] in out


def test_non_finite_optimizer_state_is_refused(tmp_path: Path) -> None:
    from test_checkpoint import make_agent, train_a_little

    agent = make_agent("none")
    train_a_little(agent, updates=1)
    path = rlnorm.save(agent, tmp_path / "ckpt", env_id="CartPole-v1")
    key = next(iter(safetensors.torch.load_file(path / "optimizer.safetensors")))
    rewrite_tensor(path, "optimizer.safetensors", key, lambda t: torch.full_like(t, float("nan")))
    with pytest.raises(CheckpointError, match="holds NaN or inf"):
        rlnorm.load(path)


# ------------------------------------------------------------------ 4. malformed metadata


def edit_meta(path: Path, edit: object) -> None:
    meta = json.loads((path / "meta.json").read_text())
    edit(meta)
    (path / "meta.json").write_text(json.dumps(meta))


def _set(*keys: str, value: object) -> object:
    def edit(meta: dict) -> None:
        node = meta
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return edit


MALFORMED = {
    "counters-not-a-dict": (_set("counters", value=[1, 2]), "counters"),
    "negative-counter": (_set("counters", "env_steps", value=-5), "counters.env_steps"),
    "extra-a-list": (_set("extra", value=["x"]), "extra"),
    "string-seed": (_set("extra", "run_config", "seed", value="0"), "seed"),
    "huge-seed": (_set("extra", "run_config", "seed", value=10**23), "seed"),
    "huge-eval-num-envs": (
        _set("extra", "run_config", "train", "eval_num_envs", value=10**11),
        "eval_num_envs",
    ),
    "float-eval-num-envs": (
        _set("extra", "run_config", "train", "eval_num_envs", value=1e11),
        "eval_num_envs",
    ),
    "nan-log-std-init": (_set("agent_config", "log_std_init", value=float("nan")), "log_std_init"),
    "lr-lots": (_set("optimizer_param_groups", "optimizer", 0, "lr", value="lots"), "lr"),
    "betas-inf": (
        _set("optimizer_param_groups", "optimizer", 0, "betas", value=[0.9, float("inf")]),
        "betas",
    ),
    "foreach-a-string": (
        _set("optimizer_param_groups", "optimizer", 0, "foreach", value="yes"),
        "foreach",
    ),
    "learner-not-a-dict": (_set("extra", "learner", value=3), "learner"),
    "space-shape-huge": (_set("observation_space", "shape", value=[10**9]), "shape"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_metadata_is_a_checkpoint_error_and_exit_2(
    case: str, trained: Path, tmp_path: Path
) -> None:
    edit, where = MALFORMED[case]
    run_dir = copy_run(trained, tmp_path)
    last = run_dir / "checkpoints" / "last"
    edit_meta(last, edit)
    with pytest.raises(CheckpointError, match=where):
        rlnorm.load(last)
    for argv in (["eval", str(last)], ["train", "--resume", str(run_dir), "--quiet"]):
        rc, _, err = run_main(argv)
        assert rc == 2, (argv, err)
        assert where in err, err


def test_a_checkpoint_whose_optimizer_left_foreach_unset_loads(
    trained: Path, tmp_path: Path
) -> None:
    """PPO's Adam sets ``foreach``; checkpoints written before it did hold torch's default,
    null, and still load (and resume)."""
    last = copy_run(trained, tmp_path) / "checkpoints" / "last"
    edit_meta(last, _set("optimizer_param_groups", "optimizer", 0, "foreach", value=None))
    agent = rlnorm.load(last)
    assert agent.optimizers()["optimizer"].param_groups[0]["foreach"] is None


def test_a_100000_digit_integer_in_meta_json_is_a_clear_error(
    trained: Path, tmp_path: Path
) -> None:
    last = copy_run(trained, tmp_path) / "checkpoints" / "last"
    text = (last / "meta.json").read_text()
    (last / "meta.json").write_text(
        text.replace('"counters": {', '"counters": {"x": ' + "9" * 100_000 + ", ", 1)
    )
    start = time.perf_counter()
    rc, _, err = run_main(["eval", str(last)])
    assert time.perf_counter() - start < 1.0
    assert rc == 2 and "not valid JSON" in err and len(err) < 1000


@pytest.mark.parametrize("seed", ["99999999999999999999999", "-1"])
def test_a_seed_out_of_range_is_exit_2(seed: str, tmp_path: Path) -> None:
    rc, _, err = run_main(["train", "--run-dir", str(tmp_path / "r"), "--seed", seed, *TINY])
    assert rc == 2 and "seed must be an integer in [0, 2**62]" in err
    assert not (tmp_path / "r" / "config.yaml").exists()


# ------------------------------------------------------------------ 5. unwritable --resume


def test_resume_on_an_unwritable_run_dir_is_exit_2(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = copy_run(trained, tmp_path)
    before = snapshot(run_dir)
    if os.geteuid() == 0:  # root writes anywhere: make the directory refuse writes itself
        real_open, real_access = builtins.open, os.access

        def refuse_open(file: object, mode: str = "r", *args: object, **kwargs: object):
            if str(file).startswith(str(run_dir)) and set(mode) & set("wax+"):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, mode, *args, **kwargs)

        def refuse_access(path: object, mode: int, **kwargs: object) -> bool:
            if str(path) == str(run_dir) and mode & os.W_OK:
                return False
            return real_access(path, mode, **kwargs)

        monkeypatch.setattr(builtins, "open", refuse_open)
        monkeypatch.setattr(os, "access", refuse_access)
    else:
        run_dir.chmod(0o555)
    try:
        rc, _, err = run_main(["train", "--resume", str(run_dir), "--steps", "1024", "--quiet"])
    finally:
        run_dir.chmod(0o755)
    assert rc == 2
    assert f"cannot write the run directory {run_dir}: Permission denied" in err
    assert snapshot(run_dir) == before


# ------------------------------------------------------------------ 6. env state integrity


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "MountainCarContinuous-v0"])
def test_a_gradient_tracking_action_never_reaches_the_env_state(env_id: str) -> None:
    env, twin = envs.make(env_id, 4), envs.make(env_id, 4)
    env.reset(seed=3)
    twin.reset(seed=3)
    action = torch.full((4, 1), 0.5, requires_grad=True)
    for _ in range(3):
        obs, reward, *_ = env.step(action * 1.0)
        twin_obs, twin_reward, *_ = twin.step(action.detach() * 1.0)
        assert not obs.requires_grad and not reward.requires_grad
        assert not env.state.requires_grad and not env._state.requires_grad
        assert torch.equal(obs, twin_obs) and torch.equal(reward, twin_reward)
    env.reset(seed=4)  # raised "cos(): functions with out=... don't support autograd" before


def bad_actions(env: envs.TorchVecEnv) -> dict[str, object]:
    """Every kind of action the env must refuse, with the env's own good action shape."""
    n = env.num_envs
    if hasattr(env.single_action_space, "n"):
        return {
            "shape": torch.zeros(n, 1, dtype=torch.long),
            "float": torch.zeros(n),
            "nan": torch.full((n,), float("nan")),
            "complex": torch.zeros(n, dtype=torch.complex64),
            "out-of-range": torch.full((n,), int(env.single_action_space.n)),
            "negative": torch.full((n,), -1),
        }
    return {
        "shape": torch.zeros(n),
        "nan": torch.full((n, 1), float("nan")),
        "complex": torch.zeros(n, 1, dtype=torch.complex64),
        "partly-nan": torch.tensor([[0.0]] * (n - 1) + [[float("nan")]]),
    }


@pytest.mark.parametrize("env_id", envs.env_ids())
def test_a_refused_step_or_reset_leaves_the_env_exactly_as_it_was(env_id: str) -> None:
    env = envs.make(env_id, 3)
    env.reset(seed=0)
    good = torch.as_tensor(env.action_space.sample())
    for _ in range(5):
        env.step(good)
    before = {k: v.clone() for k, v in env.state_dict().items()}
    refused_resets = [
        {"seed": 1.5},
        {"seed": "0"},
        {"seed": True},
        {"seed": -1},
        {"options": {"nonsense": 1}},
        {"options": {"reset_mask": np.zeros(3, dtype=bool)}},
        {"options": {"reset_mask": np.ones(2, dtype=bool)}},
        {"options": {"reset_mask": [True, True, False]}},
        {"seed": 5, "options": {env.reset_options[0]: float("nan")}},
    ]
    for kind, action in bad_actions(env).items():
        with pytest.raises(EnvError):
            env.step(action)
        after = env.state_dict()
        for key, value in before.items():
            assert torch.equal(after[key], value), (kind, key)
    for kwargs in refused_resets:
        with pytest.raises(EnvError):
            env.reset(**kwargs)
        after = env.state_dict()
        for key, value in before.items():
            assert torch.equal(after[key], value), (kwargs, key)


# ------------------------------------------------------------------ 7. reset options


@pytest.mark.parametrize("exported", [False, True], ids=["native", "gymnasium-export"])
@pytest.mark.parametrize("env_id", envs.env_ids())
def test_reset_mask_resets_only_the_masked_sub_envs(env_id: str, exported: bool) -> None:
    env = envs.make(env_id, 4)
    venv = envs.to_gymnasium(env) if exported else env
    venv.reset(seed=0)
    good = venv.action_space.sample()
    for _ in range(30):
        venv.step(good if exported else torch.as_tensor(good))
    state, steps = env.state.clone(), env._steps.clone()
    mask = np.array([True, False, True, False])
    obs, _ = venv.reset(options={"reset_mask": mask})
    keep = torch.as_tensor(~mask)
    assert torch.equal(env.state[keep], state[keep]) and torch.equal(env._steps[keep], steps[keep])
    assert (env._steps[torch.as_tensor(mask)] == 0).all()
    assert not torch.equal(env.state[torch.as_tensor(mask)], state[torch.as_tensor(mask)])
    assert np.asarray(obs).shape[0] == 4


@pytest.mark.parametrize("exported", [False, True], ids=["native", "gymnasium-export"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lowe": -0.1}, "unknown reset option 'lowe'"),
        ({"low": -1e308, "high": 1e308}, "out of range"),
        ({"low": float("-inf")}, "finite"),
        ({"low": float("nan")}, "finite"),
    ],
)
def test_unknown_options_and_out_of_range_bounds_are_refused(
    options: dict, message: str, exported: bool
) -> None:
    env = envs.make("CartPole-v1", 2)
    venv = envs.to_gymnasium(env) if exported else env
    with pytest.raises(EnvError, match=message):
        venv.reset(seed=0, options=options)


def test_bounds_too_large_for_the_envs_dtype_are_refused() -> None:
    env = envs.make("MountainCar-v0", 2, dtype=torch.float16)
    with pytest.raises(EnvError, match=r"finite in torch\.float16"):
        env.reset(options={"low": -1e5, "high": 1e5})
    obs, _ = env.reset(options={"low": -1e3, "high": 1e3})
    assert torch.isfinite(obs).all()


@pytest.mark.parametrize("seed", [1.5, "0", True, -1, 2**64, np.float64(3.0)])
def test_native_reset_refuses_seeds_that_are_not_ints(seed: object) -> None:
    with pytest.raises(EnvError, match="seed must be"):
        envs.make("CartPole-v1", 2).reset(seed=seed)
    envs.make("CartPole-v1", 2).reset(seed=np.int64(3))  # numpy integers are ints


# ------------------------------------------------------------------ 8. file modes


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoint_files_get_the_mode_the_umask_gives(umask: int, tmp_path: Path) -> None:
    old = os.umask(umask)
    try:
        env = envs.make("CartPole-v1", 2)
        cls = agents.get("ppo")
        agent = cls(
            env.single_observation_space, env.single_action_space, build_config(cls), "none"
        )
        path = rlnorm.save(
            agent, tmp_path / "c", env_id="CartPole-v1", training_state={"x": torch.zeros(2)}
        )
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in path.iterdir()}
    assert set(modes) == {
        "meta.json",
        "weights.safetensors",
        "optimizer.safetensors",
        "training_state.safetensors",
    }
    assert set(modes.values()) == {0o666 & ~umask}, modes
    assert path.stat().st_mode & 0o777 == 0o777 & ~umask
