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

Debug mode stays on, but the creation traceback of a future or task is the cheap kind. In
debug mode every ``Future`` and ``Task`` records where it was created (``_source_traceback``).
asyncio's own Python code does this with ``asyncio.format_helpers.extract_stack``: the
innermost ``DEBUG_STACK_DEPTH`` (10) frames, source lines read only if the traceback is
printed. The C accelerator (``_asyncio``, which CPython uses for ``Future`` and ``Task``)
instead calls ``traceback.extract_stack()``: every frame down to pytest's ``main``, with
``linecache.checkcache`` (an ``os.stat``) and a line lookup for each. That was about half of
the CPU of an asyncio test (the 2,000-request ``test_transient_line_failures_are_retried_in_a_
later_batch[asyncio-virtual]``: 1.6 s, 0.85 s with the cheap kind), and made the asyncio
legs 3-5 times slower than the trio legs.
:func:`_use_asyncios_own_stack_depth_for_source_tracebacks` makes ``traceback.extract_stack``
called without a ``limit`` do what asyncio's Python version does. The C module holds its own
reference to the function, so the function's code is replaced in place.

Kept: debug mode itself (``loop.get_debug()``; slow callbacks, never-awaited coroutines with
where they were created, calls from the wrong thread, the creation traceback of a future or
task whose exception is never retrieved, or of a task destroyed while pending). Lost: frames
beyond the innermost 10 in those creation tracebacks (asyncio's Handles and its Python
``Future`` already stop there); source lines are read when a traceback is printed, not when
it is taken. The change is process-wide: anything else in a test process that asks
``traceback.extract_stack``, ``format_stack`` or ``print_stack`` for the whole stack (no
``limit``) gets the innermost 10 frames too; nothing in the package or the tests does.
``tests/test_backends.py`` checks that the asyncio legs really run in debug mode with these
tracebacks.

Trio tests run under ``trio.run``, as a trio program does. anyio's pytest plugin runs them in
trio's guest mode instead (so that async fixtures and the test share one run): every tick of
the scheduler then waits for I/O in a helper thread and hands the result back through a
queue, two thread switches a tick. Measured on the trio legs of the map, quota, resubmit and
client tests (with coverage): about 10% of their CPU. The suite has no async fixtures;
should one be added, a test that uses it goes back to anyio's runner
(:func:`pytest_pyfunc_call`). ``tests/test_backends.py`` checks which run a trio test is in.

Tests marked ``no_cover`` (``tests/_support.py``'s ``volume``) run untraced, on every
worker. pytest-cov pauses its own measurement for them, but under pytest-xdist (7.1.0) each
worker also starts a second, unused ``Coverage`` (the plugin takes the worker's copy of ``-n``
for "this is the controller"); stopping the worker's own one resumes that other, and the test
was traced as before (seen: the same CPU with the mark as without).
:func:`pytest_runtest_call` stops whatever measurement is still running for such a test and
starts it again afterwards.

Tests that need real sockets (the hypercorn loopback server) are marked ``loopback``: they do
not run on ``asyncio-eager``, because hypercorn's asyncio worker is not written for eager
tasks: a connection task runs before the stream it reads is set up ("Error in ASGI Framework
... 'HTTPStream' object has no attribute 'app_put'", seen on Python 3.12 with hypercorn
0.18). The same client behaviour is covered there by the in-process transport tests.
"""

from __future__ import annotations

import asyncio
import asyncio.constants
import functools
import inspect
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import pytest

HAS_EAGER_TASKS = sys.version_info >= (3, 12)


def _use_asyncios_own_stack_depth_for_source_tracebacks() -> None:
    """Make ``traceback.extract_stack`` called without a ``limit`` stop at asyncio's
    ``DEBUG_STACK_DEPTH`` (10) frames and read source lines only when printed, as
    ``asyncio.format_helpers.extract_stack`` does (see the module docstring).

    The replacement code runs in the ``traceback`` module's globals, so it uses only names
    defined there (``sys``, ``StackSummary``, ``walk_stack``).
    """

    def extract_stack(f: Any = None, limit: Any = None) -> Any:
        if f is None:
            f = sys._getframe().f_back
        if limit is None:
            limit = 10  # asyncio.constants.DEBUG_STACK_DEPTH, checked below
        stack = StackSummary.extract(walk_stack(f), limit=limit, lookup_lines=False)  # type: ignore[name-defined]  # noqa: F821
        stack.reverse()
        return stack

    target = traceback.extract_stack
    if asyncio.constants.DEBUG_STACK_DEPTH != 10 or target.__code__.co_varnames[:2] != (
        "f",
        "limit",
    ):
        return  # not what this was written for: leave the full tracebacks
    target.__code__ = extract_stack.__code__


_use_asyncios_own_stack_depth_for_source_tracebacks()


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


def _uses_async_fixtures(item: pytest.Function) -> bool:
    definitions = item._fixtureinfo.name2fixturedefs.values()
    return any(
        inspect.iscoroutinefunction(fixture.func) or inspect.isasyncgenfunction(fixture.func)
        for fixtures in definitions
        for fixture in fixtures
    )


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a trio test under ``trio.run`` rather than anyio's guest-mode runner (see the
    module docstring); anything else goes on to anyio's plugin."""
    backend = pyfuncitem.funcargs.get("anyio_backend")
    if (
        not isinstance(backend, tuple)
        or backend[0] != "trio"
        or not inspect.iscoroutinefunction(pyfuncitem.obj)
        or _uses_async_fixtures(pyfuncitem)
    ):
        return None
    import trio

    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    options: dict[str, Any] = backend[1]
    try:
        trio.run(functools.partial(pyfuncitem.obj, **arguments), **options)
    except BaseException as error:
        stop = _stop_request_inside(error)
        if stop is not None and stop is not error:
            raise stop from error
        raise
    return True


def _stop_request_inside(error: BaseException) -> BaseException | None:
    """``pytest.exit()``, Ctrl-C or ``SystemExit`` raised in a task group arrives wrapped in an
    exception group: raised alone (as anyio's runner does), pytest stops instead of reporting
    one failed test."""
    if isinstance(error, (pytest.exit.Exception, KeyboardInterrupt, SystemExit)):
        return error
    for inner in getattr(error, "exceptions", ()):
        found = _stop_request_inside(inner)
        if found is not None:
            return found
    return None


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Run a ``no_cover`` test with no coverage measurement running at all (see the module
    docstring); pytest-cov's own pause has already happened (this wrapper is inside it)."""
    coverage = sys.modules.get("coverage")
    if coverage is None or item.get_closest_marker("no_cover") is None:
        yield
        return
    stopped = []
    while (measuring := coverage.Coverage.current()) is not None:
        measuring.stop()
        stopped.append(measuring)
    try:
        yield
    finally:
        for measuring in reversed(stopped):
            measuring.start()
