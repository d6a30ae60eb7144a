"""``client.map()``: many requests read lazily, results as they complete, at a bounded count.

Every test runs on asyncio (plain and eager tasks) and trio; the ones where waits matter on
virtual time, so "the first batch finishes before the others" holds whatever the machine's
load. The emulator counts every upload, batch and execution, which is how "withdrawn, never
uploaded" and "paid once" are checked.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from autobatcher import (
    BadRequestError,
    BatchEvent,
    BatchExpiredError,
    BatchOpenAI,
    BatchRequestError,
    BulkRequest,
    BulkResult,
    InternalServerError,
    InvalidBulkRequestError,
    open_batcher,
)
from autobatcher._journal import Journal, JournalMeta, key_fingerprint, open_store
from autobatcher.testing import IN_PROCESS_BASE_URL, Emulator
from autobatcher.types import ChatCompletion, CreateEmbeddingResponse

from ._support import (
    API_KEY,
    Recorder,
    chat,
    in_process,
    leftover_tasks,
    task_ids,
    virtual_time,
    volume,
)

pytestmark = pytest.mark.anyio

CHAT = "/v1/chat/completions"


def line(i: int, text: str | None = None) -> dict[str, Any]:
    """A Batch API input line whose answer echoes its own text."""
    return {"custom_id": f"k{i}", "method": "POST", "url": CHAT, "body": chat(text or f"m{i}")}


class Counted:
    """A generator of input lines that counts how far it was read."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.produced = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self.n):
            self.produced = i + 1
            yield line(i)


def content(result: BulkResult) -> str:
    reply = result.response
    assert isinstance(reply, ChatCompletion)
    return reply.choices[0].message.content or ""


@asynccontextmanager
async def _closing(client: BatchOpenAI) -> AsyncIterator[BatchOpenAI]:
    """A plain client (no engine task), closed at the end."""
    try:
        yield client
    finally:
        await client.close()


def owned(client: BatchOpenAI, mode: str) -> AbstractAsyncContextManager[BatchOpenAI]:
    return client if mode == "open_batcher" else _closing(client)


# -- reading lazily, results as they complete ------------------------------------------------------


@virtual_time()
@pytest.mark.parametrize("mode", ["open_batcher", "plain"])
async def test_a_generator_larger_than_the_bound_is_read_only_as_results_are_taken(
    mode: str,
) -> None:
    source = Counted(1000)
    bound = 150
    ahead = []
    async with in_process(lines_per_second=200.0) as server:
        # a poll every 0.1 s: a batch of 50 takes 0.25 s (FAST's 0.02 s made 260 polls)
        options = server.options(
            batch_size=50, max_queued_requests=bound, poll_interval_seconds=0.1
        )
        client = BatchOpenAI(**options)
        async with owned(client, mode):
            async with client.map(source) as results:  # default bound: max_queued_requests
                seen: list[BulkResult] = []
                async for result in results:
                    seen.append(result)
                    # never more than `bound` read and not yet handed over
                    assert source.produced - len(seen) < bound
                    assert results.outstanding < bound
                    ahead.append(source.produced - len(seen))
    assert source.produced == 1000
    assert max(ahead) >= bound // 2  # it did read ahead, up to the bound
    assert sorted(r.index for r in seen) == list(range(1000))
    assert all(r.ok and content(r) == f"m{r.index}" and r.key == f"k{r.index}" for r in seen)
    assert server.emulator.stats().total_executions == 1000


@volume
@virtual_time()
@pytest.mark.parametrize("mode", ["open_batcher", "plain"])
async def test_ordered_results_come_in_input_order_from_an_async_generator(mode: str) -> None:
    read = 0

    async def source() -> AsyncIterator[BulkRequest]:
        nonlocal read
        for i in range(400):
            read = i + 1
            if i % 50 == 0:
                await anyio.sleep(0.3)  # the input itself takes time
            yield BulkRequest(key=f"k{i}", url=CHAT, body=chat(f"m{i}"))

    async with in_process(lines_per_second=100.0, shuffle_output=True) as server:
        # a poll every 0.1 s: a batch of 40 takes 0.4 s (FAST's 0.02 s made 200 polls)
        client = server.client(batch_size=40, poll_interval_seconds=0.1)
        async with owned(client, mode):
            async with client.map(source(), ordered=True, max_in_flight=120) as results:
                seen = []
                async for result in results:
                    seen.append(result)
                    assert read - len(seen) < 120  # the reorder buffer counts in the bound
    assert [r.index for r in seen] == list(range(400))
    assert [content(r) for r in seen] == [f"m{i}" for i in range(400)]


