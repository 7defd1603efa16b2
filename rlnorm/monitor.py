"""TensorBoard scalars, a terminal progress bar, and a plain-text log in the run directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


class Monitor:
    """Writes scalars to ``<run_dir>/tb``, milestones to ``<run_dir>/train.log``, and shows
    steps, SPS, the last return and the ETA in a progress bar.

    Args:
        run_dir: the run directory.
        total_steps: the training budget, for the progress bar and its ETA.
        quiet: no progress bar (scripts, CI); ``train.log`` is written either way.
        start_step: where a resumed run starts; TensorBoard drops what an earlier
            attempt logged from this step on, so curves do not double back.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        total_steps: int,
        quiet: bool = False,
        start_step: int = 0,
    ) -> None:
        self.tb_dir = Path(run_dir) / "tb"
        self.writer = SummaryWriter(str(self.tb_dir), purge_step=start_step or None)
        self.log_file = open(Path(run_dir) / "train.log", "a")  # noqa: SIM115 (closed in close)
        self.bar = tqdm(
            total=total_steps, initial=start_step, unit="step", disable=quiet, dynamic_ncols=True
        )

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log each ``tag: value`` at ``step`` (environment steps)."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def log(self, message: str) -> None:
        """Append a timestamped line to ``train.log``."""
        self.log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        self.log_file.flush()

    def progress(self, step: int, sps: float, last_return: float | None) -> None:
        """Move the bar to ``step`` and show speed and the latest episodic return."""
        self.bar.update(step - self.bar.n)
        ret = "-" if last_return is None else f"{last_return:.1f}"
        self.bar.set_postfix_str(f"sps={sps:,.0f} return={ret}", refresh=False)

    def close(self) -> None:
        self.bar.close()
        self.writer.close()
        self.log_file.close()
