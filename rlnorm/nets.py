"""Network builders whose normalization comes from the registry by name."""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextvars import ContextVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from rlnorm import norm as norms
from rlnorm.errors import UnknownNameError
from rlnorm.layers import CosineLinear

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def resolve_activation(name: str | type[nn.Module]) -> type[nn.Module]:
    """Resolve an activation given by name (``"tanh"``, ``"relu"``, ...) or as a module class."""
    if isinstance(name, str):
        if name not in _ACTIVATIONS:
            raise UnknownNameError("activation", name, _ACTIVATIONS)
        return _ACTIVATIONS[name]
    return name


class StreamNorm(nn.ModuleList):
    """One normalization layer per input stream, behind weights the streams share.

    The source post's fix for statistics shared across streams ("two networks with shared
    weights, with separate batch norm variables for each network"): stream ``i`` is
    normalized by layer ``i`` only, so each stream's running statistics (and its affine
    parameters, which are per stream too: the post's "batch norm variables" include them)
    converge to that stream's own distribution.
    """

    def forward(self, input: torch.Tensor, stream: int = 0) -> torch.Tensor:
        if not 0 <= stream < len(self):
            raise ValueError(
                f"stream={stream} but this layer has {len(self)} streams (0..{len(self) - 1})"
            )
        return self[stream](input)


class MLP(nn.Sequential):
    """A Sequential whose :class:`StreamNorm` layers are told which stream is passing."""

    def forward(self, input: torch.Tensor, stream: int = 0) -> torch.Tensor:
        for layer in self:
            input = layer(input, stream) if isinstance(layer, StreamNorm) else layer(input)
        return input


def norm_layers(kind: norms.NormKind, width: int, streams: int = 1) -> list[nn.Module]:
    """``kind``'s normalization layer for ``width`` features, as a list: empty for a kind
    with no layer of its own (``none``, ``weight``, ``cosine``), else one layer, wrapped in
    a :class:`StreamNorm` of ``streams`` copies when ``streams > 1``."""
    if kind.layer is None:
        return []
    if streams == 1:
        return [kind.layer(width)]
    return [StreamNorm(kind.layer(width) for _ in range(streams))]


def hidden_block(
    kind: norms.NormKind,
    in_dim: int,
    out_dim: int,
    activation: nn.Module | None,
    *,
    streams: int = 1,
    norm_after_activation: bool = False,
    linear: nn.Module | None = None,
) -> list[nn.Module]:
    """One hidden layer with ``kind`` placed in it: ``Linear -> norm -> activation``, or
    ``Linear -> activation -> norm`` with ``norm_after_activation``.

    The one place where rlnorm decides where a norm goes in a hidden layer: :func:`mlp`
    builds every hidden layer with it, and the stable-baselines3 adapter (``sb3:<Algo>``)
    rebuilds each hidden layer of SB3's MLPs with it. ``linear`` is an
    existing ``in_dim -> out_dim`` layer to keep (SB3's, with SB3's initialization) unless
    ``kind`` replaces the linear map itself (weight and cosine normalization); without it a
    fresh ``kind.linear`` is built. ``activation`` None leaves the activation out (the
    caller's net has none after this Linear).
    """
    if linear is None or kind.linear is not nn.Linear:
        linear = kind.linear(in_dim, out_dim)
    norm = norm_layers(kind, out_dim, streams)
    act = [] if activation is None else [activation]
    return [linear, *act, *norm] if norm_after_activation else [linear, *norm, *act]


