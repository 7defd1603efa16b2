"""The wheel: agents/, envs/ and configs/ ship under the rlnorm namespace, never top-level.

The repository is copied (without .git, .venv and build outputs, so a stale ``build/`` cannot
leak into the wheel and the checkout is left untouched) and built with the venv's own
setuptools; the wheel is then installed into a bare folder and imported from a process
whose working directory is elsewhere, so nothing can come from the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip"]
IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "runs",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
)


def _run(cmd: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = Path(shutil.copytree(REPO, tmp / "src", ignore=IGNORED))
    out = tmp / "dist"
    proc = _run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", out, src]
    )
    # Every configs/<agent>/ folder is a declared package, else setuptools warns per folder.
    assert "absent from the `packages` configuration" not in proc.stdout + proc.stderr
    wheels = list(out.glob("rlnorm-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_ships_subpackages_under_the_rlnorm_namespace(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = {n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")}
        assert len(dist_info) == 1
        entry_points = zf.read(f"{dist_info.pop()}/entry_points.txt").decode()

    for required in (
        "rlnorm/__init__.py",
        "rlnorm/cli.py",
        "rlnorm/checkpoint.py",
        "rlnorm/agents/__init__.py",
        "rlnorm/agent.py",
        "rlnorm/env.py",
        "rlnorm/agents/ppo.py",
        "rlnorm/agents/sb3/__init__.py",
        "rlnorm/agents/sb3/agent.py",
        "rlnorm/agents/sb3/configs.py",
        "rlnorm/agents/sb3/off_policy.py",
        "rlnorm/agents/sb3/on_policy.py",
        "rlnorm/agents/sb3/policies.py",
        "rlnorm/envs/__init__.py",
        "rlnorm/envs/base.py",
        "rlnorm/envs/cartpole.py",
        "rlnorm/configs/__init__.py",
        "rlnorm/configs/ppo/CartPole-v1.yaml",
        "rlnorm/reproduce/__init__.py",
        "rlnorm/reproduce/runner.py",
        "rlnorm/reproduce/report.py",
        "rlnorm/reproduce/perils_acting.py",
    ):
        assert required in names, f"{required} missing from {wheel.name}"

    top_level = {n.split("/")[0] for n in names}
    for generic in ("agents", "envs", "configs", "tests", "benchmarks", "scripts"):
        assert generic not in top_level, f"{wheel.name} ships a top-level {generic}/"
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"rlnorm"}

    lines = [line.replace(" ", "") for line in entry_points.splitlines()]
    assert "[console_scripts]" in lines
    assert "rlnorm=rlnorm.cli:main" in lines


def test_installed_wheel_imports_without_the_checkout(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    _run([*PIP, "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}

    probe = textwrap.dedent(
        f"""
        import importlib, sys
        from pathlib import Path

        site = Path({str(site)!r}).resolve()
        # The editable install's finder sits on sys.meta_path; drop it, so only the wheel
        # can provide rlnorm.
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]

        import rlnorm, rlnorm.agents.ppo, rlnorm.agents.sb3, rlnorm.envs, rlnorm.cli
        from rlnorm import agents, config
        for mod in (rlnorm, rlnorm.agents.ppo, rlnorm.agents.sb3, rlnorm.envs, rlnorm.cli):
            assert site in Path(mod.__file__).resolve().parents, mod.__file__
        assert rlnorm.envs.make("CartPole-v1", 2).reset(seed=0)[0].shape == (2, 4)
        shipped = config.packaged_config("ppo", "CartPole-v1")
        assert shipped is not None and shipped.is_file(), shipped
        assert site in shipped.resolve().parents, shipped
        assert config.resolve(agents.get("ppo"), "CartPole-v1").norm == "batch"

        for generic in ("agents", "envs", "configs"):
            try:
                importlib.import_module(generic)
            except ModuleNotFoundError:
                pass
            else:
                raise AssertionError(f"import {{generic}} worked: the wheel leaks it")
        print("ok")
        """
    )
    proc = _run([sys.executable, "-c", probe], cwd=elsewhere, env=env)
    assert proc.stdout.strip() == "ok"

    # The console script pip wrote runs `rlnorm list` from the installed package.
    script = site / "bin" / "rlnorm"
    assert script.is_file()
    proc = _run([sys.executable, str(script), "list"], cwd=elsewhere, env=env)
    assert "ppo" in proc.stdout and "CartPole-v1" in proc.stdout
