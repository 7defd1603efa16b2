"""Contracts of the norm registry and the two mode contexts (acting / training)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rlnorm
from rlnorm import norm as norms
from rlnorm.nets import mlp
from rlnorm.safety import acting, frozen_statistics, label_layers, train_and_eval_outputs, training

KINDS = norms.names()


def _moved_net(kind: str, seed: int = 0) -> nn.Module:
    """A net whose running statistics have moved away from their defaults."""
    torch.manual_seed(seed)
    net = mlp(5, 3, (16, 16), norm=kind)
    with rlnorm.training(net), torch.no_grad():
        for _ in range(5):
            net(torch.randn(32, 5) * 3 + 2)
    return net


def test_registry_has_the_foundation_kinds_with_their_contracts() -> None:
    assert {"none", "batch", "layer"} <= set(KINDS)
    assert norms.get("batch").batch_dependent and norms.get("batch").mode_dependent
    for name in ("none", "layer"):
        assert not norms.get(name).batch_dependent and not norms.get(name).mode_dependent


def test_unknown_norm_lists_valid_names() -> None:
    with pytest.raises(rlnorm.UnknownNameError, match=r"Did you mean 'batch'.*none") as err:
        norms.get("batchnorm")
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("kind", KINDS)
def test_declared_contract_is_measured(kind: str) -> None:
    """The declaration cannot lie: perturbing other rows / switching mode is measured."""
    net = _moved_net(kind)
    x = torch.randn(16, 5)
    y = x.clone()
    y[1:] = torch.randn(15, 5) * 5
    with rlnorm.training(net), torch.no_grad():
        depends_on_others = not torch.allclose(net(x)[0], net(y)[0], atol=1e-6)
    train_out, eval_out = train_and_eval_outputs(net, x)
    differs_by_mode = not torch.allclose(train_out, eval_out, atol=1e-6)
    declared = norms.get(kind)
    assert depends_on_others == declared.batch_dependent
    assert differs_by_mode == declared.mode_dependent


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch", [2, 7, 64])
def test_acting_output_is_batch_independent(kind: str, batch: int) -> None:
    net = _moved_net(kind)
    states = torch.randn(batch, 5) * 2
    with rlnorm.acting(net):
        together = net(states)
        alone = torch.cat([net(states[i : i + 1]) for i in range(batch)])
    torch.testing.assert_close(alone, together, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_acting_never_normalizes_a_lone_state_to_a_constant(kind: str) -> None:
    net = _moved_net(kind)
    with rlnorm.acting(net):
        a, b = net(torch.randn(1, 5)), net(torch.randn(1, 5) + 3)
    assert not torch.allclose(a, b)


def test_acting_records_no_graph_and_training_does() -> None:
    net = _moved_net("batch")
    with rlnorm.acting(net):
        out = net(torch.randn(4, 5))
        assert torch.is_inference_mode_enabled()
    assert not out.requires_grad and out.grad_fn is None
    with torch.no_grad(), rlnorm.training(net):
        out = net(torch.randn(4, 5))
    assert out.requires_grad and out.grad_fn is not None


def _modes(net: nn.Module) -> list[bool]:
    return [m.training for m in net.modules()]


@pytest.mark.parametrize("context", [rlnorm.acting, rlnorm.training])
def test_exact_mode_restoration_with_mixed_modes(context) -> None:
    net = mlp(5, 3, (8, 8, 8), norm="batch")
    net.train()
    net[1].eval()  # a deliberately frozen BatchNorm
    net[5].eval()
    other = mlp(5, 3, norm="layer").eval()
    other[0].train()
    before = (_modes(net), _modes(other))
    with context(net, other):
        wanted = context is rlnorm.training
        assert all(m.training == wanted for m in [*net.modules(), *other.modules()])
    assert (_modes(net), _modes(other)) == before


@pytest.mark.parametrize("context", [rlnorm.acting, rlnorm.training])
def test_modes_restored_when_the_body_raises(context) -> None:
    net = mlp(5, 3, norm="batch").train()
    net[1].eval()
    before = _modes(net)
    with pytest.raises(RuntimeError, match="boom"), context(net):
        raise RuntimeError("boom")
    assert _modes(net) == before


def test_nested_contexts_restore_each_level() -> None:
    net = mlp(5, 3, norm="batch").train()
    with rlnorm.training(net):
        with rlnorm.acting(net):
            assert not any(m.training for m in net.modules())
        assert all(m.training for m in net.modules())
    assert all(m.training for m in net.modules())


def test_contexts_reject_non_modules() -> None:
    with pytest.raises(TypeError, match=r"nn\.Module"), rlnorm.acting("policy"):  # type: ignore[arg-type]
        pass


@pytest.mark.parametrize(
    "shape", [(1, 8), (1, 8, 4), (1, 8, 1), (8,)], ids=["(1,C)", "(1,C,L)", "(1,C,1)", "(C,)"]
)
def test_guard_fires_on_lone_state_in_train_mode(shape: tuple[int, ...]) -> None:
    layer = norms.get("batch").layer(8)
    label_layers({"actor": nn.Sequential(nn.Identity(), layer)})
    layer.train()
    with pytest.raises(rlnorm.NormalizationError, match=r"actor\.1.*rlnorm\.acting") as err:
        layer(torch.randn(*shape))
    assert isinstance(err.value, ValueError)


def test_guard_allows_batches_and_eval_mode() -> None:
    layer = norms.get("batch").layer(8)
    assert torch.isfinite(layer(torch.randn(2, 8))).all()
    assert torch.isfinite(layer(torch.randn(2, 8, 3))).all()
    layer.eval()
    assert torch.isfinite(layer(torch.randn(1, 8))).all()


def test_guard_fires_inside_a_whole_policy() -> None:
    net = mlp(5, 3, norm="batch")
    label_layers({"policy": net})
    with pytest.raises(rlnorm.NormalizationError, match=r"policy\.1"), rlnorm.training(net):
        net(torch.randn(1, 5))


def test_frozen_statistics_uses_running_statistics_and_keeps_them() -> None:
    net = _moved_net("batch")
    x = torch.randn(16, 5)
    with rlnorm.acting(net):
        eval_out = net(x)
    stats = [b.clone() for b in net.buffers()]
    with rlnorm.training(net), frozen_statistics(net):
        frozen_out = net(x)
        assert frozen_out.requires_grad
        assert net[0].training and not net[1].training  # Linear trains, BatchNorm frozen
    torch.testing.assert_close(frozen_out.detach(), eval_out)
    assert all(torch.equal(a, b) for a, b in zip(stats, net.buffers(), strict=True))


def test_frozen_statistics_finds_a_norm_layer_added_after_an_earlier_use() -> None:
    """Its list of norm layers is cached with the module tree; a layer added later (a tree
    change) is frozen too, and one that was removed is no longer touched."""
    net = mlp(5, 3, norm="batch").train()
    with frozen_statistics(net):
        assert not net[1].training
    net.add_module("extra", nn.BatchNorm1d(3))
    with frozen_statistics(net):
        assert not net[1].training and not net.extra.training
    assert net.extra.training  # its own mode back on exit
    removed = net.extra
    del net.extra
    with frozen_statistics(net):
        assert removed.training


def test_train_and_eval_outputs_has_no_side_effects() -> None:
    net = _moved_net("batch").train()
    net[4].eval()
    before_modes, before_stats = _modes(net), [b.clone() for b in net.buffers()]
    train_out, eval_out = train_and_eval_outputs(net, torch.randn(16, 5))
    assert not torch.allclose(train_out, eval_out)
    assert _modes(net) == before_modes
    assert all(torch.equal(a, b) for a, b in zip(before_stats, net.buffers(), strict=True))


def test_cumulative_statistics_average_all_batches() -> None:
    net = mlp(2, 1, (4,), norm="batch")
    norms.use_cumulative_statistics(net)
    first, second = torch.randn(64, 2), torch.randn(64, 2) + 10
    with rlnorm.training(net), torch.no_grad():
        h1, h2 = net[0](first), net[0](second)
        net(first)
        net(second)
    expected = (h1.mean(0) + h2.mean(0)) / 2
    torch.testing.assert_close(net[1].running_mean, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_modes_reach_torchscript_modules() -> None:
    """A scripted module keeps its mode on the C++ side: ``training`` must switch it there
    (the forward then updates BatchNorm's statistics) and restore it afterwards."""
    scripted = torch.jit.script(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    scripted.eval()
    norm = getattr(scripted, "1")
    before = norm.running_mean.clone()
    with training(scripted):
        scripted(torch.randn(8, 3))
    assert not torch.equal(norm.running_mean, before)
    assert not scripted.training and not norm.training
    with acting(scripted):
        assert not norm.training
