"""Network builders whose normalization comes from the registry by name."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from rlnorm import norm as norms
from rlnorm.errors import UnknownNameError

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def activation(name: str | type[nn.Module]) -> type[nn.Module]:
    """Resolve an activation given by name (``"tanh"``, ``"relu"``, ...) or as a module class."""
    if isinstance(name, str):
        if name not in _ACTIVATIONS:
            raise UnknownNameError("activation", name, _ACTIVATIONS)
        return _ACTIVATIONS[name]
    return name


def mlp(
    in_dim: int,
    out_dim: int,
    hidden: Sequence[int] = (64, 64),
    norm: str = "batch",
    activation_fn: str | type[nn.Module] = "tanh",
) -> nn.Sequential:
    """Build ``Linear -> norm -> activation`` for each hidden width, then a final ``Linear``.

    The normalization layer sits between each hidden Linear and its activation, as in the
    BatchNorm paper; the output layer is never normalized so the head can take any scale.
    ``norm`` is a name from :mod:`rlnorm.norm` (``"none"``, ``"batch"``, ``"layer"``, ...).
    """
    kind = norms.get(norm)
    act = activation(activation_fn)
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if kind.layer is not None:
            layers.append(kind.layer(h))
        layers.append(act())
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def orthogonal_init(
    net: nn.Module, hidden_gain: float = math.sqrt(2), out_gain: float = 1.0
) -> None:
    """Orthogonal weights and zero biases for every Linear; the last Linear gets ``out_gain``.

    The usual policy-gradient initialization: a small ``out_gain`` (0.01) on the policy head
    starts the policy near uniform, 1.0 on a value head keeps values at the reward scale.
    """
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        nn.init.orthogonal_(layer.weight, out_gain if i == len(linears) - 1 else hidden_gain)
        nn.init.zeros_(layer.bias)
