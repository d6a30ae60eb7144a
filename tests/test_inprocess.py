"""Our client against the emulator in-process (no sockets), on asyncio and trio, and in
virtual time on trio's ``MockClock``: hours of batch lifecycle in milliseconds.

Virtual-time tests assert on the event loop's clock, never on wall time: they prove the
emulator's lifecycle and the client's batch windows and polls run on the loop's clock (they
inject no errors, so the client's error budgets play no part).
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from autobatcher import (
    BatchExpiredError,
    BatchFailedError,
    BatchLostError,
    BatchOpenAI,
    open_batcher,
)
from autobatcher.testing import IN_PROCESS_BASE_URL, Emulator, EmulatorTransport, emulator_client
from autobatcher.types import ChatCompletion

from ._support import API_KEY, FAST, Recorder, chat, gather, virtual_time

pytestmark = pytest.mark.anyio

HOUR = 3600.0


async def ask_many(client: BatchOpenAI, texts: list[str]) -> list[Any]:
    return await gather(*[client.chat.completions.create(**chat(text)) for text in texts])


def echoes(results: list[Any]) -> list[str | None]:
    assert all(isinstance(r, ChatCompletion) for r in results), results
    return [r.choices[0].message.content for r in results]


# -- the transport -----------------------------------------------------------------------------


async def test_open_batcher_over_the_in_process_transport() -> None:
    async with emulator_client(api_key=API_KEY) as (emulator, http_client):
        async with open_batcher(
            api_key=API_KEY, base_url=IN_PROCESS_BASE_URL, http_client=http_client, **FAST
        ) as client:
            texts = [f"in-process {i}" for i in range(25)]
            results = await ask_many(client, texts)
        assert not http_client.is_closed  # the batcher never closes a client it was given
    assert echoes(results) == texts
    stats = emulator.stats()
    assert stats.batches_by_status == {"completed": stats.batches_created}
    assert stats.total_executions == 25
    assert stats.duplicate_executions == 0


async def test_a_plain_batch_openai_over_the_transport() -> None:
    emulator = Emulator(api_key=API_KEY)
    async with httpx.AsyncClient(transport=emulator.transport()) as http_client:
        client = BatchOpenAI(
            api_key=API_KEY, base_url="http://anything.invalid/v1", http_client=http_client, **FAST
        )
        try:
            results = await ask_many(client, ["a", "b", "c"])
        finally:
            await client.close()
    assert echoes(results) == ["a", "b", "c"]
    assert emulator.stats().total_executions == 3


async def test_the_transport_checks_the_api_key_like_the_server() -> None:
    async with emulator_client(api_key=API_KEY) as (_emulator, http_client):
        response = await http_client.get("/v1/batches")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        response = await http_client.get(
            "/v1/batches", headers={"authorization": f"Bearer {API_KEY}"}
        )
        assert response.status_code == 200


async def test_an_injected_drop_breaks_the_response_like_a_closed_connection() -> None:
    async with emulator_client(drop_rate=1.0) as (emulator, http_client):
        with pytest.raises(httpx.RemoteProtocolError, match="dropped"):
            await http_client.post(
                "/v1/files", files={"file": ("in.jsonl", b"{}\n")}, data={"purpose": "batch"}
            )
        # drop_after_processing (the default): the upload took effect before the drop.
        assert emulator.stats().uploads == 1
        assert emulator.stats().faults_by_kind == {"drop": 1}


@virtual_time()  # retries back off for real seconds otherwise
async def test_faults_in_process_lose_nothing_and_pay_once() -> None:
    faults: dict[str, Any] = {
        "error_rate": 0.1,
        "rate_limit_rate": 0.05,
        "drop_rate": 0.05,
        "fault_seed": 7,
        "retry_after_seconds": 0.0,
    }
    async with emulator_client(api_key=API_KEY, **faults) as (emulator, http_client):
        async with open_batcher(
            api_key=API_KEY,
            base_url=IN_PROCESS_BASE_URL,
            http_client=http_client,
            max_retries=10,
            **FAST,
        ) as client:
            texts = [f"f{i}" for i in range(30)]
            with anyio.fail_after(30):
                results = await ask_many(client, texts)
    assert echoes(results) == texts
    stats = emulator.stats()
    assert stats.faults_injected > 0
    assert stats.duplicate_executions == 0


def test_emulator_transport_is_an_httpx_transport() -> None:
    emulator = Emulator()
    transport = emulator.transport()
    assert isinstance(transport, EmulatorTransport)
    assert isinstance(transport, httpx.AsyncBaseTransport)
    assert transport.emulator is emulator


# -- virtual time --------------------------------------------------------------------------------


@virtual_time()
async def test_hours_of_batch_lifecycle_run_in_virtual_time() -> None:
    started = anyio.current_time()
    options: dict[str, Any] = {"validation_seconds": 10 * 60, "lines_per_second": 10 / (2 * HOUR)}
    async with emulator_client(api_key=API_KEY, **options) as (emulator, http_client):
        async with open_batcher(
            api_key=API_KEY,
            base_url=IN_PROCESS_BASE_URL,
            http_client=http_client,
            batch_size=10,
            batch_window_seconds=60,
            poll_interval_seconds=60,
        ) as client:
            texts = [f"slow {i}" for i in range(10)]
            results = await ask_many(client, texts)
        elapsed = anyio.current_time() - started
        page = (
            await http_client.get("/v1/batches", headers={"authorization": f"Bearer {API_KEY}"})
        ).json()
    assert echoes(results) == texts
    # The batch is full at once (batch_size=10), then 10 min validating + 2 h processing;
    # the client notices at its next 60 s poll.
    assert 2 * HOUR + 10 * 60 <= elapsed <= 2 * HOUR + 10 * 60 + 60 + 1
    (batch,) = page["data"]
    assert batch["status"] == "completed"
    # Timestamps in API objects move with the loop's clock (whole seconds).
    assert batch["in_progress_at"] - batch["created_at"] == 10 * 60
    assert abs(batch["completed_at"] - batch["in_progress_at"] - 2 * HOUR) <= 1
    # 130-odd polls ran, each on the loop clock: none of them was a real 60 s sleep.
    assert emulator.stats().api_calls_by_route["GET /v1/batches/{id}"] >= 2 * HOUR / 60


@virtual_time()
async def test_the_completion_window_expires_half_done_work_in_virtual_time() -> None:
    started = anyio.current_time()
    # 1 h validating, then one line every 16000 s: after 24 h, 5 of the 10 lines have run.
    options: dict[str, Any] = {
        "validation_seconds": HOUR,
        "lines_per_second": 1 / 16_000,
        "fault_seed": 3,
    }
    recorder = Recorder()
    async with emulator_client(api_key=API_KEY, **options) as (emulator, http_client):
        async with open_batcher(
            api_key=API_KEY,
            base_url=IN_PROCESS_BASE_URL,
            http_client=http_client,
            batch_size=10,
            poll_interval_seconds=10 * 60,
            max_resubmits=0,  # (else the unrun go into a new batch: test_resubmit.py)
            event_hook=recorder,
        ) as client:
            texts = [f"e{i}" for i in range(10)]
            results = await ask_many(client, texts)
    assert anyio.current_time() - started >= 24 * HOUR
    done = {i: r for i, r in enumerate(results) if isinstance(r, ChatCompletion)}
    expired = [r for r in results if isinstance(r, BatchExpiredError)]
    assert len(done) == 5 and len(expired) == 5
    assert all(r.choices[0].message.content == texts[i] for i, r in done.items())
    (batch_id,) = {e.batch_id for e in expired}
    assert batch_id is not None
    assert all(e.code == "batch_expired" for e in expired)
    assert emulator.batches[batch_id].status == "expired"
    assert len(recorder.kinds("batch_submitted")) == 1


# -- faults as emulator features, end to end -------------------------------------------------------


async def test_a_lost_batch_fails_its_requests_with_batch_lost_error() -> None:
    recorder = Recorder()
    # Validation takes a minute, so nothing can finish before the batch is lost.
    async with emulator_client(api_key=API_KEY, validation_seconds=60) as (emulator, http_client):

        async def lose_it() -> None:
            event = await recorder.wait_for("batch_submitted")
            assert event.batch_id is not None
            emulator.lose_batch(event.batch_id)

        async with open_batcher(
            api_key=API_KEY,
            base_url=IN_PROCESS_BASE_URL,
            http_client=http_client,
            event_hook=recorder,
            **FAST,
        ) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lose_it)
                with anyio.fail_after(10):
                    results = await ask_many(client, ["x", "y"])
    assert all(isinstance(r, BatchLostError) for r in results), results
    assert "disappeared" in str(results[0])
    assert emulator.stats().total_executions == 0


async def test_an_invalid_line_fails_validation_and_names_its_request() -> None:
    texts = ["fine 0", "broken [[invalid]]", "fine 1"]
    async with emulator_client(api_key=API_KEY, validation_seconds=0.05) as (
        emulator,
        http_client,
    ):
        async with open_batcher(
            api_key=API_KEY,
            base_url=IN_PROCESS_BASE_URL,
            http_client=http_client,
            max_resubmits=0,  # (else the others go into a new batch: test_resubmit.py)
            **FAST,
        ) as client:
            with anyio.fail_after(10):
                results = await ask_many(client, texts)
    assert all(isinstance(r, BatchFailedError) for r in results), results
    fine_0, broken, fine_1 = results
    assert broken.line_error is not None
    assert broken.line_error["code"] == "invalid_request"
    assert "because of this request" in str(broken)
    assert fine_0.line_error is None and fine_1.line_error is None
    assert len(broken.errors) == 1 and broken.errors == fine_0.errors
    (batch,) = emulator.batches.values()
    assert batch.status == "failed"
    # The line the server named is the broken request's line in the uploaded file.
    upload = emulator.files[batch.input_file_id].line_list()
    assert b"[[invalid]]" in upload[broken.line_error["line"] - 1]
    assert emulator.stats().total_executions == 0
