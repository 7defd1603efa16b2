"""How long the ``rlnorm`` command takes to answer when it has nothing heavy to do.

Times, as wall clock of a fresh process each: ``rlnorm --help``, an argument error
(``rlnorm train --steps many``), ``rlnorm list``, and for scale ``python -c pass`` and
``python -c "import torch"``, and the cost of building torch's Adam against rlnorm's
(:mod:`rlnorm.optim`). Each is run ``--repeats`` times, interleaved; the table gives
the median and the fastest run (the fastest is the least disturbed by other load). The
commands inherit this process's CPU affinity, which the results record: pin the run with
``taskset -c 0`` on a machine whose other cores are busy.

Usage: python benchmarks/cli_startup.py [--repeats K] [--out benchmarks/results/cli_startup.md]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RLNORM = str(Path(sys.executable).parent / "rlnorm")
ADAM = "import torch\nfrom %s import Adam\nAdam([torch.zeros(1, requires_grad=True)])"
CASES = {
    "rlnorm --help": [RLNORM, "--help"],
    "rlnorm train --steps many (argument error)": [RLNORM, "train", "--steps", "many"],
    "rlnorm list": [RLNORM, "list"],
    "python -c pass (interpreter start)": [sys.executable, "-c", "pass"],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
    # Building an optimizer: torch's Adam imports torch._dynamo, rlnorm's does not
    # (rlnorm/optim.py); every `rlnorm train` and `rlnorm eval` builds some.
    "import torch, build torch.optim.Adam": [sys.executable, "-c", ADAM % "torch.optim"],
    "import torch, build rlnorm.optim.Adam": [sys.executable, "-c", ADAM % "rlnorm.optim"],
}


def _version(package: str) -> str:
    """The installed version of ``package``, read from its metadata (nothing imported)."""
    return importlib.metadata.version(package)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cli_startup.md")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeats):
        for name, cmd in CASES.items():
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=False)
            times[name].append(time.perf_counter() - start)
    load = os.getloadavg()[0]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    cores = sorted(os.sched_getaffinity(0))
    pin = f"taskset -c {','.join(map(str, cores))} " if len(cores) < (os.cpu_count() or 1) else ""
    lines = [
        "# `rlnorm` start-up time",
        "",
        "Command (from the repository root):",
        "",
        "```",
        f"{pin}.venv/bin/python benchmarks/cli_startup.py --repeats {args.repeats}",
        "```",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M')}, commit {commit}; Python "
        f"{platform.python_version()}, torch {_version('torch')}, gymnasium "
        f"{_version('gymnasium')}; {os.cpu_count()} CPU cores, the commands run on "
        f"core(s) {', '.join(map(str, cores))}.",
        f"- Load average {load:.1f} on {os.cpu_count()} cores at the end (other jobs share the "
        "machine): the fastest of the runs is the best estimate of an idle core.",
        "- Wall clock of a fresh process each, runs of the cases interleaved.",
        "",
        "| command | median (s) | fastest (s) |",
        "|---|---|---|",
    ]
    for name, values in times.items():
        lines.append(f"| `{name}` | {statistics.median(values):.2f} | {min(values):.2f} |")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
