"""The norm/ diagnostics: values on constructed cases, and no side effects."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import rlnorm
from rlnorm import metrics
from rlnorm import norm as norms
from rlnorm.diagnostics import NormDiagnostics, stat_drift, train_eval_gap
from rlnorm.layers import GuardedBatchNorm1d
from rlnorm.nets import joint_forward, mlp
from rlnorm.streams import StreamWatch, stream_gap

STATISTICS_KINDS = ["batch", "batch_renorm"]


def two_streams(seed: int, n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g) * 3 + 5


def train_passes(net: nn.Module, *batches: torch.Tensor, **kwargs: int) -> None:
    with rlnorm.training(net), torch.no_grad():
        for x in batches:
            net(x, **kwargs)


def state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_recording_batchnorm_is_torch_batchnorm_bit_for_bit() -> None:
    """Recording the batch statistics changes nothing torch's BatchNorm1d computes."""
    torch.manual_seed(0)
    ours, theirs = GuardedBatchNorm1d(6, momentum=None), nn.BatchNorm1d(6, momentum=None)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 2)
        theirs.bias.uniform_(-1, 1)
    ours.load_state_dict(theirs.state_dict(), strict=False)
    for shape in [(32, 6), (8, 6, 5), (32, 6)]:
        x = torch.randn(*shape) * 3 + 1
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        out_a, out_b = ours(xa), theirs(xb)
        (out_a * out_a.detach().sin()).sum().backward()
        (out_b * out_b.detach().sin()).sum().backward()
        assert torch.equal(out_a, out_b) and torch.equal(xa.grad, xb.grad)
        assert torch.equal(ours.weight.grad, theirs.weight.grad)
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(getattr(ours, key), getattr(theirs, key)), key
    torch.testing.assert_close(ours.last_mean, x.mean(0))
    torch.testing.assert_close(ours.last_invstd, (x.var(0, unbiased=False) + ours.eps).rsqrt())
    ours.eval()
    theirs.eval()
    assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("kind", STATISTICS_KINDS)
def test_drift_is_zero_when_running_statistics_are_the_batch_statistics(kind: str) -> None:
    layer = norms.get(kind).layer(8)
    assert stat_drift({"net": layer})["norm/drift/log_var"] == pytest.approx(0, abs=1e-6)
    layer.momentum = 1.0  # the running statistics become the last batch's
    train_passes(layer, torch.randn(64, 8) * 2 + 3)
    drift = stat_drift({"net": layer})
    assert set(drift) == {
        "norm/drift/mean",
        "norm/drift/log_var",
        "norm/drift/mean/net",
        "norm/drift/log_var/net",
    }
    assert drift["norm/drift/mean"] == pytest.approx(0, abs=1e-6)
    # running_var is unbiased, train mode divides by the biased variance: Bessel's factor
    assert drift["norm/drift/log_var"] == pytest.approx(math.log(64 / 63), rel=1e-3)


@pytest.mark.parametrize("kind", STATISTICS_KINDS)
def test_drift_of_a_shifted_and_scaled_batch(kind: str) -> None:
    torch.manual_seed(0)
    layer = norms.get(kind).layer(8)
    x = torch.randn(256, 8) * torch.linspace(0.5, 2, 8) + 1
    layer.momentum = 1.0
    train_passes(layer, x)
    layer.momentum = 0.0  # keep the running statistics of x; the next batch is recorded only
    train_passes(layer, 2 * x + 3)
    eps, var = layer.eps, x.var(0)
    want_shift = ((x.mean(0) + 3).abs() / (var + eps).sqrt()).mean().item()
    biased = 4 * x.var(0, unbiased=False)  # of 2x + 3, as train mode normalized it
    want_log_var = (torch.log(biased + eps) - torch.log(var + eps)).abs().mean().item()
    drift = stat_drift({"net": nn.Sequential(nn.Linear(8, 8), layer)})
    assert drift["norm/drift/mean/net.1"] == pytest.approx(want_shift, rel=1e-4)
    assert drift["norm/drift/log_var/net.1"] == pytest.approx(want_log_var, rel=1e-4)
    # variance 4x, seen biased (n = 256) against the unbiased running variance
    assert drift["norm/drift/log_var"] == pytest.approx(math.log(4 * 255 / 256), rel=1e-3)


def test_drift_averages_layers_and_ignores_nets_without_statistics() -> None:
    net = mlp(4, 2, (8, 8), norm="batch")
    train_passes(net, torch.randn(32, 4), torch.randn(32, 4) + 2)
    drift = stat_drift(net)
    per_layer = [drift["norm/drift/mean/1"], drift["norm/drift/mean/4"]]
    assert drift["norm/drift/mean"] == pytest.approx(sum(per_layer) / 2)
    assert min(per_layer) > 0
    assert stat_drift(mlp(4, 2, norm="layer")) == {}


@pytest.mark.parametrize("kind", ["none", "layer", "rms", "weight"])
def test_train_eval_gap_is_zero_without_mode_dependent_layers(kind: str) -> None:
    net = mlp(4, 3, (16,), norm=kind)
    assert train_eval_gap([net, mlp(4, 1, (16,), norm=kind)], torch.randn(4, 4)) == 0.0


