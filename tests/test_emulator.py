"""The Batch API emulator over HTTP, on asyncio and trio.

Most tests reach it in-process (``Emulator.transport()``, no sockets); the ones about the
server itself, and one full lifecycle, go over a real loopback socket.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import trio.testing

from autobatcher.testing import (
    IN_PROCESS_BASE_URL,
    Emulator,
    EmulatorConfig,
    EmulatorStats,
    serve_emulator,
)

from ._support import VirtualClockEventLoop, virtual_time

pytestmark = pytest.mark.anyio

# -- helpers (also used by test_emulator_openai.py) -------------------------------------

CHAT = "/v1/chat/completions"


class FakeClock:
    """An injectable clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chat_line(custom_id: str, text: str, *, model: str = "gpt-4o-mini", url: str = CHAT) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": url,
            "body": {"model": model, "messages": [{"role": "user", "content": text}]},
        }
    )


def chat_file(n: int, text: Callable[[int], str] = lambda i: f"hello {i}") -> bytes:
    return "".join(chat_line(f"r{i}", text(i)) + "\n" for i in range(n)).encode()


def jsonl(raw: bytes | str) -> list[dict[str, Any]]:
    if isinstance(raw, bytes):
        raw = raw.decode()
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


async def upload(client: httpx.AsyncClient, data: bytes, name: str = "in.jsonl") -> str:
    response = await client.post("/files", files={"file": (name, data)}, data={"purpose": "batch"})
    assert response.status_code in (200, 201), response.text
    file_id: str = response.json()["id"]
    return file_id


