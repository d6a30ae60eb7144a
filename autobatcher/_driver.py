"""Who drives the engine.

* *Run mode* (``async with open_batcher()``, ``async with BatchOpenAI()``,
  ``await tg.start(client.run)``): the batcher's own task, in a task group the user can see.
* *Standalone mode* (``client = BatchOpenAI()`` … ``await client.close()``, the seed's usage):
  no background task at all. The callers that wait take turns: one of them drives the engine
  inside its own ``create()`` call until its own answer is in, then hands over to the next.
  Nothing outlives the call that runs it.

A hand-over is graceful: sleeps are interrupted at once, HTTP calls in flight finish, and every
job's record says where it stands (including the time of its next poll), so the next driver
picks it up there without moving anyone's schedule.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from ._signals import Signal, fire, new_signal, wait_for

__all__ = ["RUN_MODE", "Turns", "Waiter"]


class Waiter(Protocol):
    """A task waiting for something; its signal is replaced when it is appointed driver."""

    signal: Signal

    def done(self) -> bool: ...


class _RunMode:
    def __repr__(self) -> str:
        return "<the batcher's own task>"


#: the driver while the batcher's own task runs the engine
RUN_MODE: object = _RunMode()


class Turns:
    """Standalone mode's turn-taking among waiting callers."""

    def __init__(
        self,
        drive: Callable[[Callable[[], bool]], Awaitable[None]],
        has_work: Callable[[], bool],
    ) -> None:
        self._drive = drive
        self._has_work = has_work
        self._waiters: dict[Waiter, None] = {}  # in arrival order
        #: who drives now: a waiter, RUN_MODE, or nobody
        self.driver: object | None = None

    async def wait(self, waiter: Waiter) -> None:
        """Wait until ``waiter`` is done, driving the engine whenever it is our turn."""
        self._waiters[waiter] = None
        try:
            while not waiter.done():
                if self.driver is None:
                    self.driver = waiter
                if self.driver is waiter:
                    try:
                        await self._drive(waiter.done)
                    finally:
                        if self.driver is waiter:
                            self.driver = None
                    continue
                signal = waiter.signal
                await wait_for(signal)
                if not waiter.done() and waiter.signal is signal:
                    waiter.signal = new_signal()  # woken to drive: a fresh one-shot signal
        finally:
            del self._waiters[waiter]
            if self.driver is waiter:  # appointed, but left before taking over
                self.driver = None
            if self.driver is None:
                self.appoint_next()

    def appoint_next(self) -> None:
        """Hand the engine to the longest-waiting caller, if there is work left."""
        if not self._has_work():
            return
        for candidate in self._waiters:
            fire(candidate.signal)  # a waiter already done may be asleep: let it go on
            if not candidate.done():
                self.driver = candidate
                return

    def wake_all(self) -> None:
        """Wake every waiting caller (the engine stopped: each sees its outcome or leaves)."""
        for waiter in list(self._waiters):
            fire(waiter.signal)
