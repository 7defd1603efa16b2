"""``rlnorm reproduce NAME [--seeds N] [--budget quick|full] [--out DIR] [--workers K]
[--envs IDS]`` and ``rlnorm reproduce --list``: the subcommand's arguments and what it does,
kept beside the reproductions so that the CLI only registers it."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from rlnorm import reproduce
from rlnorm.config import positive_int_argument


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``reproduce`` on the ``rlnorm`` command's subparsers."""
    rp = subparsers.add_parser(
        "reproduce",
        help="run a reproduction (the post's failures, DDPG +- BatchNorm, CrossQ, the norm "
        "study): results.csv, curves.csv, figure.png, README.md",
    )
    rp.add_argument("name", nargs="?", default=None, help="a reproduction (see --list)")
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
    out = reproduce.run(
        args.name, args.seeds, args.budget, args.out, args.workers, command, envs=envs
    )
    print(f"wrote {out}/results.csv, curves.csv, figure.png, README.md")
    return 0
