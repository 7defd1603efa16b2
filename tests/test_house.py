"""The house: floors the imports respect, types that check, modules a reader can hold.

``.importlinter`` declares the floors; import-linter checks them here, so an import that
points up a floor fails the suite. import-linter finds modules by walking the package's
folder, and ``rlnorm.agents``/``rlnorm.envs`` live in top-level folders mapped into the
package by pyproject, so the check runs on a copy laid out as the installed package is.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / ".importlinter"
PLUGIN_FOLDERS = ("agents", "envs", "configs")


def installed_layout(dest: Path) -> Path:
    """A copy of the package as it installs: ``dest/rlnorm/{agents,envs,configs}``."""
    shutil.copytree(ROOT / "rlnorm", dest / "rlnorm", ignore=shutil.ignore_patterns("__pycache__"))
    for folder in PLUGIN_FOLDERS:
        shutil.copytree(
            ROOT / folder, dest / "rlnorm" / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    return dest


def lint_imports(layout: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter with the repository's contract on the package copy at ``layout``."""
    code = (
        "import sys\n"
        # the editable install would otherwise answer for rlnorm with the repository folder
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        f"sys.path.insert(0, {str(layout)!r})\n"
        "from importlinter.cli import lint_imports\n"
        f"sys.exit(lint_imports(config_filename={str(CONTRACT)!r}, no_cache=True))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=layout, timeout=120
    )


def test_the_layer_contract_holds(tmp_path: Path) -> None:
    result = lint_imports(installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_the_contract_catches_an_upward_import(tmp_path: Path) -> None:
    layout = installed_layout(tmp_path)
    rollout = layout / "rlnorm" / "rollout.py"
    rollout.write_text(rollout.read_text() + "\nfrom rlnorm.agents import ppo  # upward\n")
    result = lint_imports(layout)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "rlnorm.rollout -> rlnorm.agents" in result.stdout


def test_every_module_of_the_package_has_a_floor() -> None:
    parser = configparser.ConfigParser()
    parser.read(CONTRACT)
    layers = parser["importlinter:contract:floors"]["layers"]
    placed = {
        name.strip() for line in layers.splitlines() for name in line.replace("|", ":").split(":")
    }
    modules = {p.stem for p in (ROOT / "rlnorm").glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in (ROOT / "rlnorm").iterdir() if (p / "__init__.py").is_file()}
    assert modules | {"agents", "envs"} <= placed, sorted(modules - placed)


@pytest.mark.parametrize("folder", PLUGIN_FOLDERS)
def test_plugin_folders_are_mapped_into_the_package(folder: str) -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert f'"rlnorm.{folder}" = "{folder}"' in text


def test_the_package_type_checks(tmp_path: Path) -> None:
    """mypy, with pyproject's settings, on the package as it installs: zero errors."""
    layout = installed_layout(tmp_path / "layout")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "-p",
            "rlnorm",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        cwd=layout,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


def test_no_module_is_over_450_lines() -> None:
    """A module a reader can hold in mind: split one that grows past 450 lines."""
    long = {
        str(path.relative_to(ROOT)): n
        for folder in ("rlnorm", "agents", "envs")
        for path in (ROOT / folder).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 450
    }
    assert not long, long
