"""The CLI starts fast: ``--help``, argument errors and ``rlnorm list`` import no torch, no
stable-baselines3 and no agent, so they answer in a fraction of a second
(``benchmarks/cli_startup.py`` measures it; here a generous bound, since the suite may
share the machine)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

#: Never imported by these commands.
HEAVY = ("torch", "stable_baselines3", "rlnorm.agents.ppo", "rlnorm.agents.sb3", "rlnorm.envs")
#: Not needed by ``--help`` and argument errors either; ``list`` reads gymnasium's registry
#: and the (torch-free) agent registry's names.
NOT_FOR_HELP = ("gymnasium", "rlnorm.agents")
PROBE = """
import sys
from rlnorm import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
print("LOADED", *sorted(m for m in {heavy!r} if m in sys.modules))
"""
#: Seconds. benchmarks/results/cli_startup.md: about 0.2 s for --help and 0.3-0.4 s for
#: list on the 2-core machine while shared, against ~4 s for an import of torch; the
#: bound leaves room for a busier one.
BOUND = 3.0


Probe = tuple[subprocess.CompletedProcess[str], float]


def probe(argv: list[str], heavy: tuple[str, ...]) -> Probe:
    """Run ``rlnorm ARGV`` in a fresh interpreter; its output ends with the ``heavy``
    modules it imported. Returns the process and its wall time."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=heavy), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc, time.perf_counter() - start


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["train", "--help"], ["train", "--steps", "many"], ["no-such-command"]],
    ids=["help", "train-help", "bad-value", "bad-command"],
)
def test_help_and_argument_errors_import_nothing_heavy_and_answer_fast(argv: list[str]) -> None:
    proc, elapsed = probe(argv, HEAVY + NOT_FOR_HELP)
    assert proc.stdout.splitlines()[-1] == "LOADED", proc.stdout + proc.stderr
    assert elapsed < BOUND, f"rlnorm {' '.join(argv)} took {elapsed:.2f} s"
    if argv[-1] != "--help":
        assert "error:" in proc.stderr


def test_list_imports_no_torch_and_answers_fast() -> None:
    proc, elapsed = probe(["list"], HEAVY)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "LOADED", proc.stdout + proc.stderr
    assert elapsed < BOUND, f"rlnorm list took {elapsed:.2f} s"
    # and it still lists what the registries hold
    for name in ("ppo", "sb3:PPO", "CartPole-v1", "Hopper-v5", "batch_renorm"):
        assert name in proc.stdout


def test_facade_names_load_on_first_use() -> None:
    code = (
        "import sys, rlnorm; before = 'torch' in sys.modules; rlnorm.acting; "
        "print(before, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "True"], out.stderr
