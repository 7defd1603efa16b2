"""``rlnorm reproduce NAME [--seeds N] [--budget quick|full] [--out DIR] [--workers K]
[--envs IDS]``, ``rlnorm reproduce all ...`` and ``rlnorm reproduce --list``: the
subcommand's arguments and what it does, kept beside the reproductions so that the CLI only
registers it."""

from __future__ import annotations

import argparse
import os
import shlex
import time
from pathlib import Path
from typing import Any

from rlnorm import reproduce
from rlnorm.config import positive_int_argument
from rlnorm.errors import ConfigError

#: The name that runs every reproduction, one after another.
ALL = "all"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``reproduce`` on the ``rlnorm`` command's subparsers."""
    rp = subparsers.add_parser(
        "reproduce",
        help="run a reproduction (the post's failures, DDPG +- BatchNorm, CrossQ, the norm "
        "study): results.csv, curves.csv, figure.png, README.md",
    )
    rp.add_argument(
        "name",
        nargs="?",
        default=None,
        help=f"a reproduction (see --list), or '{ALL}': the whole suite, each into OUT/NAME, "
        "timed in OUT/suite.md",
    )
    rp.add_argument("--list", action="store_true", help="list the reproductions")
    rp.add_argument(
        "--seeds", type=positive_int_argument, default=None, help="seeds (default 2 quick, 5 full)"
    )
    rp.add_argument(
        "--budget",
        choices=("quick", "full"),
        default="quick",
        help="quick: minutes, for a smoke run; full: the committed results",
    )
    rp.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default benchmarks/results/reproduce/NAME); finished trials are "
        "kept in OUT/trials/, and a rerun into the same folder trains only the others",
    )
    rp.add_argument(
        "--workers", type=positive_int_argument, default=1, help="runs in parallel processes"
    )
    rp.add_argument(
        "--envs",
        default="",
        metavar="ID[,ID...]",
        help="run only these env ids of the reproduction (default: all of them)",
    )
    return rp


def run(args: argparse.Namespace) -> int:
    """List the reproductions, or run one (one torch thread per process) and say where its
    files are."""
    if args.list or args.name is None:
        for name in reproduce.names():
            print(f"  {name:20s} {reproduce.get(name).TITLE.split(': ', 1)[1]}")
        return 0
    import torch  # here, not at the top: `rlnorm --help` imports no torch

    torch.set_num_threads(1)
    command = shlex.join(["rlnorm", *args.argv])
    envs = [e for e in args.envs.split(",") if e]
    if args.name == ALL:
        return run_all(args, command, envs)
    out = reproduce.run(
        args.name, args.seeds, args.budget, args.out, args.workers, command, envs=envs
    )
    print(f"wrote {out}/results.csv, curves.csv, figure.png, README.md")
    return 0


def run_all(args: argparse.Namespace, command: str, envs: list[str]) -> int:
    """Every reproduction in turn, each into ``OUT/NAME``; the wall time of each and of the
    whole suite go to ``OUT/suite.md`` as they finish (the suite's time budget is a claim
    about this one command)."""
    if envs:
        raise ConfigError("--envs selects env ids of one reproduction; it does not go with 'all'")
    root = args.out if args.out is not None else reproduce.RESULTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, float]] = []
    start = time.perf_counter()
    loads = [os.getloadavg()[0]]
    for name in reproduce.names():
        began = time.perf_counter()
        reproduce.run(name, args.seeds, args.budget, root / name, args.workers, command)
        rows.append((name, time.perf_counter() - began))
        loads.append(os.getloadavg()[0])
        write_suite(root / "suite.md", command, rows, time.perf_counter() - start, loads)
        print(f"{name}: {rows[-1][1]:.0f} s, wrote {root / name}")
    print(f"the suite took {time.perf_counter() - start:.0f} s; times in {root / 'suite.md'}")
    return 0


def write_suite(
    path: Path, command: str, rows: list[tuple[str, float]], total: float, loads: list[float]
) -> None:
    """The suite's timing table: each reproduction's wall time and their sum."""
    from rlnorm.reproduce import report, runner

    lines = [
        "# The reproduction suite, timed as one command",
        "",
        f"- Command: `{command}`",
        f"- Commit: `{runner.REVISION or runner.commit()}`; finished "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Machine: {report.machine()}",
        "- 1-minute load average at the start and after each reproduction: "
        f"{', '.join(f'{x:.2f}' for x in loads)}",
        "",
        "| reproduction | wall time (s) |",
        "|---|---|",
        *(f"| [{name}]({name}/README.md) | {seconds:.0f} |" for name, seconds in rows),
        f"| **whole suite** | **{total:.0f}** ({total / 3600:.2f} h) |",
        "",
    ]
    path.write_text("\n".join(lines))
