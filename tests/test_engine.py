"""The engine's intake stream, its client states and its event stream, end to end.

Every test talks to the emulator in-process (``Emulator.transport()``): no sockets, and the
order of events is decided by the test (``anyio.wait_all_tasks_blocked()``), not by timing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from autobatcher import (
    BatchEvent,
    BatchOpenAI,
    ClientClosedError,
    EventLoopError,
    RequestAbortedError,
)
from autobatcher.testing import IN_PROCESS_BASE_URL, Emulator

from ._support import API_KEY, chat, virtual_time

LONG_WINDOW = 3600.0  # lanes flush only by size or at close: the test decides when


def plain_client(emulator: Emulator, **options: Any) -> BatchOpenAI:
    http = httpx.AsyncClient(transport=emulator.transport())
    defaults: dict[str, Any] = {"batch_window_seconds": 0.05, "poll_interval_seconds": 0.02}
    return BatchOpenAI(
        api_key=API_KEY,
        base_url=IN_PROCESS_BASE_URL,
        http_client=http,
        **{**defaults, **options},
    )


@asynccontextmanager
async def in_mode(mode: str, client: BatchOpenAI) -> AsyncIterator[BatchOpenAI]:
    """The client in run mode (``async with``) or plain mode (``close()`` at the end)."""
    if mode == "run":
        async with client:
            yield client
    else:
        try:
            yield client
        finally:
            await client.close()


def uploaded_texts(emulator: Emulator) -> list[list[str]]:
    """The user text of every line of every uploaded batch file, files in flush order."""
    files = [f for f in emulator.files.values() if f.purpose == "batch" and f.content]
    files.sort(key=lambda f: int(f.filename.rsplit("-b", 1)[1].split(".")[0]))
    return [
        [json.loads(line)["body"]["messages"][0]["content"] for line in f.line_list()]
        for f in files
    ]


async def start_in_order(
    tg: anyio.abc.TaskGroup, count: int, call: Callable[[int], Coroutine[Any, Any, None]]
) -> None:
    """Start ``call(0)``, ``call(1)``, … each once the previous one is parked."""
    for index in range(count):
        tg.start_soon(call, index)
        await anyio.wait_all_tasks_blocked()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["run", "plain"])
async def test_a_full_intake_admits_waiting_callers_in_arrival_order(mode: str) -> None:
    emulator = Emulator(api_key=API_KEY)
    answers: dict[int, str] = {}
    client = plain_client(
        emulator, batch_size=2, max_queued_requests=2, batch_window_seconds=LONG_WINDOW
    )
    async with in_mode(mode, client):

        async def ask(index: int) -> None:
            reply = await client.chat.completions.create(**chat(f"q{index}"))
            answers[index] = reply.choices[0].message.content or ""

        async with anyio.create_task_group() as tg:
            await start_in_order(tg, 10, ask)
    assert answers == {i: f"q{i}" for i in range(10)}
    files = uploaded_texts(emulator)
    assert [text for f in files for text in f] == [f"q{i}" for i in range(10)]
    assert all(len(f) == 2 for f in files)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["run", "plain"])
async def test_a_caller_cancelled_while_blocked_on_a_full_intake_is_never_uploaded(
    mode: str,
) -> None:
    emulator = Emulator(api_key=API_KEY)
    answers: dict[int, str] = {}
    scopes: dict[int, anyio.CancelScope] = {}
    client = plain_client(
        emulator, batch_size=100, max_queued_requests=3, batch_window_seconds=LONG_WINDOW
    )
    async with in_mode(mode, client):

        async def ask(index: int) -> None:
            with anyio.CancelScope() as scope:
                scopes[index] = scope
                reply = await client.chat.completions.create(**chat(f"q{index}"))
                answers[index] = reply.choices[0].message.content or ""

        async with anyio.create_task_group() as tg:
            # 3 fill the lanes, 3 the intake buffer; 6 and 7 wait for room
            await start_in_order(tg, 8, ask)
            assert not answers
            scopes[6].cancel()
            await anyio.wait_all_tasks_blocked()
            # nothing flushes before close (the window is an hour): close from here, so the
            # callers still waiting get their answers inside this task group
            tg.start_soon(client.close)
    assert answers == {i: f"q{i}" for i in range(8) if i != 6}
    uploaded = [text for f in uploaded_texts(emulator) for text in f]
    assert sorted(uploaded) == sorted(f"q{i}" for i in range(8) if i != 6)
    executed = {json.loads(k)["messages"][0]["content"] for k in emulator.stats().executions}
    assert "q6" not in executed


@pytest.mark.anyio
async def test_events_stream_lifecycle_events_and_ends_when_the_client_closes() -> None:
    emulator = Emulator(api_key=API_KEY)
    seen: list[BatchEvent] = []
    hooked: list[BatchEvent] = []
    client = plain_client(emulator, batch_size=3, event_hook=hooked.append)
    async with anyio.create_task_group() as tg:
        stream = client.events()

        async def read() -> None:
            async with stream:
                async for event in stream:
                    seen.append(event)

        tg.start_soon(read)
        async with client:
            for reply in await _ask_all(client, 3):
                assert reply.startswith("q")
        # the reader's `async for` ends by itself once the client is closed
    kinds = [event.kind for event in seen]
    assert kinds[0] == "batch_submitted"
    assert "batch_completed" in kinds
    assert kinds[-1] == "client_closing"
    assert [event.kind for event in hooked] == kinds  # the hook and the stream agree
    late = client.events()
    with pytest.raises(anyio.EndOfStream):
        await late.receive()  # subscribing after close gives an ended stream


async def _ask_all(client: BatchOpenAI, count: int) -> list[str]:
    answers: list[str] = [""] * count

    async def ask(index: int) -> None:
        reply = await client.chat.completions.create(**chat(f"q{index}"))
        answers[index] = reply.choices[0].message.content or ""

    async with anyio.create_task_group() as tg:
        for index in range(count):
            tg.start_soon(ask, index)
    return answers


@pytest.mark.anyio
async def test_a_slow_event_reader_never_stalls_the_batches() -> None:
    emulator = Emulator(api_key=API_KEY)
    client = plain_client(emulator, batch_size=1)
    unread = client.events(max_buffer=1)  # subscribed, never read
    async with client:
        assert await _ask_all(client, 5) == [f"q{i}" for i in range(5)]
    first = await unread.receive()
    assert first.kind == "batch_submitted"
    with pytest.raises(anyio.EndOfStream):
        await unread.receive()  # the rest was dropped for this reader, and it ended at close


@pytest.mark.anyio
async def test_a_closed_client_says_so_when_entered_again() -> None:
    emulator = Emulator(api_key=API_KEY)
    client = plain_client(emulator)
    async with client:
        pass
    with pytest.raises(ClientClosedError, match="closed and cannot be opened again"):
        async with client:
            pass
    with pytest.raises(ClientClosedError, match="closed and cannot be opened again"):
        await client.run()
    assert client.is_closed()


@pytest.mark.anyio
async def test_one_engine_owner_at_a_time() -> None:
    emulator = Emulator(api_key=API_KEY)
    client = plain_client(emulator)
    async with client:
        with pytest.raises(RuntimeError, match="already running"):
            async with client:
                pass
        with pytest.raises(RuntimeError, match="already running"):
            await client.run()
        assert (await client.chat.completions.create(**chat("still fine"))).choices[
            0
        ].message.content == "still fine"

    plain = plain_client(emulator)
    await plain.chat.completions.create(**chat("plain first"))
    with pytest.raises(RuntimeError, match="plain mode"):
        async with plain:
            pass
    await plain.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_plain_client_refuses_a_second_event_loop_clearly(backend: str) -> None:
    emulator = Emulator(api_key=API_KEY)
    client = plain_client(emulator)

    async def first() -> str:
        reply = await client.chat.completions.create(**chat("first loop"))
        return reply.choices[0].message.content or ""

    async def second() -> None:
        await client.chat.completions.create(**chat("second loop"))

    assert anyio.run(first, backend=backend) == "first loop"
    with pytest.raises(EventLoopError, match="another event loop"):
        anyio.run(second, backend=backend)
    executed = {json.loads(k)["messages"][0]["content"] for k in emulator.stats().executions}
    assert executed == {"first loop"}


@pytest.mark.anyio
async def test_closed_by_you_and_aborted_while_waiting_are_told_apart() -> None:
    emulator = Emulator(api_key=API_KEY)
    client = plain_client(emulator, batch_window_seconds=LONG_WINDOW)
    outcome: list[BaseException] = []

    async def wait_for_an_answer() -> None:
        try:
            await client.chat.completions.create(**chat("never answered"))
        except ClientClosedError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        with pytest.raises(KeyError):  # the user's own exception leaves the block unwrapped
            async with client:
                tg.start_soon(wait_for_an_answer)
                await anyio.wait_all_tasks_blocked()
                raise KeyError("the program fails")  # the block ends the hard way
    (aborted,) = outcome
    assert isinstance(aborted, RequestAbortedError)
    with pytest.raises(ClientClosedError) as refused:
        await client.chat.completions.create(**chat("too late"))
    assert not isinstance(refused.value, RequestAbortedError)
    assert emulator.stats().total_executions == 0


class _GatedIntake:
    """The engine's intake stream, except that once armed, ``receive()`` first waits at a
    gate: the engine's loop is held where it has decided to wait for work but is not parked
    yet (anyio's ``receive()`` passes a checkpoint there, where any other task may run)."""

    def __init__(self, intake: Any) -> None:
        self._intake = intake
        self.armed = False
        self.reached = anyio.Event()
        self.gate = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._intake, name)

    async def receive(self) -> Any:
        if self.armed:
            self.armed = False
            self.reached.set()
            await self.gate.wait()
        return await self._intake.receive()


