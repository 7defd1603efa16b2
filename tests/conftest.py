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


#: The modules whose tests take the longest (trained agents, sweeps with a Ray cluster, mypy
#: over the package) and their CPU seconds, measured on the project's idle 2-core machine.
SLOW_MODULES = {
    "test_sweep.py": 63,
    "test_learning.py": 49,
    "test_reproduce.py": 33,
    "test_sb3_interop.py": 18,
    "test_offpolicy.py": 17,
    "test_resume.py": 17,
    "test_population.py": 15,
    "test_house.py": 14,
    "test_cli.py": 13,
    "test_sb3.py": 11,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deal the slow modules out to the xdist workers, each to the least loaded so far,
    heaviest first, each module's tests together and in order (a module-scoped fixture is
    built once). xdist hands worker ``i`` the ``i``-th contiguous share of the list, so each
    share starts with its slow modules and is filled up with quick tests; the workers then
    end on quick tests, which an idle worker steals, instead of one waiting on a slow module.
    """
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    by_module: dict[str, list[pytest.Item]] = {}
    for item in items:
        by_module.setdefault(item.path.name, []).append(item)
    quick = [
        item for name, group in by_module.items() if name not in SLOW_MODULES for item in group
    ]
    load = [0] * workers
    shares: list[list[pytest.Item]] = [[] for _ in range(workers)]
    for name in sorted(SLOW_MODULES, key=SLOW_MODULES.__getitem__, reverse=True):
        worker = load.index(min(load))
        shares[worker] += by_module.get(name, [])
        load[worker] += SLOW_MODULES[name]
    ordered: list[pytest.Item] = []
    for worker, share in enumerate(shares):
        # xdist's share for this worker: what is left, split evenly over those left
        size = (len(items) - len(ordered)) // (workers - worker)
        fill = max(0, size - len(share))
        ordered += share + quick[:fill]
        quick = quick[fill:]
    items[:] = ordered + quick
