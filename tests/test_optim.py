"""``rlnorm.optim.Adam``: torch's Adam to the bit, without importing ``torch._dynamo``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from rlnorm.optim import Adam, adam, clip_grad_norm_


def trained(optimizer_class: type[torch.optim.Adam], flags: dict[str, bool]) -> tuple:
    """Weights and optimizer state after 5 steps, a state-dict round trip in the middle."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    optimizer = optimizer_class(net.parameters(), lr=1e-2, betas=(0.5, 0.99), **flags)
    inputs = torch.randn(5, 16, 3)
    for step, batch in enumerate(inputs):
        optimizer.zero_grad()
        net(batch).square().mean().backward()
        optimizer.step()
        if step == 2:
            optimizer.load_state_dict(optimizer.state_dict())
    return [p.detach().clone() for p in net.parameters()], optimizer.state_dict()


@pytest.mark.parametrize("flags", [{}, {"foreach": True}, {"fused": True}])
def test_adam_equals_torch_adam_to_the_bit(flags: dict[str, bool]) -> None:
    ours, our_state = trained(Adam, flags)
    theirs, their_state = trained(torch.optim.Adam, flags)
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


def test_clip_grad_norm_equals_torch_to_the_bit() -> None:
    torch.manual_seed(0)
    shapes = [(64, 4), (64,), (64, 64), (64,), (2, 64), (2,), (3,)]
    scales = [1, 3, 0.1, 1, 7, 1, 0]
    grads = [torch.randn(s) * scale for s, scale in zip(shapes, scales, strict=True)]
    for max_norm in (0.5, 1e6):  # clipping and not
        ours = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
        theirs = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
        for a, b, g in zip(ours, theirs, grads, strict=True):
            a.grad, b.grad = g.clone(), g.clone()
        ours[-1].grad = theirs[-1].grad = None  # a parameter without a gradient is skipped
        total = clip_grad_norm_(ours, max_norm)
        assert torch.equal(total, torch.nn.utils.clip_grad_norm_(theirs, max_norm))
        for a, b in zip(ours[:-1], theirs[:-1], strict=True):
            assert torch.equal(a.grad, b.grad)


def test_adam_factory_uses_a_fused_kernel_where_torch_has_one() -> None:
    net = torch.nn.Linear(3, 2)
    optimizer = adam(net.parameters(), lr=1e-3)
    assert optimizer.defaults["fused"] or optimizer.defaults["foreach"]
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    fused_on_cpu = "cpu" in _get_fused_kernels_supported_devices()
    assert bool(optimizer.defaults["fused"]) == fused_on_cpu
    net(torch.ones(4, 3)).sum().backward()
    before = net.weight.detach().clone()
    optimizer.step()
    optimizer.zero_grad()
    assert net.weight.grad is None and not torch.equal(net.weight, before)
