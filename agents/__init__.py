"""Pluggable agents, one algorithm a file (installed as ``rlnorm.agents``), and their registry.

The agent contract (:class:`rlnorm.agent.Agent`) lives in the core; this package holds the
implementations and the registry that names them: :func:`get` and :func:`names` for the CLI
and :func:`rlnorm.load`, :func:`register` for the built-in agents, and the
``rlnorm.agents`` entry-point group for agents from other installed packages.

Importing this package imports no agent and no torch: :func:`names` answers from
:mod:`rlnorm.catalog` and the installed entry points' metadata, so ``rlnorm list`` stays
fast; :func:`get` imports the agents.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from typing import TYPE_CHECKING

from rlnorm import catalog
from rlnorm.errors import UnknownNameError

if TYPE_CHECKING:
    from rlnorm.agent import Agent

#: Entry-point group through which installed packages provide agents.
ENTRY_POINT_GROUP = "rlnorm.agents"

_REGISTRY: dict[str, type[Agent]] = {}
_entry_points_loaded = False


def register(cls: type[Agent]) -> type[Agent]:
    """Class decorator: make an agent available by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Agent]:
    """The agent class registered as ``name``; an unknown name lists the valid ones.

    ``sb3:<Algo>`` (``sb3:PPO``, ``sb3:SAC``, ...) is the stable-baselines3 adapter of that
    algorithm (:mod:`rlnorm.agents.sb3`); stable-baselines3 is imported only then.
    """
    _load_builtin()
    from rlnorm.agents import sb3

    if name.startswith(sb3.PREFIX) and name not in _REGISTRY:
        return sb3.agent_class(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError("agent", name, names()) from None


def names() -> list[str]:
    """Names of every agent :func:`get` knows, found without importing any of them: the
    built-in agents (:data:`rlnorm.catalog.AGENTS`), agents registered in this process, the
    entry points of installed packages (by the name each is installed under, until
    :func:`get` loads them and keeps those that load) and the stable-baselines3 adapters
    whose package is installed."""
    plugins = (
        ()
        if _entry_points_loaded
        else (e.name for e in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    )
    return sorted({*catalog.AGENTS, *_REGISTRY, *plugins, *catalog.sb3_available()})


def _load_builtin() -> None:
    # Imported on first use: the agent modules import this package to register themselves.
    from rlnorm.agents import crossq, ppo, sac, td3  # noqa: F401

    _load_entry_points()


def _load_entry_points() -> None:
    """Register the agents of installed packages, once: every entry point in the
    ``rlnorm.agents`` group names an :class:`Agent` subclass (``pkg.module:MyAgent``)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    from rlnorm.agent import Agent

    _entry_points_loaded = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
        except Exception as e:  # a broken plug-in must not take the built-in agents down
            warnings.warn(f"agent entry point {entry.value!r} failed to load: {e!r}", stacklevel=3)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Agent)):
            warnings.warn(
                f"agent entry point {entry.value!r} is not an Agent subclass", stacklevel=3
            )
            continue
        if entry.name != cls.name:
            warnings.warn(
                f"agent entry point {entry.name!r} loads an agent named {cls.name!r}; "
                f"it is registered as {cls.name!r}",
                stacklevel=3,
            )
        _REGISTRY.setdefault(cls.name, cls)  # a plug-in never shadows a built-in agent


__all__ = ["ENTRY_POINT_GROUP", "get", "names", "register"]
