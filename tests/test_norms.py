"""Behaviour of the individual normalization kinds beyond the shared contract tests."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rlnorm
from rlnorm import norm as norms
from rlnorm.layers import BatchRenorm1d, CosineLinear, RMSNorm
from rlnorm.nets import mlp, orthogonal_init
from rlnorm.safety import label_layers

BATCH_DEPENDENT = [k for k in norms.names() if norms.get(k).batch_dependent]


def test_registry_holds_every_kind_the_harness_promises() -> None:
    assert set(norms.names()) == {
        "none",
        "batch",
        "layer",
        "batch_renorm",
        "weight",
        "cosine",
        "rms",
    }
    assert BATCH_DEPENDENT == ["batch", "batch_renorm"]


@pytest.mark.parametrize("kind", BATCH_DEPENDENT)
@pytest.mark.parametrize("shape", [(1, 6), (1, 6, 3), (6,)])
def test_every_batch_dependent_kind_is_guarded(kind: str, shape: tuple[int, ...]) -> None:
    layer = norms.get(kind).layer(6)
    label_layers({"critic": nn.Sequential(layer)})
    with pytest.raises(rlnorm.NormalizationError, match=r"critic\.0.*batch of 1"):
        layer.train()(torch.randn(*shape))


@pytest.mark.parametrize("shape", [(64, 6), (32, 6, 5)])
def test_batch_renorm_in_warmup_is_batchnorm(shape: tuple[int, ...]) -> None:
    brn = BatchRenorm1d(6, momentum=0.1, warmup_steps=10)
    bn = nn.BatchNorm1d(6, momentum=0.1)
    x = torch.randn(*shape) * 3 + 1
    torch.testing.assert_close(brn(x), bn(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(brn.running_mean, bn.running_mean)
    torch.testing.assert_close(brn.running_var, bn.running_var)


def test_batch_renorm_with_inactive_clips_trains_on_the_eval_function() -> None:
    """r and d undo the batch statistics: the train output is the running-statistics one."""
    brn = BatchRenorm1d(6, warmup_steps=0, relax_steps=0, r_max=1e6, d_max=1e6)
    with torch.no_grad():
        brn.running_mean.uniform_(-1, 1)
        brn.running_var.uniform_(0.5, 2)
        brn.weight.uniform_(0.5, 2)
    x = torch.randn(32, 6) * 2 + 0.5
    with rlnorm.acting(brn):
        eval_out = brn(x)
    train_out = brn.train()(x)
    torch.testing.assert_close(train_out, eval_out, rtol=1e-4, atol=1e-5)
    assert brn.num_batches_tracked == 1


def test_batch_renorm_gradient_sees_batch_statistics() -> None:
    """Unlike frozen statistics, the gradient wrt x_i depends on the other rows."""
    brn = BatchRenorm1d(3, warmup_steps=0, relax_steps=0)
    x = torch.randn(8, 3, requires_grad=True)
    brn(x)[0].sum().backward()
    assert x.grad[1:].abs().sum() > 0


@pytest.mark.parametrize("shape", [(64, 6), (32, 6, 5)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_renorm_kernel_pass_is_the_paper_formula(
    shape: tuple[int, ...], momentum: float | None
) -> None:
    """The fused pass (torch's batch-norm kernel with weight gamma * r and bias
    gamma * d + beta) gives the written-out formula's output, gradients and running
    statistics, with both clips active."""
    torch.manual_seed(0)
    brn = BatchRenorm1d(6, momentum=momentum, warmup_steps=0, relax_steps=0).double()
    with torch.no_grad():
        brn.running_var.fill_(0.1)  # sigma 0.316: features 2, 3 and 5 clip r, 2 and 3 clip d
        brn.weight.uniform_(0.5, 2)
        brn.bias.uniform_(-1, 1)
    gamma, beta = brn.weight.detach().clone(), brn.bias.detach().clone()
    mu, var = brn.running_mean.clone(), brn.running_var.clone()
    view = (1, -1, 1) if len(shape) == 3 else (1, -1)
    scale = torch.tensor([0.2, 0.5, 1.0, 2.0, 0.3, 3.0], dtype=torch.float64).view(view)
    offset = torch.tensor([0.0, 0.5, 3.0, -3.0, 1.0, 0.2], dtype=torch.float64).view(view)
    x = (torch.randn(*shape, dtype=torch.float64) * scale + offset).requires_grad_()
    out = brn(x)
    dims = (0, 2) if len(shape) == 3 else (0,)
    xr = x.detach().clone().requires_grad_()
    g, b = gamma.clone().requires_grad_(), beta.clone().requires_grad_()
    batch_mean, batch_var = xr.mean(dims), xr.var(dims, unbiased=False)
    batch_std, sigma = (batch_var + brn.eps).sqrt(), (var + brn.eps).sqrt()
    r = (batch_std / sigma).clamp(1 / 3, 3).detach()
    d = ((batch_mean - mu) / sigma).clamp(-5, 5).detach()
    assert (r == 3).any() and (r < 3).any() and (d.abs() == 5).any() and (d.abs() < 5).any()
    x_hat = (xr - batch_mean.view(view)) / batch_std.view(view) * r.view(view) + d.view(view)
    want = x_hat * g.view(view) + b.view(view)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(want)
    (out * upstream).sum().backward()
    (want * upstream).sum().backward()
    for got, ref in ((x.grad, xr.grad), (brn.weight.grad, g.grad), (brn.bias.grad, b.grad)):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    n = x.numel() / shape[1]
    rate = 1.0 if momentum is None else momentum
    torch.testing.assert_close(brn.running_mean, mu + rate * (batch_mean.detach() - mu))
    unbiased = batch_var.detach() * n / (n - 1)
    torch.testing.assert_close(brn.running_var, var + rate * (unbiased - var))
    torch.testing.assert_close(brn.last_invstd, 1 / batch_std.detach())


def test_batch_renorm_schedule() -> None:
    brn = BatchRenorm1d(2, r_max=3.0, d_max=5.0, warmup_steps=10, relax_steps=100)
    assert brn.clip_limits() == (1.0, 0.0)
    brn.num_batches_tracked.fill_(9)  # the last warm-up pass
    assert brn.clip_limits() == (1.0, 0.0)
    brn.num_batches_tracked.fill_(59)  # the 50th pass after warm-up
    assert brn.clip_limits() == pytest.approx((2.0, 2.5))
    brn.num_batches_tracked.fill_(10_000)
    assert brn.clip_limits() == (3.0, 5.0)
    with pytest.raises(ValueError, match="r_max >= 1"):
        BatchRenorm1d(2, r_max=0.5)


def test_batch_renorm_state_is_checkpointable() -> None:
    keys = set(BatchRenorm1d(4).state_dict())
    assert keys == {
        "weight",
        "bias",
        "running_mean",
        "running_var",
        "num_batches_tracked",
        "last_mean",
        "last_invstd",
    }


def test_rms_norm_matches_definition() -> None:
    layer = RMSNorm(5)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2)
    x = torch.randn(7, 5)
    want = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * layer.weight
    torch.testing.assert_close(layer(x), want)


def test_cosine_linear_is_scale_invariant_and_bounded() -> None:
    layer = CosineLinear(4, 3)
    x = torch.randn(10, 4)
    torch.testing.assert_close(layer(x), layer(x * 1000), rtol=1e-5, atol=1e-6)
    assert (layer(x).abs() <= 1 + 1e-6).all()
    want = F.normalize(x, dim=-1) @ F.normalize(layer.weight, dim=-1).T
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["weight", "cosine", "none", "batch"])
def test_orthogonal_init_reaches_the_effective_weights(kind: str) -> None:
    net = mlp(8, 2, (8, 8), norm=kind)
    orthogonal_init(net, hidden_gain=2.0, out_gain=0.5)
    hidden_weights = [
        m.weight
        for m in net.modules()
        if isinstance(m, nn.Linear | CosineLinear) and m.weight.shape == (8, 8)
    ]
    assert hidden_weights
    for w in hidden_weights:
        torch.testing.assert_close(w @ w.T, 4.0 * torch.eye(8), rtol=1e-4, atol=1e-4)


def test_weight_norm_parameters_are_direction_and_gain() -> None:
    net = mlp(4, 2, (6,), norm="weight")
    names = {n for n, _ in net.named_parameters()}
    assert "0.parametrizations.weight.original0" in names  # g
    assert "0.parametrizations.weight.original1" in names  # v


def test_batch_renorm_cumulative_statistics() -> None:
    brn = BatchRenorm1d(3, momentum=None)
    a, b = torch.randn(50, 3), torch.randn(50, 3) + 4
    brn(a)
    brn(b)
    torch.testing.assert_close(brn.running_mean, (a.mean(0) + b.mean(0)) / 2)
