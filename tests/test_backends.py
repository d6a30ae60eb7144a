"""The backend matrix is what ``tests/conftest.py`` says: the asyncio legs run with the
loop's debug mode on, and a future's or task's creation traceback is asyncio's cheap kind
(the innermost ``DEBUG_STACK_DEPTH`` frames, as for its Handles), not the whole stack; the
trio legs run under ``trio.run`` (not a guest run), the virtual ones on a ``MockClock``."""

from __future__ import annotations

import asyncio
import asyncio.constants
import gc
import sys
import traceback

import pytest
import sniffio

from ._support import virtual_time, volume

pytestmark = pytest.mark.anyio


async def _never_awaited() -> None:
    pass


def _drop_a_coroutine_unawaited() -> None:
    coroutine = _never_awaited()
    del coroutine
    gc.collect()


async def _debug_mode_is_on_with_short_creation_tracebacks(test_name: str) -> None:
    loop = asyncio.get_running_loop()
    assert loop.get_debug()
    depth = asyncio.constants.DEBUG_STACK_DEPTH

    future = loop.create_future()  # the C Future: it calls traceback.extract_stack()
    created_at = future._source_traceback  # type: ignore[attr-defined]
    assert created_at is not None
    # The innermost frames are where the future was made, their source still readable...
    assert created_at[-1].name == "create_future"
    assert created_at[-2].name == "_debug_mode_is_on_with_short_creation_tracebacks"
    assert "loop.create_future()" in (created_at[-2].line or "")
    assert created_at[-3].name == test_name
    # ...and the traceback stops at asyncio's depth, though the stack here is far deeper.
    assert len(created_at) == depth
    assert len(list(traceback.walk_stack(None))) > 2 * depth
    future.cancel()

    task = asyncio.current_task()
    assert task is not None
    task_created_at = task._source_traceback  # type: ignore[attr-defined]
    assert task_created_at is not None
    assert 0 < len(task_created_at) <= depth

    handle = loop.call_soon(lambda: None)
    assert handle._source_traceback is not None  # type: ignore[attr-defined]
    assert 0 < len(handle._source_traceback) <= depth  # type: ignore[attr-defined]
    handle.cancel()

    # A coroutine that is never awaited is reported with where it was created.
    assert sys.get_coroutine_origin_tracking_depth() == depth
    with pytest.warns(RuntimeWarning, match="never awaited\nCoroutine created at"):
        _drop_a_coroutine_unawaited()


def _trio_runs_natively(*, virtual: bool) -> None:
    import trio
    import trio.testing

    # trio has no public "am I a guest" question; its run loop keeps the answer here.
    runner = trio._core._run.GLOBAL_RUN_CONTEXT.runner
    assert runner.is_guest is False
    clock = runner.clock
    assert isinstance(clock, trio.testing.MockClock) is virtual


async def test_asyncio_runs_in_debug_mode_and_trio_is_trio(anyio_backend_name: str) -> None:
    library = sniffio.current_async_library()
    assert library == anyio_backend_name
    if library == "asyncio":
        await _debug_mode_is_on_with_short_creation_tracebacks(
            "test_asyncio_runs_in_debug_mode_and_trio_is_trio"
        )
    else:
        _trio_runs_natively(virtual=False)


@virtual_time()
async def test_the_virtual_time_legs_too(anyio_backend_name: str) -> None:
    library = sniffio.current_async_library()
    assert library == anyio_backend_name
    if library == "asyncio":
        await _debug_mode_is_on_with_short_creation_tracebacks("test_the_virtual_time_legs_too")
    else:
        _trio_runs_natively(virtual=True)


@volume
def test_a_volume_test_runs_with_no_tracer() -> None:
    """Under coverage (as in scripts/test.sh, with xdist) nothing traces a ``volume`` test;
    without coverage this holds trivially."""
    assert sys.gettrace() is None
