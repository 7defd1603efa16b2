"""``rlnorm sweep --backend ray``: each trial a Ray task on a Ray cluster, or on a local Ray.

The task runs the very ``rlnorm train`` process the local backend runs, on whichever node
Ray places it, writing its run directory straight into the sweep's output directory: that
directory must be storage every node sees at the same path (NFS, a cluster file system, a
mounted bucket). Run directories are not copied back to the driver; a task whose node does
not see the output directory fails at once, saying so, instead of training into a void.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from pathlib import Path
from typing import Any

from rlnorm.errors import MissingDependencyError, RlnormError
from rlnorm.sweep.runner import Job, Outcome, run_job


def _task(job: Job, out: str) -> Outcome:
    """The body of a trial's Ray task: check the node sees the sweep directory, then run."""
    if not (Path(out) / "sweep.yaml").is_file():
        import socket

        return Outcome(
            1,
            f"node {socket.gethostname()} does not see the sweep directory {out}: --out must "
            "be on storage every Ray node mounts at the same path",
            0.0,
        )
    return run_job(job)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--backend ray needs Ray: pip install 'rlnorm[ray]'") from None
    return ray


def ray_pool(
    jobs: list[Job],
    out: Path,
    address: str | None,
    num_cpus: int,
    resources: dict[str, float],
) -> Generator[tuple[Job, Outcome], None, None]:
    """Run ``jobs`` as Ray tasks on the cluster at ``address`` (``auto``, ``ray://host:port``)
    or, without one, on a local Ray of ``num_cpus`` CPUs; yield each trial as it ends. Each
    task asks for ``resources`` (``num_cpus``, default 1; ``num_gpus``, fractions allowed).
    Tasks still running when the generator is closed are cancelled."""
    if not jobs:  # a finished sweep rerun: no Ray to start
        return
    ray = _ray()
    try:
        if address:
            ray.init(address=address)
        else:
            # "local": a new Ray of our own, never one found running on this machine.
            ray.init(
                address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False
            )
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RlnormError(
            f"--backend ray: cannot start or reach Ray ({address or 'local'}): {e}"
        ) from e
    try:
        task = ray.remote(
            num_cpus=resources.get("num_cpus", 1), num_gpus=resources.get("num_gpus", 0)
        )(_task)
        pending = {task.remote(job, str(out.resolve())): job for job in jobs}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        outcome = Outcome(1, f"Ray task failed: {str(e).splitlines()[0]}", 0.0)
                    yield job, outcome
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
    finally:
        ray.shutdown()
