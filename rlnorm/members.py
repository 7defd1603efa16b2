"""Member-batched modules: K structurally identical networks (a population of seeds) as one.

A member-batched tensor is ``[K, B, *features]``: K members, B samples per member.
:func:`stack` turns K modules built alike (under different seeds) into one module that
takes ``[K, B, F]`` and returns ``[K, B, ...]``, member ``k``'s slice being what module
``k`` computes on its slice alone: its own weights, its own normalization statistics (no
statistic crosses members: pooling BatchNorm statistics over members would be the source
post's shared-statistics bug again), its own gradients.

- Layers with parameters become member-batched layers (:mod:`rlnorm.member_layers`):
  ``nn.Linear`` -> :class:`MemberLinear` (``baddbmm``), BatchNorm1d (rlnorm's guarded one
  or torch's) -> :class:`MemberBatchNorm1d`, :class:`rlnorm.layers.BatchRenorm1d` ->
  :class:`MemberBatchRenorm1d`, ``nn.LayerNorm``, :class:`rlnorm.layers.RMSNorm`,
  :class:`rlnorm.layers.CosineLinear` and a weight-normalized ``nn.Linear``
  (:func:`rlnorm.layers.weight_normed_linear`) to theirs. ``nn.Tanh`` becomes
  :class:`rlnorm.activations.Tanh`, whose CPU kernel is vectorized (a population's
  activations are K times larger, and torch's CPU tanh is scalar). Every other module keeps its
  class and its own ``forward``: a copy of ``modules[0]`` whose children are stacked in
  turn, so containers (``MLP``, ``Critics``, PPO's ``Policy``, ``TargetNetwork``, a user's
  own) run unchanged on ``[K, B, ...]`` tensors. Their own parameters (PPO's ``log_std``
  ``[A]``, SAC's ``log_alpha`` ``[]``) become ``[K, 1, *shape]``, a singleton sample
  dimension so they broadcast against ``[K, B, *shape]``; their own buffers (a step
  counter) must agree across members and stay one shared tensor.
- Batch counters (``num_batches_tracked``) are one scalar for all members: the members
  run in lockstep, so Batch Renorm's schedule and ``momentum=None``'s ``1 / n`` stay
  Python numbers.
- A stacked module's parameter and buffer names are its originals' (in the same order;
  BatchNorm adds ``last_mean``/``last_invstd`` where torch's own lacks them), so an
  optimizer over it lines up with one over a member. :func:`unstack` and
  :func:`load_member` move member ``k``'s state out of and into the stack, bit for bit.
- A population's loss is :func:`member_mean` (member ``k``'s gradient is then exactly its
  own loss's), and :func:`clip_grad_norm_` clips each member by its own gradient norm.
  Adam, being elementwise, is K independent Adams when run over the stacked parameters.

Not supported (``TypeError`` at stack time, naming the layer's path): torch layers with
parameters or buffers other than those above (``Conv2d``, ``GRU``, ``Embedding``,
``PReLU``, ...), subclasses of the supported layers (their ``forward`` may differ),
parametrizations other than weight norm of a Linear. A user-defined module with its own
parameters is stacked as a container: its ``forward`` must broadcast them as
``[K, 1, *shape]``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _WeightNorm

from rlnorm.activations import Tanh
from rlnorm.layers import BatchRenorm1d, CosineLinear, GuardedBatchNorm1d, RMSNorm
from rlnorm.member_layers import (
    MemberBatchNorm1d,
    MemberBatchRenorm1d,
    MemberCosineLinear,
    MemberLayerNorm,
    MemberLinear,
    MemberModule,
    MemberRMSNorm,
    MemberWeightNormLinear,
    per_member,
)

#: The attribute set on every module :func:`stack` returns that is not a member layer.
MEMBERS_ATTR = "rlnorm_members"


def _factory(module: nn.Module) -> dict[str, Any]:
    tensor = next((t for t in _tensors(module).values() if t.is_floating_point()), None)
    return {} if tensor is None else {"device": tensor.device, "dtype": tensor.dtype}


def _has_bias(m: nn.Module) -> bool:
    return getattr(m, "bias", None) is not None


#: Layer type -> (hyperparameters that must agree across members, builder of the member
#: layer for K members from the first one). Matched on the exact type.
_LEAVES: dict[type[nn.Module], tuple[tuple[str, ...], Callable[[int, Any], MemberModule]]] = {
    nn.Linear: (
        ("in_features", "out_features"),
        lambda k, m: MemberLinear(k, m.in_features, m.out_features, _has_bias(m), **_factory(m)),
    ),
    CosineLinear: (
        ("in_features", "out_features", "eps"),
        lambda k, m: MemberCosineLinear(
            k, m.in_features, m.out_features, _has_bias(m), eps=m.eps, **_factory(m)
        ),
    ),
    nn.LayerNorm: (
        ("normalized_shape", "eps", "elementwise_affine"),
        lambda k, m: MemberLayerNorm(
            k, m.normalized_shape, m.eps, m.elementwise_affine, _has_bias(m), **_factory(m)
        ),
    ),
    RMSNorm: (("eps",), lambda k, m: MemberRMSNorm(k, m.weight.shape[0], m.eps, **_factory(m))),
    BatchRenorm1d: (
        ("num_features", "eps", "momentum", "r_max", "d_max", "warmup_steps", "relax_steps"),
        lambda k, m: MemberBatchRenorm1d(
            k,
            m.num_features,
            m.eps,
            m.momentum,
            m.r_max,
            m.d_max,
            m.warmup_steps,
            m.relax_steps,
            **_factory(m),
        ),
    ),
}
_BATCH_NORM: tuple[tuple[str, ...], Callable[[int, Any], MemberModule]] = (
    ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    lambda k, m: MemberBatchNorm1d(
        k, m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, **_factory(m)
    ),
)
_LEAVES[GuardedBatchNorm1d] = _LEAVES[nn.BatchNorm1d] = _BATCH_NORM
_WEIGHT_NORM: tuple[tuple[str, ...], Callable[[int, Any], MemberModule]] = (
    ("in_features", "out_features"),
    lambda k, m: MemberWeightNormLinear(
        k, m.in_features, m.out_features, _has_bias(m), **_factory(m)
    ),
)
#: torch classes that hold other modules and nothing of their own
_TORCH_CONTAINERS = (nn.Module, nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``module`` by qualified name (tied ones under each)."""
    return dict(module.named_parameters(remove_duplicate=False)) | dict(
        module.named_buffers(remove_duplicate=False)
    )


