"""Every async test runs on each backend of the matrix:

* ``asyncio`` — with the loop's debug mode on (slow callbacks, never-awaited coroutines and
  non-threadsafe calls are reported);
* ``asyncio-eager`` — asyncio with ``asyncio.eager_task_factory`` (Python 3.12+): a new
  task runs synchronously up to its first suspension, so code that assumes "start_soon does
  not run yet" breaks here. On older Pythons the parameter exists and is skipped, saying why;
* ``trio``.

The fixture is ours (not anyio's default) so that a missing trio fails loudly instead of
silently skipping part of the matrix.

Tests with tens of thousands of tasks are marked ``no_loop_debug``: asyncio's debug mode
records a traceback for every callback it schedules, which makes them several times slower;
every other test keeps debug mode on.

Tests that need real sockets (the hypercorn loopback server) are marked ``loopback``: they do
not run on ``asyncio-eager``, because hypercorn's asyncio worker is not written for eager
tasks: a connection task runs before the stream it reads is set up ("Error in ASGI Framework
... 'HTTPStream' object has no attribute 'app_put'", seen on Python 3.12 with hypercorn
0.18). The same client behaviour is covered there by the in-process transport tests.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

HAS_EAGER_TASKS = sys.version_info >= (3, 12)


def _eager_event_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
    return loop


BACKENDS = [
    pytest.param(("asyncio", {"debug": True}), id="asyncio"),
    pytest.param(
        ("asyncio", {"debug": True, "loop_factory": _eager_event_loop}),
        id="asyncio-eager",
        marks=pytest.mark.skipif(
            not HAS_EAGER_TASKS,
            reason="asyncio.eager_task_factory needs Python 3.12+",
        ),
    ),
    pytest.param(("trio", {}), id="trio"),
]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "no_loop_debug: asyncio debug mode off (tens of thousands of tasks)"
    )
    config.addinivalue_line(
        "markers",
        "loopback: needs the emulator's real loopback server (hypercorn); not run on eager tasks",
    )


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    backend: tuple[str, dict[str, Any]] = request.param
    name, options = backend
    if name == "trio":
        import trio  # noqa: F401  -- a missing trio must fail, not skip
    if "loop_factory" in options and request.node.get_closest_marker("loopback"):
        pytest.skip("hypercorn (the loopback server) does not run on eager asyncio tasks")
    if name == "asyncio" and request.node.get_closest_marker("no_loop_debug"):
        return name, {**options, "debug": False}
    return backend