async def create_batch(
    client: httpx.AsyncClient,
    file_id: str,
    *,
    endpoint: str = CHAT,
    window: str = "24h",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    response = await client.post(
        "/batches",
        json={
            "input_file_id": file_id,
            "endpoint": endpoint,
            "completion_window": window,
            "metadata": metadata,
        },
    )
    assert response.status_code in (200, 201), response.text
    batch: dict[str, Any] = response.json()
    return batch


async def get_batch(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    response = await client.get(f"/batches/{batch_id}")
    assert response.status_code == 200, response.text
    batch: dict[str, Any] = response.json()
    return batch


async def wait_done(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    """The batch, which must be finished: the emulator runs a batch with no configured
    durations to its end on the first look (a test about time uses virtual time instead)."""
    batch = await get_batch(client, batch_id)
    assert batch["status"] in ("completed", "failed", "expired", "cancelled"), batch["status"]
    return batch


async def content(client: httpx.AsyncClient, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    response = await client.get(f"/files/{file_id}/content")
    assert response.status_code == 200, response.text
    return jsonl(response.content)


@asynccontextmanager
async def running(**config: Any) -> AsyncIterator[tuple[Emulator, httpx.AsyncClient]]:
    """An emulator and a client bound to its ``/v1``, in-process (no sockets)."""
    emulator = Emulator(**config)
    async with httpx.AsyncClient(
        transport=emulator.transport(), base_url=IN_PROCESS_BASE_URL
    ) as client:
        yield emulator, client


@asynccontextmanager
async def over_loopback(**config: Any) -> AsyncIterator[tuple[Emulator, httpx.AsyncClient]]:
    """The same over a real socket: the emulator served by hypercorn on 127.0.0.1."""
    async with (
        serve_emulator(**config) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as client,
    ):
        yield server.emulator, client


Connect = Callable[..., AbstractAsyncContextManager[tuple[Emulator, httpx.AsyncClient]]]
#: Parametrizes a test over both ways to reach the emulator.
both_ways = pytest.mark.parametrize(
    "connect",
    [
        pytest.param(running, id="in-process"),
        pytest.param(over_loopback, id="loopback", marks=pytest.mark.loopback),
    ],
)


# -- lifecycle -----------------------------------------------------------------------


@both_ways
async def test_lifecycle_statuses_timestamps_and_echo(connect: Connect) -> None:
    clock = FakeClock()
    async with connect(
        clock=clock, validation_seconds=1, lines_per_second=10, finalizing_seconds=1
    ) as (emulator, client):
        batch = await create_batch(
            client, await upload(client, chat_file(50)), metadata={"key": "k1"}
        )
        assert batch["object"] == "batch"
        assert batch["status"] == "validating"
        assert batch["output_file_id"] is None
        assert batch["metadata"] == {"key": "k1"}
        assert batch["request_counts"] == {"total": 50, "completed": 0, "failed": 0}
        clock.advance(1.0)
        batch = await get_batch(client, batch["id"])
        assert batch["status"] == "in_progress"
        assert batch["in_progress_at"] is not None
        clock.advance(2.0)
        batch = await get_batch(client, batch["id"])
        assert batch["status"] == "in_progress"
        assert batch["request_counts"]["completed"] == 20
        clock.advance(3.0)  # all 50 lines done at +5s, finalizing until +6s
        batch = await get_batch(client, batch["id"])
        assert batch["status"] == "finalizing"
        assert batch["finalizing_at"] - batch["in_progress_at"] == 5
        clock.advance(1.0)
        batch = await get_batch(client, batch["id"])
        assert batch["status"] == "completed"
        assert batch["completed_at"] - batch["created_at"] == 7
        assert batch["error_file_id"] is None
        assert batch["request_counts"] == {"total": 50, "completed": 50, "failed": 0}
        lines = await content(client, batch["output_file_id"])
        ids = [line["custom_id"] for line in lines]
        assert sorted(ids) == sorted(f"r{i}" for i in range(50))
        assert ids != [f"r{i}" for i in range(50)]  # shuffled
        for line in lines:
            assert line["id"].startswith("batch_req_")
            assert line["error"] is None
            response = line["response"]
            assert response["status_code"] == 200
            assert response["request_id"].startswith("req_")
            body = response["body"]
            assert body["object"] == "chat.completion"
            message = body["choices"][0]["message"]
            assert message["content"] == f"hello {line['custom_id'][1:]}"
            assert set(body["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
        assert emulator.stats().batches_by_status == {"completed": 1}


async def test_nobody_polls_for_a_while() -> None:
    clock = FakeClock()
    async with running(clock=clock, lines_per_second=5, finalizing_seconds=1) as (_, client):
        batch = await create_batch(client, await upload(client, chat_file(10)))
        clock.advance(100)
        batch = await get_batch(client, batch["id"])
        assert batch["status"] == "completed"
        assert batch["finalizing_at"] - batch["in_progress_at"] == 2
        assert batch["completed_at"] - batch["finalizing_at"] == 1


async def test_markers_in_batch_lines() -> None:
    texts = {
        "ok": "fine",
        "bad": "please [[status:400]]",
        "boom": "[[status:503]] now",
        "err": "x [[error:server_error]]",
        "gone": "[[drop]]",
    }
    data = "".join(chat_line(k, v) + "\n" for k, v in texts.items()).encode()
    async with running() as (_, client):
        created = await create_batch(client, await upload(client, data))
        batch = await wait_done(client, created["id"])
        assert batch["status"] == "completed"
        assert batch["request_counts"] == {"total": 5, "completed": 1, "failed": 3}
        out = await content(client, batch["output_file_id"])
        assert [line["custom_id"] for line in out] == ["ok"]
        errors = {line["custom_id"]: line for line in await content(client, batch["error_file_id"])}
        assert set(errors) == {"bad", "boom", "err"}
        assert errors["bad"]["response"]["status_code"] == 400
        assert errors["bad"]["response"]["body"]["error"]["type"] == "invalid_request_error"
        assert errors["boom"]["response"]["status_code"] == 503
        assert set(errors["boom"]["response"]["body"]["error"]) == {
            "message",
            "type",
            "param",
            "code",
        }
        assert errors["err"]["response"] is None
        assert errors["err"]["error"]["code"] == "server_error"


# -- validation -------------------------------------------------------------------------


def _line(**changes: Any) -> str:
    item: dict[str, Any] = {
        "custom_id": "a",
        "method": "POST",
        "url": CHAT,
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    item.update(changes)
    return json.dumps(item)


@pytest.mark.parametrize(
    ("lines", "code", "line_no"),
    [
        ([_line(), "{not json"], "invalid_json_line", 2),
        ([_line(), _line()], "duplicate_custom_id", 2),
        ([_line(method="GET")], "invalid_method", 1),
        ([_line(url="/v1/embeddings")], "invalid_url", 1),
        (
            [_line(), _line(custom_id="b", body={"model": "other", "messages": []})],
            "mismatched_model",
            2,
        ),
        (
            [_line(), _line(custom_id="b", body={"model": "m", "input": "x [[invalid]]"})],
            "invalid_request",
            2,
        ),
        ([_line(custom_id=str(i)) for i in range(4)], "too_many_lines", None),
        ([_line(custom_id="x" * 1200)], "file_too_large", None),
    ],
)
async def test_validation_failures(lines: list[str], code: str, line_no: int | None) -> None:
    async with running(max_lines=3, max_file_bytes=1000) as (_, client):
        file_id = await upload(client, ("\n".join(lines) + "\n").encode())
        batch = await wait_done(client, (await create_batch(client, file_id))["id"])
        assert batch["status"] == "failed"
        assert batch["failed_at"] is not None
        assert batch["errors"]["object"] == "list"
        error = batch["errors"]["data"][0]
        assert error["code"] == code
        assert error["line"] == line_no
        assert set(error) == {"code", "message", "param", "line"}
        assert batch["output_file_id"] is None
        assert batch["error_file_id"] is None


async def test_create_rejects_bad_parameters() -> None:
    async with running() as (_, client):
        file_id = await upload(client, chat_file(1))
        for payload, param in [
            ({"completion_window": "1h"}, "completion_window"),
            ({"endpoint": "/v1/images"}, "endpoint"),
            ({"input_file_id": "file-missing"}, "input_file_id"),
        ]:
            body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
            body.update(payload)
            response = await client.post("/batches", json=body)
            assert response.status_code in (400, 404)
            assert response.json()["error"]["param"] == param


# -- expiry, cancel, token limit ---------------------------------------------------------


async def test_expiry_keeps_finished_lines() -> None:
    clock = FakeClock()
    async with running(clock=clock, lines_per_second=10, expire_after_seconds=1.05) as (
        _,
        client,
    ):
        batch = await create_batch(client, await upload(client, chat_file(20)))
        assert batch["expires_at"] - batch["created_at"] == 1
        clock.advance(30)
        batch = await get_batch(client, batch["id"])
        assert batch["status"] == "expired"
        assert batch["expired_at"] is not None
        out = await content(client, batch["output_file_id"])
        errors = await content(client, batch["error_file_id"])
        assert len(out) == 10
        assert len(errors) == 10
        assert {e["custom_id"] for e in errors} | {o["custom_id"] for o in out} == {
            f"r{i}" for i in range(20)
        }
        for line in errors:
            assert line["response"] is None
            assert line["error"]["code"] == "batch_expired"
            assert line["id"].startswith("batch_req_")


async def test_cancel_keeps_finished_lines() -> None:
    clock = FakeClock()
    async with running(clock=clock, lines_per_second=10, cancelling_seconds=1) as (
        emulator,
        client,
    ):
        batch = await create_batch(client, await upload(client, chat_file(20)))
        clock.advance(0.5)
        response = await client.post(f"/batches/{batch['id']}/cancel")
        assert response.status_code == 200
        assert response.json()["status"] == "cancelling"
        assert response.json()["cancelling_at"] is not None
        clock.advance(0.5)
        assert (await get_batch(client, batch["id"]))["status"] == "cancelling"
        clock.advance(0.5)
        batch = await get_batch(client, batch["id"])
        assert batch["status"] == "cancelled"
        assert batch["cancelled_at"] is not None
        out = await content(client, batch["output_file_id"])
        errors = await content(client, batch["error_file_id"])
        assert len(out) == 5
        assert len(errors) == 15
        assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
        assert emulator.stats().total_executions == 5
        # Cancelling a finished batch is a conflict.
        response = await client.post(f"/batches/{batch['id']}/cancel")
        assert response.status_code == 200  # still "cancelled": idempotent
        done = await create_batch(client, await upload(client, chat_file(1)))
        clock.advance(1)
        response = await client.post(f"/batches/{done['id']}/cancel")
        assert response.status_code == 409


async def test_enqueued_token_limit() -> None:
    async with running(validation_seconds=60, enqueued_token_limit=400) as (_, client):
        file_id = await upload(client, chat_file(5))  # ~500 bytes, ~125 tokens
        first = await create_batch(client, file_id)
        second = await create_batch(client, file_id)
        third = await create_batch(client, file_id)
        assert first["status"] == second["status"] == "validating"
        assert third["errors"]["data"][0]["code"] == "token_limit_exceeded"
        async with running(enqueued_token_limit=1) as (_, other):
            batch = await wait_done(
                other, (await create_batch(other, await upload(other, chat_file(5))))["id"]
            )
            assert batch["status"] == "failed"
            assert batch["errors"]["data"][0]["code"] == "token_limit_exceeded"


async def test_a_stuck_marker_keeps_its_batch_finalizing_until_cancelled() -> None:
    clock = FakeClock()
    async with running(clock=clock) as (emulator, client):
        text = lambda i: "stuck [[stuck]]" if i == 3 else f"hello {i}"  # noqa: E731
        batch = await create_batch(client, await upload(client, chat_file(5, text)))
        other = await create_batch(client, await upload(client, chat_file(2)))
        clock.advance(86_400.0)  # a day: every line ran, and it did not move (nor expire)
        batch = await get_batch(client, batch["id"])
        assert batch["status"] == "finalizing"
        assert batch["output_file_id"] is None
        assert (await get_batch(client, other["id"]))["status"] == "completed"  # only that one
        response = await client.post(f"/batches/{batch['id']}/cancel")
        assert response.json()["status"] == "cancelling"
        clock.advance(1.0)
        batch = await get_batch(client, batch["id"])
        assert batch["status"] == "cancelled"
        out = await content(client, batch["output_file_id"])
        assert sorted(line["custom_id"] for line in out) == [f"r{i}" for i in range(5)]
        assert batch["error_file_id"] is None  # every line had run: nothing was cancelled
        assert emulator.stats().total_executions == 7


# -- faults ----------------------------------------------------------------------------


async def test_error_rate_restricted_to_paths() -> None:
    async with running(error_rate=1.0, fault_paths=("/v1/files",), fault_seed=1) as (
        emulator,
        client,
    ):
        response = await client.post(
            "/files", files={"file": ("a.jsonl", chat_file(1))}, data={"purpose": "batch"}
        )
        assert response.status_code in (500, 502, 503)
        assert response.json()["error"]["type"] == "server_error"
        assert (await client.get("/batches")).status_code == 200
        stats = emulator.stats()
        assert stats.faults_injected == 1
        assert stats.uploads == 0
        assert stats.api_calls == 2


async def test_rate_limit_headers() -> None:
    async with running(rate_limit_rate=1.0, retry_after_seconds=0.25) as (_, client):
        response = await client.get("/batches")
        assert response.status_code == 429
        assert response.headers["retry-after"] == "0.25"
        assert response.headers["retry-after-ms"] == "250"
        assert response.json()["error"]["code"] == "rate_limit_exceeded"


@both_ways
@pytest.mark.parametrize("after", [True, False])
async def test_dropped_connection(after: bool, connect: Connect) -> None:
    async with connect(
        drop_rate=1.0, drop_after_processing=after, fault_paths=("/v1/batches",)
    ) as (emulator, client):
        file_id = await upload(client, chat_file(2))
        with pytest.raises(httpx.TransportError):
            await create_batch(client, file_id, metadata={"idempotency_key": "abc"})
        emulator.configure(drop_rate=0.0)
        listing = (await client.get("/batches")).json()
        keys = [b["metadata"]["idempotency_key"] for b in listing["data"]]
        assert keys == (["abc"] if after else [])
        assert emulator.stats().batches_created == (1 if after else 0)
        assert emulator.stats().faults_by_kind == {"drop": 1}


@both_ways
async def test_auth(connect: Connect) -> None:
    async with connect(api_key="sk-test") as (_, client):
        response = await client.get("/batches")
        assert response.status_code == 401
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        response = await client.get("/batches", headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401
        response = await client.get("/batches", headers={"Authorization": "Bearer sk-test"})
        assert response.status_code == 200
        assert (await client.get("/../_emulator/stats")).status_code == 200


async def test_unknown_ids_are_404() -> None:
    async with running() as (_, client):
        for method, path in [
            ("GET", "/files/file-x"),
            ("GET", "/files/file-x/content"),
            ("DELETE", "/files/file-x"),
            ("GET", "/batches/batch_x"),
            ("POST", "/batches/batch_x/cancel"),
            ("GET", "/nothing-here"),
        ]:
            response = await client.request(method, path)
            assert response.status_code == 404, path
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_lose_batch_forgets_it() -> None:
    async with running(validation_seconds=60) as (emulator, client):
        file_id = await upload(client, chat_file(2))
        lost = (await create_batch(client, file_id))["id"]
        kept = (await create_batch(client, file_id))["id"]
        emulator.lose_batch(lost)
        for method, path in [("GET", f"/batches/{lost}"), ("POST", f"/batches/{lost}/cancel")]:
            response = await client.request(method, path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"
        listing = (await client.get("/batches")).json()
        assert [b["id"] for b in listing["data"]] == [kept]
        assert (await client.get(f"/files/{file_id}")).status_code == 200
        stats = emulator.stats()
        assert stats.batches_by_status == {"validating": 1}
        assert stats.faults_by_kind == {"lost_batch": 1}
        with pytest.raises(KeyError, match=lost):
            emulator.lose_batch(lost)
        with pytest.raises(KeyError, match="batch_nope"):
            emulator.lose_batch("batch_nope")


async def test_invalid_marker_in_a_realtime_call_is_400() -> None:
    async with running() as (emulator, client):
        response = await client.post(
            "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "[[invalid]]"}]},
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_request"
        assert emulator.stats().realtime_calls == 1


# -- time: the event loop's clock -------------------------------------------------------


@virtual_time()
@pytest.mark.parametrize(
    ("flavour", "window", "seconds"),
    [("openai", "24h", 86_400), ("doubleword", "1h", 3_600), ("doubleword", "24h", 86_400)],
)
async def test_the_completion_window_expires_batches_on_the_loop_clock(
    flavour: str, window: str, seconds: int
) -> None:
    started = anyio.current_time()
    async with running(flavour=flavour, lines_per_second=1 / 600) as (_, client):
        created = await create_batch(client, await upload(client, chat_file(1000)), window=window)
        assert created["expires_at"] - created["created_at"] == seconds
        await anyio.sleep(seconds - 1)  # virtual time
        assert (await get_batch(client, created["id"]))["status"] == "in_progress"
        await anyio.sleep(1)  # virtual time
        batch = await get_batch(client, created["id"])
    assert anyio.current_time() - started == seconds
    assert batch["status"] == "expired"
    assert batch["expired_at"] - batch["created_at"] == seconds
    assert batch["request_counts"]["completed"] == seconds // 600
    assert batch["request_counts"]["failed"] == 1000 - seconds // 600


def test_loop_clock_stands_still_outside_a_loop_and_never_jumps_between_loops() -> None:
    emulator = Emulator(validation_seconds=10, lines_per_second=1)
    file_id = emulator.upload("in.jsonl", "batch", chat_file(5)).id
    batch = emulator.create_batch(
        input_file_id=file_id, endpoint=CHAT, completion_window="24h", metadata=None
    )

    async def wait(seconds: float) -> tuple[str, int]:
        # A loop's time counts from its first call to the emulator, up to its last.
        emulator.advance()
        await anyio.sleep(seconds)  # virtual time (MockClock, VirtualClockEventLoop)
        record = emulator.batches[batch.id]
        return record.status, record.processed

    def virtual_trio() -> dict[str, Any]:
        return {"clock": trio.testing.MockClock(autojump_threshold=0)}

    # 8 virtual seconds on trio: still validating (10 s).
    assert anyio.run(wait, 8, backend="trio", backend_options=virtual_trio()) == ("validating", 0)
    # Outside any loop the emulator's time stands still at its last reading.
    assert emulator.batches[batch.id].status == "validating"
    # A new asyncio loop (virtual: its clock starts at 0) continues from 8 s, not from its
    # own clock.
    options = {"loop_factory": VirtualClockEventLoop}
    assert anyio.run(wait, 0.1, backend="asyncio", backend_options=options) == ("validating", 0)
    # A fresh MockClock starts at 0 again; 3.5 more seconds: in progress since 10 s, 1 line.
    status, processed = anyio.run(wait, 3.5, backend="trio", backend_options=virtual_trio())
    assert (status, processed) == ("in_progress", 1)
    assert emulator.batches[batch.id].in_progress == batch.created + 10


async def test_timestamps_are_unix_seconds_that_move_with_the_clock() -> None:
    clock = FakeClock()
    async with running(clock=clock, validation_seconds=2) as (_, client):
        created = await create_batch(client, await upload(client, chat_file(1)))
        assert abs(created["created_at"] - time.time()) < 5
        clock.advance(3600)
        batch = await get_batch(client, created["id"])
        assert batch["status"] == "completed"
        assert batch["in_progress_at"] - batch["created_at"] == 2
        file = (await client.get(f"/files/{batch['output_file_id']}")).json()
        assert file["created_at"] - created["created_at"] == 2


# -- files and listing -------------------------------------------------------------------


async def test_files_crud_and_paging() -> None:
    async with running() as (_, client):
        ids = [await upload(client, chat_file(1), name=f"f{i}.jsonl") for i in range(5)]
        info = (await client.get(f"/files/{ids[0]}")).json()
        assert info == {
            "id": ids[0],
            "object": "file",
            "bytes": len(chat_file(1)),
            "created_at": info["created_at"],
            "filename": "f0.jsonl",
            "purpose": "batch",
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }
        assert (await client.get(f"/files/{ids[0]}/content")).content == chat_file(1)
        page = (await client.get("/files", params={"limit": 2})).json()
        assert page["object"] == "list"
        assert [f["id"] for f in page["data"]] == [ids[4], ids[3]]
        assert page["has_more"] is True
        page = (await client.get("/files", params={"limit": 2, "after": page["last_id"]})).json()
        assert [f["id"] for f in page["data"]] == [ids[2], ids[1]]
        page = (await client.get("/files", params={"order": "asc", "limit": 10})).json()
        assert [f["id"] for f in page["data"]] == ids
        assert page["has_more"] is False
        assert (await client.get("/files", params={"purpose": "batch_output"})).json()["data"] == []
        response = await client.delete(f"/files/{ids[0]}")
        assert response.json() == {"id": ids[0], "object": "file", "deleted": True}
        assert (await client.get(f"/files/{ids[0]}")).status_code == 404


async def test_batches_list_newest_first() -> None:
    async with running(validation_seconds=60) as (_, client):
        file_id = await upload(client, chat_file(1))
        ids = [
            (await create_batch(client, file_id, metadata={"n": str(i)}))["id"] for i in range(3)
        ]
        page = (await client.get("/batches", params={"limit": 2})).json()
        assert [b["id"] for b in page["data"]] == [ids[2], ids[1]]
        assert page["has_more"] is True
        assert page["data"][0]["metadata"] == {"n": "2"}
        assert page["data"][0]["object"] == "batch"
        page = (await client.get("/batches", params={"after": page["last_id"]})).json()
        assert [b["id"] for b in page["data"]] == [ids[0]]
        assert page["has_more"] is False


# -- real-time calls and the fake model ---------------------------------------------------


async def test_realtime_echo_contract() -> None:
    async with running() as (emulator, client):
        chat = (
            await client.post(
                "/chat/completions",
                json={
                    "model": "m",
                    "messages": [
                        {"role": "user", "content": "first"},
                        {"role": "assistant", "content": "x"},
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": "a"},
                                {"type": "text", "text": "b"},
                            ],
                        },
                    ],
                },
            )
        ).json()
        assert chat["choices"][0]["message"]["content"] == "ab"
        assert chat["choices"][0]["finish_reason"] == "stop"
        completion = (await client.post("/completions", json={"model": "m", "prompt": "pr"})).json()
        assert completion["object"] == "text_completion"
        assert completion["choices"][0]["text"] == "pr"
        response = (await client.post("/responses", json={"model": "m", "input": "in"})).json()
        assert response["object"] == "response"
        assert response["output"][0]["content"][0] == {
            "type": "output_text",
            "text": "in",
            "annotations": [],
            "logprobs": [],
        }
        response = (
            await client.post(
                "/responses",
                json={
                    "model": "m",
                    "input": [
                        {"role": "user", "content": [{"type": "input_text", "text": "parts"}]}
                    ],
                },
            )
        ).json()
        assert response["output"][0]["content"][0]["text"] == "parts"
        emb = (await client.post("/embeddings", json={"model": "e", "input": ["a", "b"]})).json()
        assert [len(d["embedding"]) for d in emb["data"]] == [8, 8]
        again = (await client.post("/embeddings", json={"model": "e", "input": "a"})).json()
        assert again["data"][0]["embedding"] == emb["data"][0]["embedding"]
        assert emb["data"][0]["embedding"] != emb["data"][1]["embedding"]
        emb = (
            await client.post("/embeddings", json={"model": "e", "input": "a", "dimensions": 3})
        ).json()
        assert len(emb["data"][0]["embedding"]) == 3
        mod = (await client.post("/moderations", json={"input": ["fine", "bad [[flag]]"]})).json()
        assert [r["flagged"] for r in mod["results"]] == [False, True]
        failed = await client.post(
            "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "[[status:418]]"}]},
        )
        assert failed.status_code == 418
        assert set(failed.json()["error"]) == {"message", "type", "param", "code"}
        stats = emulator.stats()
        assert stats.realtime_calls == 9
        assert stats.total_executions == 9
        assert stats.duplicate_executions == 0


async def test_executions_count_duplicates() -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "same"}]}
    async with running() as (emulator, client):
        await client.post("/chat/completions", json=body)
        await client.post("/chat/completions", json=dict(reversed(list(body.items()))))
        file_id = await upload(client, chat_file(3, text=lambda i: "same"))
        await wait_done(client, (await create_batch(client, file_id))["id"])
        stats = emulator.stats()
        assert isinstance(stats, EmulatorStats)
        assert stats.total_executions == 5
        assert stats.duplicate_executions == 4
        assert len(stats.executions) == 1
        emulator.reset_stats()
        assert emulator.stats().total_executions == 0


# -- doubleword flavour --------------------------------------------------------------------


async def test_doubleword_partial_results() -> None:
    clock = FakeClock()
    data = (
        "".join(chat_line(f"r{i}", f"t{i}", model=f"model-{i % 2}") + "\n" for i in range(8))
        + json.dumps(
            {
                "custom_id": "e",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "emb", "input": "x"},
            }
        )
        + "\n"
        + chat_line("z", "[[error:bad]]")
        + "\n"
    ).encode()
    async with running(clock=clock, flavour="doubleword", lines_per_second=10) as (_, client):
        response = await client.post(
            "/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}
        )
        assert response.status_code == 201
        response = await client.post(
            "/batches",
            json={
                "input_file_id": response.json()["id"],
                "endpoint": CHAT,
                "completion_window": "1h",
            },
        )
        assert response.status_code == 201
        batch = response.json()
        assert batch["output_file_id"] is not None
        assert batch["error_file_id"] is not None
        out_id = batch["output_file_id"]
        clock.advance(0.5)
        first = await client.get(f"/files/{out_id}/content")
        assert first.headers["X-Incomplete"] == "true"
        got = jsonl(first.content)
        assert 1 <= len(got) <= 5
        assert first.headers["X-Last-Line"] == str(len(got))
        clock.advance(10)
        assert (await get_batch(client, batch["id"]))["status"] == "completed"
        rest = await client.get(f"/files/{out_id}/content", params={"offset": len(got)})
        assert rest.headers["X-Incomplete"] == "false"
        assert rest.headers["X-Last-Line"] == "9"
        seen = got + jsonl(rest.content)
        assert sorted(line["custom_id"] for line in seen) == sorted(
            [f"r{i}" for i in range(8)] + ["e"]
        )
        skipped = await client.get(f"/files/{out_id}/content", params={"skip": 7})
        assert len(jsonl(skipped.content)) == 2
        assert skipped.headers["X-Last-Line"] == "9"
        errors = await client.get(f"/files/{batch['error_file_id']}/content")
        assert [line["custom_id"] for line in jsonl(errors.content)] == ["z"]


# -- admin -----------------------------------------------------------------------------


async def test_admin_http_endpoints() -> None:
    async with running() as (emulator, client):
        root = client.base_url.copy_with(path="/_emulator")
        response = await client.post(
            f"{root}/config", json={"error_rate": 1.0, "error_statuses": [502]}
        )
        assert response.status_code == 200
        assert response.json()["error_rate"] == 1.0
        assert (await client.get("/batches")).status_code == 502
        response = await client.post(f"{root}/config", json={"error_rate": 5})
        assert response.status_code == 400
        response = await client.post(f"{root}/config", json={"nope": 1})
        assert response.status_code == 400
        stats = (await client.get(f"{root}/stats")).json()
        assert stats["faults_injected"] == 1
        assert stats["api_calls_by_route"] == {"GET /v1/batches": 1}
        assert emulator.config.error_statuses == (502,)


@both_ways
async def test_admin_lose_batch(connect: Connect) -> None:
    async with connect(validation_seconds=60) as (emulator, client):
        root = client.base_url.copy_with(path="/_emulator")
        batch_id = (await create_batch(client, await upload(client, chat_file(1))))["id"]
        response = await client.post(f"{root}/batches/{batch_id}/lose")
        assert response.status_code == 200
        assert response.json() == {"id": batch_id, "lost": True}
        assert (await client.get(f"/batches/{batch_id}")).status_code == 404
        response = await client.post(f"{root}/batches/{batch_id}/lose")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert emulator.stats().faults_by_kind == {"lost_batch": 1}


@pytest.mark.loopback
async def test_serve_port_zero_and_clean_shutdown() -> None:
    async with serve_emulator(Emulator(EmulatorConfig())) as server:
        assert server.port > 0
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{server.base_url}/batches")).status_code == 200
    with pytest.raises(OSError, match=r"(?i)connect|refused"):
        await anyio.connect_tcp("127.0.0.1", server.port)


def _server_side_nodelay(server_port: int, client_address: Any) -> int:
    """TCP_NODELAY of the server's end of the client's connection (served in this process).

    The accepted socket is found among this process's descriptors: the one listening on the
    server's port whose peer is the client's end.
    """
    fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    for name in os.listdir(fd_dir):
        fd = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                if sock.getsockname()[1] != server_port or sock.getpeername() != client_address:
                    continue
            except OSError:  # the listener itself: no peer
                continue
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    raise AssertionError(f"no server socket connected to {client_address}")


@pytest.mark.loopback
async def test_connections_are_served_with_tcp_nodelay() -> None:
    # Without it every response written in two sends waits ~40 ms for a delayed ACK.
    async with over_loopback() as (_emulator, client):
        async with client.stream("GET", "/batches") as response:
            assert response.status_code == 200
            client_socket = response.extensions["network_stream"].get_extra_info("socket")
            client_address = client_socket.getsockname()
            server_port = client_socket.getpeername()[1]
            await response.aread()
        assert _server_side_nodelay(server_port, client_address) != 0


def test_public_names_of_the_testing_package() -> None:
    import autobatcher.testing as testing

    assert sorted(testing.__all__) == sorted(
        [
            "IN_PROCESS_BASE_URL",
            "BatchRecord",
            "Emulator",
            "EmulatorConfig",
            "EmulatorServer",
            "EmulatorStats",
            "EmulatorTransport",
            "FileRecord",
            "emulator_client",
            "serve_emulator",
        ]
    )
    assert all(hasattr(testing, name) for name in testing.__all__)


async def test_configure_is_validated() -> None:
    emulator = Emulator()
    with pytest.raises(ValueError, match="error_rate"):
        emulator.configure(error_rate=2.0)
    with pytest.raises(ValueError, match="flavour"):
        emulator.configure(flavour="mistral")
    assert emulator.configure(lines_per_second=5).lines_per_second == 5
