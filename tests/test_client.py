"""The batching client against the emulator, on every backend of the matrix.

Most tests reach the emulator in-process (no sockets); the ones marked ``loopback`` need a
real server: the client's own connection pool, or settings read from the environment.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import httpx
import pytest

import autobatcher
from autobatcher import (
    BadRequestError,
    BatchCancelledError,
    BatchExpiredError,
    BatchFailedError,
    BatchOpenAI,
    BatchRequestError,
    ClientClosedError,
    InternalServerError,
    MissingResultError,
    NotFoundError,
    RateLimitError,
    RequestTooLargeError,
    UnsupportedParameterError,
    open_batcher,
)
from autobatcher.testing import serve_emulator
from autobatcher.types import (
    ChatCompletion,
    Completion,
    CreateEmbeddingResponse,
    ModerationCreateResponse,
    Response,
)

from ._support import (
    API_KEY,
    FAST,
    Recorder,
    chat,
    emulated,
    gather,
    in_process,
    leftover_tasks,
    task_ids,
    task_runs,
    virtual_time,
)

pytestmark = pytest.mark.anyio


async def test_chat_completion_round_trip() -> None:
    async with emulated() as (server, client):
        response = await client.chat.completions.create(**chat("What is 2+2?"))
    assert isinstance(response, ChatCompletion)
    assert response.choices[0].message.content == "What is 2+2?"
    assert response.choices[0].message.role == "assistant"
    assert response.usage is not None and response.usage.total_tokens > 0
    stats = server.emulator.stats()
    assert stats.batches_created == 1
    assert stats.total_executions == 1
    assert stats.realtime_calls == 0


@virtual_time()  # the window gathers a burst into one batch, whatever the machine's load
async def test_all_five_endpoints() -> None:
    async with emulated() as (server, client):
        chat_r, emb_r, resp_r, comp_r, mod_r = await gather(
            client.chat.completions.create(**chat("hello chat")),
            client.embeddings.create(model="text-embedding-3-small", input=["a", "b", "c"]),
            client.responses.create(model="gpt-4o-mini", input="hello responses"),
            client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hello completions"),
            client.moderations.create(model="omni-moderation-latest", input="be nice [[flag]]"),
        )
    assert isinstance(chat_r, ChatCompletion)
    assert chat_r.choices[0].message.content == "hello chat"
    assert isinstance(emb_r, CreateEmbeddingResponse)
    assert [item.index for item in emb_r.data] == [0, 1, 2]
    assert all(len(item.embedding) > 0 for item in emb_r.data)
    assert isinstance(resp_r, Response)
    assert resp_r.output_text == "hello responses"
    assert isinstance(comp_r, Completion)
    assert comp_r.choices[0].text == "hello completions"
    assert isinstance(mod_r, ModerationCreateResponse)
    assert mod_r.results[0].flagged is True
    # one batch per (endpoint, model)
    assert server.emulator.stats().batches_created == 5


@virtual_time()  # the window gathers a burst into one batch, whatever the machine's load
async def test_mixed_models_and_endpoints_split_into_separate_batches() -> None:
    recorder = Recorder()
    async with emulated(event_hook=recorder, batch_window_seconds=0.2) as (server, client):
        results = await gather(
            *[client.chat.completions.create(**chat(f"a{i}", model="model-a")) for i in range(5)],
            *[client.chat.completions.create(**chat(f"b{i}", model="model-b")) for i in range(7)],
            *[client.embeddings.create(model="model-a", input=f"e{i}") for i in range(3)],
        )
    assert all(not isinstance(r, Exception) for r in results)
    submitted = recorder.kinds("batch_submitted")
    by_lane = sorted((e.endpoint or "", e.model or "", e.requests) for e in submitted)
    assert by_lane == [
        ("/v1/chat/completions", "model-a", 5),
        ("/v1/chat/completions", "model-b", 7),
        ("/v1/embeddings", "model-a", 3),
    ]
    assert server.emulator.stats().batches_created == 3


@virtual_time()  # the window gathers a burst into one batch, whatever the machine's load
async def test_batch_size_flushes_without_waiting_for_the_window() -> None:
    recorder = Recorder()
    # A window far longer than the test: only batch_size can flush these.
    async with emulated(event_hook=recorder, batch_size=10, batch_window_seconds=3600) as (
        _server,
        client,
    ):
        with anyio.fail_after(20):
            results = await gather(
                *[client.chat.completions.create(**chat(f"q{i}")) for i in range(30)]
            )
    assert [r.choices[0].message.content for r in results] == [f"q{i}" for i in range(30)]
    assert [e.requests for e in recorder.kinds("batch_submitted")] == [10, 10, 10]


@virtual_time()
async def test_window_flushes_a_partial_batch() -> None:
    recorder = Recorder()
    uploaded_at: list[float] = []

    async def on_request(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path == "/v1/files":
            uploaded_at.append(anyio.current_time())

    async with in_process() as server, server.http(event_hooks={"request": [on_request]}) as http:
        async with open_batcher(
            **server.options(
                http_client=http, event_hook=recorder, batch_size=1000, batch_window_seconds=60
            )
        ) as client:
            start = anyio.current_time()
            response = await client.chat.completions.create(**chat("alone"))
    assert response.choices[0].message.content == "alone"
    # uploaded when the window closed: not before, and not at some later poll
    assert uploaded_at == [pytest.approx(start + 60)]
    assert [e.requests for e in recorder.kinds("batch_submitted")] == [1]


@virtual_time()  # the window gathers a burst into one batch, whatever the machine's load
async def test_byte_cap_flushes_before_overflow() -> None:
    recorder = Recorder()
    text = "x" * 500
    async with emulated(
        event_hook=recorder, batch_size=1000, max_batch_bytes=2000, batch_window_seconds=0.2
    ) as (server, client):
        results = await gather(*[client.chat.completions.create(**chat(text)) for _ in range(9)])
    assert all(r.choices[0].message.content == text for r in results)
    sizes = [e.requests for e in recorder.kinds("batch_submitted")]
    assert sum(sizes) == 9
    assert max(sizes) <= 3  # each line is ~600 bytes, so at most 3 fit in 2,000
    assert server.emulator.stats().batches_created == len(sizes)


async def test_a_request_larger_than_the_byte_cap_fails_alone() -> None:
    async with emulated(max_batch_bytes=2000) as (_server, client):
        small, big = await gather(
            client.chat.completions.create(**chat("small")),
            client.chat.completions.create(**chat("y" * 5000)),
        )
    assert small.choices[0].message.content == "small"
    assert isinstance(big, RequestTooLargeError)
    assert "max_batch_bytes" in str(big)


@virtual_time()  # the window gathers a burst into one batch, whatever the machine's load
async def test_per_line_errors_reach_exactly_their_callers() -> None:
    async with emulated(batch_size=6, batch_window_seconds=0.5) as (_server, client):
        results = await gather(
            client.chat.completions.create(**chat("fine 1")),
            client.chat.completions.create(**chat("bad [[status:400]]")),
            client.chat.completions.create(**chat("missing [[status:404]]")),
            client.chat.completions.create(**chat("limited [[status:429]]")),
            client.chat.completions.create(**chat("broken [[status:500]]")),
            client.chat.completions.create(**chat("coded [[error:server_error]]")),
            client.chat.completions.create(**chat("fine 2")),
            client.chat.completions.create(**chat("vanished [[drop]]")),
        )
    fine1, bad, missing, limited, broken, coded, fine2, vanished = results
    assert fine1.choices[0].message.content == "fine 1"
    assert fine2.choices[0].message.content == "fine 2"
    assert isinstance(bad, BadRequestError) and bad.status_code == 400
    assert isinstance(missing, NotFoundError) and missing.status_code == 404
    assert isinstance(limited, RateLimitError)
    assert isinstance(broken, InternalServerError) and broken.status_code == 500
    for error in (bad, missing, limited, broken):
        assert error.custom_id is not None
        assert error.batch_id is not None and error.batch_id.startswith("batch_")
        assert error.message
        assert error.response is None
    assert bad.request_id is not None
    assert isinstance(coded, BatchRequestError)
    assert coded.code == "server_error"
    assert isinstance(vanished, MissingResultError)
    assert len({e.custom_id for e in (bad, missing, limited, broken, coded, vanished)}) == 6


@virtual_time()  # one batch for the four, whatever the machine's load
async def test_a_completed_batch_with_zero_successes() -> None:
    async with emulated() as (server, client):
        results = await gather(
            *[client.chat.completions.create(**chat(f"no {i} [[status:400]]")) for i in range(4)]
        )
    assert all(isinstance(r, BadRequestError) for r in results), results
    assert len({r.custom_id for r in results}) == 4  # each its own line's error
    # the batch itself completed: the failures are per line, not a failed batch
    assert server.emulator.stats().batches_by_status == {"completed": 1}


async def test_failed_batch_gives_every_request_the_batch_errors() -> None:
    recorder = Recorder()
    # (max_resubmits=0: a quota rejection is not sent again; tests/test_quota.py has that)
    async with emulated({"enqueued_token_limit": 1}, event_hook=recorder, max_resubmits=0) as (
        _server,
        client,
    ):
        results = await gather(*[client.chat.completions.create(**chat(f"t{i}")) for i in range(3)])
    assert all(isinstance(r, BatchFailedError) for r in results)
    first = results[0]
    assert first.code == "token_limit_exceeded"
    assert first.errors and first.errors[0]["code"] == "token_limit_exceeded"
    assert first.batch_id is not None
    assert len(recorder.kinds("batch_failed")) == 1


@virtual_time()
async def test_expired_batch_delivers_finished_results_and_expires_the_rest() -> None:
    # One line a second, expired after 15 s: 15 lines done, 25 expired (not a race with the
    # machine's speed: the loop's clock is virtual).
    options = {"lines_per_second": 1.0, "expire_after_seconds": 15}
    # (max_resubmits=0: the unrun requests are not sent again; tests/test_resubmit.py has that)
    async with emulated(options, batch_size=40, poll_interval_seconds=1, max_resubmits=0) as (
        _server,
        client,
    ):
        results = await gather(
            *[client.chat.completions.create(**chat(f"e{i}")) for i in range(40)]
        )
    done = [i for i, r in enumerate(results) if isinstance(r, ChatCompletion)]
    expired = [r for r in results if isinstance(r, BatchExpiredError)]
    assert len(done) == 15 and len(expired) == 25
    assert all(results[i].choices[0].message.content == f"e{i}" for i in done)
    assert all(e.code == "batch_expired" and e.batch_id for e in expired)
    assert len({e.batch_id for e in expired}) == 1


@virtual_time()
async def test_cancelled_batch_delivers_finished_results_and_cancels_the_rest() -> None:
    recorder = Recorder()
    # One line a second, polled every 10 s: the batch is cancelled (by someone else) at the
    # first poll that sees it half-way, 20 lines done and 40 to go.
    async with in_process(lines_per_second=1.0, cancelling_seconds=0) as server:

        async def cancel_at_twenty_done(response: httpx.Response) -> None:
            request = response.request
            if request.method == "GET" and request.url.path.startswith("/v1/batches/"):
                await response.aread()
                batch = response.json()
                if batch["status"] == "in_progress" and batch["request_counts"]["completed"] >= 20:
                    server.emulator.cancel_batch(batch["id"])

        async with (
            server.http(event_hooks={"response": [cancel_at_twenty_done]}) as http,
            open_batcher(
                **server.options(
                    http_client=http,
                    batch_size=60,
                    poll_interval_seconds=10,
                    event_hook=recorder,
                    max_resubmits=0,  # (else the unrun go into a new batch: test_resubmit.py)
                )
            ) as client,
        ):
            results = await gather(
                *[client.chat.completions.create(**chat(f"c{i}")) for i in range(60)]
            )
    done = [i for i, r in enumerate(results) if isinstance(r, ChatCompletion)]
    cancelled = [r for r in results if isinstance(r, BatchCancelledError)]
    assert len(done) == 20 and len(cancelled) == 40
    assert all(results[i].choices[0].message.content == f"c{i}" for i in done)
    (batch_id,) = {e.batch_id for e in cancelled}
    assert batch_id is not None
    assert server.emulator.batches[batch_id].status == "cancelled"
    assert [e.batch_id for e in recorder.kinds("batch_cancelled")] == [batch_id]


@virtual_time()  # the window gathers a burst into one batch, whatever the machine's load
async def test_value_json_cannot_encode_fails_only_that_call() -> None:
    async with emulated(batch_window_seconds=0.2) as (server, client):
        good, bad_object, bad_nan = await gather(
            client.chat.completions.create(**chat("good")),
            client.chat.completions.create(**chat("bad"), extra_body={"x": object()}),
            client.chat.completions.create(**chat("nan"), temperature=math.nan),
        )
    assert good.choices[0].message.content == "good"
    assert isinstance(bad_object, TypeError)
    assert isinstance(bad_nan, TypeError)
    assert server.emulator.stats().total_executions == 1


async def test_with_raw_response() -> None:
    async with emulated() as (_server, client):
        raw = await client.chat.completions.with_raw_response.create(**chat("raw"))
    parsed = raw.parse()
    assert isinstance(parsed, ChatCompletion)
    assert parsed.choices[0].message.content == "raw"
    assert raw.headers["x-request-id"]
    assert raw.headers["x-autobatcher-batch-id"].startswith("batch_")
    assert raw.status_code == 200


async def test_unsupported_parameters_and_methods_fail_clearly() -> None:
    async with emulated() as (server, client):
        with pytest.raises(UnsupportedParameterError, match="stream"):
            await client.chat.completions.create(**chat("s"), stream=True)
        with pytest.raises(UnsupportedParameterError, match="extra_headers"):
            await client.chat.completions.create(**chat("s"), extra_headers={"X-A": "b"})
        with pytest.raises(UnsupportedParameterError, match="extra_query"):
            await client.chat.completions.create(**chat("s"), extra_query={"a": "b"})
        with pytest.raises(TypeError, match="model"):
            await client.chat.completions.create(messages=[])  # type: ignore[call-arg]
        with pytest.raises(AttributeError, match=r"chat\.completions\.parse"):
            _ = client.chat.completions.parse
        with pytest.raises(AttributeError, match="files"):
            _ = client.files
        with pytest.raises(AttributeError, match="with_streaming_response"):
            _ = client.embeddings.with_streaming_response
        # extra_body is merged into the line's body
        response = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[],
            extra_body={"messages": [{"role": "user", "content": "eb"}]},
        )
        assert response.choices[0].message.content == "eb"
    assert server.emulator.stats().total_executions == 1


@virtual_time()
async def test_timeout_is_a_deadline_for_the_answer() -> None:
    # The batch is submitted at once (batch_size=1) and takes an hour; the caller gives up
    # after 30 s, exactly, and the batch nobody waits for is cancelled upstream.
    async with emulated({"lines_per_second": 1 / 3600}, batch_size=1, poll_interval_seconds=5) as (
        server,
        client,
    ):
        start = anyio.current_time()
        with pytest.raises(autobatcher.APITimeoutError):
            await client.chat.completions.create(**chat("slow"), timeout=30)
        assert anyio.current_time() - start == pytest.approx(30)
    stats = server.emulator.stats()
    assert stats.batches_created == 1
    assert stats.total_executions == 0
    assert set(stats.batches_by_status) <= {"cancelling", "cancelled"}


async def test_closed_client_refuses_new_requests() -> None:
    async with in_process() as server:
        client = BatchOpenAI(
            api_key=API_KEY, base_url=server.base_url, http_client=server.http_client, **FAST
        )
        await client.close()
        await client.close()  # idempotent
        with pytest.raises(ClientClosedError):
            await client.chat.completions.create(**chat("late"))
        async with open_batcher(
            api_key=API_KEY, base_url=server.base_url, http_client=server.http_client, **FAST
        ) as other:
            pass
        with pytest.raises(ClientClosedError):
            await other.embeddings.create(model="m", input="late")


@pytest.mark.loopback  # the client builds its own connection pool from OPENAI_BASE_URL
async def test_env_var_fallbacks_authenticate_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve_emulator(api_key="sk-from-env") as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        async with open_batcher(**FAST) as client:
            assert client.base_url == server.base_url
            response = await client.chat.completions.create(**chat("env"))
        # the download of results needed the key too, or there would be no echo
        assert response.choices[0].message.content == "env"
        monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
        async with open_batcher(**FAST) as client:
            with pytest.raises(autobatcher.AuthenticationError):
                await client.chat.completions.create(**chat("denied"))


async def test_user_exception_leaves_open_batcher_unwrapped() -> None:
    async with in_process() as server:
        with pytest.raises(KeyError) as info:
            async with open_batcher(
                api_key=API_KEY, base_url=server.base_url, http_client=server.http_client, **FAST
            ):
                raise KeyError("mine")
        assert type(info.value) is KeyError
        with pytest.raises(KeyError):
            async with BatchOpenAI(
                api_key=API_KEY, base_url=server.base_url, http_client=server.http_client, **FAST
            ):
                raise KeyError("mine too")


async def test_nothing_left_running_after_the_block_or_close() -> None:
    async with in_process() as server:
        before = task_ids()
        async with open_batcher(
            api_key=API_KEY, base_url=server.base_url, http_client=server.http_client, **FAST
        ) as client:
            engine_tasks = [t for t in anyio.get_running_tasks() if task_runs(t, BatchOpenAI.run)]
            await client.chat.completions.create(**chat("one"))
        # exactly one engine task ran during the block (found by its code, not a name that the
        # test runner's own task may share), and it is gone after it
        assert len(engine_tasks) == 1
        assert engine_tasks[0].id not in before
        assert engine_tasks[0].id not in task_ids()
        assert await leftover_tasks(before) == []
        plain = BatchOpenAI(
            api_key=API_KEY, base_url=server.base_url, http_client=server.http_client, **FAST
        )
        await gather(*[plain.chat.completions.create(**chat(f"p{i}")) for i in range(20)])
        await plain.close()
        assert await leftover_tasks(before) == []


@virtual_time()  # the window gathers a burst into one batch, whatever the machine's load
async def test_seed_usage_standalone_client_without_task_group() -> None:
    """The seed README's code, as written: a plain object, gather, then close()."""
    async with in_process() as server:
        client = BatchOpenAI(
            api_key=API_KEY,
            base_url=server.base_url,
            http_client=server.http_client,
            batch_size=50,
            batch_window_seconds=0.1,
            poll_interval_seconds=0.05,
        )
        response = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "What is 2+2?"}]
        )
        assert response.choices[0].message.content == "What is 2+2?"

        async def get_response(prompt: str) -> str | None:
            r = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
            )
            return r.choices[0].message.content

        prompts = [f"prompt {i}" for i in range(230)]
        results = await gather(*[get_response(p) for p in prompts])
        assert results == prompts
        await client.close()
        stats = server.emulator.stats()
        assert stats.total_executions == 231
        assert stats.duplicate_executions == 0


