"""Test-wide settings."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op torch thread where tests run: the networks under test are tiny, so it
    is fastest, and it keeps timings stable when the suite shares the machine's two cores
    with other work. The xdist controller runs no test, and importing torch there would
    delay the workers' start by seconds."""
    # pytest marks every module of a distribution that ships a pytest plugin for assertion
    # rewriting: all of hypothesis (70 modules, no test among them) was rewritten and
    # compiled in each process that imports it, 1-2 s each (with PYTHONDONTWRITEBYTECODE,
    # on every run). The attribute is pytest's own; without it this does nothing.
    rewrite_hook = getattr(config.pluginmanager, "rewrite_hook", None)
    getattr(rewrite_hook, "_must_rewrite", set()).discard("hypothesis")
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import torch

    torch.set_num_threads(1)


#: The modules whose tests take the longest (a trained agent, a Ray cluster, mypy over the
#: package), slowest first. They are handed out to the workers first, so that the suite
#: does not end waiting on one of them while the other cores sit idle.
SLOW_MODULES = (
    "test_sweep.py",
    "test_learning.py",
    "test_house.py",
    "test_sb3_interop.py",
    "test_plugin_agent.py",
    "test_reproduce.py",
    "test_cli.py",
    "test_resume.py",
)


def pytest_collection_modifyitems(items: list) -> None:
    """Run the slow modules first, each module's tests kept together and in order (so a
    module-scoped fixture is built once)."""
    rank = {name: i for i, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
