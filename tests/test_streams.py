"""The source post's third failure in miniature, and its two fixes.

Two streams from different distributions pass through one BatchNorm net in separate
train-mode passes: the shared running statistics converge to a mixture neither stream
has, so each stream's eval-mode output differs from what training produced for it.
Per-stream statistics and one joint pass over the merged batch both remove the gap.
"""

from __future__ import annotations

import pytest
import torch

import rlnorm
from rlnorm.nets import StreamNorm, joint_forward, mlp

KINDS = ["batch", "batch_renorm"]


def streams(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(1024, 4, generator=g)  # "MNIST"
    b = torch.randn(1024, 4, generator=g) * 3 + 5  # "SVHN": another mean and scale
    return a, b


def gap(net: torch.nn.Module, x: torch.Tensor, train_out: torch.Tensor, **kwargs: int) -> float:
    """Mean |eval-mode output - train-mode output| for one stream."""
    with rlnorm.acting(net):
        return (net(x, **kwargs) - train_out).abs().mean().item()


# Enough batches for the running statistics to converge: BatchNorm's momentum is 0.1,
# Batch Renorm's 0.01.
PASSES = {"batch": 100, "batch_renorm": 700}


def train_statistics(net: torch.nn.Module, kind: str, step) -> None:
    """Run ``step`` in train mode, without gradient, over fresh batches of both streams."""
    with rlnorm.training(net), torch.no_grad():
        for i in range(PASSES[kind]):
            step(*streams(i))


@pytest.mark.parametrize("kind", KINDS)
def test_shared_statistics_fail_and_both_fixes_remove_the_gap(kind: str) -> None:
    torch.manual_seed(0)
    a, b = streams(1000)

    shared = mlp(4, 2, (16, 16), norm=kind)
    train_statistics(shared, kind, lambda x, y: (shared(x), shared(y)))
    with rlnorm.training(shared), torch.no_grad():
        shared_train = (shared(a), shared(b))
    shared_gaps = [gap(shared, a, shared_train[0]), gap(shared, b, shared_train[1])]

    torch.manual_seed(0)
    per_stream = mlp(4, 2, (16, 16), norm=kind, streams=2)
    train_statistics(
        per_stream, kind, lambda x, y: (per_stream(x, stream=0), per_stream(y, stream=1))
    )
    with rlnorm.training(per_stream), torch.no_grad():
        ps_train = (per_stream(a, stream=0), per_stream(b, stream=1))
    per_stream_gaps = [
        gap(per_stream, a, ps_train[0], stream=0),
        gap(per_stream, b, ps_train[1], stream=1),
    ]

    torch.manual_seed(0)
    joint = mlp(4, 2, (16, 16), norm=kind)
    train_statistics(joint, kind, lambda x, y: joint_forward(joint, x, y))
    with rlnorm.training(joint), torch.no_grad():
        joint_train = joint_forward(joint, a, b)
    with rlnorm.acting(joint):
        joint_eval = joint_forward(joint, a, b)
    joint_gaps = [(e - t).abs().mean().item() for e, t in zip(joint_eval, joint_train, strict=True)]

    # Separate passes with shared statistics: a large gap for each stream.
    assert min(shared_gaps) > 0.1, shared_gaps
    # Both fixes: at least 10x smaller for every stream.
    assert max(per_stream_gaps) < min(shared_gaps) / 10, (per_stream_gaps, shared_gaps)
    assert max(joint_gaps) < min(shared_gaps) / 10, (joint_gaps, shared_gaps)


def test_per_stream_layers_share_weights_but_not_statistics() -> None:
    net = mlp(3, 1, (8,), norm="batch", streams=3)
    norm_layer = net[1]
    assert isinstance(norm_layer, StreamNorm) and len(norm_layer) == 3
    assert sum(p.numel() for p in net[0].parameters()) == 3 * 8 + 8  # one shared Linear
    with rlnorm.training(net), torch.no_grad():
        net(torch.randn(16, 3) + 7, stream=2)
    assert norm_layer[0].running_mean.abs().max() == 0
    assert norm_layer[2].running_mean.abs().max() > 0


def test_stream_index_is_checked() -> None:
    net = mlp(3, 1, (8,), norm="batch", streams=2)
    with pytest.raises(ValueError, match=r"stream=2 but this layer has 2 streams"):
        net(torch.randn(4, 3), stream=2)
    with pytest.raises(ValueError, match="streams must be >= 1"):
        mlp(3, 1, norm="batch", streams=0)


def test_joint_forward_splits_back_in_order() -> None:
    net = mlp(3, 2, (8,), norm="none")
    x, y = torch.randn(5, 3), torch.randn(7, 3)
    out_x, out_y = joint_forward(net, x, y)
    torch.testing.assert_close(out_x, net(x))
    torch.testing.assert_close(out_y, net(y))
    with pytest.raises(ValueError, match="at least one input"):
        joint_forward(net)