async def test_seed_context_manager() -> None:
    async with in_process() as server:
        async with BatchOpenAI(
            api_key=API_KEY, base_url=server.base_url, http_client=server.http_client, **FAST
        ) as client:
            response = await client.chat.completions.create(**chat("ctx"))
        assert response.choices[0].message.content == "ctx"


async def test_task_group_tier() -> None:
    async with in_process() as server:
        client = BatchOpenAI(
            api_key=API_KEY, base_url=server.base_url, http_client=server.http_client, **FAST
        )
        async with anyio.create_task_group() as tg:
            await tg.start(client.run)
            results = await gather(
                *[client.chat.completions.create(**chat(f"t{i}")) for i in range(5)]
            )
            await client.close()
        assert [r.choices[0].message.content for r in results] == [f"t{i}" for i in range(5)]


async def test_leaving_the_block_flushes_pending_requests_at_once() -> None:
    async with in_process() as server:
        results: list[Any] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                async with open_batcher(
                    api_key=API_KEY,
                    base_url=server.base_url,
                    http_client=server.http_client,
                    batch_window_seconds=3600,  # only leaving the block can flush this
                    poll_interval_seconds=0.02,
                ) as client:

                    async def ask() -> None:
                        results.append(await client.chat.completions.create(**chat("at exit")))

                    tg.start_soon(ask)
                    await anyio.wait_all_tasks_blocked()  # the request waits in its lane
                    assert results == []
                # the block has waited for the answer before closing
                assert len(results) == 1
        assert results[0].choices[0].message.content == "at exit"


