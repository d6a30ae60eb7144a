"""The per-request wake-up primitive, on both backends."""

from __future__ import annotations

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
        await anyio.sleep(0.01)
        assert woke == []
        fire(signal)
    assert woke == [True]


async def test_a_cancelled_waiter_leaves_the_signal_usable() -> None:
    signal = new_signal()
    with anyio.move_on_after(0.01) as scope:
        await wait_for(signal)
    assert scope.cancelled_caught
    fire(signal)  # firing after the waiter left is harmless