def test_train_eval_gap_of_batchnorm_grows_as_batches_shrink() -> None:
    torch.manual_seed(0)
    net = mlp(4, 3, (32, 32), norm="batch")
    train_passes(net, *(torch.randn(256, 4) for _ in range(50)))
    big = train_eval_gap(net, torch.randn(1024, 4))
    small = train_eval_gap(net, torch.randn(4, 4))
    assert 0 < big < 0.1 < small


def test_diagnostics_have_no_side_effects() -> None:
    torch.manual_seed(0)
    actor, critic = mlp(4, 2, (16, 16), norm="batch"), mlp(4, 1, (16, 16), norm="batch")
    train_passes(actor, torch.randn(64, 4))
    train_passes(critic, torch.randn(64, 4))
    actor.train()
    critic.eval()
    critic[1].train()  # mixed modes must come back as they were
    modes = [m.training for m in [*actor.modules(), *critic.modules()]]
    before = state(actor) | {f"critic.{k}": v for k, v in state(critic).items()}
    diagnostics = NormDiagnostics({"actor": actor, "critic": critic}, [actor, critic])
    with diagnostics.watch(0):
        pass
    metrics = diagnostics.measure(0, torch.randn(8, 4))
    metrics |= stream_gap(actor) | stat_drift(actor)
    train_eval_gap(actor, torch.randn(8, 4))
    after = state(actor) | {f"critic.{k}": v for k, v in state(critic).items()}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert modes == [m.training for m in [*actor.modules(), *critic.modules()]]
    assert metrics["norm/gap/output"] > 0


def test_watch_sees_separate_streams_apart_and_one_stream_together() -> None:
    torch.manual_seed(0)
    net = mlp(4, 2, (16, 16), norm="batch")
    with StreamWatch(net) as different, rlnorm.training(net), torch.no_grad():
        for seed in range(3):
            a, b = two_streams(seed)
            net(a)
            net(b)
    with StreamWatch(net) as same, rlnorm.training(net), torch.no_grad():
        for seed in range(3):
            a, _ = two_streams(seed)
            net(a)
            net(two_streams(seed + 100)[0])
    seen = different.results()["1"]
    assert (seen.calls, seen.joint) == (6, False)
    assert seen.gap > 2 and seen.gap**2 > 10 * seen.noise
    assert same.results()["1"].gap < 0.25  # sampling noise, largest of 15 pairs
    assert stream_gap(net, different)["norm/stream_gap/1"] == pytest.approx(seen.gap)
    # the hooks are gone: passes after the watch are not counted
    train_passes(net, torch.randn(8, 4))
    assert different.calls["1"] == 6


def test_watch_splits_a_joint_forward_into_its_streams() -> None:
    torch.manual_seed(0)
    net = mlp(4, 2, (16,), norm="batch")
    a, b = two_streams(0)
    with StreamWatch(net) as watch, rlnorm.training(net), torch.no_grad():
        joint_forward(net, a, b)
    assert watch.results()["1"].joint and watch.results()["1"].gap > 2
    with StreamWatch(net) as watch, rlnorm.training(net), torch.no_grad():
        joint_forward(net, a, two_streams(1)[0])
    assert watch.results()["1"].gap < 0.1


def test_per_stream_gap_compares_the_streams_running_statistics() -> None:
    torch.manual_seed(0)
    apart, together = (mlp(4, 2, (16,), norm="batch", streams=2) for _ in range(2))
    for seed in range(60):
        a, b = two_streams(seed, n=128)
        train_passes(apart, a, stream=0)
        train_passes(apart, b, stream=1)
        train_passes(together, a, stream=0)
        train_passes(together, two_streams(seed + 100, n=128)[0], stream=1)
    assert stream_gap(apart)["norm/stream_gap/1"] > 2
    assert stream_gap(together)["norm/stream_gap"] < 0.1
    assert stream_gap(mlp(4, 2, norm="batch")) == {}


def test_norm_diagnostics_measure_every_k_updates() -> None:
    net = mlp(4, 2, (8,), norm="batch")
    train_passes(net, torch.randn(16, 4))
    diagnostics = NormDiagnostics({"policy": net}, [net], every=3)
    assert [diagnostics.due(u) for u in range(4)] == [True, False, False, True]
    with diagnostics.watch(1) as watch:
        assert watch is None
    assert diagnostics.measure(1, torch.randn(8, 4)) == {}
    with diagnostics.watch(3) as watch, rlnorm.training(net), torch.no_grad():
        net(torch.randn(16, 4))
        net(torch.randn(16, 4))
    metrics = diagnostics.measure(3, torch.randn(8, 4))
    assert diagnostics.last_watch is watch and watch.calls == {"policy.1": 2}
    assert {"norm/gap/output", "norm/drift/mean", "norm/stream_gap"} <= set(metrics)
    assert all(isinstance(v, float) for v in metrics.values())
    with pytest.raises(ValueError, match="every >= 1"):
        NormDiagnostics(net, [net], every=0)


def test_every_norm_metric_name_has_a_row_in_docs_metrics() -> None:
    names = [
        value
        for key, value in vars(metrics).items()
        if key.isupper() and isinstance(value, str) and value.startswith("norm/")
    ]
    assert len(names) >= 12
    table = (Path(__file__).parents[1] / "docs" / "metrics.md").read_text()
    for name in names:
        assert f"| `{name}` |" in table, name
