"""Who owns a run directory: one run at a time, and never over another run's files.

:func:`claim` holds an OS file lock (``filelock``, ``flock`` on POSIX) on
``<run_dir>/.rlnorm.lock`` for as long as a run writes into the directory. The kernel
releases the lock when its process dies, so the lock of a killed run (SIGKILL, power loss)
is stale by construction and the next run takes it over; ``.rlnorm.owner`` records who
holds it (pid, host, start, command) for the message a second run gets.

A new run refuses a directory that holds anything but the lock: it would overwrite
``config.yaml`` and ``last/``, lose a better ``best/``, mix two runs' ``eval.jsonl`` and
TensorBoard logs and prune the other run's snapshots. ``resume=True`` continues the run
there; ``overwrite=True`` first moves the old contents into a sibling directory
``<name>.replaced-<timestamp>``: nothing is ever deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from rlnorm.errors import RunDirError

LOCK = ".rlnorm.lock"
OWNER = ".rlnorm.owner"


@contextmanager
def claim(
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    command: str = "",
) -> Iterator[Path | None]:
    """Own ``run_dir`` for the duration of the ``with`` block; yields where ``overwrite``
    moved the previous contents (None when nothing was moved).

    Raises :class:`RunDirError` when another live run holds the directory, when a new run
    (neither ``resume`` nor ``overwrite``) finds it non-empty, or when it cannot be
    created, locked or written (a read-only directory: no raw ``PermissionError``).
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise RunDirError("--resume continues a run and --overwrite moves it aside: pick one")
    try:
        if not resume:
            run_dir.mkdir(parents=True, exist_ok=True)
        elif not run_dir.is_dir():
            raise RunDirError(f"{run_dir}: no such run directory")
        if not os.access(run_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
        lock = FileLock(run_dir / LOCK, timeout=0)
        lock.acquire()
    except Timeout:
        raise RunDirError(
            f"{run_dir} is in use by another rlnorm run ({_owner(run_dir)}); wait for it to "
            "finish or choose another --run-dir"
        ) from None
    except OSError as e:
        raise RunDirError(f"cannot write the run directory {run_dir}: {e.strerror or e}") from None
    try:
        try:
            (run_dir / OWNER).write_text(
                f"pid {os.getpid()} on {socket.gethostname()} since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {command}\n"
            )
            contents = sorted(p.name for p in run_dir.iterdir() if p.name not in (LOCK, OWNER))
            moved = _move_aside(run_dir, contents) if contents and overwrite else None
        except OSError as e:
            raise RunDirError(f"cannot write the run directory {run_dir}: {e.strerror or e}") from e
        if contents and not (resume or overwrite):
            shown = ", ".join(contents[:4]) + (", ..." if len(contents) > 4 else "")
            raise RunDirError(
                f"{run_dir} is not empty (it holds {shown}): training into it would overwrite "
                f"another run; continue that run with --resume {run_dir}, add --overwrite to "
                "move its contents aside, or choose another --run-dir"
            )
        yield moved
    finally:
        with contextlib.suppress(OSError):
            (run_dir / OWNER).unlink(missing_ok=True)
        lock.release()


def _owner(run_dir: Path) -> str:
    try:
        return (run_dir / OWNER).read_text().strip() or "owner unknown"
    except OSError:
        return "owner unknown"


def _move_aside(run_dir: Path, names: list[str]) -> Path:
    """Move ``names`` out of ``run_dir`` into a fresh sibling ``<name>.replaced-<time>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    suffix = 1
    while True:
        try:
            target.mkdir()
            break
        except FileExistsError:
            suffix += 1
            target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}-{suffix}")
    for name in names:
        os.replace(run_dir / name, target / name)
    return target


__all__ = ["LOCK", "OWNER", "claim"]


#: The file a seed population writes into its directory (:mod:`rlnorm.population`).
POPULATION_RECORD = "population.json"


def read_population(population_dir: Path) -> tuple[list[int], list[Path]] | None:
    """The seeds and member run directories a population's directory records, or ``None``
    when ``population_dir`` is not a population's; a record that does not parse is an
    error naming the file."""
    record = Path(population_dir) / POPULATION_RECORD
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text())
        seeds, runs = [int(s) for s in data["seeds"]], [Path(d) for d in data["runs"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunDirError(f"{record}: not a population record ({e!r})") from None
    if not runs or len(seeds) != len(runs):
        raise RunDirError(f"{record}: records {len(seeds)} seeds for {len(runs)} run directories")
    return seeds, runs
