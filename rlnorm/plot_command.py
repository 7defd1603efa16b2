"""``rlnorm plot``: the command-line face of :mod:`rlnorm.plot` (arguments and output).

:mod:`rlnorm.plot` (numpy, matplotlib) is imported when the command runs, not when the
parser is built, so ``rlnorm --help`` does not wait for it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``plot`` command to ``rlnorm``'s sub-command parsers; returns its parser."""
    parser = subparsers.add_parser(
        "plot",
        help="draw learning curves of runs into a PNG, grouped by norm or any config key",
        description="Learning curves: for each group of runs, the mean over runs of the "
        "evaluation return against environment steps, the band between the worst and the best "
        "run shaded.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="run directories, or folders containing run directories (searched recursively)",
    )
    parser.add_argument(
        "-o", "--out", type=Path, default=Path("learning_curves.png"), help="the PNG to write"
    )
    parser.add_argument(
        "--group-by",
        default="norm",
        metavar="KEY",
        help="config key to group runs by, dotted for nested keys: norm (default), seed, "
        "agent.lr, train.num_envs, ...",
    )
    parser.add_argument(
        "--metric",
        default="mean",
        help="eval.jsonl field to plot (default: mean, the mean return over the episodes)",
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        dest="tags",
        metavar="TAG",
        help="plot this TensorBoard scalar (e.g. norm/gap/policy_kl) from each run's tb/ "
        "instead of the evaluation return; repeat for one panel per tag",
    )
    parser.add_argument("--title", default=None, help="default: '<agent> on <env id>'")
    parser.add_argument(
        "--allow-mixed-envs",
        action="store_true",
        help="plot runs of different environments in one figure",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Carry out ``rlnorm plot`` with parsed ``args``; returns the exit status."""
    from rlnorm.plot import plot_runs

    out = plot_runs(
        args.paths,
        args.out,
        group_by=args.group_by,
        metric=args.metric,
        title=args.title,
        allow_mixed_envs=args.allow_mixed_envs,
        tags=args.tags,
    )
    print(f"wrote {out}")
    return 0