def _own(module: nn.Module) -> list[tuple[str, str, tuple[int, ...], torch.dtype, bool] | str]:
    """What makes two modules alike at this level: child names, own tensors' names,
    shapes, dtypes and ``requires_grad`` (a leaf layer: all of its tensors)."""
    leaf = type(module) in _LEAVES or parametrize.is_parametrized(module)
    items = _tensors(module).items() if leaf else _own_tensors(module)
    signature: list[Any] = [f"child {name!r}" for name in module._modules]
    for name, t in items:
        kind = "parameter" if isinstance(t, nn.Parameter) else "buffer"
        signature.append((kind, name, tuple(t.shape), t.dtype, t.requires_grad))
    return signature


def _own_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    own = list(module._parameters.items()) + list(module._buffers.items())
    return [(name, t) for name, t in own if t is not None]


def _base_type(module: nn.Module) -> type[nn.Module]:
    return parametrize.type_before_parametrizations(module)


def _check_alike(modules: Sequence[nn.Module], where: str, hyper: tuple[str, ...]) -> None:
    """Raise ValueError naming the first way a member differs from member 0."""
    first = modules[0]
    for i, m in enumerate(modules[1:], 1):
        if _base_type(m) is not _base_type(first) or parametrize.is_parametrized(
            m
        ) != parametrize.is_parametrized(first):
            raise ValueError(
                f"{where}: member {i} is a {type(m).__name__}, member 0 a {type(first).__name__}"
            )
        for name in hyper:
            if getattr(m, name) != getattr(first, name):
                raise ValueError(
                    f"{where}: {type(m).__name__}.{name} is {getattr(m, name)!r} in member {i} "
                    f"and {getattr(first, name)!r} in member 0"
                )
        mine, theirs = _own(m), _own(first)
        if mine != theirs:
            diff = next(
                (f"{a} vs {b}" for a, b in zip(mine, theirs, strict=False) if a != b),
                f"{len(mine)} vs {len(theirs)} children and tensors",
            )
            raise ValueError(
                f"{where}: member {i}'s {type(m).__name__} differs from member 0's ({diff}); "
                "stack needs structurally identical modules"
            )


