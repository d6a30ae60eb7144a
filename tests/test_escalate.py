"""``on_expired="realtime"``: what an expired batch (or one the watchdog cancelled) did not
run goes to the real-time endpoint of the same server at once, at full price, announced in
``batch_escalated`` events and a warning with the count. Callers get the same answers and
the same typed errors as from a batch; with a journal the answers are kept. Nothing runs
twice (the emulator counts batch lines and real-time calls alike). Virtual time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from autobatcher import (
    APIConnectionError,
    BadRequestError,
    BatchOpenAI,
    RequestAbortedError,
    open_batcher,
)
from autobatcher.types import ChatCompletion

from ._support import (
    Recorder,
    chat,
    emulated,
    gather,
    in_process,
    leftover_tasks,
    task_ids,
    virtual_time,
)

pytestmark = pytest.mark.anyio


def assert_echoed(results: list[Any], texts: list[str]) -> None:
    for text, result in zip(texts, results, strict=True):
        assert isinstance(result, ChatCompletion), (text, result)
        assert result.choices[0].message.content == text


@virtual_time()
async def test_expired_requests_are_answered_by_the_realtime_endpoint(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Ten lines a second, expiry after 3 s: 30 of 60 run in the batch, the other 30 are
    # sent to /v1/chat/completions. The last one is a bad request: the real-time endpoint
    # answers 400, and its caller gets the same BadRequestError a batch line would give.
    caplog.set_level(logging.WARNING, logger="autobatcher")
    recorder = Recorder()
    texts = [f"r{i}" for i in range(59)] + ["bad [[status:400]]"]
    emulator_options = {
        "lines_per_second": 10.0,
        "expire_after_seconds": 3.0,
        "shuffle_output": False,  # lines run in file order: the bad one is among the unrun
    }
    async with emulated(
        emulator_options,
        batch_size=60,
        poll_interval_seconds=0.5,
        on_expired="realtime",
        event_hook=recorder,
    ) as (server, client):
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert_echoed(results[:-1], texts[:-1])
    bad = results[-1]
    assert isinstance(bad, BadRequestError), bad
    assert bad.status_code == 400
    stats = server.emulator.stats()
    assert stats.batches_by_status == {"expired": 1}
    assert stats.realtime_calls == 30
    assert stats.duplicate_executions == 0
    assert stats.total_executions == len(texts)
    (escalated,) = recorder.kinds("batch_escalated")
    assert escalated.requests == 30
    assert escalated.batch_id == next(iter(server.emulator.batches))
    assert escalated.detail == "batch expired before running them"
    assert not recorder.kinds("batch_resubmitted")
    warnings = [r.getMessage() for r in caplog.records if "real-time" in r.getMessage()]
    assert warnings == [
        f"escalating 30 request(s) of batch {escalated.batch_id} to the real-time endpoint "
        "at full price (batch expired before running them)"
    ]


@virtual_time()
async def test_the_watchdog_escalates_what_a_stuck_batch_did_not_run() -> None:
    recorder = Recorder()
    texts = [f"w{i}" for i in range(40)]
    async with emulated(
        {"lines_per_second": 5.0, "shuffle_output": False},
        batch_size=40,
        poll_interval_seconds=1.0,
        batch_deadline_seconds=4.0,
        on_expired="realtime",
        event_hook=recorder,
    ) as (server, client):
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert_echoed(results, texts)
    stats = server.emulator.stats()
    assert stats.batches_by_status == {"cancelled": 1}
    (batch,) = server.emulator.batches.values()
    assert stats.realtime_calls == len(texts) - batch.n_completed > 0
    assert stats.duplicate_executions == 0
    (escalated,) = recorder.kinds("batch_escalated")
    assert escalated.requests == stats.realtime_calls
    assert "watchdog" in (escalated.detail or "")


@virtual_time()
async def test_escalated_answers_are_kept_in_the_journal(tmp_path: Path) -> None:
    # A second run of the same program is answered from the journal: no batch, no call.
    path = tmp_path / "journal.sqlite"
    texts = [f"k{i}" for i in range(20)]
    emulator_options = {"lines_per_second": 2.0, "expire_after_seconds": 5.0}
    async with in_process(**emulator_options) as server:
        for run in range(2):
            async with BatchOpenAI(
                **server.options(
                    batch_size=20, poll_interval_seconds=1.0, on_expired="realtime", journal=path
                )
            ) as client:
                results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
            assert_echoed(results, texts)
            stats = server.emulator.stats()
            if run == 0:
                assert stats.realtime_calls == 10
                assert stats.total_executions == len(texts)
            server.emulator.reset_stats()
        assert stats.api_calls == 0
        assert stats.total_executions == 0


async def test_on_expired_is_checked() -> None:
    async with in_process() as server:
        with pytest.raises(ValueError, match="on_expired must be 'resubmit' or 'realtime'"):
            server.client(on_expired="later")


@virtual_time()
async def test_a_realtime_call_that_fails_reaches_its_caller_as_that_error() -> None:
    # The real-time endpoint cannot be reached (every connection to it drops): the escalated
    # callers get APIConnectionError naming their request; those answered by the batch are
    # untouched, and nothing ran twice.
    emulator_options = {
        "lines_per_second": 2.0,
        "expire_after_seconds": 3.0,
        "drop_rate": 1.0,
        "drop_after_processing": False,
        "fault_paths": ["/v1/chat/completions"],
    }
    async with emulated(
        emulator_options,
        batch_size=10,
        poll_interval_seconds=0.5,
        on_expired="realtime",
        max_retries=0,
    ) as (server, client):
        results = await gather(
            *[client.chat.completions.create(**chat(f"f{i}")) for i in range(10)]
        )
    answered = [r for r in results if isinstance(r, ChatCompletion)]
    failed = [r for r in results if isinstance(r, APIConnectionError)]
    assert len(answered) == 6
    assert len(failed) == 4
    assert all(error.custom_id for error in failed)
    stats = server.emulator.stats()
    assert stats.total_executions == 6
    assert stats.realtime_calls == 0


@virtual_time()
async def test_a_client_stopped_during_escalation_answers_every_caller() -> None:
    # The real-time calls hang; the client is stopped (its block cancelled) meanwhile: the
    # callers the batch answered keep their answers, the escalated ones get
    # RequestAbortedError, and nothing is left running.
    calling = anyio.Event()

    async def hold_realtime_calls(request: httpx.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            calling.set()
            await anyio.sleep_forever()

    results: list[Any] = []
    clients: list[BatchOpenAI] = []
    ready = anyio.Event()
    before = task_ids()
    async with in_process(lines_per_second=2.0, expire_after_seconds=3.0) as server:
        async with server.http(event_hooks={"request": [hold_realtime_calls]}) as http:
            options = server.options(
                http_client=http, batch_size=10, poll_interval_seconds=0.5, on_expired="realtime"
            )

            async def own_the_client(scope: anyio.CancelScope) -> None:
                with scope:
                    async with open_batcher(**options) as client:
                        clients.append(client)
                        ready.set()
                        await anyio.sleep_forever()

            async def call() -> None:
                results.extend(
                    await gather(
                        *[clients[0].chat.completions.create(**chat(f"a{i}")) for i in range(10)]
                    )
                )

            async with anyio.create_task_group() as tg:
                scope = anyio.CancelScope()
                tg.start_soon(own_the_client, scope)
                await ready.wait()
                tg.start_soon(call)
                await calling.wait()
                scope.cancel()
            assert await leftover_tasks(before) == []
        stats = server.emulator.stats()
    assert sum(isinstance(r, ChatCompletion) for r in results) == 6
    assert sum(isinstance(r, RequestAbortedError) for r in results) == 4
    assert stats.realtime_calls == 0
    assert stats.total_executions == 6


@virtual_time()
async def test_map_items_whose_lines_went_to_disk_are_escalated_with_their_own_lines() -> None:
    # A map's uploaded lines are moved to a spill file; the escalation reads them back, so
    # each real-time call carries its own request (the echo says which).
    items = [
        {"custom_id": f"k{i}", "url": "/v1/chat/completions", "body": chat(f"m{i}")}
        for i in range(40)
    ]
    spilled: list[int] = []

    def look(event: Any) -> None:
        if event.kind == "batch_submitted":
            for job in client._engine._jobs.values():
                spilled.append(sum(slot.spilled >= 0 for slot in job.slots.values()))

    async with emulated(
        {"lines_per_second": 10.0, "expire_after_seconds": 2.0, "shuffle_output": False},
        batch_size=40,
        poll_interval_seconds=0.5,
        on_expired="realtime",
        event_hook=look,
    ) as (server, client):
        async with client.map(items) as results:
            got = [result async for result in results]
    assert spilled == [40]
    assert sorted(r.key for r in got) == sorted(f"k{i}" for i in range(40))
    for result in got:
        assert result.ok, result.error
        assert isinstance(result.response, ChatCompletion)
        assert result.response.choices[0].message.content == f"m{result.key[1:]}"
    stats = server.emulator.stats()
    assert stats.realtime_calls == 20
    assert stats.duplicate_executions == 0
    assert stats.total_executions == 40
