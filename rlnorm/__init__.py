"""rlnorm: reinforcement learning with normalization layers that are safe by construction.

The public API in one place:

- :func:`acting` / :func:`training`: the two mode contexts every forward pass goes through.
- :func:`predict`: actions for one state or a batch, in eval mode.
- :func:`load` / :func:`save`: pickle-free checkpoints that carry no train/eval mode.
- :class:`NormalizationError`: raised instead of silently normalizing a lone state to zero.
- :func:`audit`: what is unsafe about a module's or agent's normalization, as findings.
"""

from __future__ import annotations

import os

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
from rlnorm.version import __version__


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
