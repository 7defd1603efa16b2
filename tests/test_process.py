"""``rlnorm.process``: a computing command's process keeps freed memory for reuse, so
large tensors are not page-faulted in again on every pass."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from rlnorm import process

CODE = textwrap.dedent(
    """
    import resource
    import torch
    from rlnorm.process import keep_freed_memory

    x = torch.randn(8, 512, 64)  # 1 MiB: a population's activations

    def faults_per_pass():
        def one_pass():  # a forward pass's activations, freed together
            held = [torch.relu(x) for _ in range(8)]
            return sum(h.sum() for h in held)
        for _ in range(3):
            one_pass()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            one_pass()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20

    print(faults_per_pass(), keep_freed_memory(), faults_per_pass())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_reused_instead_of_faulted_in_again() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    before, applied, after = float(out[0]), out[1], float(out[2])
    assert before > 1000  # about 256 pages per MiB, on every pass
    # Kept memory is reused: under load on the other core an occasional region is still
    # faulted in again (12.8 or 25.6 faults per pass seen, one MiB in 20 or 10 passes).
    assert applied == "True" and after < before / 20


def test_a_setting_made_in_the_environment_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable, _ in process.SETTINGS.values():
        monkeypatch.setenv(variable, "131072")
    assert process.keep_freed_memory() is False