def test_invalid_options_fail_at_construction() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'batch_sise'"):
        BatchOpenAI(api_key="k", batch_sise=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="batch_size"):
        BatchOpenAI(api_key="k", batch_size=-1)
    with pytest.raises(ValueError, match="batch_window_seconds"):
        BatchOpenAI(api_key="k", batch_window_seconds=-0.5)
    with pytest.raises(ValueError, match="poll_interval_seconds"):
        BatchOpenAI(api_key="k", poll_interval_seconds=0)
    with pytest.raises(ValueError, match="max_batch_bytes"):
        BatchOpenAI(api_key="k", max_batch_bytes=300 * 1024 * 1024)
    with pytest.raises(ValueError, match="base_url"):
        BatchOpenAI(api_key="k", base_url="ftp://x")


def test_seed_defaults_and_key_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    client = BatchOpenAI(api_key="sk-secret-123")
    config = client.config
    assert (config.batch_size, config.batch_window_seconds, config.poll_interval_seconds) == (
        100,
        1.0,
        5.0,
    )
    assert config.completion_window == "24h"
    assert client.base_url == "https://api.openai.com/v1"
    assert "sk-secret-123" not in repr(client)
    assert "sk-secret-123" not in repr(config)


@virtual_time()  # the window gathers a burst into one batch, whatever the machine's load
async def test_embedding_inputs_cap_splits_batches() -> None:
    recorder = Recorder()
    async with emulated(event_hook=recorder, max_embedding_inputs=5, batch_window_seconds=0.2) as (
        _server,
        client,
    ):
        results = await gather(
            *[
                client.embeddings.create(model="e", input=[f"x{i}", f"y{i}", f"z{i}"])
                for i in range(4)
            ]
        )
    assert all(len(r.data) == 3 for r in results)
    # 3 inputs per request and at most 5 per batch: one request per batch
    assert [e.requests for e in recorder.kinds("batch_submitted")] == [1, 1, 1, 1]


