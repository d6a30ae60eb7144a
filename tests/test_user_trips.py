"""What a new user trips over (issue 9): each test pins the behaviour that replaced a defect.

* a plain-mode hand-over must not move any batch's next poll (answers were a poll late);
* a wrong base_url fails after one call's retries, not after the 10-minute job budget, and the
  message names the server and the reason;
* expected failures are one log line per batch, without a traceback;
* a server that is not a Batch API is said to be one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import httpx
import pytest

from autobatcher import (
    APIConnectionError,
    APIResponseValidationError,
    AuthenticationError,
    BatchEvent,
    BatchOpenAI,
    open_batcher,
)
from autobatcher.testing import IN_PROCESS_BASE_URL, Emulator

from ._support import API_KEY, chat, virtual_time

pytestmark = pytest.mark.anyio


@virtual_time()
async def test_a_plain_mode_hand_over_keeps_every_batchs_poll_schedule() -> None:
    """Batch B polls at submit + 60 s, + 120 s. Batch A, submitted 30 s later, answers its
    caller at its first poll (~91 s), and that caller hands the engine over. B must still poll
    at ~121 s, right after it finished (~101 s): a hand-over that restarted B's poll sleep
    would make it ~151 s.
    """
    emulator = Emulator(api_key=API_KEY, lines_per_second=0.3)
    http = httpx.AsyncClient(transport=emulator.transport())
    client = BatchOpenAI(
        api_key=API_KEY,
        base_url=IN_PROCESS_BASE_URL,
        http_client=http,
        batch_window_seconds=1.0,
        poll_interval_seconds=60.0,
    )
    start = anyio.current_time()
    answered_at: dict[str, float] = {}

    async def ask(text: str, model: str) -> None:
        reply = await client.chat.completions.create(**chat(text, model=model))
        assert reply.choices[0].message.content == text
        answered_at[text] = anyio.current_time() - start

    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(ask, f"b{i}", "model-b")
        await anyio.sleep(30)
        tg.start_soon(ask, "a", "model-a")
    await client.close()
    assert 61 <= answered_at["a"] <= 92
    b_times = [answered_at[f"b{i}"] for i in range(30)]
    assert min(b_times) >= 101  # B finished at ~101 s (30 lines at 0.3 lines/s)
    assert max(b_times) <= 122  # its scheduled poll; a restarted sleep would give ~151 s


async def test_a_wrong_base_url_fails_fast_and_says_what_could_not_be_reached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[BatchEvent] = []
    caplog.set_level(logging.INFO, logger="autobatcher")
    with anyio.fail_after(60):  # a hang guard only; the real bound is the retry count below
        async with open_batcher(
            api_key=API_KEY,
            base_url="http://127.0.0.1:9/v1",  # nothing listens on the discard port
            batch_window_seconds=0.01,
            event_hook=events.append,
        ) as client:
            results = await _ask(client, 3)
    assert all(isinstance(r, APIConnectionError) for r in results)
    message = str(results[0])
    assert "could not reach http://127.0.0.1:9/v1" in message
    assert "refused" in message
    # one call's retries (max_retries=2), and not one more: the job budget is not used
    retries = [e for e in events if e.kind == "retry"]
    assert len(retries) == 2
    assert not [r for r in caplog.records if "trying again for up to" in r.getMessage()]
    warnings = [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "autobatcher"
    ]
    assert len(warnings) == 1  # one batch, one line
    assert warnings[0].exc_info is None


async def test_a_wrong_api_key_is_one_log_line_per_batch_without_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    emulator = Emulator(api_key="the-right-key")
    caplog.set_level(logging.DEBUG, logger="autobatcher")
    async with open_batcher(
        api_key="a-wrong-key",
        base_url=IN_PROCESS_BASE_URL,
        http_client=httpx.AsyncClient(transport=emulator.transport()),
        batch_size=50,
        batch_window_seconds=0.01,
    ) as client:
        results = await _ask(client, 200)
    assert all(isinstance(r, AuthenticationError) for r in results)
    assert len({id(r) for r in results}) == 200  # each caller its own error object
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "autobatcher"]
    assert len(noisy) == 4  # 200 requests in batches of 50
    assert all(r.exc_info is None for r in noisy)
    assert all("401" in r.getMessage() for r in noisy)


def _not_a_batch_api(body: bytes, content_type: str) -> httpx.AsyncClient:
    """A server that answers 200 with ``body`` to everything (an ASGI app, in-process)."""

    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        while (await receive()).get("more_body"):
            pass
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app))


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b"<html><body>Welcome to nginx!</body></html>", "text/html", "text/html"),
        (b'{"status": "ok"}', "application/json", "keys ['status']"),
    ],
)
async def test_a_server_that_is_not_a_batch_api_is_named_as_such(
    body: bytes, content_type: str, says: str
) -> None:
    async with open_batcher(
        api_key=API_KEY,
        base_url="http://not-a-batch-api/v1",
        http_client=_not_a_batch_api(body, content_type),
        batch_window_seconds=0.01,
    ) as client:
        (result,) = await _ask(client, 1)
    assert isinstance(result, APIResponseValidationError)
    message = str(result)
    assert "POST http://not-a-batch-api/v1/files answered 200" in message
    assert says in message
    assert "OpenAI-compatible" in message
    assert result.status_code == 200


async def _ask(client: BatchOpenAI, count: int) -> list[Any]:
    """``count`` concurrent calls; each one's answer or exception, in order."""
    results: list[Any] = [None] * count

    async def one(index: int) -> None:
        try:
            results[index] = await client.chat.completions.create(**chat(f"q{index}"))
        except Exception as exc:
            results[index] = exc

    async with anyio.create_task_group() as tg:
        for index in range(count):
            tg.start_soon(one, index)
    return results
