"""The watchdog (``batch_deadline_seconds``): a batch still unfinished past its deadline is
cancelled, what finished is delivered, and what the server says did not run goes into a new
batch (or to the real-time endpoint, ``on_expired="realtime"``). Nothing runs twice. A
batch stuck in ``finalizing`` is shown as such (``batch_finalizing`` events, the journal's
record). Virtual time: the deadline is on the loop's clock.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import anyio
import pytest

from autobatcher import BatchCancelledError, BatchEvent, BatchOpenAI, SqliteStore
from autobatcher._cli import main
from autobatcher.types import ChatCompletion

from ._support import Recorder, chat, emulated, gather, in_process, virtual_time

pytestmark = pytest.mark.anyio

OVERDUE = "batch cancelled by the watchdog (batch_deadline_seconds) before running them"


def assert_echoed(results: list[Any], texts: list[str]) -> None:
    for text, result in zip(texts, results, strict=True):
        assert isinstance(result, ChatCompletion), (text, result)
        assert result.choices[0].message.content == text


@virtual_time()
async def test_a_batch_stuck_in_finalizing_is_cancelled_and_its_results_delivered() -> None:
    # Every line ran, but the batch never leaves finalizing: past the deadline the watchdog
    # cancels it, and its results (all there) reach their callers. Nothing runs again.
    recorder = Recorder()
    texts = [f"f{i}" for i in range(20)] + ["last [[stuck]]"]
    async with emulated(
        batch_size=len(texts),
        poll_interval_seconds=1.0,
        batch_deadline_seconds=30.0,
        event_hook=recorder,
    ) as (server, client):
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert_echoed(results, texts)
    stats = server.emulator.stats()
    assert stats.duplicate_executions == 0
    assert stats.total_executions == len(texts)
    assert stats.batches_by_status == {"cancelled": 1}
    (overdue,) = recorder.kinds("batch_overdue")
    assert overdue.status == "finalizing"
    assert "finalizing" in (overdue.detail or "")
    assert overdue.elapsed >= 30.0
    assert recorder.kinds("batch_finalizing")
    assert not recorder.kinds("batch_resubmitted")


@virtual_time()
async def test_a_batch_stuck_in_progress_delivers_what_ran_and_resubmits_the_rest() -> None:
    # Ten lines a second but a 4 s watchdog: the first batch is cancelled with about 40 of
    # its 100 lines run; those are delivered, the rest go into a new batch (the emulator
    # speeds up meanwhile, so that one finishes in time). Each request runs once.
    recorder = Recorder()
    texts = [f"p{i}" for i in range(100)]

    async def speed_up_after_overdue() -> None:
        await recorder.wait_for("batch_overdue")
        server.emulator.configure(lines_per_second=None)

    async with in_process(lines_per_second=10.0, cancelling_seconds=0.5) as server:
        async with BatchOpenAI(
            **server.options(
                batch_size=100,
                poll_interval_seconds=1.0,
                batch_deadline_seconds=4.0,
                event_hook=recorder,
            )
        ) as client:
            results = await gather(
                speed_up_after_overdue(),
                *[client.chat.completions.create(**chat(t)) for t in texts],
            )
    assert_echoed(results[1:], texts)
    stats = server.emulator.stats()
    assert stats.duplicate_executions == 0
    assert stats.total_executions == len(texts)
    assert stats.batches_by_status == {"cancelled": 1, "completed": 1}
    (cancelled,) = [b for b in server.emulator.batches.values() if b.status == "cancelled"]
    ran = cancelled.n_completed
    assert 0 < ran < len(texts)
    resubmissions = recorder.kinds("batch_resubmitted")
    assert [(e.requests, e.detail, e.batch_id) for e in resubmissions] == [
        (len(texts) - ran, OVERDUE, cancelled.id)
    ]
    (overdue,) = recorder.kinds("batch_overdue")
    assert overdue.status == "in_progress"


@virtual_time()
async def test_past_max_resubmits_the_watchdog_s_remainder_gets_batch_cancelled_error() -> None:
    # max_resubmits=0 keeps what the watchdog's cancel left unrun from going again: those
    # callers get BatchCancelledError, the others their answers, from one batch.
    texts = [f"c{i}" for i in range(30)]
    async with emulated(
        {"lines_per_second": 5.0},
        batch_size=30,
        poll_interval_seconds=1.0,
        batch_deadline_seconds=2.0,
        max_resubmits=0,
    ) as (server, client):
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    answered = [r for r in results if isinstance(r, ChatCompletion)]
    cancelled = [r for r in results if isinstance(r, BatchCancelledError)]
    assert len(answered) + len(cancelled) == len(texts)
    assert answered and cancelled
    assert server.emulator.stats().batches_created == 1


@virtual_time()
async def test_the_journal_shows_a_batch_in_finalizing_and_the_watchdog_s_cancel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The journal's record carries the upstream status: while the watchdog looks at a batch
    # stuck in finalizing, the journal says "finalizing" (what `autobatcher journal list`
    # shows); afterwards, "cancelled".
    path = tmp_path / "journal.sqlite"
    seen_in_journal: list[set[str | None]] = []
    seen_by_command: list[dict[str, int]] = []

    def journal_statuses() -> set[str | None]:
        store = SqliteStore(path)
        store.open_readonly()
        try:
            return {record.status for record, _total, _done in store.jobs()}
        finally:
            store.close()

    def journal_status_command() -> dict[str, Any]:
        assert main(["journal", str(path), "--json", "status"]) == 0
        data: dict[str, Any] = json.loads(capsys.readouterr().out)
        return data

    def hook(event: BatchEvent) -> None:
        recorder(event)
        if event.kind == "batch_overdue":
            seen_in_journal.append(journal_statuses())
            # (an event hook's exceptions are logged, not raised: look afterwards)
            seen_by_command.append(journal_status_command()["batches_by_status"])

    recorder = Recorder()
    texts = [f"j{i}" for i in range(10)] + ["stuck [[stuck]]"]
    async with in_process() as server:
        async with BatchOpenAI(
            **server.options(
                batch_size=len(texts),
                poll_interval_seconds=1.0,
                batch_deadline_seconds=3.0,
                journal=path,
                event_hook=hook,
            )
        ) as client:
            results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert_echoed(results, texts)
    assert server.emulator.stats().duplicate_executions == 0
    assert seen_in_journal == [{"finalizing"}]
    assert seen_by_command == [{"finalizing": 1}]
    assert journal_statuses() == {"cancelled"}
    assert journal_status_command()["batches_by_status"] == {"cancelled": 1}
    (overdue,) = recorder.kinds("batch_overdue")
    assert overdue.status == "finalizing"


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1.0, ValueError), ("5", TypeError)]
)
async def test_batch_deadline_seconds_is_checked(value: Any, error: type[Exception]) -> None:
    async with in_process() as server:
        with pytest.raises(error, match="batch_deadline_seconds"):
            server.client(batch_deadline_seconds=value)


async def test_the_watchdog_logs_what_it_cancels(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="autobatcher")
    async with emulated(batch_deadline_seconds=0.2, poll_interval_seconds=0.05) as (_s, client):
        answer = await client.chat.completions.create(**chat("late [[stuck]]"))
    assert answer.choices[0].message.content == "late [[stuck]]"
    assert any("cancelling it" in r.getMessage() for r in caplog.records)


@virtual_time()
async def test_a_batch_that_ends_just_before_its_deadline_is_collected_not_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Ten lines a second: the batch completes at 4.5 s, between the poll at 4 s and the
    # deadline at 5 s. The watchdog's cancel is refused (409: nothing to cancel), and the
    # next poll collects the batch as completed: nothing is resubmitted.
    caplog.set_level(logging.WARNING, logger="autobatcher")
    recorder = Recorder()
    texts = [f"d{i}" for i in range(45)]
    async with emulated(
        {"lines_per_second": 10.0},
        batch_size=45,
        batch_window_seconds=0,
        poll_interval_seconds=2.0,
        batch_deadline_seconds=5.0,
        event_hook=recorder,
    ) as (server, client):
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert_echoed(results, texts)
    assert server.emulator.stats().batches_by_status == {"completed": 1}
    assert len(recorder.kinds("batch_overdue")) == 1
    assert not recorder.kinds("batch_resubmitted")
    assert any("could not cancel overdue batch" in r.getMessage() for r in caplog.records)


@virtual_time()
async def test_a_run_that_stops_after_the_watchdog_s_cancel_leaves_the_next_run_to_go_on(
    tmp_path: Path,
) -> None:
    # Run 1: the watchdog cancels a slow batch, and the program stops while the batch is
    # still cancelling upstream. Run 2 (same journal) picks the batch up: the journal says
    # the cancel was the watchdog's, so what the batch did not run goes into a new batch
    # (not BatchCancelledError), and what ran is answered from it. Nothing runs twice.
    path = tmp_path / "journal.sqlite"
    texts = [f"n{i}" for i in range(20)]
    cancelling = anyio.Event()

    def hook(event: BatchEvent) -> None:
        if event.status == "cancelling":
            cancelling.set()

    async with in_process(lines_per_second=2.0, cancelling_seconds=10.0) as server:
        options = server.options(
            batch_size=20, poll_interval_seconds=1.0, batch_deadline_seconds=4.0, journal=path
        )
        first: list[Any] = []

        async def first_run(scope: anyio.CancelScope) -> None:
            with scope:
                async with BatchOpenAI(**options, event_hook=hook) as client:
                    first.extend(
                        await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
                    )

        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()
            tg.start_soon(first_run, scope)
            await cancelling.wait()
            scope.cancel()
        assert first == []  # (the callers were cancelled with the block)
        server.emulator.configure(lines_per_second=None)  # the new batch runs in time
        recorder = Recorder()
        async with BatchOpenAI(**options, event_hook=recorder) as client:
            results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
        assert_echoed(results, texts)
        stats = server.emulator.stats()
    assert stats.duplicate_executions == 0
    assert stats.total_executions == len(texts)
    assert stats.batches_by_status == {"cancelled": 1, "completed": 1}
    (moved,) = recorder.kinds("batch_resubmitted")
    assert moved.detail == OVERDUE
    assert 0 < moved.requests < len(texts)