@virtual_time()
@pytest.mark.parametrize("mode", ["open_batcher", "plain"])
async def test_the_end_of_the_input_flushes_its_lanes_without_waiting_for_the_window(
    mode: str,
) -> None:
    async with in_process() as server:
        client = server.client(batch_size=100, batch_window_seconds=3600.0)
        async with owned(client, mode):
            started = anyio.current_time()
            async with client.map(Counted(130)) as results:
                got = [r async for r in results]
            took = anyio.current_time() - started
    assert len(got) == 130 and all(r.ok for r in got)
    assert took < 60  # not the hour of the window
    assert server.emulator.stats().uploads == 2  # a full batch of 100, then the 30 left


@virtual_time()
async def test_unordered_results_come_as_batches_finish() -> None:
    # two lanes (two models): the small model's batch finishes first, though it was read last
    items = [BulkRequest(key=f"big{i}", url=CHAT, body=chat(f"b{i}", "big")) for i in range(30)]
    items += [BulkRequest(key=f"small{i}", url=CHAT, body=chat(f"s{i}", "small")) for i in range(3)]
    async with in_process(lines_per_second=10.0) as server:
        async with open_batcher(**server.options(batch_size=100)) as client:
            async with client.map(items) as results:
                keys = [result.key async for result in results]
    assert sorted(keys) == sorted(item.key for item in items)
    assert keys[:3] == ["small0", "small1", "small2"] or set(keys[:3]) == {
        "small0",
        "small1",
        "small2",
    }


async def test_other_endpoints_and_the_journal_format_of_results() -> None:
    items = [
        {"custom_id": "e", "url": "/v1/embeddings", "body": {"model": "emb", "input": ["a", "b"]}},
        {"custom_id": "c", "url": CHAT, "body": chat("hello")},
    ]
    async with in_process() as server:
        async with open_batcher(**server.options()) as client:
            async with client.map(items, ordered=True) as results:
                embedding, completion = [result async for result in results]
    assert isinstance(embedding.response, CreateEmbeddingResponse)
    assert len(embedding.response.data) == 2
    assert embedding.response is embedding.response  # parsed once
    assert completion.status_code == 200 and completion.body is not None
    assert completion.body["choices"][0]["message"]["content"] == "hello"
    out = completion.output_line()
    assert out["custom_id"] == "c" and out["error"] is None
    assert out["response"]["status_code"] == 200 and out["response"]["body"] == completion.body
    assert out["id"] == completion.line_id and completion.line_id
    assert completion.custom_id and completion.custom_id != "c"  # the wire id is ours
    json.dumps(out)
    # the bytes form is the same JSON (spliced from the server's line, not re-encoded)
    for result in (embedding, completion):
        assert json.loads(result.output_line_bytes()) == result.output_line()
    assert b'"custom_id":"c"' in completion.output_line_bytes()


# -- bad items, failed lines -----------------------------------------------------------------------


class Unencodable:
    pass