def _check_shared(name: str, values: list[torch.Tensor], where: str) -> None:
    for i, v in enumerate(values[1:], 1):
        if not torch.equal(v, values[0]):
            raise ValueError(
                f"{where}: buffer {name!r} differs between members ({v.tolist()} in member {i}, "
                f"{values[0].tolist()} in member 0); members run in lockstep and share it"
            )


def _fill(layer: MemberModule, modules: Sequence[nn.Module], where: str) -> None:
    """Write the members' tensors into ``layer``: stacked, or once for a shared buffer."""
    sources = [_tensors(m) for m in modules]
    with torch.no_grad():
        for name, target in _tensors(layer).items():
            if name not in sources[0] and name in layer.optional_buffers:
                continue
            values = [s[name].detach() for s in sources]
            if name in layer.shared_buffers:
                _check_shared(name, values, where)
                target.copy_(values[0])
            else:
                target.copy_(torch.stack(values))
            if isinstance(target, nn.Parameter):
                target.requires_grad_(sources[0][name].requires_grad)


def _torch_layer(base: type[nn.Module]) -> type[nn.Module] | None:
    """The torch layer class ``base`` is or derives from, other than the containers."""
    return next(
        (
            c
            for c in base.__mro__
            if c.__module__.startswith("torch.")
            and issubclass(c, nn.Module)
            and c not in _TORCH_CONTAINERS
        ),
        None,
    )


def _is_weight_norm_linear(m: nn.Module) -> bool:
    chains: Any = getattr(m, "parametrizations", {})
    if _base_type(m) is not nn.Linear or set(chains) != {"weight"}:
        return False
    chain = chains["weight"]
    return len(chain) == 1 and isinstance(chain[0], _WeightNorm) and chain[0].dim == 0


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def stack(modules: Sequence[nn.Module]) -> nn.Module:
    """One module that computes ``modules`` (K structurally identical modules) side by
    side on ``[K, B, ...]`` inputs; see the module docstring for what becomes what.

    The originals are not changed or shared: every tensor is copied. Attributes
    (``momentum``, ``eps``, Batch Renorm's schedule, ``rlnorm_path``, ``training``) are
    ``modules[0]``'s, after checking that the hyperparameters agree. Raises ValueError
    when the modules differ in structure, shapes or hyperparameters, or a buffer that
    stays shared (a step counter, ``num_batches_tracked``) differs; TypeError for a layer
    it cannot batch (its path and type named).
    """
    modules = list(modules)
    if not modules:
        raise ValueError("stack needs at least one module")
    for i, m in enumerate(modules):
        if not isinstance(m, nn.Module):
            raise TypeError(f"stack: member {i} is a {type(m).__name__}, not a torch module")
    return _stack(modules, "", {})


