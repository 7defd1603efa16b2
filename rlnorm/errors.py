"""Exceptions raised by rlnorm, each carrying enough context to fix the problem."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RlnormError(Exception):
    """Base class of every error rlnorm raises on purpose."""


class NormalizationError(RlnormError, ValueError):
    """A normalization layer was used in a way that silently gives wrong results.

    Raised, for example, when a batch-dependent layer (BatchNorm) runs in train mode on a
    batch too small to have statistics: a lone state would be normalized to zero.
    """


class UnknownNameError(RlnormError, ValueError):
    """A name (agent, env, norm, config key) is not registered; the message lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.valid = sorted(valid)
        close = difflib.get_close_matches(str(name), self.valid, n=1) or [
            v for v in self.valid if v == _initials(str(name))
        ]
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(self.valid)}")


def _initials(name: str) -> str:
    """``"learning_rate"`` -> ``"lr"``: catches the usual abbreviations difflib misses."""
    return "".join(part[:1] for part in name.replace("-", "_").split("_"))


class ConfigError(RlnormError, ValueError):
    """A configuration file or override is malformed or holds a bad value."""


class CheckpointError(RlnormError, ValueError):
    """A checkpoint is missing, truncated, foreign, or does not match what was asked for."""


class EnvError(RlnormError, ValueError):
    """An environment got an input it cannot step with (wrong shape, out of range, NaN)."""
