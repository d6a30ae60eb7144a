"""The one-shot wake-up a waiting request sleeps on: the cheapest one each backend offers.

Tens of thousands of requests wait at once, so this is on the hot path. ``anyio.Event`` costs
~1.7 µs and three objects on asyncio, and ``trio.Event`` a parking lot per request on trio;
a request has exactly one waiter, so a bare ``asyncio.Future`` (asyncio) or a parked task
(trio) does the same job for a fraction of the CPU and garbage-collector time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol, Union

import anyio
import sniffio

if TYPE_CHECKING:
    import trio

__all__ = ["Signal", "fire", "loop_token", "new_signal", "wait_for"]


class _EventLike(Protocol):
    def set(self) -> None: ...
    def wait(self) -> Awaitable[Any]: ...


Signal = Union["asyncio.Future[None]", _EventLike]


class _TrioSignal:
    """A one-shot event for a single waiting trio task (what ``trio.Event`` is, minus the lot)."""

    __slots__ = ("_is_set", "_task")

    def __init__(self) -> None:
        self._is_set = False
        self._task: trio.lowlevel.Task | None = None

    def set(self) -> None:
        if self._is_set:
            return
        self._is_set = True
        task = self._task
        if task is not None:
            self._task = None
            _trio().lowlevel.reschedule(task)

    def _abort(self, _raise_cancel: Any) -> Any:
        self._task = None
        return _trio().lowlevel.Abort.SUCCEEDED

    def wait(self) -> Awaitable[None]:
        # A plain method handing back trio's own awaitable: no coroutine frame of ours stays
        # alive per waiting request. It runs in the awaiting task, so current_task() is it.
        lowlevel = _trio().lowlevel
        if self._is_set:
            return lowlevel.checkpoint()  # type: ignore[no-any-return]
        if self._task is not None:
            raise RuntimeError("a request's signal can have only one waiter")
        self._task = lowlevel.current_task()
        return lowlevel.wait_task_rescheduled(self._abort)  # type: ignore[no-any-return]


def _trio() -> Any:
    import trio

    return trio


def new_signal() -> Signal:
    # sniffio's own answer, with its common asyncio case inlined: trio (and trio-asyncio
    # tasks) mark themselves in the thread-local or the context variable checked first.
    if sniffio.thread_local.name is None and sniffio.current_async_library_cvar.get() is None:
        loop = asyncio._get_running_loop()
        if loop is not None:
            return loop.create_future()
    library = sniffio.current_async_library()
    if library == "asyncio":
        return asyncio.get_running_loop().create_future()
    if library == "trio":
        return _TrioSignal()
    return anyio.Event()


def fire(signal: Signal) -> None:
    if isinstance(signal, asyncio.Future):
        if not signal.done():
            signal.set_result(None)
    else:
        signal.set()


async def wait_for(signal: Signal) -> None:
    if isinstance(signal, asyncio.Future):
        await signal
    else:
        await signal.wait()


def loop_token() -> object:
    """Something that identifies the running event loop (one ``asyncio.run()``, one trio run)."""
    if sniffio.thread_local.name is None and sniffio.current_async_library_cvar.get() is None:
        loop = asyncio._get_running_loop()
        if loop is not None:
            return loop
    if sniffio.current_async_library() == "trio":
        return _trio().lowlevel.current_trio_token()
    return asyncio.get_running_loop()
