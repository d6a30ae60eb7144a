"""The per-request wake-up primitive, on every backend.

The contract: a signal is one-shot and has exactly one waiter (the request's caller).
``fire()`` is idempotent and never blocks. When the waiter is cancelled the signal is spent
for waiting; what that means differs by backend, and the engine relies on neither: it
never waits on a signal again after its waiter was cancelled (a woken driver gets a fresh
one, see ``_driver.Turns``). These tests pin both behaviours so a change is seen.
"""

from __future__ import annotations

import asyncio

import anyio
import pytest

from autobatcher._signals import fire, new_signal, wait_for

pytestmark = pytest.mark.anyio


async def test_fired_before_waiting_returns_at_once() -> None:
    signal = new_signal()
    fire(signal)
    fire(signal)  # idempotent
    with anyio.fail_after(1):
        await wait_for(signal)


async def test_fired_while_waiting_wakes_the_waiter() -> None:
    signal = new_signal()
    woke: list[bool] = []

    async def waiter() -> None:
        await wait_for(signal)
        woke.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert woke == []  # parked, not polling
        fire(signal)
    assert woke == [True]


async def test_a_signal_is_a_cheap_native_waiter_per_backend(anyio_backend_name: str) -> None:
    signal = new_signal()
    if anyio_backend_name == "asyncio":
        assert isinstance(signal, asyncio.Future)
    else:
        assert type(signal).__name__ == "_TrioSignal"


async def test_a_second_concurrent_waiter_is_refused_on_trio(anyio_backend_name: str) -> None:
    """Exactly one waiter: trio checks it. asyncio's Future does not (it would wake both),
    so there the rule is kept by the engine, not by the signal."""
    signal = new_signal()
    outcomes: list[str] = []

    async def waiter() -> None:
        try:
            await wait_for(signal)
            outcomes.append("woken")
        except RuntimeError as exc:
            outcomes.append(str(exc))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        fire(signal)
    if anyio_backend_name == "trio":
        assert outcomes == ["a request's signal can have only one waiter", "woken"]
    else:
        assert outcomes == ["woken", "woken"]


async def test_what_a_cancelled_waiter_leaves_behind(anyio_backend_name: str) -> None:
    signal = new_signal()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await wait_for(signal)
    assert scope.cancelled_caught
    fire(signal)  # firing after the waiter left is harmless on every backend
    with anyio.fail_after(1):
        if anyio_backend_name == "asyncio":
            # The Future was cancelled with its waiter: it is spent. A later wait does not
            # block and does not return either: it raises CancelledError at once.
            assert isinstance(signal, asyncio.Future) and signal.cancelled()
            with pytest.raises(asyncio.CancelledError):
                await wait_for(signal)
        else:
            # trio's signal forgets its cancelled waiter: it can be waited on again, and the
            # fire() above (which found nobody waiting) is remembered.
            await wait_for(signal)


async def test_a_waiter_cancelled_while_parked_is_forgotten(anyio_backend_name: str) -> None:
    """Cancelled while parked (not before it parks): fire() afterwards wakes nobody and does
    not fail, and on trio the next waiter is not refused as a second one."""
    signal = new_signal()
    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_for, signal)
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    fire(signal)
    if anyio_backend_name == "trio":
        with anyio.fail_after(1):
            await wait_for(signal)
    else:
        assert isinstance(signal, asyncio.Future) and signal.cancelled()
