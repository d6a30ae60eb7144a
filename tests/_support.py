"""Shared helpers for client tests: the emulator in-process (no sockets) and a client on it."""

from __future__ import annotations

import asyncio
import selectors
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import trio.testing

from autobatcher import BatchEvent, BatchOpenAI, open_batcher
from autobatcher.testing import IN_PROCESS_BASE_URL, Emulator, emulator_client

API_KEY = "sk-test-key"
AUTH = {"authorization": f"Bearer {API_KEY}"}

#: Fast settings: batches flush and poll quickly, so tests never sleep for long.
FAST: dict[str, Any] = {
    "batch_window_seconds": 0.05,
    "poll_interval_seconds": 0.02,
}


class InProcess:
    """An emulator in this process and an ``httpx.AsyncClient`` wired to it (no sockets)."""

    base_url = IN_PROCESS_BASE_URL

    def __init__(self, emulator: Emulator, http_client: httpx.AsyncClient) -> None:
        self.emulator = emulator
        #: rooted at the emulator (paths start with ``/v1``); sends no key unless given ``AUTH``
        self.http_client = http_client

    def options(self, **client_options: Any) -> dict[str, Any]:
        """``BatchOpenAI`` options for a client of this emulator (FAST unless overridden)."""
        return {
            "api_key": API_KEY,
            "base_url": IN_PROCESS_BASE_URL,
            "http_client": self.http_client,
            **FAST,
            **client_options,
        }

    def client(self, **client_options: Any) -> BatchOpenAI:
        """A plain (standalone) ``BatchOpenAI`` on this emulator."""
        return BatchOpenAI(**self.options(**client_options))

    def http(self, **httpx_options: Any) -> httpx.AsyncClient:
        """A new httpx client on this emulator (e.g. with event hooks); the caller closes it."""
        return httpx.AsyncClient(transport=self.emulator.transport(), **httpx_options)


@asynccontextmanager
async def in_process(**emulator_options: Any) -> AsyncIterator[InProcess]:
    """The emulator in-process, keyed with ``API_KEY``."""
    async with emulator_client(api_key=API_KEY, **emulator_options) as (emulator, http_client):
        yield InProcess(emulator, http_client)


@asynccontextmanager
async def emulated(
    emulator_options: dict[str, Any] | None = None, **client_options: Any
) -> AsyncIterator[tuple[InProcess, BatchOpenAI]]:
    """The emulator in-process and a batcher on it (run mode)."""
    async with in_process(**(emulator_options or {})) as server:
        async with open_batcher(**server.options(**client_options)) as client:
            yield server, client


