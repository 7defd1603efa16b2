"""Reproductions: the source post's three failures, DDPG +- BatchNorm, CrossQ and the norm
study, each one file that trains ordinary runs and writes ``results.csv``, ``curves.csv``,
``figure.png`` and ``README.md`` (``rlnorm reproduce NAME``).

The unsafe variants (acting in train mode, pickling a train-mode module, statistics shared
by separate passes) exist only in these files, each labelled as the bug it reproduces;
nothing in normal training reaches them.

This package sits on the top floor with the CLI: it imports agents and envs.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from rlnorm.errors import UnknownNameError

#: Reproduction name -> the module that implements it (a ``TITLE`` and a ``run`` function).
MODULES = {
    "perils-acting": "perils_acting",
    "perils-checkpoint": "perils_checkpoint",
    "perils-shared-stats": "perils_shared_stats",
    "ddpg-bn": "ddpg_bn",
    "crossq": "crossq",
    "norms": "norms",
}

#: Where the committed results live, relative to the repository root.
RESULTS_DIR = Path("benchmarks") / "results" / "reproduce"

#: Seeds when ``--seeds`` is not given.
DEFAULT_SEEDS = {"tiny": 1, "quick": 2, "full": 5}


def names() -> list[str]:
    """The reproductions' names, in the order the issue lists them."""
    return list(MODULES)


def get(name: str) -> ModuleType:
    """The module of reproduction ``name``; an unknown name lists the valid ones."""
    if name not in MODULES:
        raise UnknownNameError("reproduction", name, MODULES)
    return importlib.import_module(f"rlnorm.reproduce.{MODULES[name]}")


def run(
    name: str,
    seeds: int | None = None,
    budget: str = "quick",
    out: str | Path | None = None,
    workers: int = 1,
    command: str = "",
    envs: Sequence[str] = (),
) -> Path:
    """Run reproduction ``name`` with ``seeds`` seeds (default: the budget's) at ``budget``
    (``tiny``, ``quick`` or ``full``) into ``out`` (default
    ``benchmarks/results/reproduce/NAME``), ``workers`` runs in parallel, only on the env
    ids in ``envs`` when given; returns ``out``."""
    from rlnorm.reproduce import runner

    if budget not in runner.BUDGETS:
        raise UnknownNameError("budget", budget, runner.BUDGETS)
    module = get(name)
    n = seeds if seeds is not None else DEFAULT_SEEDS[budget]
    runner.select(module.trials(n, budget), envs)  # an unknown env fails before any output
    out = Path(out) if out is not None else RESULTS_DIR / name
    out.mkdir(parents=True, exist_ok=True)
    command = command or f"rlnorm reproduce {name} --seeds {n} --budget {budget}"
    runner.REVISION = runner.commit()
    module.run(seeds=n, budget=budget, out=out, workers=workers, command=command, envs=envs)
    return out


__all__ = ["DEFAULT_SEEDS", "MODULES", "RESULTS_DIR", "get", "names", "run"]
