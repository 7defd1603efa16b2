"""The torch-free catalog (``rlnorm.catalog``) that ``rlnorm list`` prints from holds exactly
what the registries hold, so it cannot drift from the code; a kind or an agent registered in
this process by a plug-in is listed too."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from torch import nn

from rlnorm import agents, catalog, cli, envs, norm
from rlnorm.agent import Agent
from rlnorm.agents import sb3


def test_builtin_agents_are_the_catalogs() -> None:
    agents.get("ppo")  # imports the built-in agents, which register themselves
    builtin = {
        name for name, cls in agents._REGISTRY.items() if cls.__module__.startswith("rlnorm.")
    }
    assert builtin == set(catalog.AGENTS)
    assert set(catalog.AGENTS) <= set(agents.names())


def test_sb3_adapters_are_the_catalogs() -> None:
    assert {cls.name: cls.package for cls in sb3._AGENTS.values()} == catalog.SB3_AGENTS
    assert catalog.sb3_available() == list(catalog.SB3_AGENTS)  # both packages are installed
    for name in catalog.sb3_available():
        assert agents.get(name).name == name


def test_native_envs_are_the_catalogs() -> None:
    assert tuple(envs.env_ids()) == catalog.NATIVE_ENVS
    assert not set(catalog.NATIVE_ENVS) & set(catalog.gymnasium_env_ids())


def test_every_registered_norm_kind_has_its_contract_in_the_catalog() -> None:
    assert norm.names() == list(catalog.NORMS)
    for name in norm.names():
        kind = norm.get(name)
        contract = catalog.NORMS[name]
        assert (kind.description, kind.batch_dependent, kind.mode_dependent) == (
            contract.description,
            contract.batch_dependent,
            contract.mode_dependent,
        )


@pytest.fixture
def plugin_norm() -> Iterator[norm.NormKind]:
    """A norm kind registered as a plug-in would, removed again afterwards."""
    kind = norm.register(
        norm.NormKind(
            "plugin_tanh",
            lambda features: nn.Tanh(),
            batch_dependent=False,
            mode_dependent=False,
            description="a plug-in's kind",
        )
    )
    yield kind
    del norm._REGISTRY[kind.name], catalog.NORMS[kind.name]


@dataclass
class _PluginConfig:
    lr: float = 0.01


class _PluginAgent(Agent):
    name = "plugin-agent"
    Config = _PluginConfig


@pytest.fixture
def plugin_agent() -> Iterator[type[Agent]]:
    """An agent registered in-process as a plug-in would, removed again afterwards."""
    agents.register(_PluginAgent)
    yield _PluginAgent
    del agents._REGISTRY[_PluginAgent.name]


def test_kinds_and_agents_registered_in_process_are_listed(
    plugin_norm: norm.NormKind,
    plugin_agent: type[Agent],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert norm.get("plugin_tanh") is plugin_norm
    assert agents.get("plugin-agent") is plugin_agent
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  plugin_tanh  a plug-in's kind" in lines
    assert any(line.split()[:1] == ["plugin-agent"] and "plug-in" in line for line in lines)
