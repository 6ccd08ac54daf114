"""End-to-end fixtures: a test module launches the real system with its own settings, through
``launch_system`` (lives for the module) or ``launch_fresh_system`` (lives for one test, for tests that
break it).  A failing test's report carries every subprocess' output."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import ExitStack

import pytest

from tests.e2e.running_system import RunningSystem, SystemLauncher


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in item.nodeid:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.redis)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, object, object]:
    report = yield
    if isinstance(report, pytest.TestReport) and report.failed:
        systems: dict[int, RunningSystem] = {}
        for value in getattr(item, "funcargs", {}).values():
            for system in value.systems if isinstance(value, SystemLauncher) else [value]:
                if isinstance(system, RunningSystem):
                    systems[system.port] = system
        for port, system in systems.items():
            report.sections.append((f"aiorouter processes on port {port}", system.logs()))
    return report


@pytest.fixture(scope="module")
def launch_system(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemLauncher]:
    """Start the real system (workers, then ingress) with given TOML settings; stopped after the module."""
    with ExitStack() as stack:
        yield SystemLauncher(redis_url, tmp_path_factory, stack)


@pytest.fixture
def launch_fresh_system(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemLauncher]:
    """Like ``launch_system``, but the system stops after the test (for tests that kill parts of it)."""
    with ExitStack() as stack:
        yield SystemLauncher(redis_url, tmp_path_factory, stack)
