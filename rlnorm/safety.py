"""Mode discipline: act only in eval mode, update only in train mode, restore exactly.

``acting`` and ``training`` are the two doors through which rlnorm runs a network. Each
records the ``training`` flag of every submodule on entry and puts back exactly that flag on
exit, even when the body raises: a blanket ``.train()`` on exit would flip a submodule the
caller had deliberately frozen in eval mode.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from rlnorm import norm
from rlnorm.layers import BatchGuard
from rlnorm.norm import kind_of

_children = operator.attrgetter("_modules")


class _Tree:
    """The submodules of one root, remembered with what makes them its submodules.

    Walking ``named_modules`` on every entry of :func:`acting` or :func:`training` (several
    times per gradient step, and per call of :func:`rlnorm.predict`) costs more than the
    flags it sets, so the list is cached with a copy of the root's and each submodule's
    ``_modules`` dict (name -> child). Every way the tree can change goes through some
    module's ``_modules``: ``add_module``, ``register_module`` or attribute assignment,
    ``del``, ``ModuleList.insert``/``pop``, a parametrization (which registers a
    ``parametrizations`` child), or a write into ``_modules`` itself (as quantization's
    module swaps do). So the cached list is the tree exactly while every module's
    ``_modules`` equals its copy, which :meth:`still_valid` checks without a Python loop.
    """

    def __init__(self, root: nn.Module) -> None:
        subs = list(root.modules())
        self.subs = subs[1:]  # the root itself is not held: the cache must not keep it alive
        self.root_children = dict(root._modules)
        self.children = [dict(m._modules) for m in self.subs]
        #: Positions in ``[root, *subs]`` of the mode-dependent norm layers, and the size of
        #: the norm registry they were found with (:func:`_mode_dependent_layers`).
        self.mode_dependent: list[int] | None = None
        self.kinds = 0

    def still_valid(self, root: nn.Module) -> bool:
        """Whether every module's ``_modules`` (read afresh: a module may have been given a
        new dict) still equals the copy taken with the list; dicts compare in C."""
        return root._modules == self.root_children and (
            list(map(_children, self.subs)) == self.children
        )


#: Each root module's :class:`_Tree`, forgotten when the root is garbage-collected.
_trees: weakref.WeakKeyDictionary[nn.Module, _Tree] = weakref.WeakKeyDictionary()


def _tree_of(root: nn.Module) -> list[nn.Module]:
    """``root`` and its submodules, from the cache while its tree has not changed."""
    tree = _trees.get(root)
    if tree is None or not tree.still_valid(root):
        tree = _trees[root] = _Tree(root)
    return [root, *tree.subs]


def _mode_dependent_layers(root: nn.Module) -> list[nn.Module]:
    """``root``'s mode-dependent norm layers (BatchNorm: see :mod:`rlnorm.norm`), cached
    with its tree while neither the tree nor the norm registry (which only grows) changes."""
    modules = _tree_of(root)
    tree = _trees[root]
    if tree.mode_dependent is None or tree.kinds != norm.registered():
        tree.kinds = norm.registered()
        tree.mode_dependent = [
            i for i, m in enumerate(modules) if (k := kind_of(m)) is not None and k.mode_dependent
        ]
    return [modules[i] for i in tree.mode_dependent]


def _submodules(
    modules: Iterable[nn.Module],
    of: Callable[[nn.Module], list[nn.Module]] = _tree_of,
) -> list[nn.Module]:
    """Every distinct submodule of ``modules`` (a module reached twice is recorded once), or
    those ``of`` picks from each root's tree."""
    found: list[nn.Module] = []
    for root in modules:
        if not isinstance(root, nn.Module):
            raise TypeError(f"expected torch.nn.Module, got {type(root).__name__}")
        found += of(root)
    if len(set(map(id, found))) == len(found):  # the usual case: disjoint trees
        return found
    return list({id(m): m for m in found}.values())


def _set_training(module: nn.Module, train: bool) -> None:
    if type(module).__setattr__ is nn.Module.__setattr__:
        # What ``module.training = train`` does there, without the checks for parameters,
        # buffers and submodules: 13x faster, and these contexts run several times per
        # gradient step.
        object.__setattr__(module, "training", train)
    else:  # e.g. TorchScript modules, which keep the flag on the C++ side
        module.training = train


@contextmanager
def _mode(modules: tuple[nn.Module, ...], train: bool) -> Iterator[None]:
    """Every submodule of ``modules`` in mode ``train`` inside; each one's own flag after.

    Only flags that differ are written, on entry and on exit, so a context entered on
    modules already in the wanted mode costs a read of each flag.
    """
    subs = _submodules(modules)
    saved = [m.training for m in subs]
    try:
        for m, was_training in zip(subs, saved, strict=True):
            if was_training != train:
                _set_training(m, train)
        yield
    finally:
        for m, was_training in zip(subs, saved, strict=True):
            if m.training != was_training:
                _set_training(m, was_training)


@contextmanager
def acting(*modules: nn.Module) -> Iterator[None]:
    """Run ``modules`` as a policy acts: every submodule in eval mode, under inference mode.

    In eval mode BatchNorm normalizes with its running statistics, so a state's output does
    not depend on which other states share its batch, and a single state is not normalized
    to zero. Inference mode records no autograd graph. On exit every submodule gets back
    the exact mode it had.
    """
    with _mode(modules, train=False), torch.inference_mode():
        yield


@contextmanager
def training(*modules: nn.Module) -> Iterator[None]:
    """Run ``modules`` as an update does: every submodule in train mode, gradients enabled.

    The mirror of :func:`acting`; on exit every submodule gets back the exact mode it had.
    """
    with _mode(modules, train=True), torch.enable_grad():
        yield


def label_layers(modules: Mapping[str, nn.Module]) -> None:
    """Record each guarded norm layer's path (``"actor.1"``) so its errors can name it."""
    for prefix, root in modules.items():
        for path, m in root.named_modules(prefix=prefix):
            if isinstance(m, BatchGuard):
                m.rlnorm_path = path


@contextmanager
def frozen_statistics(*modules: nn.Module) -> Iterator[None]:
    """Normalize with running statistics while training the weights.

    Inside, every mode-dependent norm layer (BatchNorm: see :mod:`rlnorm.norm`) of
    ``modules`` is in eval mode, so it normalizes with its running statistics and does not
    update them; every other submodule keeps its mode. A network updated this way is, during
    the update, exactly the function that acts, which is what an on-policy importance ratio
    assumes. The statistics must then be refreshed separately (a train-mode forward pass).
    """
    with _mode(tuple(_submodules(modules, _mode_dependent_layers)), train=False):
        yield


def train_and_eval_outputs(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``module(x)`` in train mode and in eval mode, without side effects.

    No gradient is recorded, running statistics are put back as they were (a train-mode
    BatchNorm pass would move them), and every submodule's mode is restored. For measuring
    the train/eval gap of a network on a batch.
    """
    buffers = [(b, b.clone()) for b in module.buffers()]
    try:
        with torch.no_grad(), _mode((module,), train=True):
            train_out = module(x)
        with torch.no_grad(), _mode((module,), train=False):
            eval_out = module(x)
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
    return train_out, eval_out