def _stack(modules: list[nn.Module], path: str, done: dict[tuple[int, ...], nn.Module]) -> Any:
    key = tuple(map(id, modules))
    if key in done:  # a module reached twice (shared, tied) is stacked once
        return done[key]
    first, where, k = modules[0], path or "<root>", len(modules)
    if isinstance(first, MemberModule) or hasattr(first, MEMBERS_ATTR):
        raise TypeError(f"{where}: {type(first).__name__} is member-batched already")
    base = _base_type(first)
    name = f"{base.__module__}.{base.__qualname__}"
    if parametrize.is_parametrized(first):
        if not _is_weight_norm_linear(first):
            raise TypeError(
                f"{where}: parametrized {name} is not supported by rlnorm.members.stack "
                "(of parametrizations, only torch's weight_norm of an nn.Linear is)"
            )
        hyper, build = _WEIGHT_NORM
    elif base in _LEAVES:
        hyper, build = _LEAVES[base]
    else:
        hyper, build = (), None
    _check_alike(modules, where, hyper)
    if parametrize.is_parametrized(first) and not all(map(_is_weight_norm_linear, modules)):
        raise ValueError(f"{where}: members' parametrizations differ")
    if build is not None:
        layer = build(k, first)
        _fill(layer, modules, where)
        layer.train(first.training)
        if getattr(first, "rlnorm_path", ""):
            layer.rlnorm_path = str(getattr(first, "rlnorm_path", ""))
        done[key] = layer
        return layer
    if base is nn.Tanh:
        done[key] = tanh = Tanh()
        return tanh
    supported = next((t for t in _LEAVES if isinstance(first, t)), None)
    torch_layer = _torch_layer(base)
    if supported is not None or (torch_layer is not None and _own_tensors(first)):
        what = f"a subclass of {supported.__name__}" if supported else f"{name}"
        raise TypeError(
            f"{where}: {what} has parameters or buffers and no member-batched version; "
            "rlnorm.members.stack supports nn.Linear (weight-normalized too), BatchNorm1d, "
            "BatchRenorm1d, LayerNorm, RMSNorm and CosineLinear, and containers of them"
        )
    done[key] = stacked = _stack_container(modules, path, done)
    return stacked


def _stack_container(
    modules: list[nn.Module], path: str, done: dict[tuple[int, ...], nn.Module]
) -> nn.Module:
    """A deep copy of ``modules[0]`` whose children are stacked and whose own parameters
    are ``[K, 1, *shape]``; its own buffers, equal across members, stay shared."""
    first = modules[0]
    replace: dict[int, Any] = {}
    for name, child in first._modules.items():
        if child is not None:
            children = [m._modules[name] for m in modules]
            replace[id(child)] = _stack(children, _join(path, name), done)  # type: ignore[arg-type]
    for name, p in first._parameters.items():
        if p is not None:
            values = torch.stack([m._parameters[name].detach() for m in modules])  # type: ignore[union-attr]
            replace[id(p)] = nn.Parameter(values.unsqueeze(1), requires_grad=p.requires_grad)
    for name, b in first._buffers.items():
        if b is not None:
            _check_shared(name, [m._buffers[name] for m in modules], _join(path, name))  # type: ignore[misc]
    stacked = copy.deepcopy(first, replace)  # children and parameters taken from `replace`
    setattr(stacked, MEMBERS_ATTR, len(modules))
    return stacked


def member_count(stacked: nn.Module) -> int:
    """K, the number of members of a module :func:`stack` built."""
    if isinstance(stacked, MemberModule):
        return stacked.members
    count = getattr(stacked, MEMBERS_ATTR, None)
    if isinstance(count, int):
        return count
    raise ValueError(f"{type(stacked).__name__} is not member-batched (rlnorm.members.stack)")


def _layout(stacked: nn.Module) -> dict[str, tuple[torch.Tensor, bool, bool]]:
    """Every tensor of a stacked module by name: ``(tensor, shared, optional)``.

    A member layer's tensors have a member dimension unless listed in its
    ``shared_buffers``; a container's own parameters have one, its own buffers do not."""
    out = {}
    for prefix, module in stacked.named_modules(remove_duplicate=False):
        member = isinstance(module, MemberModule)
        for name, t in _own_tensors(module):
            param = isinstance(t, nn.Parameter)
            shared = False if param else (not member or name in module.shared_buffers)
            optional = member and name in module.optional_buffers
            out[_join(prefix, name)] = (t, shared, optional)
    return out


