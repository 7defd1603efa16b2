"""The CLI starts fast: ``--help`` and argument errors import neither torch nor the agents
nor the envs, so they answer in a fraction of a second (``benchmarks/cli_startup.py``
measures it; here a generous bound, since the suite may share the machine)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

HEAVY = ("torch", "gymnasium", "stable_baselines3", "rlnorm.agents", "rlnorm.envs")
PROBE = """
import sys
from rlnorm import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
print("LOADED", *sorted(m for m in {heavy!r} if m in sys.modules))
"""
#: Seconds. benchmarks/results/cli_startup.md: 0.4-0.6 s on the 2-core machine while shared
#: (load ~4.4), against ~4-5 s for an import of torch; the bound leaves room for a busier one.
BOUND = 3.0


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["train", "--help"], ["train", "--steps", "many"], ["no-such-command"]],
    ids=["help", "train-help", "bad-value", "bad-command"],
)
def test_help_and_argument_errors_import_nothing_heavy_and_answer_fast(argv: list[str]) -> None:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.perf_counter() - start
    assert proc.stdout.splitlines()[-1] == "LOADED", proc.stdout + proc.stderr
    assert elapsed < BOUND, f"rlnorm {' '.join(argv)} took {elapsed:.2f} s"
    if argv[-1] != "--help":
        assert "error:" in proc.stderr


def test_facade_names_load_on_first_use() -> None:
    probe = (
        "import sys, rlnorm; before = 'torch' in sys.modules; rlnorm.acting; "
        "print(before, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "True"], out.stderr
