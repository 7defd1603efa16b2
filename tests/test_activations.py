"""rlnorm's tanh (rlnorm.activations): close to the true tanh, torch's gradient, the same
value for a state alone or in a batch, and the activation of a population's networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rlnorm import members
from rlnorm.activations import FLOAT32_ABS_ERROR, Tanh, tanh
from rlnorm.nets import mlp


def test_float32_within_its_bound_of_the_true_tanh() -> None:
    x = torch.linspace(-30, 30, 600_001)
    error = (tanh(x).double() - torch.tanh(x.double())).abs().max().item()
    assert error <= FLOAT32_ABS_ERROR
    assert error > 0  # not torch's kernel: else this module has no reason to exist


def test_float64_matches_the_true_tanh() -> None:
    x = torch.linspace(-30, 30, 600_001, dtype=torch.float64)
    assert (tanh(x) - torch.tanh(x)).abs().max().item() <= 1e-15


def test_limits_and_non_finite_inputs() -> None:
    x = torch.tensor([0.0, float("inf"), -float("inf"), 50.0, -50.0, float("nan")])
    assert tanh(x)[:5].tolist() == [0.0, 1.0, -1.0, 1.0, -1.0]
    assert tanh(x)[5].isnan()


def test_gradient_is_tanhs_at_the_output() -> None:
    x = torch.randn(64, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tanh, (x,))
    assert torch.autograd.gradgradcheck(tanh, (x,))
    y = tanh(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, 1 - torch.tanh(x.detach()) ** 2, rtol=0, atol=1e-14)


def test_same_value_with_and_without_autograd_and_alone_or_in_a_batch() -> None:
    x = torch.randn(33, 64)
    batched = tanh(x)
    with torch.inference_mode():
        assert torch.equal(tanh(x), batched)
    assert torch.equal(tanh(x.clone().requires_grad_()).detach(), batched)
    for i in (0, 7, 32):
        assert torch.equal(tanh(x[i : i + 1]), batched[i : i + 1])
        assert torch.equal(tanh(x[i]), batched[i])


def test_a_population_computes_its_networks_tanh_with_it() -> None:
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(mlp(4, 2, [8, 8], "batch", "tanh").double().eval())
    stacked = members.stack(nets)
    assert sum(isinstance(m, nn.Tanh) for m in nets[0].modules()) == 2
    assert sum(isinstance(m, Tanh) for m in stacked.modules()) == 2
    assert not any(isinstance(m, nn.Tanh) for m in stacked.modules())
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    for k, net in enumerate(nets):
        torch.testing.assert_close(stacked(x)[k], net(x[k]), rtol=0, atol=1e-14)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_keeps_shape_dtype_and_device(device: str) -> None:
    x = torch.empty(3, 5, dtype=torch.float64, device=device)
    y = tanh(x)
    assert (y.shape, y.dtype, y.device) == (x.shape, x.dtype, x.device)