@virtual_time()  # the window gathers a burst into one batch, whatever the machine's load
async def test_batches_in_flight_are_capped() -> None:
    recorder = Recorder()
    in_flight: list[int] = []
    running = 0

    def watch(event: autobatcher.BatchEvent) -> None:
        nonlocal running
        recorder(event)
        if event.kind == "batch_submitted":
            running += 1
        elif event.kind == "batch_completed":
            running -= 1
        in_flight.append(running)

    async with emulated(
        {"lines_per_second": 100.0},
        event_hook=watch,
        batch_size=5,
        max_batches_in_flight=1,
    ) as (_server, client):
        results = await gather(
            *[client.chat.completions.create(**chat(f"f{i}")) for i in range(15)]
        )
    assert [r.choices[0].message.content for r in results] == [f"f{i}" for i in range(15)]
    assert len(recorder.kinds("batch_submitted")) == 3
    assert max(in_flight) == 1


async def test_a_users_http_client_is_used_and_never_closed() -> None:
    seen: list[str] = []

    async def record(request: httpx.Request) -> None:
        seen.append(f"{request.method} {request.url.path}")

    async with in_process() as server:
        async with server.http(event_hooks={"request": [record]}) as http:
            async with open_batcher(**server.options(http_client=http)) as client:
                await client.chat.completions.create(**chat("mine"))
            assert not http.is_closed
            assert "POST /v1/files" in seen
            assert "POST /v1/batches" in seen
