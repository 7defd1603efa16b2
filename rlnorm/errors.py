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
        close = _suggest(str(name), self.valid)
        hint = f" Did you mean {close!r}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}.{hint} Valid {kind}s: {', '.join(self.valid)}")


def _suggest(name: str, valid: list[str]) -> str | None:
    """The valid name the user most likely meant, if any.

    Tried in order: the same name without case, separators or a trailing "norm"
    (``"BatchNorm"`` -> ``"batch"``); initials (``"learning_rate"`` -> ``"lr"``); then
    difflib's closest match.
    """

    def bare(text: str) -> str:
        text = text.lower().replace("_", "").replace("-", "")
        return text.removesuffix("norm") or text

    initials = "".join(part[:1] for part in name.replace("-", "_").split("_"))
    for candidates in (
        [v for v in valid if bare(v) == bare(name)],
        [v for v in valid if v == initials],
        difflib.get_close_matches(name, valid, n=1),
    ):
        if candidates:
            return candidates[0]
    return None


class ConfigError(RlnormError, ValueError):
    """A configuration file or override is malformed or holds a bad value."""


class CheckpointError(RlnormError, ValueError):
    """A checkpoint is missing, truncated, foreign, or does not match what was asked for."""


class EnvError(RlnormError, ValueError):
    """An environment got an input it cannot step with (wrong shape, out of range, NaN)."""


class NonFiniteError(EnvError):
    """A NaN or inf appeared in observations, rewards, losses or weights during training.

    ``step`` and ``env_index`` locate it in a rollout when it came from the env.
    """

    def __init__(self, message: str, step: int | None = None, env_index: int | None = None):
        super().__init__(message)
        self.step, self.env_index = step, env_index


class MissingDependencyError(RlnormError, ImportError):
    """An optional package is not installed (or too old) for what was asked: the
    stable-baselines3 adapter ``sb3:<Algo>`` without stable-baselines3 or sb3-contrib. The
    message names the package and the ``pip install`` that fixes it."""


class RunDirError(RlnormError):
    """A run directory cannot be used: another run holds it, it holds another run's files
    (and neither ``--resume`` nor ``--overwrite`` was given), or it cannot be written."""