async def test_bad_items_and_failed_lines_get_their_own_typed_errors() -> None:
    items: list[Any] = [
        line(0),
        "not a mapping",
        {"url": CHAT, "body": chat("no key")},
        {"custom_id": 7, "url": CHAT, "body": chat("int key")},
        line(0, "same key again"),
        {"custom_id": "u", "url": "/v1/images/generations", "body": chat("x")},
        {"custom_id": "g", "method": "GET", "url": CHAT, "body": chat("x")},
        {"custom_id": "b", "url": CHAT, "body": ["not", "an", "object"]},
        {"custom_id": "m", "url": CHAT, "body": {"messages": []}},
        {"custom_id": "s", "url": CHAT, "body": chat("x") | {"stream": True}},
        {"custom_id": "big", "url": CHAT, "body": chat("x" * 5000)},
        {"custom_id": "obj", "url": CHAT, "body": chat("x") | {"user": Unencodable()}},
        line(1, "[[status:400]] refused"),
        line(2, "[[status:500]] broken"),
        line(3, "[[error:content_filter]] filtered"),
        BulkRequest(key="last", url="/v1/moderations", body={"input": "fine"}),
    ]
    async with in_process() as server:
        options = server.options(max_batch_bytes=4000, max_resubmits=0)
        async with open_batcher(**options) as client:
            async with client.map(items, ordered=True) as results:
                got = [result async for result in results]
    assert [r.index for r in got] == list(range(len(items)))
    codes = [r.error.code if isinstance(r.error, InvalidBulkRequestError) else None for r in got]
    assert codes == [
        None,
        "invalid_item",
        "invalid_key",
        "invalid_key",
        "duplicate_key",
        "unsupported_url",
        "unsupported_method",
        "invalid_body",
        "missing_model",
        "unsupported_parameter",
        "request_too_large",
        "invalid_body",
        None,
        None,
        None,
        None,
    ]
    assert got[0].ok and content(got[0]) == "m0"
    assert got[4].key == "k0" and got[4].error is not None and "k0" in str(got[4].error)
    assert got[2].key == "" and got[3].key == ""
    for bad in got[1:12]:
        assert isinstance(bad.error, ValueError)  # InvalidBulkRequestError is a ValueError
        assert bad.status_code is None and bad.batch_id is None
        with pytest.raises(InvalidBulkRequestError):
            bad.response  # noqa: B018
        assert bad.output_line()["error"]["code"] == bad.error.code
    refused, broken, filtered, moderated = got[12:]
    assert isinstance(refused.error, BadRequestError) and refused.status_code == 400
    assert refused.error.custom_id == "k1" and refused.batch_id is not None
    assert refused.output_line()["response"]["status_code"] == 400
    assert isinstance(broken.error, InternalServerError) and broken.status_code == 500
    assert isinstance(filtered.error, BatchRequestError)
    assert filtered.error.code == "content_filter" and filtered.status_code is None
    assert filtered.output_line()["error"]["code"] == "content_filter"
    assert moderated.ok and moderated.body is not None
    for result in got:  # failed and refused ones are encoded from output_line()
        assert json.loads(result.output_line_bytes()) == result.output_line()
    # the bad items were never sent; the good and failing ones once each
    assert server.emulator.stats().total_executions == 5


async def test_an_item_over_max_enqueued_tokens_is_refused_alone() -> None:
    # create() refuses such a request at the call; a map refuses that item, not the map
    items = [line(0), line(1, "x" * 4000), line(2)]
    async with in_process() as server:
        async with open_batcher(**server.options(max_enqueued_tokens=500)) as client:
            async with client.map(items, ordered=True) as results:
                got = [result async for result in results]
    assert [r.ok for r in got] == [True, False, True]
    error = got[1].error
    assert isinstance(error, InvalidBulkRequestError) and error.code == "request_too_large"
    assert "max_enqueued_tokens=500" in str(error)
    assert [content(r) for r in (got[0], got[2])] == ["m0", "m2"]
    assert server.emulator.stats().total_executions == 2


@volume
@virtual_time()
@pytest.mark.parametrize("max_resubmits", [3, 0])
async def test_what_an_expired_batch_did_not_run_is_sent_again_or_reported(
    max_resubmits: int,
) -> None:
    # batches of 500 run 100 lines a second and expire after 3 s: 200 of each do not run
    emulator_options = {"lines_per_second": 100.0, "expire_after_seconds": 3.0}
    lines_in_memory: list[int] = []
    spilled: list[int] = []

    def look(event: BatchEvent) -> None:
        # once a batch is created, its requests' lines are on disk (or gone with
        # max_resubmits=0), not in memory
        if event.kind == "batch_submitted":
            for job in client._engine._jobs.values():
                if job.record.batch_id == event.batch_id:
                    lines_in_memory.append(sum(s.line is not None for s in job.slots.values()))
                    spilled.append(sum(s.spilled >= 0 for s in job.slots.values()))

    async with in_process(**emulator_options) as server:
        options = server.options(
            batch_size=500, poll_interval_seconds=0.5, max_resubmits=max_resubmits, event_hook=look
        )
        async with open_batcher(**options) as client:
            async with client.map(Counted(1000)) as results:
                got = [r async for r in results]
        assert not client._engine._jobs  # every job finished (and closed its spill file)
    assert lines_in_memory and not any(lines_in_memory)
    if max_resubmits:
        assert spilled[:2] == [500, 500]  # the first two batches; later ones hold resubmitted
    else:
        assert not any(spilled)
    stats = server.emulator.stats()
    assert stats.duplicate_executions == 0
    assert sorted(r.index for r in got) == list(range(1000))
    if max_resubmits:
        assert all(r.ok and content(r) == f"m{r.index}" for r in got)
        assert stats.total_executions == 1000
    else:
        expired = [r for r in got if not r.ok]
        assert len(expired) == 1000 - stats.total_executions >= 400
        for result in expired:
            assert isinstance(result.error, BatchExpiredError)
            assert result.error.custom_id == result.key and result.batch_id
            assert result.status_code is None
            assert result.output_line()["error"]["code"] == "batch_expired"


