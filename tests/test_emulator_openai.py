"""Conformance: the official ``openai`` SDK drives the emulator (over loopback, or in-process).

The sync client runs in a worker thread (``anyio.to_thread``) while the server runs in the
test's event loop, so both backends are covered the same way; the async client is checked
on both backends too.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import httpx
import openai
import pytest

from autobatcher.testing import IN_PROCESS_BASE_URL, Emulator, serve_emulator
from tests._support import virtual_time
from tests.test_emulator import chat_file, chat_line

pytestmark = pytest.mark.anyio

T = TypeVar("T")


async def in_thread(fn: Callable[[], T]) -> T:
    return await anyio.to_thread.run_sync(fn)


def _client(base_url: str, **kw: Any) -> openai.OpenAI:
    kw.setdefault("api_key", "sk-test")
    kw.setdefault("max_retries", 0)
    return openai.OpenAI(base_url=base_url, timeout=10, **kw)


def _run_batch(client: openai.OpenAI, data: bytes) -> tuple[Any, list[Any], list[Any]]:
    file = client.files.create(file=("in.jsonl", data), purpose="batch")
    assert client.files.retrieve(file.id).filename == "in.jsonl"
    batch = client.batches.create(
        input_file_id=file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"key": "value"},
    )
    assert batch.status == "validating"
    for _ in range(1000):
        batch = client.batches.retrieve(batch.id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            break
    out = []
    if batch.output_file_id:
        out = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    err = []
    if batch.error_file_id:
        err = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
    return batch, out, err


@pytest.mark.loopback  # the sync SDK with its own connection pool, as a user runs it
async def test_sdk_batch_round_trip() -> None:
    data = chat_file(20) + (chat_line("bad", "[[status:429]]") + "\n").encode()
    async with serve_emulator(api_key="sk-test", lines_per_second=2000) as server:
        client = _client(server.base_url)

        def run() -> None:
            batch, out, err = _run_batch(client, data)
            assert batch.status == "completed"
            assert batch.metadata == {"key": "value"}
            assert batch.request_counts is not None
            assert batch.request_counts.completed == 20
            assert batch.request_counts.failed == 1
            assert {line["custom_id"] for line in out} == {f"r{i}" for i in range(20)}
            assert err[0]["response"]["status_code"] == 429
            batches = client.batches.list(limit=10)
            assert [b.id for b in batches.data] == [batch.id]
            files = client.files.list(purpose="batch")
            assert [f.filename for f in files.data] == ["in.jsonl"]
            assert client.files.delete(batch.input_file_id).deleted is True
            with pytest.raises(openai.NotFoundError):
                client.batches.retrieve("batch_nope")
            with pytest.raises(openai.BadRequestError):
                client.batches.create(
                    input_file_id=batch.input_file_id,
                    endpoint="/v1/chat/completions",
                    completion_window="1h",  # type: ignore[arg-type]
                )
            with pytest.raises(openai.AuthenticationError):
                _client(server.base_url, api_key="wrong").batches.list()

        await in_thread(run)


@pytest.mark.loopback
async def test_sdk_cancel_and_expire() -> None:
    async with serve_emulator(lines_per_second=1e-9, cancelling_seconds=0) as server:
        client = _client(server.base_url)

        def run() -> None:
            file = client.files.create(file=("in.jsonl", chat_file(3)), purpose="batch")
            batch = client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            cancelled = client.batches.cancel(batch.id)
            assert cancelled.status == "cancelling"
            batch = client.batches.retrieve(batch.id)
            assert batch.status == "cancelled"
            assert batch.error_file_id is not None
            lines = client.files.content(batch.error_file_id).text.splitlines()
            assert {json.loads(x)["error"]["code"] for x in lines} == {"batch_cancelled"}

        await in_thread(run)
        server.emulator.configure(expire_after_seconds=0.0)

        def expire() -> None:
            file = client.files.create(file=("in.jsonl", chat_file(2)), purpose="batch")
            batch = client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            batch = client.batches.retrieve(batch.id)
            assert batch.status == "expired"
            assert batch.output_file_id is None
            assert batch.error_file_id is not None

        await in_thread(expire)


@virtual_time()  # the SDK backs off with anyio.sleep: on the loop's (virtual) clock
@pytest.mark.parametrize(
    "faults",
    [
        {"error_rate": 0.5},
        {"rate_limit_rate": 0.5, "retry_after_seconds": 0.001},
        {"drop_rate": 0.3, "fault_paths": ("/v1/batches/", "/v1/files/")},
    ],
)
async def test_sdk_retries_through_faults(faults: dict[str, Any]) -> None:
    """The async SDK in-process (its http_client on the emulator's transport): every fault
    is one the SDK's own retry logic recognises and gets through."""
    emulator = Emulator(api_key="sk-test", fault_seed=7, **faults)
    async with (
        httpx.AsyncClient(transport=emulator.transport()) as http,
        openai.AsyncOpenAI(
            base_url=IN_PROCESS_BASE_URL,
            api_key="sk-test",
            max_retries=20,
            # This openai build annotates http_client as its vendored httpx2's client; an
            # httpx client has the same interface and is what it calls at run time.
            http_client=http,  # type: ignore[arg-type]
        ) as client,
    ):
        file = await client.files.create(file=("in.jsonl", chat_file(5)), purpose="batch")
        batch = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch = await client.batches.retrieve(batch.id)
        assert batch.status == "completed"
        assert batch.output_file_id is not None and batch.error_file_id is None
        out = (await client.files.content(batch.output_file_id)).text.splitlines()
    assert len(out) == 5
    assert emulator.stats().faults_injected > 0
    assert emulator.stats().duplicate_executions == 0


@pytest.mark.loopback
async def test_async_sdk_realtime_endpoints() -> None:
    async with serve_emulator() as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0)
        async with client:
            chat = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi there"}]
            )
            assert chat.choices[0].message.content == "hi there"
            assert chat.usage is not None
            emb = await client.embeddings.create(model="e", input=["a", "b"], dimensions=4)
            assert [len(d.embedding) for d in emb.data] == [4, 4]
            raw = await client.embeddings.create(model="e", input="a", encoding_format="base64")
            assert isinstance(raw.data[0].embedding, (list, str))
            resp = await client.responses.create(model="m", input="echo me")
            assert resp.output_text == "echo me"
            comp = await client.completions.create(model="m", prompt="p1")
            assert comp.choices[0].text == "p1"
            mod = await client.moderations.create(input="[[flag]]")
            assert mod.results[0].flagged is True
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "[[status:500]]"}]
                )
        stats = server.emulator.stats()
        assert stats.realtime_calls == 7
        assert stats.duplicate_executions == 0


def test_base64_embeddings_decode() -> None:
    status, body = Emulator().realtime(
        "/v1/embeddings", {"model": "e", "input": "a", "encoding_format": "base64"}
    )
    assert status == 200
    assert body is not None
    assert len(base64.b64decode(body["data"][0]["embedding"])) == 8 * 4  # 8 float32s
