"""When a batch goes wrong, finish the job: requests the server did not run go into a new batch.

An expired batch's unrun requests, result lines that failed transiently (429, 5xx,
``request_timeout``, a cancel we did not ask for), and the innocent requests of a batch that
failed validation over other lines are resubmitted, each at most ``max_resubmits`` times;
then the caller gets the error as before. Nothing that ran is run again (the emulator counts
every execution of every body). Virtual time: expiry and processing speed are on the loop's
clock, so the fractions below do not depend on the machine's load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from autobatcher import (
    BadRequestError,
    BatchExpiredError,
    BatchFailedError,
    BatchOpenAI,
    SqliteStore,
    open_batcher,
)
from autobatcher.testing import IN_PROCESS_BASE_URL, Emulator
from autobatcher.types import ChatCompletion

from ._support import (
    API_KEY,
    FAST,
    Recorder,
    chat,
    emulated,
    gather,
    in_process,
    virtual_time,
    volume,
)
from .test_journal import _answers, _run_child, emulator_process, emulator_stats

pytestmark = pytest.mark.anyio


def resubmitted(recorder: Recorder) -> int:
    return sum(event.requests for event in recorder.kinds("batch_resubmitted"))


def assert_echoed(results: list[Any], texts: list[str]) -> None:
    for text, result in zip(texts, results, strict=True):
        assert isinstance(result, ChatCompletion), (text, result)
        assert result.choices[0].message.content == text


@volume
@virtual_time()
async def test_expired_batches_resubmit_what_did_not_run_until_everything_is_answered() -> None:
    # Each batch runs 100 lines a second and expires after 3 s: 300 of its 500 lines run.
    # 2,000 requests: four batches leave 800 unrun; those go into new batches (of at most
    # 500, each finishing in time), so every request is answered, each run once.
    recorder = Recorder()
    texts = [f"x{i}" for i in range(2000)]
    emulator_options = {"lines_per_second": 100.0, "expire_after_seconds": 3.0}
    async with emulated(
        emulator_options, batch_size=500, poll_interval_seconds=0.5, event_hook=recorder
    ) as (server, client):
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert_echoed(results, texts)
    emulator = server.emulator
    stats = emulator.stats()
    assert stats.duplicate_executions == 0
    assert stats.total_executions == len(texts)
    expired = [b for b in emulator.batches.values() if b.status == "expired"]
    assert expired
    unrun = sum(len(b.order) - b.n_completed for b in expired)
    assert unrun >= 800
    # every request that did not run was resubmitted once for each time
    assert resubmitted(recorder) == unrun
    assert {e.detail for e in recorder.kinds("batch_resubmitted")} == {
        "batch expired before running them"
    }
    assert all(e.batch_id in emulator.batches for e in recorder.kinds("batch_resubmitted"))
    assert len(recorder.kinds("batch_expired")) == len(expired)


@virtual_time()
async def test_a_plain_client_resubmits_too() -> None:
    # Standalone (no engine task: the waiting callers drive it in turn), the same story.
    recorder = Recorder()
    texts = [f"p{i}" for i in range(60)]
    # 10 lines a second, expiry after 4 s: 40 of 60 run, the other 20 in a second batch
    emulator_options = {"lines_per_second": 10.0, "expire_after_seconds": 4.0}
    async with in_process(**emulator_options) as server:
        client = server.client(batch_size=60, poll_interval_seconds=0.5, event_hook=recorder)
        try:
            results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
        finally:
            await client.close()
    assert_echoed(results, texts)
    stats = server.emulator.stats()
    assert stats.duplicate_executions == 0
    assert stats.batches_by_status.get("expired", 0) >= 1
    assert resubmitted(recorder) == 60 - 40
    assert stats.batches_by_status == {"expired": 1, "completed": 1}


@virtual_time()
async def test_past_max_resubmits_the_caller_gets_batch_expired_error() -> None:
    # Nothing ever runs in time: the first batch and two resubmissions expire, then the
    # callers get BatchExpiredError, and nothing was executed (or paid) at all.
    recorder = Recorder()
    emulator_options = {"validation_seconds": 5.0, "expire_after_seconds": 2.0}
    async with emulated(
        emulator_options, max_resubmits=2, poll_interval_seconds=1, event_hook=recorder
    ) as (server, client):
        results = await gather(*[client.chat.completions.create(**chat(f"e{i}")) for i in range(5)])
    assert all(isinstance(r, BatchExpiredError) for r in results), results
    assert all(r.code == "batch_expired" for r in results)
    stats = server.emulator.stats()
    assert stats.batches_by_status == {"expired": 3}
    assert stats.total_executions == 0
    assert [e.requests for e in recorder.kinds("batch_resubmitted")] == [5, 5]
    # the error names the last batch, the one that expired with the request in it
    (last_batch,) = {r.batch_id for r in results}
    assert last_batch == recorder.kinds("batch_expired")[-1].batch_id


@virtual_time()
async def test_zero_max_resubmits_keeps_the_expired_answer() -> None:
    emulator_options = {"lines_per_second": 1.0, "expire_after_seconds": 15}
    recorder = Recorder()
    async with emulated(
        emulator_options,
        batch_size=40,
        poll_interval_seconds=1,
        max_resubmits=0,
        event_hook=recorder,
    ) as (server, client):
        results = await gather(
            *[client.chat.completions.create(**chat(f"z{i}")) for i in range(40)]
        )
    assert sum(isinstance(r, ChatCompletion) for r in results) == 15
    assert sum(isinstance(r, BatchExpiredError) for r in results) == 25
    assert server.emulator.stats().batches_created == 1
    assert not recorder.kinds("batch_resubmitted")


@volume
@virtual_time()
async def test_transient_line_failures_are_retried_in_a_later_batch() -> None:
    # 5% of 2,000 lines fail with 503 on their first run only: they go into a later batch
    # and succeed there. Permanent failures (400) reach their caller at once.
    recorder = Recorder()
    texts = [f"t{i}" + (" [[status:503:once]]" if i % 20 == 7 else "") for i in range(2000)]
    permanent = ["bad 1 [[status:400]]", "bad 2 [[status:404]]"]
    async with emulated(batch_size=500, event_hook=recorder) as (server, client):
        results = await gather(
            *[client.chat.completions.create(**chat(t)) for t in texts + permanent]
        )
    assert_echoed(results[: len(texts)], texts)
    bad_request, not_found = results[len(texts) :]
    assert isinstance(bad_request, BadRequestError)
    assert getattr(not_found, "status_code", None) == 404
    transient = sum("[[status:503:once]]" in t for t in texts)
    assert transient == 100
    stats = server.emulator.stats()
    # each failing body ran exactly twice (once failing, once answered); the rest once
    assert stats.duplicate_executions == transient
    assert stats.total_executions == len(texts) + len(permanent) + transient
    assert resubmitted(recorder) == transient
    assert {e.detail for e in recorder.kinds("batch_resubmitted")} == {
        "transient failure (status 503)"
    }


@virtual_time()
async def test_a_line_that_keeps_failing_transiently_gets_its_error_after_max_resubmits() -> None:
    recorder = Recorder()
    async with emulated(max_resubmits=2, event_hook=recorder) as (server, client):
        limited, timed_out, fine = await gather(
            client.chat.completions.create(**chat("always [[status:429]]")),
            client.chat.completions.create(**chat("slow [[error:request_timeout]]")),
            client.chat.completions.create(**chat("fine")),
        )
    assert getattr(limited, "status_code", None) == 429
    assert getattr(timed_out, "code", None) == "request_timeout"
    assert isinstance(fine, ChatCompletion)
    executions = server.emulator.stats().executions
    assert sorted(executions.values()) == [1, 3, 3]  # first run + two resubmissions each
    assert resubmitted(recorder) == 4


@volume
@virtual_time()
async def test_validation_failure_fails_the_named_lines_and_resubmits_the_others() -> None:
    # One invalid line in each batch of 100: validation names it; the 99 others never ran
    # and go into a new batch, where they are answered.
    recorder = Recorder()
    texts = [f"v{i}" + (" [[invalid]]" if i % 100 == 37 else "") for i in range(400)]
    async with emulated(batch_size=100, event_hook=recorder) as (server, client):
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    invalid = [i for i, t in enumerate(texts) if "[[invalid]]" in t]
    assert len(invalid) == 4
    for i, (text, result) in enumerate(zip(texts, results, strict=True)):
        if i in invalid:
            assert isinstance(result, BatchFailedError), (text, result)
            assert result.line_error is not None
            assert result.line_error["code"] == "invalid_request"
        else:
            assert isinstance(result, ChatCompletion), (text, result)
            assert result.choices[0].message.content == text
    stats = server.emulator.stats()
    assert stats.duplicate_executions == 0
    assert stats.total_executions == len(texts) - len(invalid)
    assert stats.batches_by_status["failed"] >= 4
    failed = stats.batches_by_status["failed"]
    assert resubmitted(recorder) == failed * 100 - len(invalid)
    assert {e.detail for e in recorder.kinds("batch_resubmitted")} == {
        "batch failed validation on other lines"
    }


@virtual_time()
async def test_a_batch_cancelled_by_someone_else_is_resubmitted() -> None:
    # Half-way through, someone cancels our batch (a dashboard, another tool): what did not
    # run goes into a new batch; what ran is delivered.
    recorder = Recorder()
    async with in_process(lines_per_second=1.0, cancelling_seconds=0) as server:
        cancelled: list[str] = []

        async def cancel_at_ten_done(response: httpx.Response) -> None:
            request = response.request
            if request.method == "GET" and request.url.path.startswith("/v1/batches/"):
                await response.aread()
                batch = response.json()
                counts = batch["request_counts"]
                if not cancelled and batch["status"] == "in_progress" and counts["completed"] >= 10:
                    cancelled.append(batch["id"])
                    server.emulator.cancel_batch(batch["id"])

        async with (
            server.http(event_hooks={"response": [cancel_at_ten_done]}) as http,
            open_batcher(
                **server.options(
                    http_client=http, batch_size=30, poll_interval_seconds=5, event_hook=recorder
                )
            ) as client,
        ):
            texts = [f"c{i}" for i in range(30)]
            results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert_echoed(results, texts)
    stats = server.emulator.stats()
    assert stats.duplicate_executions == 0
    assert stats.batches_by_status == {"cancelled": 1, "completed": 1}
    (event,) = recorder.kinds("batch_resubmitted")
    assert event.batch_id == cancelled[0]
    assert event.detail == "batch cancelled upstream before running them"
    assert event.requests == 30 - server.emulator.batches[cancelled[0]].n_completed


def test_max_resubmits_is_checked_and_copied() -> None:
    client = BatchOpenAI(api_key="k", max_resubmits=5)
    assert client.config.max_resubmits == 5
    assert BatchOpenAI(api_key="k").config.max_resubmits == 3
    assert client.copy(max_resubmits=0).config.max_resubmits == 0
    assert client.copy().config.max_resubmits == 5
    with pytest.raises(ValueError, match="max_resubmits"):
        BatchOpenAI(api_key="k", max_resubmits=-1)
    with pytest.raises(TypeError, match="max_resubmits"):
        BatchOpenAI(api_key="k", max_resubmits=1.5)  # type: ignore[arg-type]


async def test_with_a_journal_resubmitted_answers_are_kept_for_the_next_run(
    tmp_path: Path,
) -> None:
    # 100 lines a second, expiry after 0.15 s: about 15 of the 20 run in the first batch, the
    # rest in a resubmitted one. The journal maps them to the new batch (write-ahead) and
    # keeps their answers, not the expired lines: a second run answers all 20 from it alone.
    emulator = Emulator(api_key=API_KEY, lines_per_second=100.0, expire_after_seconds=0.15)
    path = tmp_path / "run.journal"
    texts = [f"j{i}" for i in range(20)]
    recorder = Recorder()

    def journaled(**options: Any) -> BatchOpenAI:
        return BatchOpenAI(
            api_key=API_KEY,
            base_url=IN_PROCESS_BASE_URL,
            http_client=httpx.AsyncClient(transport=emulator.transport()),
            journal=path,
            batch_size=20,
            **FAST,
            **options,
        )

    async with journaled(event_hook=recorder) as client:
        first = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert_echoed(first, texts)
    assert 0 < resubmitted(recorder) < len(texts)
    stats = emulator.stats()
    assert stats.duplicate_executions == 0
    assert stats.total_executions == len(texts)
    assert stats.batches_by_status.get("expired", 0) >= 1
    calls = stats.api_calls

    async with journaled() as client:
        second = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert [r.id for r in second] == [r.id for r in first]
    assert emulator.stats().api_calls == calls  # no Files/Batches call at all
    store = SqliteStore(path)
    store.open_readonly()
    try:
        assert store.counts() == {"requests": 20, "answered": 20, "waiting": 0}
    finally:
        store.close()


async def test_a_kill_after_resubmission_still_pays_nothing_twice(
    anyio_backend: tuple[str, Any], tmp_path: Path
) -> None:
    # A real process, SIGKILLed right after it created the batch that took over what an
    # expired one did not run (30 lines a second, expiry after 0.2 s: 6 of 9 ran). The next
    # run answers those 6 from the journal and attaches the 3 others to the running batch.
    n = 9
    journal = tmp_path / "run.journal"
    async with emulator_process("--expire-after-seconds", "0.2") as base_url:
        killed = await _run_child(base_url, journal, n, anyio_backend[0], "after-resubmit")
        assert killed == "killed"
        output = await _run_child(base_url, journal, n, anyio_backend[0], None)
        stats = await emulator_stats(base_url)
    assert _answers(output) == {i: f"question {i}" for i in range(n)}
    assert stats["duplicate_executions"] == 0
    assert stats["total_executions"] == n
    assert stats["batches_created"] == 2
