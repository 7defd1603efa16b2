"""``rlnorm.optim.Adam``: torch's Adam to the bit, without importing ``torch._dynamo``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from rlnorm.optim import Adam


def trained(optimizer_class: type[torch.optim.Adam], foreach: bool | None) -> tuple:
    """Weights and optimizer state after 5 steps, a state-dict round trip in the middle."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    optimizer = optimizer_class(net.parameters(), lr=1e-2, betas=(0.5, 0.99), foreach=foreach)
    inputs = torch.randn(5, 16, 3)
    for step, batch in enumerate(inputs):
        optimizer.zero_grad()
        net(batch).square().mean().backward()
        optimizer.step()
        if step == 2:
            optimizer.load_state_dict(optimizer.state_dict())
    return [p.detach().clone() for p in net.parameters()], optimizer.state_dict()


@pytest.mark.parametrize("foreach", [None, True])
def test_adam_equals_torch_adam_to_the_bit(foreach: bool | None) -> None:
    ours, our_state = trained(Adam, foreach)
    theirs, their_state = trained(torch.optim.Adam, foreach)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    for index, state in their_state["state"].items():
        for key, value in state.items():
            assert torch.equal(our_state["state"][index][key], value), key


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_adam_does_not_import_the_compiler_until_it_is_loaded() -> None:
    printed = run_python(
        """
        import sys
        import torch
        from rlnorm.optim import Adam

        def use(optimizer, net, calls):
            optimizer.register_step_post_hook(lambda *args: calls.append(1))
            for _ in range(2):
                optimizer.zero_grad()
                net(torch.ones(4, 3)).sum().backward()
                optimizer.step()
            optimizer.load_state_dict(optimizer.state_dict())

        net, calls = torch.nn.Linear(3, 2), []
        use(Adam(net.parameters()), net, calls)
        use(Adam(net.parameters(), foreach=True), net, calls)
        print("torch._dynamo" in sys.modules, len(calls))
        import torch._dynamo  # a compiler loaded later: torch's own path, hooks still once each
        calls.clear()
        use(torch.optim.Adam(net.parameters()), net, [])
        use(Adam(net.parameters()), net, calls)
        print(len(calls))
        """
    )
    assert printed.split() == ["False", "4", "2"]
