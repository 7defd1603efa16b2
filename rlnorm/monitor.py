"""TensorBoard scalars and a terminal progress bar."""

from __future__ import annotations

import os
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


class Monitor:
    """Writes scalars to ``<run_dir>/tb`` and shows steps, SPS and the last return.

    Args:
        run_dir: the run directory; TensorBoard event files go to its ``tb/`` folder.
        total_steps: the training budget, for the progress bar.
        quiet: no progress bar (scripts, CI).
    """

    def __init__(
        self, run_dir: str | os.PathLike[str], total_steps: int, quiet: bool = False
    ) -> None:
        self.tb_dir = Path(run_dir) / "tb"
        self.writer = SummaryWriter(str(self.tb_dir))
        self.bar = tqdm(total=total_steps, unit="step", disable=quiet, dynamic_ncols=True)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log each ``tag: value`` at ``step`` (environment steps)."""
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def progress(self, step: int, sps: float, last_return: float | None) -> None:
        """Move the bar to ``step`` and show speed and the latest episodic return."""
        self.bar.update(step - self.bar.n)
        ret = "-" if last_return is None else f"{last_return:.1f}"
        self.bar.set_postfix_str(f"sps={sps:,.0f} return={ret}", refresh=False)

    def close(self) -> None:
        self.bar.close()
        self.writer.close()
