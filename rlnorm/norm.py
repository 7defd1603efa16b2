"""The registry of normalization kinds and the contract each one declares.

Every other part of rlnorm asks this registry what a normalization layer does (is its
train-mode output for one row a function of the other rows? do its train and eval paths
differ?) instead of testing ``isinstance``. Adding a kind is one ``register`` call. The
built-in kinds take their contracts from :mod:`rlnorm.catalog`, which ``rlnorm list``
reads without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from rlnorm import catalog
from rlnorm.errors import UnknownNameError
from rlnorm.layers import (
    BatchRenorm1d,
    CosineLinear,
    GuardedBatchNorm1d,
    RMSNorm,
    weight_normed_linear,
)
from rlnorm.member_layers import (
    MemberBatchNorm1d,
    MemberBatchRenorm1d,
    MemberCosineLinear,
    MemberLayerNorm,
    MemberRMSNorm,
)


@dataclass(frozen=True)
class NormKind:
    """One normalization kind and its contract.

    Attributes:
        name: the name used in configs and on the command line.
        layer: builds the normalization layer for ``features`` channels, placed after a
            hidden Linear layer; ``None`` when the kind adds no layer.
        linear: builds each hidden linear layer ``(in, out)``; kinds that normalize the
            linear map itself (weight, cosine) replace ``nn.Linear`` here.
        batch_dependent: in train mode, does the output for ``x_i`` depend on other ``x_j``?
        mode_dependent: do the train-mode and eval-mode outputs differ?
        description: one line for ``rlnorm list``.
        layer_types: module types recognized as this kind wherever they appear (a user's
            own net, a stable-baselines3 policy, a member-batched population built by
            :func:`rlnorm.members.stack`), for audits and diagnostics.
    """

    name: str
    layer: Callable[[int], nn.Module] | None
    batch_dependent: bool
    mode_dependent: bool
    description: str
    layer_types: tuple[type[nn.Module], ...] = ()
    linear: Callable[[int, int], nn.Module] = nn.Linear


_REGISTRY: dict[str, NormKind] = {}


def register(kind: NormKind) -> NormKind:
    """Add a kind to the registry (its name must be new), and its contract to
    :data:`rlnorm.catalog.NORMS`, from which ``rlnorm list`` prints it."""
    if kind.name in _REGISTRY:
        raise ValueError(f"normalization kind {kind.name!r} is already registered")
    _REGISTRY[kind.name] = kind
    catalog.NORMS[kind.name] = catalog.NormContract(
        kind.description, kind.batch_dependent, kind.mode_dependent
    )
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


def registered() -> int:
    """How many kinds are registered. Kinds are only ever added, so an answer of
    :func:`kind_of` stays true while this count is unchanged."""
    return len(_REGISTRY)


def kind_of(module: nn.Module) -> NormKind | None:
    """The registered kind whose layer type ``module`` is, or ``None`` if it is no norm layer."""
    for kind in _REGISTRY.values():
        if isinstance(module, kind.layer_types):
            return kind
    return None


def uses_running_statistics(module: nn.Module) -> bool:
    """Whether ``module`` is a mode-dependent norm layer that keeps running statistics for
    eval mode (BatchNorm, Batch Renorm): the layers whose statistics can drift, go stale or
    be shared by several streams, which :mod:`rlnorm.audit` and :mod:`rlnorm.diagnostics`
    inspect."""
    kind = kind_of(module)
    return (
        kind is not None
        and kind.mode_dependent
        and getattr(module, "running_mean", None) is not None
        and getattr(module, "running_var", None) is not None
    )


def buffer(layer: nn.Module, name: str) -> torch.Tensor:
    """The tensor ``layer.<name>`` (a running statistic, a step count), typed as one."""
    value = getattr(layer, name)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{type(layer).__name__}.{name} is not a tensor")
    return value


def use_cumulative_statistics(module: nn.Module) -> None:
    """Make every mode-dependent norm layer in ``module`` average its statistics over all
    batches seen (torch's ``momentum=None``) instead of an exponential moving average.

    A cumulative average settles as data accumulates, so the eval-mode function stops
    shifting under the policy; an exponential average keeps chasing the latest batches.
    """
    for m in module.modules():
        kind = kind_of(m)
        if kind is not None and kind.mode_dependent and hasattr(m, "momentum"):
            cast(Any, m).momentum = None  # a plain attribute of the norm layer


def _builtin(name: str, layer: Callable[[int], nn.Module] | None = None, **parts: Any) -> None:
    """Register the built-in kind ``name`` with the contract :data:`rlnorm.catalog.NORMS`
    declares for it (the table ``rlnorm list`` reads without importing torch)."""
    contract = catalog.NORMS[name]
    register(
        NormKind(
            name,
            layer,
            batch_dependent=contract.batch_dependent,
            mode_dependent=contract.mode_dependent,
            description=contract.description,
            **parts,
        )
    )


_builtin("none")
_builtin(
    "batch",
    GuardedBatchNorm1d,
    layer_types=(nn.modules.batchnorm._BatchNorm, MemberBatchNorm1d),
)
_builtin("layer", nn.LayerNorm, layer_types=(nn.LayerNorm, MemberLayerNorm))
_builtin("batch_renorm", BatchRenorm1d, layer_types=(BatchRenorm1d, MemberBatchRenorm1d))
_builtin("weight", linear=weight_normed_linear)
_builtin("cosine", layer_types=(CosineLinear, MemberCosineLinear), linear=CosineLinear.for_mlp)
_builtin("rms", RMSNorm, layer_types=(RMSNorm, MemberRMSNorm))


#: The modules to inspect: a module, a mapping of names to modules, an agent (anything
#: whose ``modules()`` returns such a mapping), or an iterable of modules.
Modules = nn.Module | Mapping[str, nn.Module] | Iterable[nn.Module] | Any


def named_roots(modules: Modules) -> dict[str, nn.Module]:
    """Name the module trees in ``modules``: a lone module is unprefixed (its layers are
    ``"1"``, ``"body.1"``), a mapping or an agent keeps its names (``"actor.body.1"``), an
    iterable of modules is named ``"0"``, ``"1"``, ..."""
    if isinstance(modules, nn.Module):
        return {"": modules}
    if isinstance(modules, Mapping):
        roots = dict(modules)
    elif callable(agent_modules := getattr(modules, "modules", None)):
        roots = dict(agent_modules())
    else:
        roots = {str(i): m for i, m in enumerate(modules)}
    for name, module in roots.items():
        if not isinstance(module, nn.Module):
            raise TypeError(f"{name!r}: expected torch.nn.Module, got {type(module).__name__}")
    return roots


def named_layers(modules: Modules) -> Iterator[tuple[str, nn.Module]]:
    """Every submodule of ``modules`` with its path, each module once."""
    seen: set[int] = set()
    for prefix, root in named_roots(modules).items():
        for path, module in root.named_modules(prefix=prefix):
            if id(module) not in seen:
                seen.add(id(module))
                yield path, module


def statistics_layers(modules: Modules) -> dict[str, nn.Module]:
    """The layers that normalize with running statistics in eval mode, by path (the
    registry decides which: :func:`rlnorm.norm.uses_running_statistics`)."""
    return {p: m for p, m in named_layers(modules) if uses_running_statistics(m)}
