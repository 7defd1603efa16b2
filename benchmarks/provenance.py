"""The header every benchmark's results file starts with: what ran, when, at which commit,
on what machine and under what load, so a number can be traced to its run.

Scripts run as ``python benchmarks/NAME.py``, which puts this folder on ``sys.path``;
they import it as ``from provenance import header``.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def header(
    title: str,
    software: str,
    conditions: str = "",
    *,
    python: bool = False,
    mark_uncommitted: bool = False,
) -> list[str]:
    """The title, command (as pinned with ``taskset``), date and commit, machine and
    conditions lines. ``software``: what the machine line says after the platform (versions,
    threads, how processes ran). ``python`` adds the interpreter's version to the platform;
    ``mark_uncommitted`` says when tracked files differ from the commit (an editable install
    runs the working tree, so those edits are part of what was timed)."""

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", "HEAD").strip()
    dirty = mark_uncommitted and git("status", "--porcelain", "-uno").strip()
    cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    script = Path(sys.argv[0]).name
    interpreter = f", Python {platform.python_version()}" if python else ""
    return [
        f"# {title}",
        "",
        f"- Command: `taskset -c {cores} python benchmarks/{script} {shlex.join(sys.argv[1:])}`",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit `{commit}`"
        + (" plus uncommitted changes" if dirty else ""),
        f"- Machine: {os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}"
        f"{interpreter}), {software}, pinned to core(s) {cores}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end",
        *([f"- Conditions: {conditions}"] if conditions else []),
    ]
