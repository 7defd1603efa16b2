"""rlnorm: reinforcement learning with normalization layers that are safe by construction."""

from rlnorm.errors import (
    CheckpointError,
    ConfigError,
    EnvError,
    NormalizationError,
    RlnormError,
    UnknownNameError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "EnvError",
    "NormalizationError",
    "RlnormError",
    "UnknownNameError",
    "__version__",
]