def chat(text: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


class Recorder:
    """An event hook that keeps every event."""

    def __init__(self) -> None:
        self.events: list[BatchEvent] = []
        self._waiting: dict[str, anyio.Event] = {}

    def __call__(self, event: BatchEvent) -> None:
        self.events.append(event)
        waiting = self._waiting.pop(event.kind, None)
        if waiting is not None:
            waiting.set()

    async def wait_for(self, kind: str, count: int = 1) -> BatchEvent:
        """The ``count``-th event of ``kind``, waiting for it if it has not happened yet."""
        while len(self.kinds(kind)) < count:
            event = self._waiting.setdefault(kind, anyio.Event())
            await event.wait()
        return self.kinds(kind)[count - 1]

    def kinds(self, kind: str) -> list[BatchEvent]:
        return [event for event in self.events if event.kind == kind]


async def gather(*calls: Any) -> list[Any]:
    """Run awaitables concurrently on any backend; keep results (or exceptions) in order."""
    results: list[Any] = [None] * len(calls)

    async def one(index: int, call: Any) -> None:
        try:
            results[index] = await call
        except Exception as exc:
            results[index] = exc

    async with anyio.create_task_group() as tg:
        for index, call in enumerate(calls):
            tg.start_soon(one, index, call)
    return results


def task_ids() -> set[int]:
    return {task.id for task in anyio.get_running_tasks()}


def task_code_file(task: anyio.TaskInfo) -> str:
    coro = task.coro
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    return str(getattr(code, "co_filename", ""))


def task_runs(task: anyio.TaskInfo, function: Callable[..., Any]) -> bool:
    """Whether ``function``'s code is on the task's stack of awaiting coroutines.

    Identity by code object, not by name: anyio wraps a started task's coroutine (so the
    outermost frame is anyio's), and a name test like "run" also matches the test runner's
    own tasks.
    """
    code = function.__code__
    awaitable: Any = task.coro
    while awaitable is not None:
        if (
            getattr(awaitable, "cr_code", None) is code
            or getattr(awaitable, "gi_code", None) is code
        ):
            return True
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return False


async def leftover_tasks(before: set[int]) -> list[str]:
    """Tasks started since ``before``, still alive, running the client's code (or httpx's).

    Waits until every other task is blocked first, so a task that is merely finishing is not
    mistaken for a leftover. A loopback server keeps a task per connection for a moment
    after the client hangs up; those are the server's (hypercorn, trio's listeners), not the
    client's, and are left out.
    """
    await anyio.wait_all_tasks_blocked()
    leftovers = []
    for task in anyio.get_running_tasks():
        if task.id in before:
            continue
        where = task_code_file(task)
        ours = "/autobatcher/" in where and "/autobatcher/testing/" not in where
        if ours or "/httpx/" in where or "/httpcore/" in where:
            leftovers.append(f"{task.name} ({where})")
    return leftovers


# -- virtual time ---------------------------------------------------------------------------------


class _JumpingSelector(selectors.BaseSelector):
    """The loop's selector, except that when the loop would sleep until its next timer, the
    loop's clock jumps there instead (trio's ``MockClock(autojump_threshold=0)``, for asyncio).

    Only a wait with no timer at all (``timeout=None``) really blocks; with the in-process
    emulator nothing else can wake the loop, so that is a deadlock and the test times out.
    """

    def __init__(self, loop: VirtualClockEventLoop) -> None:
        self._inner = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or timeout is None or timeout <= 0:
            return ready if ready or timeout is not None else self._inner.select(None)
        self._loop.virtual_now += timeout
        return []


class VirtualClockEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock is virtual: it starts at 0 and moves only by jumping to
    the next timer when every task waits (so an hour of ``anyio.sleep`` takes no wall time)."""

    def __init__(self) -> None:
        self.virtual_now = 0.0
        super().__init__(selector=_JumpingSelector(self))

    def time(self) -> float:
        return self.virtual_now


def _eager_virtual_clock_event_loop() -> VirtualClockEventLoop:
    loop = VirtualClockEventLoop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
    return loop


#: For a test whose cost is volume (thousands of requests or lines, or a sweep over every step,
#: kill point or provider): it runs with coverage's tracer paused (pytest-cov's ``no_cover``).
#: On Python 3.11 the tracer doubles the CPU of every line it sees, and these tests run the same
#: lines thousands of times. Every branch arc such a test runs is also run by a cheaper test:
#: checked for each one with per-test coverage contexts (``--cov-context=test``) when it was
#: marked, so the measured coverage is the same with the marks as without. A mark can only make
#: the figure lower, never higher: should a path come to be reached by a marked test alone, the
#: floor sees it as unexecuted.
volume = pytest.mark.no_cover


def virtual_time() -> pytest.MarkDecorator:
    """Run the test on virtual time: on asyncio (debug mode, :class:`VirtualClockEventLoop`),
    the same with eager tasks (Python 3.12+) and on trio (a fresh ``MockClock`` that jumps
    whenever all tasks sleep).

    Time read from the loop (``anyio.current_time()``) is then exact: assertions on it do not
    depend on how loaded the machine is. Only for tests with no real I/O (the in-process
    emulator), since the clock jumps whenever the loop would wait. Note that on asyncio,
    ``anyio.wait_all_tasks_blocked()`` polls with ``sleep(0.1)``: virtual time moves by 0.1 s
    per poll there, so keep windows and deadlines long next to it.
    """
    return pytest.mark.parametrize(
        "anyio_backend",
        [
            pytest.param(
                ("asyncio", {"debug": True, "loop_factory": VirtualClockEventLoop}),
                id="asyncio-virtual",
            ),
            pytest.param(
                ("asyncio", {"debug": True, "loop_factory": _eager_virtual_clock_event_loop}),
                id="asyncio-eager-virtual",
                marks=pytest.mark.skipif(
                    sys.version_info < (3, 12), reason="asyncio.eager_task_factory needs 3.12+"
                ),
            ),
            pytest.param(
                ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}),
                id="trio-virtual",
            ),
        ],
    )
