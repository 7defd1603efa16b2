"""The registry of normalization kinds and the contract each one declares.

Every other part of rlnorm asks this registry what a normalization layer does (is its
train-mode output for one row a function of the other rows? do its train and eval paths
differ?) instead of testing ``isinstance``. Adding a kind is one ``register`` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from rlnorm.errors import NormalizationError, UnknownNameError


class GuardedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that refuses a train-mode batch too small to have statistics.

    torch's BatchNorm1d in train mode raises an opaque error for input ``(1, C)``, silently
    normalizes over the length axis for ``(1, C, L)``, and rejects an unbatched ``(C,)``
    state. Each of these means a policy is being run in train mode on a lone state, the
    first failure of the source post, so each raises :class:`NormalizationError` naming the
    layer and the fix.
    """

    #: Set by :func:`rlnorm.safety.label_layers` to the layer's path inside its agent.
    rlnorm_path: str = ""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.training:
            batch = input.shape[0] if input.dim() in (2, 3) else 1
            if input.dim() not in (2, 3) or batch < 2:
                where = self.rlnorm_path or f"BatchNorm1d({self.num_features})"
                raise NormalizationError(
                    f"{where}: train-mode BatchNorm got input of shape {tuple(input.shape)}, "
                    f"a batch of {batch} sample(s); it would normalize a lone state with its "
                    "own statistics (to zero). Act through rlnorm.acting(...) or the "
                    "RolloutManager, which run the policy in eval mode; train on batches of "
                    "at least 2."
                )
        return super().forward(input)


@dataclass(frozen=True)
class NormKind:
    """One normalization kind and its contract.

    Attributes:
        name: the name used in configs and on the command line.
        layer: builds the normalization layer for ``features`` channels, placed after a
            hidden Linear layer; ``None`` when the kind adds no layer.
        batch_dependent: in train mode, does the output for ``x_i`` depend on other ``x_j``?
        mode_dependent: do the train-mode and eval-mode outputs differ?
        description: one line for ``rlnorm list``.
        layer_types: module types recognized as this kind wherever they appear (a user's
            own net, a stable-baselines3 policy), for audits and diagnostics.
    """

    name: str
    layer: Callable[[int], nn.Module] | None
    batch_dependent: bool
    mode_dependent: bool
    description: str
    layer_types: tuple[type[nn.Module], ...] = ()


_REGISTRY: dict[str, NormKind] = {}


def register(kind: NormKind) -> NormKind:
    """Add a kind to the registry (its name must be new)."""
    if kind.name in _REGISTRY:
        raise ValueError(f"normalization kind {kind.name!r} is already registered")
    _REGISTRY[kind.name] = kind
    return kind


def get(name: str) -> NormKind:
    """Return the kind registered under ``name``; an unknown name lists the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("norm", name, _REGISTRY) from None


def names() -> list[str]:
    """Names of every registered kind, in registration order."""
    return list(_REGISTRY)


def kind_of(module: nn.Module) -> NormKind | None:
    """The registered kind whose layer type ``module`` is, or ``None`` if it is no norm layer."""
    for kind in _REGISTRY.values():
        if isinstance(module, kind.layer_types):
            return kind
    return None


def use_cumulative_statistics(module: nn.Module) -> None:
    """Make every mode-dependent norm layer in ``module`` average its statistics over all
    batches seen (torch's ``momentum=None``) instead of an exponential moving average.

    A cumulative average settles as data accumulates, so the eval-mode function stops
    shifting under the policy; an exponential average keeps chasing the latest batches.
    """
    for m in module.modules():
        kind = kind_of(m)
        if kind is not None and kind.mode_dependent and hasattr(m, "momentum"):
            m.momentum = None


register(
    NormKind(
        "none",
        None,
        batch_dependent=False,
        mode_dependent=False,
        description="no normalization",
    )
)
register(
    NormKind(
        "batch",
        GuardedBatchNorm1d,
        batch_dependent=True,
        mode_dependent=True,
        description="BatchNorm1d: batch statistics in train mode, running statistics in eval mode",
        layer_types=(nn.modules.batchnorm._BatchNorm,),
    )
)
register(
    NormKind(
        "layer",
        nn.LayerNorm,
        batch_dependent=False,
        mode_dependent=False,
        description="LayerNorm: per-sample statistics, one path in train and eval mode",
        layer_types=(nn.LayerNorm,),
    )
)
