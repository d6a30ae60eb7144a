"""Shared helpers for client tests: the emulator on loopback plus a client pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from autobatcher import BatchEvent, BatchOpenAI, open_batcher
from autobatcher.testing import EmulatorServer, serve_emulator

API_KEY = "sk-test-key"

#: Fast settings: batches flush and poll quickly, so tests never sleep for long.
FAST: dict[str, Any] = {
    "batch_window_seconds": 0.05,
    "poll_interval_seconds": 0.02,
}


@asynccontextmanager
async def emulated(
    emulator_options: dict[str, Any] | None = None, **client_options: Any
) -> AsyncIterator[tuple[EmulatorServer, BatchOpenAI]]:
    """Serve the emulator on 127.0.0.1 and open a batcher against it (run mode)."""
    async with serve_emulator(api_key=API_KEY, **(emulator_options or {})) as server:
        options = {"api_key": API_KEY, "base_url": server.base_url, **FAST, **client_options}
        async with open_batcher(**options) as client:
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

    async def wait_for(self, kind: str) -> BatchEvent:
        """The first event of ``kind``, waiting for it if it has not happened yet."""
        while not self.kinds(kind):
            event = self._waiting.setdefault(kind, anyio.Event())
            await event.wait()
        return self.kinds(kind)[0]

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


def _task_code_file(task: anyio.TaskInfo) -> str:
    coro = task.coro
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    return str(getattr(code, "co_filename", ""))


async def leftover_tasks(before: set[int]) -> list[str]:
    """Tasks started since ``before``, still alive, running the client's code (or httpx's).

    The emulator's server keeps a task per connection for a moment after the client hangs up;
    those are the server's (hypercorn, trio's listeners), not the client's, and are left out.
    """
    await anyio.sleep(0.05)
    leftovers = []
    for task in anyio.get_running_tasks():
        if task.id in before:
            continue
        where = _task_code_file(task)
        ours = "/autobatcher/" in where and "/autobatcher/testing/" not in where
        if ours or "/httpx/" in where or "/httpcore/" in where:
            leftovers.append(f"{task.name} ({where})")
    return leftovers
