"""rlnorm: reinforcement learning with normalization layers that are safe by construction.

The public API in one place:

- :func:`acting` / :func:`training`: the two mode contexts every forward pass goes through.
- :func:`predict`: actions for one state or a batch, in eval mode.
- :func:`load` / :func:`save`: pickle-free checkpoints that carry no train/eval mode.
- :class:`NormalizationError`: raised instead of silently normalizing a lone state to zero.
- :func:`audit`: what is unsafe about a module's or agent's normalization, as findings.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import TYPE_CHECKING, Any

from rlnorm.version import __version__

if TYPE_CHECKING:
    import torch

    from rlnorm.agent import Agent
    from rlnorm.audit import Finding, audit
    from rlnorm.checkpoint import save
    from rlnorm.errors import (
        CheckpointError,
        ConfigError,
        EnvError,
        NormalizationError,
        RlnormError,
        UnknownNameError,
    )
    from rlnorm.rollout import predict
    from rlnorm.safety import acting, training

# The public names and the modules they live in, imported on first use (PEP 562): importing
# torch takes seconds, and ``rlnorm --help`` or an argument error should not wait for it.
_LAZY = {
    "Agent": "rlnorm.agent",
    "Finding": "rlnorm.audit",
    "audit": "rlnorm.audit",
    "save": "rlnorm.checkpoint",
    "CheckpointError": "rlnorm.errors",
    "ConfigError": "rlnorm.errors",
    "EnvError": "rlnorm.errors",
    "NormalizationError": "rlnorm.errors",
    "RlnormError": "rlnorm.errors",
    "UnknownNameError": "rlnorm.errors",
    "predict": "rlnorm.rollout",
    "acting": "rlnorm.safety",
    "training": "rlnorm.safety",
}


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first access and kept (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rlnorm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Facade(types.ModuleType):
    """The package module. Importing a submodule binds it to the package attribute of its
    name, which would make ``rlnorm.audit`` the module rlnorm.audit instead of the public
    function once anything imports that module; public names keep their meaning."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not (name in _LAZY and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Facade


def load(
    path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    *,
    agent: str | None = None,
    norm: str | None = None,
) -> Agent:
    """Rebuild the agent saved at ``path`` (a checkpoint directory), every module in eval
    mode, optimizers restored; loading never unpickles. ``agent`` and ``norm``, when given,
    must match the checkpoint's, else :class:`CheckpointError`.

    The package facade is the top floor with the CLI: it finds the agent class through the
    registry of the plug-in folder (:func:`rlnorm.agents.get`), which the core never imports.
    """
    from rlnorm import agents, checkpoint

    return checkpoint.load(path, agents.get, device, agent=agent, norm=norm)


__all__ = [
    "CheckpointError",
    "ConfigError",
    "EnvError",
    "Finding",
    "NormalizationError",
    "RlnormError",
    "UnknownNameError",
    "__version__",
    "acting",
    "audit",
    "load",
    "predict",
    "save",
    "training",
]
