"""The progress display: a redrawn bar on a terminal, plain lines a log file can hold."""

from __future__ import annotations

import io
from pathlib import Path

from rlnorm.monitor import Monitor


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_progress(tmp_path: Path, stream: io.StringIO, total: int = 20_000) -> str:
    monitor = Monitor(tmp_path, total, stream=stream)
    for step in range(1, total + 1, 4):  # a one-env SAC run reports every few steps
        monitor.progress(step, sps=500.0, last_return=-150.0)
    monitor.progress(total, sps=500.0, last_return=-150.0)
    monitor.close()
    return stream.getvalue()


def test_progress_off_a_terminal_is_a_plain_line_every_few_percent(tmp_path: Path) -> None:
    text = run_progress(tmp_path, io.StringIO())
    lines = text.splitlines()
    assert "\r" not in text and 20 <= len(lines) <= 21, lines
    assert lines[0].startswith("step 1001/20000 (5%) sps=500 return=-150.0 eta=38s")
    assert lines[-1].startswith("step 20000/20000 (100%)")


def test_progress_past_the_budget_has_no_time_left(tmp_path: Path) -> None:
    stream = io.StringIO()
    monitor = Monitor(tmp_path, 150_000, stream=stream)
    monitor.progress(150_016, sps=1_000.0, last_return=500.0)  # a rollout overshot it
    monitor.close()
    assert stream.getvalue().splitlines()[-1].endswith(" eta=0s")


def test_progress_on_a_terminal_is_a_redrawn_bar(tmp_path: Path) -> None:
    assert "\r" in run_progress(tmp_path, FakeTerminal(), total=200)