@pytest.mark.anyio
@virtual_time()
@pytest.mark.parametrize("mode", ["run", "plain"])
async def test_a_wake_up_is_not_lost_while_the_engine_is_about_to_wait(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wake-up that comes while the engine's loop is about to wait must still wake it, even
    when close() runs in between. (close() used to take the intake's wake-up marker itself:
    the loop then slept through the close, until the window here; forever with no request,
    the run-mode hang once seen on trio under load.)"""
    emulator = Emulator(api_key=API_KEY)
    client = plain_client(emulator, batch_window_seconds=LONG_WINDOW)
    engine = client._engine
    intake = _GatedIntake(engine._intake_rx)
    monkeypatch.setattr(engine, "_intake_rx", intake)
    answers: list[str | None] = []

    async def ask() -> None:
        reply = await client.chat.completions.create(**chat("q"))
        answers.append(reply.choices[0].message.content)

    started = anyio.current_time()
    async with anyio.create_task_group() as tg:
        if mode == "run":
            await tg.start(client.run)
        tg.start_soon(ask)
        await anyio.wait_all_tasks_blocked()  # the request waits in its lane (an hour)
        intake.armed = True
        engine.poke()  # the loop goes round and stops at the gate
        await intake.reached.wait()
        engine.poke()  # a wake-up (a job ended, say) while the loop is not parked yet
        tg.start_soon(client.close)
        await anyio.wait_all_tasks_blocked()
        intake.gate.set()
    assert answers == ["q"]
    # the close flushed the lane at once, not when its hour was up (virtual time: exact)
    assert anyio.current_time() - started < LONG_WINDOW
