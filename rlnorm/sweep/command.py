"""The ``rlnorm sweep`` command: run a SPEC (``rlnorm sweep SPEC.yaml``) or report on a
sweep's results (``rlnorm sweep report DIR``)."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

from rlnorm.errors import RlnormError
from rlnorm.sweep import runner
from rlnorm.sweep import spec as specs

USAGE = """\
rlnorm sweep SPEC.yaml [--out DIR] [--backend local|ray] [--workers K] [--address ADDR]
                              [--retry-failed]
       rlnorm sweep report DIR [--metric final|auc] [--baseline LABEL] [-o FILE]"""


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sweep`` to ``rlnorm``'s sub-command parsers; returns its parser."""
    parser = subparsers.add_parser(
        "sweep",
        help="run a grid of trials from a SPEC (resumable; local pool or Ray), or report on one",
        usage=USAGE,
        description="Run every trial of SPEC.yaml as an ordinary `rlnorm train` run directory "
        "under DIR (trials.csv: status and result of each; rerunning skips finished trials and "
        "resumes interrupted ones), or, as `rlnorm sweep report DIR`, compute rliable "
        "statistics (IQM, median, mean with 95% CIs, probability of improvement) and figures. "
        "See docs/sweeps.md.",
    )
    parser.add_argument("spec", metavar="SPEC.yaml | report", help="the sweep spec, or `report`")
    parser.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="(report) the sweep DIR")
    running = parser.add_argument_group("running a sweep")
    running.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="default: sweeps/<SPEC name>"
    )
    running.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: a process pool (default); ray: one Ray task per trial",
    )
    running.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="K",
        help="trials at once (default: the CPU cores), each with one torch thread",
    )
    running.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to join (auto, ray://host:10001); default: start a local Ray",
    )
    running.add_argument(
        "--retry-failed", action="store_true", help="run failed trials again (resumed if they can)"
    )
    running.add_argument(
        "--group-seeds",
        action="store_true",
        help="train trials that differ only in their seed as one population in one process "
        "(rlnorm train --seeds; native agents); each keeps its own run directory",
    )
    report = parser.add_argument_group("rlnorm sweep report DIR")
    report.add_argument(
        "--metric",
        choices=("final", "auc"),
        default="final",
        help="a run's score: its final evaluation (default), or the area under its "
        "evaluation curve over the steps it spans",
    )
    report.add_argument(
        "--baseline",
        default=None,
        metavar="LABEL",
        help="row to compare with (default: norm=none, else the first)",
    )
    report.add_argument(
        "-o",
        dest="output",
        type=Path,
        default=None,
        metavar="FILE",
        help="the Markdown to write (default: DIR/report.md); the CSV and figures go beside it",
    )
    report.add_argument(
        "--reps", type=_positive_int, default=2000, help="bootstrap samples (default 2000)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Carry out ``rlnorm sweep`` with parsed ``args``; returns the exit status (1 when a
    trial failed)."""
    if args.spec == "report":
        return _report(args)
    if args.dir is not None:
        raise RlnormError(f"unexpected argument {args.dir} (the output directory is --out DIR)")
    spec = specs.load(args.spec)
    specs.check_configs(spec)
    out = (args.out or Path("sweeps") / Path(args.spec).stem).resolve()
    cores = runner.available_cores()
    if args.backend == "local":
        # One torch thread a trial (the CLI's default): workers x threads <= cores, and more
        # intra-op threads slowed small-network trials on shared cores (docs/sweeps.md).
        threads = 1
        backend = partial(runner.local_pool, workers=args.workers or cores)
    else:
        from rlnorm.sweep.ray_backend import ray_pool

        if args.address and args.workers:
            raise RlnormError("--workers sizes a local Ray; a cluster places trials by num_cpus")
        threads = max(1, int(spec.resources.get("num_cpus", 1)))
        backend = partial(
            ray_pool,
            out=out,
            address=args.address,
            num_cpus=(args.workers or cores) * threads,
            resources=spec.resources,
        )
    counts = runner.run(
        spec, out, backend, threads, args.retry_failed, group_seeds=args.group_seeds
    )
    print(
        f"sweep {out}: {counts['done']} done, {counts['failed']} failed of {len(spec.trials)}"
        f"; trials.csv holds each trial's status and result (rlnorm sweep report {out})"
    )
    return 1 if counts["failed"] else 0


def _report(args: argparse.Namespace) -> int:
    from rlnorm.sweep.report import write_report

    if args.dir is None:
        raise RlnormError(
            "rlnorm sweep report needs the sweep's directory: rlnorm sweep report DIR"
        )
    markdown, written = write_report(args.dir, args.metric, args.baseline, args.output, args.reps)
    print(markdown)
    print("wrote " + ", ".join(map(str, written)))
    return 0