def mlp(
    in_dim: int,
    out_dim: int,
    hidden: Sequence[int] = (64, 64),
    norm: str = "batch",
    activation: str | type[nn.Module] = "tanh",
    streams: int = 1,
    normalize_input: bool = False,
    norm_after_activation: bool = False,
) -> MLP:
    """Build ``Linear -> norm -> activation`` for each hidden width, then a final ``Linear``.

    By default the normalization layer sits between each hidden Linear and its activation,
    as in the BatchNorm paper; the output layer is never normalized so the head can take
    any scale. ``norm`` is a name from :mod:`rlnorm.norm` (``"none"``, ``"batch"``,
    ``"layer"``, ...). ``streams > 1`` gives each norm layer one copy per stream
    (:class:`StreamNorm`); call the net as ``net(x, stream=i)``. Each hidden layer is a
    :func:`hidden_block`.

    CrossQ's layout (as sbx builds it) is ``normalize_input=True``, a norm layer on the raw
    input before the first Linear, with ``norm_after_activation=True``, each hidden layer
    as ``Linear -> activation -> norm``.
    """
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    kind = norms.get(norm)
    act = resolve_activation(activation)
    layers: list[nn.Module] = norm_layers(kind, in_dim, streams) if normalize_input else []
    width = in_dim
    for h in hidden:
        layers += hidden_block(
            kind, width, h, act(), streams=streams, norm_after_activation=norm_after_activation
        )
        width = h
    layers.append(nn.Linear(width, out_dim))
    return MLP(*layers)


def crossq_layout(norm: str) -> dict[str, bool]:
    """:func:`mlp`'s layout arguments for sbx's CrossQ placement of ``norm``: after each
    hidden activation, and on the raw input only for batch-dependent kinds (``batch``,
    ``batch_renorm``), whose running statistics standardize each input feature; a
    per-sample norm (``layer``, ``rms``) of a raw state would discard its magnitude."""
    return {"normalize_input": norms.get(norm).batch_dependent, "norm_after_activation": True}


#: The batch sizes of the inputs of the joint_forward in progress (see joint_sizes).
_JOINT_SIZES: ContextVar[tuple[int, ...] | None] = ContextVar("rlnorm_joint_sizes", default=None)


def joint_forward(
    net: nn.Module, *inputs: torch.Tensor, **kwargs: object
) -> tuple[torch.Tensor, ...]:
    """Run ``inputs`` through ``net`` as one merged batch; return the outputs split back.

    In train mode every batch-dependent layer then normalizes all streams with one set of
    batch statistics, so the running statistics converge to the mixture the net is trained
    on, and (s, a) and (s', a') in a critic see the same normalization (CrossQ's trick).

    The inputs are flat features, merged along their sample dimension, the second-to-last
    (``[B, F]``: dim 0; a member-batched ``[K, B, F]`` of :mod:`rlnorm.members`: dim 1, so
    each member's streams are merged with its own); the outputs are split along the same
    dimension (counted from the front, so an output ``[B]`` or ``[B, n]`` splits at 0).
    """
    if not inputs:
        raise ValueError("joint_forward needs at least one input")
    dim = max(inputs[0].dim() - 2, 0)
    if any(x.dim() != inputs[0].dim() for x in inputs):
        shapes = [tuple(x.shape) for x in inputs]
        raise ValueError(f"joint_forward needs inputs of one number of dimensions, got {shapes}")
    sizes = tuple(x.shape[dim] for x in inputs)
    token = _JOINT_SIZES.set(sizes)
    try:
        return tuple(net(torch.cat(inputs, dim), **kwargs).split(sizes, dim))
    finally:
        _JOINT_SIZES.reset(token)


def joint_sizes() -> tuple[int, ...] | None:
    """Inside :func:`joint_forward`, the batch sizes of its inputs in order (along their
    sample dimension); else ``None``.

    Lets a diagnostic that watches a layer (:class:`rlnorm.streams.StreamWatch`) split
    the merged batch back into its streams and measure how far apart they are.
    """
    return _JOINT_SIZES.get()


def orthogonal_init(
    net: nn.Module, hidden_gain: float = math.sqrt(2), out_gain: float = 1.0
) -> None:
    """Orthogonal weights and zero biases for every Linear; the last Linear gets ``out_gain``.

    The usual policy-gradient initialization: a small ``out_gain`` (0.01) on the policy head
    starts the policy near uniform, 1.0 on a value head keeps values at the reward scale.
    """
    linears = [m for m in net.modules() if isinstance(m, nn.Linear | CosineLinear)]
    for i, layer in enumerate(linears):
        weight = torch.empty_like(layer.weight)
        nn.init.orthogonal_(weight, out_gain if i == len(linears) - 1 else hidden_gain)
        with torch.no_grad():
            if parametrize.is_parametrized(layer, "weight"):
                layer.weight = weight  # through the parametrization's right inverse (g, v)
            else:
                layer.weight.copy_(weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
