"""Running a sweep: every trial an ordinary ``rlnorm train`` process writing an ordinary run
directory ``OUT/<trial name>``; ``OUT/sweep.yaml`` keeps the SPEC and ``OUT/trials.csv`` the
status and result of every trial, rewritten (atomically) as each one ends.

A trial's state is read from its run directory, so a sweep picks up wherever it stopped:

- ``summary.json`` present: the trial finished; it is not run again;
- ``checkpoints/last`` present: it was interrupted; ``rlnorm train --resume`` continues it;
- otherwise it never reached a checkpoint: whatever it left is removed and it starts afresh
  in a directory that does not exist yet (``rlnorm train`` refuses a used one).

A trial that fails (non-zero exit: a bad value, a NaN stop, a crash, a kill) is recorded in
``trials.csv`` with its error line and the sweep goes on; a rerun leaves it failed unless
``--retry-failed``. Trial processes die with the process that started them (Linux's
parent-death signal), so a SIGKILL of the sweep leaves no orphan writing a run directory
the next run resumes.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import yaml

from rlnorm.errors import RlnormError
from rlnorm.sweep.spec import Spec, SpecError, Trial

# Run in the trial's interpreter before rlnorm's CLI: ask the kernel to kill this process
# when its parent dies (prctl PR_SET_PDEATHSIG = 1), and give up if the parent is already
# gone. A no-op where prctl does not exist.
_CHILD = """\
import ctypes, os, signal, sys
parent = int(sys.argv.pop(1))
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    sys.exit("rlnorm sweep: the sweep that started this trial is gone")
sys.argv[0] = "rlnorm"
from rlnorm.cli import main
sys.exit(main())
"""
COLUMNS = ("trial", "status", "final_return", "final_std", "env_steps", "wall_s", "error")


@dataclass
class Job:
    """A trial to run now: the ``rlnorm train`` arguments and where its output goes;
    ``together``: more trials the same process trains as one population (``--group-seeds``)."""

    trial: Trial
    train_argv: list[str]
    log: Path
    threads: int
    together: list[Trial] = field(default_factory=list)

    @property
    def trials(self) -> list[Trial]:
        return [self.trial, *self.together]


@dataclass
class Outcome:
    """How a trial's process ended: exit status, the error line if it failed, seconds."""

    returncode: int
    error: str
    wall_s: float


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def start_trial(job: Job) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``job``'s ``rlnorm train`` process, its output appended to its log; returns the
    process and the log's offset where this attempt's output begins."""
    job.log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(job.threads), MKL_NUM_THREADS=str(job.threads))
    with open(job.log, "ab") as log:
        log.write(f"== {time.strftime('%F %T')}: rlnorm {shlex.join(job.train_argv)}\n".encode())
        offset = log.tell()
        argv = [sys.executable, "-c", _CHILD, str(os.getpid()), *job.train_argv]
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    return process, offset


def error_line(log: Path, offset: int, returncode: int) -> str:
    """The line that says why an attempt failed: rlnorm's own ``error:`` line, else the
    last line it printed (a traceback's exception), else how it was killed."""
    with open(log, "rb") as f:
        f.seek(offset)
        lines = [line.strip() for line in f.read().decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if line.startswith("rlnorm train: error:"):
            return line.removeprefix("rlnorm train: ")
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return lines[-1] if lines else f"exit status {returncode}, no output"


def run_job(job: Job) -> Outcome:
    """Run ``job`` to its end (the Ray backend's task body)."""
    start = time.perf_counter()
    process, offset = start_trial(job)
    code = process.wait()
    wall = time.perf_counter() - start
    return Outcome(code, "" if code == 0 else error_line(job.log, offset, code), wall)


def local_pool(jobs: list[Job], workers: int) -> Generator[tuple[Job, Outcome], None, None]:
    """Run ``jobs`` as at most ``workers`` processes at once; yield each as it ends. On any
    exit (an exception, Ctrl-C, the caller closing the generator) running trials are
    killed, and resume from their last checkpoint next time."""
    queue = list(reversed(jobs))
    running: dict[subprocess.Popen[bytes], tuple[Job, int, float]] = {}
    try:
        while queue or running:
            while queue and len(running) < workers:
                job = queue.pop()
                process, offset = start_trial(job)
                running[process] = (job, offset, time.perf_counter())
            ended = [p for p in running if p.poll() is not None]
            if not ended:
                time.sleep(0.05)
            for process in ended:
                job, offset, start = running.pop(process)
                code = process.returncode
                error = "" if code == 0 else error_line(job.log, offset, code)
                yield job, Outcome(code, error, time.perf_counter() - start)
    finally:
        for process in running:
            process.kill()
            process.wait()


class SweepDir:
    """The output directory of a sweep, held under an exclusive lock while it runs."""

    def __init__(self, out: Path, spec: Spec) -> None:
        self.out, self.spec = out, spec
        try:
            out.mkdir(parents=True, exist_ok=True)
            self._lock: IO[str] = open(out / ".sweep.lock", "w")  # noqa: SIM115 (held open)
        except OSError as e:
            raise RlnormError(f"cannot write the sweep directory {out}: {e.strerror or e}") from e
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RlnormError(f"{out}: another sweep is running in it") from None
        self._check_same_sweep()
        self.rows = self._read_rows()

    def _check_same_sweep(self) -> None:
        """Refuse an ``out`` that holds a sweep with other fixed train arguments: its trials
        of the same names would be different runs. Grids may differ (a sweep can grow)."""
        recorded = self.out / "sweep.yaml"
        if recorded.is_file():
            before = (yaml.safe_load(recorded.read_text()) or {}).get("train") or {}
            now = yaml.safe_load(self.spec.text).get("train") or {}
            if before != now:
                raise SpecError(
                    f"{self.spec.where('train')}: {self.out} holds a sweep with other fixed "
                    f"train arguments ({before}); give another --out"
                )
        _write_atomic(recorded, self.spec.text)

    def _read_rows(self) -> dict[str, dict[str, str]]:
        path = self.out / "trials.csv"
        if not path.is_file():
            return {}
        with open(path, newline="") as f:
            return {row["trial"]: row for row in csv.DictReader(f)}

    def run_dir(self, trial: Trial) -> Path:
        return self.out / trial.name

    def record(self, trial: Trial, status: str, error: str = "") -> None:
        """Set ``trial``'s row (its result read from its run directory when it finished)."""
        row: dict[str, Any] = {"trial": trial.name, "status": status, **trial.values}
        summary = finished(self.run_dir(trial))
        if status == "done" and summary is not None:
            row |= {
                "final_return": summary["final_eval"]["mean"],
                "final_std": summary["final_eval"]["std"],
                "env_steps": summary["env_steps"],
                "wall_s": round(summary["wall_time_s"], 2),
            }
        row["error"] = error
        self.rows[trial.name] = {k: "" if v is None else str(v) for k, v in row.items()}

    def write(self) -> None:
        """Rewrite ``trials.csv``: the SPEC's trials in order, a column per varied key."""
        keys = list(dict.fromkeys(k for t in self.spec.trials for k in t.values))
        columns = [*COLUMNS[:2], *keys, *COLUMNS[2:]]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for trial in self.spec.trials:
            writer.writerow(self.rows.get(trial.name, {"trial": trial.name}))
        _write_atomic(self.out / "trials.csv", buffer.getvalue())

    def close(self) -> None:
        self._lock.close()


def finished(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``summary.json`` (written when ``rlnorm train`` ends), or None: not finished,
    or killed while writing it (then a resume finishes it again)."""
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def plan(sweep: SweepDir, threads: int, retry_failed: bool, group_seeds: bool = False) -> list[Job]:
    """Each trial's state from its run directory; the jobs that remain, fresh or resumed.
    With ``group_seeds``, fresh trials that differ only in their seed become one job that
    trains them as one population (``rlnorm train --seeds``); a resumed one continues
    alone, as every member of a population can."""
    jobs = []
    for trial in sweep.spec.trials:
        run_dir = sweep.run_dir(trial)
        previous = sweep.rows.get(trial.name, {})
        if finished(run_dir) is not None:
            sweep.record(trial, "done")
            continue
        if previous.get("status") == "failed" and not retry_failed:
            sweep.record(trial, "failed", previous.get("error", ""))
            continue
        last = run_dir / "checkpoints" / "last"
        if last.is_dir() or last.with_name(".last.old").is_dir():
            argv = trial.resume_argv(run_dir, threads)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            argv = trial.train_argv(run_dir, threads)
        sweep.record(trial, "pending")
        jobs.append(Job(trial, argv, sweep.out / "logs" / f"{trial.name}.log", threads))
    return _grouped(sweep, jobs, threads) if group_seeds else jobs


def _grouped(sweep: SweepDir, jobs: list[Job], threads: int) -> list[Job]:
    """Fresh jobs whose trials differ only in ``seed`` merged into one population job;
    ``--run-dir`` becomes the trials' run directory with ``{seed}`` for the seed."""
    from rlnorm import agents  # the registry imports torch: only when grouping
    from rlnorm.population import population_supported

    groups: dict[str, list[Job]] = {}
    alone = []
    for job in jobs:
        trial = job.trial
        agent = agents.get(str(trial.args.get("agent", "ppo")))
        if (
            "--resume" in job.train_argv
            or "seed" not in trial.values
            or not population_supported(agent)
        ):
            alone.append(job)
            continue
        template = "__".join(
            "seed={seed}" if part == f"seed={trial.values['seed']}" else part
            for part in trial.name.split("__")
        )
        groups.setdefault(template, []).append(job)
    for template, members in groups.items():
        if len(members) == 1:
            alone.append(members[0])
            continue
        first = members[0].trial
        seeds = ",".join(str(job.trial.values["seed"]) for job in members)
        args = {key: value for key, value in first.args.items() if key != "seed"}
        argv = replace(first, args=args).train_argv(sweep.out / template, threads)
        argv += ["--seeds", seeds]
        log = sweep.out / "logs" / f"{template.replace('{seed}', 'population')}.log"
        alone.append(Job(first, argv, log, threads, [job.trial for job in members[1:]]))
    return alone


Backend = Callable[[list[Job]], Generator[tuple[Job, Outcome], None, None]]


def run(
    spec: Spec,
    out: Path,
    backend: Backend,
    threads: int,
    retry_failed: bool = False,
    echo: Callable[[str], None] = print,
    group_seeds: bool = False,
) -> dict[str, int]:
    """Run the trials of ``spec`` not finished in ``out`` on ``backend``; returns how many
    trials ended in each status (``done``, ``failed``). ``group_seeds``: see :func:`plan`."""
    sweep = SweepDir(out, spec)
    try:
        jobs = plan(sweep, threads, retry_failed, group_seeds)
        sweep.write()
        total = len(spec.trials)
        done = total - sum(len(job.trials) for job in jobs)
        resumed = sum("--resume" in job.train_argv for job in jobs)
        echo(
            f"sweep {out}: {total} trials, {done} already ended, {total - done} to run"
            + (f" ({resumed} resumed from their last checkpoint)" if resumed else "")
        )
        # Closed on any exit: the backend kills its running trials and shuts Ray down.
        with contextlib.closing(backend(jobs)) as outcomes:
            for job, outcome in outcomes:
                for trial in job.trials:
                    done += 1
                    if outcome.returncode == 0 and finished(sweep.run_dir(trial)) is not None:
                        sweep.record(trial, "done")
                        final = float(sweep.rows[trial.name]["final_return"])
                        result = f"final return {final:.2f}"
                    else:
                        sweep.record(trial, "failed", outcome.error or "no summary.json written")
                        result = f"FAILED: {sweep.rows[trial.name]['error']} (log: {job.log})"
                    sweep.write()
                    echo(f"[{done}/{total}] {trial.name}: {outcome.wall_s:.1f} s, {result}")
        counts = {"done": 0, "failed": 0}
        for row in sweep.rows.values():
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return counts
    finally:
        sweep.close()