@virtual_time()
async def test_lines_that_cannot_go_to_disk_stay_in_memory_and_are_still_resent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def disk_full(lines: list[bytes]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("autobatcher._runner.LineSpill", disk_full)
    emulator_options = {"lines_per_second": 100.0, "expire_after_seconds": 3.0}
    async with in_process(**emulator_options) as server:
        options = server.options(batch_size=500, poll_interval_seconds=0.5)
        async with open_batcher(**options) as client:
            async with client.map(Counted(1000)) as results:
                got = [r async for r in results]
    assert sorted(r.index for r in got) == list(range(1000))
    assert all(r.ok and content(r) == f"m{r.index}" for r in got)
    assert server.emulator.stats().duplicate_executions == 0


async def test_more_than_a_megabyte_of_lines_goes_to_disk_in_a_worker_thread() -> None:
    spilled: list[int] = []

    def look(event: BatchEvent) -> None:
        if event.kind == "batch_submitted":
            (job,) = client._engine._jobs.values()
            assert job.spill is not None and len(job.spill) == 30
            assert job.spill.read(7).startswith(b'{"custom_id"')
            spilled.append(sum(s.spilled >= 0 and s.line is None for s in job.slots.values()))

    items = [line(i, f"m{i} " + "x" * 40_000) for i in range(30)]  # 1.2 MB of lines
    async with in_process() as server:
        async with open_batcher(**server.options(batch_size=30, event_hook=look)) as client:
            async with client.map(items) as results:
                got = [r async for r in results]
    assert spilled == [30]
    assert sorted(content(r).split()[0] for r in got) == sorted(f"m{i}" for i in range(30))


async def test_map_arguments_are_checked_at_the_call() -> None:
    async with in_process() as server:
        client = server.client()
        with pytest.raises(TypeError, match="iterable"):
            client.map(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="iterable"):
            client.map({"custom_id": "a"})  # type: ignore[dict-item]
        with pytest.raises(ValueError, match="max_in_flight"):
            client.map([], max_in_flight=0)
        with pytest.raises(TypeError, match="async with"):
            async for _ in client.map([line(0)]):
                pass
        bulk = client.map([])
        async with bulk as results:
            assert [r async for r in results] == []
        with pytest.raises(RuntimeError, match="once"):
            async with bulk:
                pass
        await client.close()
        with pytest.raises(Exception, match="closed"):
            async with client.map([line(0)]):
                pass


async def test_an_exception_from_the_input_comes_out_of_the_block_unwrapped() -> None:
    def source() -> Iterator[dict[str, Any]]:
        yield line(0)
        yield line(1)
        raise KeyError("the input broke")

    async with in_process(lines_per_second=1.0) as server:
        async with open_batcher(**server.options()) as client:
            with pytest.raises(KeyError, match="the input broke"):
                async with client.map(source()) as results:
                    async for _ in results:
                        pass
            # and when the block never iterates, it comes out of the exit
            with pytest.raises(KeyError, match="the input broke"):
                async with client.map(source()):
                    await anyio.wait_all_tasks_blocked()  # the input has failed by now
    assert server.emulator.stats().total_executions == 0


# -- leaving early ---------------------------------------------------------------------------------


async def staggered(first: int, rest: int, pause: float) -> AsyncIterator[dict[str, Any]]:
    """``first`` items, a pause (virtual time), then ``rest`` items."""
    for i in range(first + rest):
        if i == first:
            await anyio.sleep(pause)
        yield line(i)


def uploaded_texts(emulator: Emulator) -> set[str]:
    texts = set()
    for batch in emulator.batches.values():
        for request in batch.requests:
            body = request[2]
            texts.add(body["messages"][0]["content"])
    return texts


# For the staggered input below: batches of 100, a lane window of an hour, and a poll every
# half second of virtual time (FAST's 0.02 s made 1,000 polls a test, most of its CPU, and
# nothing here depends on seeing an answer sooner than half a second after it is ready).
STAGGERED_CLIENT: dict[str, Any] = {
    "batch_size": 100,
    "batch_window_seconds": 3600.0,
    "poll_interval_seconds": 0.5,
}


async def break_after_first(client: BatchOpenAI, source: AsyncIterator[Any]) -> int:
    async with client.map(source, max_in_flight=350) as results:
        async for _ in results:
            return results.read
    raise AssertionError("no result")


@volume
@virtual_time()
@pytest.mark.parametrize("mode", ["open_batcher", "plain"])
async def test_breaking_out_withdraws_what_was_not_uploaded_and_cancels_the_rest(
    mode: str,
) -> None:
    # batch 1 (items 0-99) runs from t=0, batches 2 and 3 from t=5; 50 more wait in a lane
    # whose window is an hour. The first answer comes at t=10 (seen by the next poll, every
    # half second): the consumer breaks there.
    async with in_process(lines_per_second=10.0) as server:
        client = server.client(**STAGGERED_CLIENT)
        async with owned(client, mode):
            read = await break_after_first(client, staggered(100, 900, 5.0))
            if mode == "plain":
                # the map drove until the abandoned batches were cancelled upstream
                stats = server.emulator.stats()
                assert stats.batches_by_status.get("cancelled", 0) == 2
    assert read == 350
    emulator = server.emulator
    stats = emulator.stats()
    assert stats.uploads == 3  # the lane of 50 was never uploaded
    assert stats.batches_by_status == {"completed": 1, "cancelled": 2}
    texts = uploaded_texts(emulator)
    assert texts == {f"m{i}" for i in range(300)}
    assert stats.total_executions < 300  # batches 2 and 3 stopped half-way
    assert stats.duplicate_executions == 0


@virtual_time()
@pytest.mark.parametrize("mode", ["open_batcher", "plain"])
async def test_cancelling_the_consuming_task_cleans_up_the_same_way(mode: str) -> None:
    before = task_ids()
    async with in_process(lines_per_second=10.0) as server:
        client = server.client(**STAGGERED_CLIENT)
        async with owned(client, mode):
            with anyio.CancelScope() as scope:
                async with client.map(staggered(100, 900, 5.0), max_in_flight=350) as results:
                    async for _ in results:
                        scope.cancel()
                        await anyio.sleep(1)  # cancelled here, inside the block
            assert scope.cancelled_caught
        assert await leftover_tasks(before) == []
    stats = server.emulator.stats()
    assert stats.uploads == 3
    assert stats.batches_by_status == {"completed": 1, "cancelled": 2}
    assert stats.duplicate_executions == 0


# With a journal, the client waits on a worker thread for each commit; virtual clocks do not
# see those waits (the clock would jump to the next lane window), so these run in real time,
# on an emulator that runs batches at once: nothing below depends on how long anything takes.


async def test_with_a_journal_what_was_uploaded_is_collected_into_it(tmp_path: Path) -> None:
    async with in_process() as server:
        options = server.options(
            batch_size=100, batch_window_seconds=3600.0, journal=tmp_path / "j.journal"
        )
        async with open_batcher(**options) as client:
            source = Counted(1000)
            async with client.map(source, max_in_flight=350) as results:
                async for _ in results:
                    break
            # (taking the one result made room for one more read before the block was left)
            assert 350 <= source.produced <= 351
        # leaving the client normally waited for the batches the map left, for the journal
        stats = server.emulator.stats()
        assert stats.uploads == 3  # the last 50 read were withdrawn from their lane
        assert stats.batches_by_status == {"completed": 3}
        assert stats.total_executions == 300
        async with open_batcher(**options) as client:
            async with client.map([line(i) for i in range(300)]) as results:
                answers = {r.key: content(r) async for r in results}
        assert answers == {f"k{i}": f"m{i}" for i in range(300)}
        assert server.emulator.stats().uploads == 3  # all 300 from the journal


@volume
async def test_a_rerun_after_a_crash_attaches_to_running_batches_and_pays_once(
    tmp_path: Path,
) -> None:
    # Run 1 dies (an exception leaves the block) once its three batches are created: they
    # are kept upstream (a journal), 50 more items read were never uploaded. Run 2 maps the
    # whole input again with a new client on the same journal.
    emulator = Emulator(api_key=API_KEY)
    path = tmp_path / "crash.journal"

    def client(**options: Any) -> BatchOpenAI:
        return BatchOpenAI(
            api_key=API_KEY,
            base_url=IN_PROCESS_BASE_URL,
            http_client=httpx.AsyncClient(transport=emulator.transport()),
            journal=path,
            **(
                {"batch_size": 100, "batch_window_seconds": 3600.0, "poll_interval_seconds": 60.0}
                | options
            ),
        )

    recorder = Recorder()
    with pytest.raises(RuntimeError, match="crash"):
        async with client(event_hook=recorder) as first:
            async with first.map(Counted(1000), max_in_flight=350):
                await recorder.wait_for("batch_submitted", 3)
                raise RuntimeError("crash")
    stats = emulator.stats()
    assert stats.uploads == 3 and stats.batches_by_status == {"completed": 3}

    # identical bodies under different keys are different requests
    items = [line(i) for i in range(500)] + [
        {"custom_id": "twin-a", "url": CHAT, "body": chat("twin")},
        {"custom_id": "twin-b", "url": CHAT, "body": chat("twin")},
    ]
    async with client(poll_interval_seconds=0.02, batch_window_seconds=0.05) as second:
        async with second.map(items) as results:
            answers = {r.key: r async for r in results}
    assert {key: content(r) for key, r in answers.items() if key.startswith("k")} == {
        f"k{i}": f"m{i}" for i in range(500)
    }
    assert answers["twin-a"].custom_id != answers["twin-b"].custom_id
    stats = emulator.stats()
    assert stats.uploads == 3 + 3  # the three batches were attached to, not sent again
    assert stats.duplicate_executions == 1  # only the twin: asked twice, on purpose
    assert stats.total_executions == 502


async def test_the_same_client_mapping_again_attaches_to_the_batch_it_left(tmp_path: Path) -> None:
    # with a journal, leaving a map keeps its uploaded batch running; mapping the same items
    # again on the same client attaches to that batch (or, if it has finished, answers from
    # the journal): nothing is uploaded or run twice
    recorder = Recorder()
    async with in_process(lines_per_second=100.0) as server:
        options = server.options(
            batch_size=100, journal=tmp_path / "again.journal", event_hook=recorder
        )
        async with open_batcher(**options) as client:
            async with client.map([line(i) for i in range(100)]):
                await recorder.wait_for("batch_submitted")
            async with client.map([line(i) for i in range(100)]) as results:
                answers = {r.key: content(r) async for r in results}
        assert answers == {f"k{i}": f"m{i}" for i in range(100)}
        stats = server.emulator.stats()
        assert stats.uploads == 1
        assert stats.total_executions == 100 and stats.duplicate_executions == 0


async def test_two_maps_of_one_journaled_client_never_share_a_request_in_flight(
    tmp_path: Path,
) -> None:
    async with in_process(lines_per_second=100.0) as server:
        options = server.options(batch_size=10, journal=tmp_path / "twice.journal")
        async with open_batcher(**options) as client:
            async with client.map([line(i) for i in range(10)]) as first:
                await anyio.wait_all_tasks_blocked()
                assert first.read == 10
                async with client.map([line(i) for i in range(12)]) as second:
                    again = [r async for r in second]
                answers = [r async for r in first]
    assert all(r.ok for r in answers) and len(answers) == 10
    refused = sorted(r.index for r in again if not r.ok)
    assert refused == list(range(10))
    for result in again:
        if not result.ok:
            assert isinstance(result.error, InvalidBulkRequestError)
            assert result.error.code == "duplicate_key"
    assert sorted(content(r) for r in again if r.ok) == ["m10", "m11"]
    assert server.emulator.stats().duplicate_executions == 0


async def test_a_journal_that_fails_or_lost_an_answer_while_recalling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with in_process() as server:
        options = server.options(journal=tmp_path / "recall.journal")
        async with open_batcher(**options) as client:
            async with client.map([line(i) for i in range(20)]) as results:
                assert len([r async for r in results]) == 20

        async def lost(self: Any, custom_ids: list[str]) -> list[bytes | None]:
            return [None] * len(custom_ids)  # (pruned meanwhile): they are sent again

        monkeypatch.setattr("autobatcher._journal.Journal.results_for", lost)
        async with open_batcher(**options) as client:
            async with client.map([line(i) for i in range(20)]) as results:
                answers = [content(r) async for r in results]
            assert sorted(answers) == sorted(f"m{i}" for i in range(20))
        assert server.emulator.stats().total_executions == 40

        async def broken(self: Any, custom_ids: list[str]) -> list[bytes | None]:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr("autobatcher._journal.Journal.results_for", broken)
        async with open_batcher(**options) as client:
            with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
                async with client.map([line(i) for i in range(20)]) as results:
                    async for _ in results:
                        pass


@volume
async def test_reading_many_answers_at_once_gives_what_reading_each_gives(tmp_path: Path) -> None:
    path = tmp_path / "many.journal"
    async with in_process() as server:
        options = server.options(journal=path, batch_size=400)
        async with open_batcher(**options) as client:
            async with client.map([line(i) for i in range(1200)]) as results:
                ids = [r.custom_id or "" async for r in results]
    journal = Journal(open_store(path), JournalMeta(IN_PROCESS_BASE_URL, key_fingerprint(API_KEY)))
    try:
        await journal.load()
        wanted = [*ids[::-1], "ab-not-there-k", ids[5]]
        many = await journal.results_for(wanted)
        one_by_one = [await journal.result(custom_id) for custom_id in wanted]
    finally:
        await journal.aclose()
    assert many == one_by_one
    assert many[-2] is None and all(line is not None for line in many[:-2])
    for custom_id, found in zip(ids[::-1], many[:-2], strict=True):
        assert found is not None and f'"custom_id":"{custom_id}"'.encode() in found


def test_output_line_bytes_splices_only_a_line_of_the_documented_layout() -> None:
    from autobatcher._bulk import _result_of_line

    class FakeSlot:
        key = 'k "quoted" \u00e9'
        index = 0
        custom_id = "wire-1"
        endpoint = CHAT

    body = '{"choices":[{"message":{"content":"\u00e9 \\"x\\""}}],"n":1.5}'
    lines = {
        "compact": '{"id":"b1","custom_id":"wire-1","response":{"status_code":200,'
        f'"request_id":"q","body":{body}}},"error":null}}',
        "spaced, null request id": '{ "id" : "b1", "custom_id": "wire-1", "response": '
        f'{{"status_code": 201, "request_id": null, "body": {body} }} , "error" : null }}\r\n',
        "no error field": '{"id":"b1","custom_id":"wire-1","response":{"status_code":200,'
        f'"request_id":"q","body":{body}}}}}',
        "an extra field": '{"id":"b1","custom_id":"wire-1","response":{"status_code":200,'
        f'"request_id":"q","body":{body}}},"error":null,"extra":1}}',
        "fields in another order": '{"custom_id":"wire-1","id":"b1","response":{"status_code"'
        f':200,"request_id":"q","body":{body}}},"error":null}}',
        "a vertical tab is not JSON whitespace": '{"id":"b1",\v"custom_id":"wire-1",'
        f'"response":{{"status_code":200,"request_id":"q","body":{body}}},"error":null}}',
    }
    for name, text in lines.items():
        result = _result_of_line(FakeSlot(), text.encode(), "batch_1")  # type: ignore[arg-type]
        out = result.output_line_bytes()
        assert b"\n" not in out and b"wire-1" not in out, name
        assert json.loads(out) == result.output_line(), name
        assert result.output_line()["custom_id"] == FakeSlot.key, name
        # (a vertical tab is not JSON: that line is an error, never spliced)
        assert result.ok == (name != "a vertical tab is not JSON whitespace"), name
        spliced = result._raw_line is not None
        assert spliced == (name in ("compact", "spaced, null request id")), name


async def test_pre_encoded_items_are_the_same_requests_as_plain_ones(tmp_path: Path) -> None:
    # autobatcher run encodes bodies in its reader thread (encoded_request): with a journal
    # an item's identity must not depend on which form it came in, or a re-run of a job
    # started by a program would send everything again
    from autobatcher._bulk import _EncodedRequest, encoded_request

    def items(pre_encoded: bool) -> list[BulkRequest]:
        make = encoded_request if pre_encoded else BulkRequest
        return [make(f"k{i}", CHAT, chat(f"m{i}") | {"temperature": 0.5}) for i in range(6)]

    assert all(isinstance(item, _EncodedRequest) for item in items(True))
    unencodable = encoded_request("nan", CHAT, chat("x") | {"temperature": float("nan")})
    assert type(unencodable) is BulkRequest  # left to the map to refuse
    huge = encoded_request("huge", CHAT, chat("x" * 5000))
    async with in_process() as server:
        options = server.options(max_batch_bytes=4000, journal=tmp_path / "pre.journal")
        async with open_batcher(**options) as client:
            async with client.map([*items(True), unencodable, huge], ordered=True) as results:
                first = [r async for r in results]
        assert [content(r) for r in first[:6]] == [f"m{i}" for i in range(6)]
        assert isinstance(first[6].error, InvalidBulkRequestError)
        assert first[6].error.code == "invalid_body"
        assert isinstance(first[7].error, InvalidBulkRequestError)
        assert first[7].error.code == "request_too_large"
        async with open_batcher(**options) as client:
            async with client.map(items(False), ordered=True) as results:
                again = [r async for r in results]
        assert [r.custom_id for r in again] == [r.custom_id for r in first[:6]]
        assert [content(r) for r in again] == [f"m{i}" for i in range(6)]
        assert server.emulator.stats().total_executions == 6  # recalled, not sent again
    async with in_process() as server:  # without a journal the pre-encoded text is sent
        async with open_batcher(**server.options()) as client:
            async with client.map(items(True), ordered=True) as results:
                plain = [content(r) async for r in results]
        assert plain == [f"m{i}" for i in range(6)]


async def test_progress_says_where_the_requests_stand() -> None:
    now = [0.0]
    more = anyio.Event()

    async def requests() -> AsyncIterator[dict[str, Any]]:
        for i in range(25):
            yield line(i)
        await more.wait()  # the input stays open: its last 5 wait in their lane's window

    async with in_process(clock=lambda: now[0], validation_seconds=100.0) as server:
        options = server.options(
            batch_size=10, batch_window_seconds=3600.0, poll_interval_seconds=0.01
        )
        async with open_batcher(**options) as client:
            async with client.map(requests()) as results:
                await anyio.wait_all_tasks_blocked()
                start = results.progress()
                assert (start.read, start.delivered, start.outstanding) == (25, 0, 25)
                assert (start.queued, start.uploading, start.in_batches) == (5, 0, 20)
                assert sorted(b.batch_id for b in start.batches) == sorted(server.emulator.batches)
                assert [(b.status, b.requests, b.waiting) for b in start.batches] == [
                    ("validating", 10, 10),
                    ("validating", 10, 10),
                ]
                now[0] += 1000.0  # the two batches complete at their next poll
                taken = [await results.__anext__() for _ in range(20)]
                assert all(r.ok for r in taken)
                middle = results.progress()
                assert (middle.read, middle.delivered, middle.outstanding) == (25, 20, 5)
                assert (middle.queued, middle.uploading, middle.in_batches) == (5, 0, 0)
                assert middle.batches == ()
                more.set()  # the input ends: the last lane goes at once
                await anyio.wait_all_tasks_blocked()
                last = results.progress()
                assert (last.queued, last.uploading, last.in_batches) == (0, 0, 5)
                assert [(b.status, b.requests, b.waiting) for b in last.batches] == [
                    ("validating", 5, 5)
                ]
                now[0] += 1000.0
                rest = [r async for r in results]
                end = results.progress()
            assert len(rest) == 5 and all(r.ok for r in rest)
            assert (end.read, end.delivered, end.outstanding) == (25, 25, 0)
            assert (end.queued, end.uploading, end.in_batches, end.batches) == (0, 0, 0, ())
