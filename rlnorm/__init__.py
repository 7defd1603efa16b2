"""rlnorm: reinforcement learning with normalization layers that are safe by construction.

The public API in one place:

- :func:`acting` / :func:`training`: the two mode contexts every forward pass goes through.
- :func:`predict`: actions for one state or a batch, in eval mode.
- :func:`load` / :func:`save`: pickle-free checkpoints that carry no train/eval mode.
- :class:`NormalizationError`: raised instead of silently normalizing a lone state to zero.
- :func:`audit`: what is unsafe about a module's or agent's normalization, as findings.
"""

__version__ = "0.1.0"

from rlnorm.audit import Finding, audit
from rlnorm.checkpoint import load, save
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
