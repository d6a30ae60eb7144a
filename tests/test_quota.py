"""Enqueued-token quotas: a batch the server rejects with ``token_limit_exceeded`` ran
nothing; its requests wait until our running batches leave room and go again (split when
the job alone is over), and ``max_enqueued_tokens`` keeps under a known quota so that no
batch is rejected at all. Nothing runs twice (the emulator counts every execution).

The emulator counts a batch's tokens as we estimate them (its input file's bytes / 4), so
a limit computed here from the encoded lines is the one both sides see. Virtual time.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from autobatcher import BatchFailedError, RequestTooLargeError
from autobatcher._config import estimate_tokens
from autobatcher._jsonl import encode_line
from autobatcher._providers import ProviderName
from autobatcher.types import ChatCompletion

from ._support import Recorder, chat, emulated, gather, in_process, virtual_time, volume
from .test_providers import FLAVOURS, against

pytestmark = pytest.mark.anyio

QUOTA_REASON = "batch rejected over the enqueued-token quota (token_limit_exceeded)"


def tokens_of(texts: list[str]) -> int:
    """The estimated tokens of these requests (custom_ids as the client numbers them)."""
    return sum(
        estimate_tokens(len(encode_line(f"ab00000000-{i + 1}", "/v1/chat/completions", chat(t))))
        for i, t in enumerate(texts)
    )


def assert_echoed(results: list[Any], texts: list[str]) -> None:
    for text, result in zip(texts, results, strict=True):
        assert isinstance(result, ChatCompletion), (text, result)
        assert result.choices[0].message.content == text


def resubmitted(recorder: Recorder, reason: str = QUOTA_REASON) -> int:
    return sum(e.requests for e in recorder.kinds("batch_resubmitted") if e.detail == reason)


@volume
@virtual_time()
async def test_rejected_batches_wait_for_ours_and_go_again_until_everything_is_answered() -> None:
    # 2,000 requests in batches of 500; the quota fits a third of them (one batch at a
    # time, not two). Four batches start together: the server takes the first and rejects
    # the others; theirs wait until ours leave room, then run. Each request runs once.
    texts = [f"q{i}" for i in range(2000)]
    limit = tokens_of(texts) // 3
    recorder = Recorder()
    emulator_options = {"enqueued_token_limit": limit, "lines_per_second": 200.0}
    async with emulated(
        emulator_options, batch_size=500, poll_interval_seconds=0.5, event_hook=recorder
    ) as (server, client):
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert_echoed(results, texts)
    stats = server.emulator.stats()
    assert stats.duplicate_executions == 0
    assert stats.total_executions == len(texts)
    rejected = [b for b in server.emulator.batches.values() if b.status == "failed"]
    assert rejected
    assert all(b.errors and b.errors[0]["code"] == "token_limit_exceeded" for b in rejected)
    # every request of every rejected batch went again, and nothing else did
    assert resubmitted(recorder) == len(rejected) * 500
    assert {e.detail for e in recorder.kinds("batch_resubmitted")} == {QUOTA_REASON}


@volume
@virtual_time()
async def test_max_enqueued_tokens_keeps_under_the_quota_so_no_batch_is_rejected() -> None:
    texts = [f"k{i}" for i in range(2000)]
    limit = tokens_of(texts) // 3
    recorder = Recorder()
    emulator_options = {"enqueued_token_limit": limit, "lines_per_second": 200.0}
    async with emulated(
        emulator_options,
        batch_size=500,
        poll_interval_seconds=0.5,
        max_enqueued_tokens=limit,
        event_hook=recorder,
    ) as (server, client):
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert_echoed(results, texts)
    stats = server.emulator.stats()
    assert stats.duplicate_executions == 0
    assert stats.total_executions == len(texts)
    assert set(stats.batches_by_status) == {"completed"}
    assert stats.batches_created == 4  # one batch of 500 at a time: two would be over
    assert not recorder.kinds("batch_resubmitted")
    # one at a time: each batch was created after the one before it completed
    batches = sorted(server.emulator.batches.values(), key=lambda b: b.created)
    for before, after in itertools.pairwise(batches):
        assert before.completed is not None and before.completed <= after.created


@virtual_time()
async def test_a_job_larger_than_max_enqueued_tokens_is_split() -> None:
    # The quota fits about ten requests: fifty go in batches under it, never one of fifty.
    texts = [f"s{i}" for i in range(50)]
    limit = tokens_of(texts[:10])
    async with emulated(
        {"enqueued_token_limit": limit}, batch_size=50, max_enqueued_tokens=limit
    ) as (server, client):
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert_echoed(results, texts)
    batches = list(server.emulator.batches.values())
    assert all(b.status == "completed" for b in batches)
    assert all(b.tokens <= limit for b in batches)
    assert len(batches) >= 5
    assert server.emulator.stats().duplicate_executions == 0


@virtual_time()
async def test_a_job_the_server_rejects_alone_is_split_until_it_fits() -> None:
    # No quota known: the server's fits about ten requests, and our batch of fifty is
    # rejected with nothing else of ours running. Its requests go again in halves until
    # they fit; every one is answered, once.
    texts = [f"h{i}" for i in range(50)]
    limit = tokens_of(texts[:10])
    recorder = Recorder()
    async with emulated({"enqueued_token_limit": limit}, batch_size=50, event_hook=recorder) as (
        server,
        client,
    ):
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert_echoed(results, texts)
    stats = server.emulator.stats()
    assert stats.duplicate_executions == 0
    assert stats.total_executions == len(texts)
    assert stats.batches_by_status["failed"] <= 4  # 50 → 25 → 12 → 6: halving, not shaving
    assert all(b.tokens <= limit for b in server.emulator.batches.values() if b.status != "failed")


@virtual_time()
async def test_a_request_over_the_quota_alone_gets_a_clear_error_and_nobody_else_does() -> None:
    # The server's quota is below one of our requests: after at most a few halvings that
    # request alone is over what we learned, and its caller gets token_limit_exceeded; a
    # small request beside it is answered.
    big = "big " + "x" * 4000
    small = "small"
    limit = tokens_of([small]) * 3
    async with emulated({"enqueued_token_limit": limit}, batch_size=2) as (server, client):
        results = await gather(
            client.chat.completions.create(**chat(big)),
            client.chat.completions.create(**chat(small)),
        )
    over, fine = results
    assert isinstance(over, BatchFailedError), over
    assert over.code == "token_limit_exceeded"
    assert "quota" in str(over)
    assert isinstance(fine, ChatCompletion)
    assert fine.choices[0].message.content == small
    stats = server.emulator.stats()
    assert stats.total_executions == 1
    assert stats.batches_by_status["failed"] <= 3


async def test_a_lone_request_over_max_enqueued_tokens_is_refused_at_the_call() -> None:
    async with emulated(max_enqueued_tokens=200) as (server, client):
        with pytest.raises(RequestTooLargeError, match="max_enqueued_tokens=200"):
            await client.chat.completions.create(**chat("x" * 1000))
        answer = await client.chat.completions.create(**chat("fits"))
    assert answer.choices[0].message.content == "fits"
    assert server.emulator.stats().batches_created == 1


@virtual_time()
async def test_a_plain_client_waits_for_quota_too() -> None:
    # Standalone (the waiting callers drive in turn): the same ledger, no rejection.
    texts = [f"p{i}" for i in range(300)]
    limit = tokens_of(texts) // 3
    async with in_process(enqueued_token_limit=limit, lines_per_second=100.0) as server:
        client = server.client(batch_size=100, poll_interval_seconds=0.5, max_enqueued_tokens=limit)
        try:
            results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
        finally:
            await client.close()
    assert_echoed(results, texts)
    stats = server.emulator.stats()
    assert set(stats.batches_by_status) == {"completed"}
    assert stats.duplicate_executions == 0


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-5, ValueError), (1.5, TypeError), (True, TypeError), ("10", TypeError)],
)
async def test_max_enqueued_tokens_is_checked(value: Any, error: type[Exception]) -> None:
    async with in_process() as server:
        with pytest.raises(error, match="max_enqueued_tokens"):
            server.client(max_enqueued_tokens=value)


@virtual_time()
async def test_a_quota_rejection_does_not_use_up_max_resubmits() -> None:
    # max_resubmits=1, and every request fails transiently (503) on its first run. The second
    # batch of two is rejected over the quota first: its requests still have their one
    # resubmission for the 503, so every request is answered.
    texts = [f"u{i} [[status:503:once]]" for i in range(20)]
    limit = tokens_of(texts) * 2 // 3
    recorder = Recorder()
    async with emulated(
        {"enqueued_token_limit": limit, "lines_per_second": 5.0},
        batch_size=10,
        poll_interval_seconds=0.5,
        max_resubmits=1,
        event_hook=recorder,
    ) as (server, client):
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert_echoed(results, texts)
    assert resubmitted(recorder) >= 10  # a whole batch was rejected and went again
    assert resubmitted(recorder, "transient failure (status 503)") == len(texts)
    stats = server.emulator.stats()
    assert stats.duplicate_executions == len(texts)  # each ran twice: the 503, then the answer


@virtual_time()
async def test_a_request_with_no_resubmission_left_still_goes_again_after_a_quota_rejection() -> (
    None
):
    # max_resubmits=1 and each request fails transiently once (its one resubmission spent);
    # the batch carrying them again is then rejected over the quota, which ran nothing: the
    # requests keep their lines through validation and go again, and are answered.
    texts = [f"v{i} [[status:503:once]]" for i in range(10)]
    limit = tokens_of(texts) * 3 // 2
    recorder = Recorder()

    async def fill_the_quota_after_the_first_batch() -> None:
        await recorder.wait_for("batch_completed")
        server.emulator.configure(enqueued_token_limit=1)
        await recorder.wait_for("batch_failed")
        server.emulator.configure(enqueued_token_limit=limit)

    async with emulated(
        {"enqueued_token_limit": limit},
        batch_size=10,
        poll_interval_seconds=0.5,
        max_resubmits=1,
        event_hook=recorder,
    ) as (server, client):
        results = await gather(
            fill_the_quota_after_the_first_batch(),
            *[client.chat.completions.create(**chat(t)) for t in texts],
        )
    assert_echoed(results[1:], texts)
    assert resubmitted(recorder, "transient failure (status 503)") == len(texts)
    assert resubmitted(recorder) == len(texts)
    assert server.emulator.stats().duplicate_executions == len(texts)


async def test_a_lone_request_the_server_rejects_gets_the_server_s_error() -> None:
    # One request, rejected with nothing else of ours enqueued: nothing to wait for and
    # nothing to split, so its caller gets the server's own error at once (one batch).
    async with emulated({"enqueued_token_limit": 1}) as (server, client):
        with pytest.raises(BatchFailedError) as caught:
            await client.chat.completions.create(**chat("alone"))
    error = caught.value
    assert error.code == "token_limit_exceeded"
    assert error.batch_id in server.emulator.batches
    assert error.errors and "Enqueued token limit reached" in error.errors[0]["message"]
    assert server.emulator.stats().batches_created == 1


@volume
@pytest.mark.parametrize("flavour", FLAVOURS)
@virtual_time()
async def test_every_provider_s_quota_rejection_is_waited_out(flavour: ProviderName) -> None:
    # The same story in each provider's dialect (statuses spelled their way, Azure's file
    # processing and deletion, Together's wrapped create, Doubleword's early files …).
    texts = [f"f{i}" for i in range(30)]
    limit = tokens_of(texts) // 3
    recorder = Recorder()
    async with against(
        flavour,
        {"enqueued_token_limit": limit, "lines_per_second": 100.0},
        batch_size=10,
        event_hook=recorder,
    ) as (emulator, client):
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert_echoed(results, texts)
    stats = emulator.stats()
    assert stats.duplicate_executions == 0
    assert stats.total_executions == len(texts)
    assert stats.batches_by_status.get("failed", 0) >= 1
    assert resubmitted(recorder) == 10 * stats.batches_by_status["failed"]