def _pairs(
    stacked: nn.Module, k: int, single: nn.Module, what: str
) -> list[tuple[str, torch.Tensor, bool, torch.Tensor | None]]:
    """``(name, stacked tensor, shared, single tensor or None)`` for each tensor, after
    checking that the two modules hold the same tensors."""
    count = member_count(stacked)
    if not 0 <= k < count:
        raise IndexError(f"member {k} of a stack of {count} (0..{count - 1})")
    layout, tensors = _layout(stacked), _tensors(single)
    unknown = sorted(set(tensors) - set(layout))
    missing = sorted(n for n, (_, _, opt) in layout.items() if n not in tensors and not opt)
    if unknown or missing:
        raise ValueError(
            f"{what} is not built like the stacked module's members: "
            f"tensors only in it {unknown}, only in the stack {missing}"
        )
    pairs = []
    for name, (t, shared, _) in layout.items():
        single_t = tensors.get(name)
        if single_t is not None:
            member_shape = t.shape if shared else t.shape[1:]
            if member_shape not in (single_t.shape, (1, *single_t.shape)):
                raise ValueError(
                    f"{name}: shape {tuple(single_t.shape)} in {what}, "
                    f"{tuple(member_shape)} per member in the stack"
                )
        pairs.append((name, t, shared, single_t))
    return pairs


@torch.no_grad()
def unstack(stacked: nn.Module, k: int, into: nn.Module) -> None:
    """Copy member ``k``'s parameters and buffers into ``into`` (a module built like the
    originals), bit for bit: weights, running statistics, ``last_mean``/``last_invstd``,
    weight norm's ``original0``/``original1``, free parameters in their own shape, and the
    shared buffers (``num_batches_tracked``, step counters). Attributes (``momentum``,
    modes) are not copied."""
    for _, t, shared, single in _pairs(stacked, k, into, "the module to unstack into"):
        if single is not None:
            single.copy_((t if shared else t[k]).reshape(single.shape))


@torch.no_grad()
def load_member(stacked: nn.Module, k: int, source: nn.Module, shared_too: bool = True) -> None:
    """Write ``source``'s parameters and buffers into member ``k`` of ``stacked``: the
    inverse of :func:`unstack`. Shared buffers (``num_batches_tracked``, step counters)
    belong to the whole population and take ``source``'s value, unless ``shared_too`` is
    False (one member put back while the others go on)."""
    for _, t, shared, single in _pairs(stacked, k, source, "the source module"):
        if single is not None and (shared_too or not shared):
            target = t if shared else t[k]
            target.copy_(single.reshape(target.shape))


def member_mean(x: torch.Tensor) -> torch.Tensor:
    """``sum_k mean(x[k])``: each member's mean over every dimension but the first, summed
    over members. The loss reduction of a population: member ``k``'s gradient is exactly
    the gradient of its own ``mean`` loss, whatever K."""
    if x.dim() == 0:
        raise ValueError("member_mean needs a tensor with a leading member dimension")
    return x.reshape(x.shape[0], -1).mean(1).sum()


def clip_grad_norm_(
    parameters: Iterable[torch.Tensor] | torch.Tensor, max_norm: float, norm_type: float = 2.0
) -> torch.Tensor:
    """Clip each member's gradient by its own norm, as ``torch.nn.utils.clip_grad_norm_``
    would clip that member alone.

    Every gradient is ``[K, ...]``; member ``k``'s total norm is taken over the ``[k]``
    slices of all gradients, and its slices are scaled by
    ``min(1, max_norm / (norm_k + 1e-6))``. Returns the K total norms (before clipping).
    A member whose norm is not finite gets non-finite gradients (as torch's would), the
    others are untouched by it.
    """
    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    count = grads[0].shape[0] if grads[0].dim() else 0
    if any(g.dim() == 0 or g.shape[0] != count for g in grads):
        shapes = sorted({tuple(g.shape) for g in grads})
        raise ValueError(f"clip_grad_norm_: gradients without one member dimension: {shapes}")
    norms = [torch.linalg.vector_norm(g.reshape(count, -1), norm_type, dim=1) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms), norm_type, dim=0)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    # one view of the coefficients per gradient rank and dtype, one multi-tensor multiply
    views: dict[tuple[int, torch.dtype], torch.Tensor] = {}
    for g in grads:
        if (g.dim(), g.dtype) not in views:
            views[g.dim(), g.dtype] = per_member(coef.to(g.dtype), g)
    torch._foreach_mul_(grads, [views[g.dim(), g.dtype] for g in grads])
    return total
