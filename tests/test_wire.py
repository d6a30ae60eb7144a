"""The wire's retry policy and error mapping, with scripted HTTP answers (httpx.MockTransport).

The behaviour against a real server is covered in test_robustness.py; these pin the details
a real server rarely shows on demand (HTTP-date retry-after, x-should-retry, plain-text errors).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable

import httpx
import pytest

from autobatcher import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    BatchEvent,
    InternalServerError,
    NotFoundError,
    RateLimitError,
)
from autobatcher._config import BatcherConfig
from autobatcher._jsonl import decode_result, encode_line, extract_custom_id
from autobatcher._retry import RetryPolicy
from autobatcher._wire import Wire

from ._support import virtual_time

_backoff = RetryPolicy(max_retries=3).call_delay

pytestmark = pytest.mark.anyio


def scripted(
    answers: list[httpx.Response | Exception], seen: list[httpx.Request]
) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def make_wire(
    http: httpx.AsyncClient,
    max_retries: int = 3,
    hook: Callable[[BatchEvent], object] | None = None,
) -> Wire:
    config = BatcherConfig(
        api_key="sk-wire",
        base_url="http://127.0.0.1:1/v1",
        max_retries=max_retries,
        event_hook=hook,
    )
    return Wire(config, http)


async def test_x_should_retry_false_stops_a_5xx() -> None:
    seen: list[httpx.Request] = []
    http = scripted([httpx.Response(500, headers={"x-should-retry": "false"}, json={})], seen)
    with pytest.raises(InternalServerError):
        await make_wire(http).call_json("GET", "batches/b")
    assert len(seen) == 1


async def test_x_should_retry_true_retries_a_4xx() -> None:
    seen: list[httpx.Request] = []
    http = scripted(
        [
            httpx.Response(400, headers={"x-should-retry": "true", "retry-after-ms": "1"}),
            httpx.Response(201, json={"id": "b"}),
        ],
        seen,
    )
    assert await make_wire(http).call_json("POST", "batches") == {"id": "b"}
    assert len(seen) == 2


async def test_plain_text_error_body_becomes_the_message() -> None:
    http = scripted([httpx.Response(404, text="no such batch")], [])
    with pytest.raises(NotFoundError, match="no such batch"):
        await make_wire(http).call_json("GET", "batches/x")


@virtual_time()  # the retries back off for real seconds otherwise
async def test_connection_errors_are_retried_then_typed() -> None:
    seen: list[httpx.Request] = []
    events: list[BatchEvent] = []
    http = scripted([httpx.ConnectError("refused")] * 3, seen)
    with pytest.raises(APIConnectionError):
        await make_wire(http, max_retries=2, hook=events.append).call_json("GET", "batches/x")
    assert len(seen) == 3
    assert [e.kind for e in events] == ["retry", "retry"]


async def test_the_key_is_sent_and_never_echoed_in_errors() -> None:
    seen: list[httpx.Request] = []
    http = scripted([httpx.Response(401, json={"error": {"message": "bad key"}})], seen)
    with pytest.raises(AuthenticationError) as info:
        await make_wire(http).call_json("GET", "files")
    assert seen[0].headers["authorization"] == "Bearer sk-wire"
    assert "sk-wire" not in str(info.value)
    assert "sk-wire" not in repr(info.value)


def test_backoff_honours_retry_after_forms() -> None:
    assert _backoff(0, httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert _backoff(0, httpx.Headers({"retry-after": "2"})) == 2.0
    date = email.utils.formatdate(time.time() + 3, usegmt=True)
    assert 1.5 < _backoff(0, httpx.Headers({"retry-after": date})) <= 3.0
    # absurd values fall back to exponential backoff with jitter
    assert _backoff(0, httpx.Headers({"retry-after": "86400"})) <= 0.5
    assert 0.75 * 4.0 <= _backoff(3, None) <= 4.0
    assert _backoff(30, None) <= 8.0


def test_custom_id_is_read_without_parsing_the_body() -> None:
    line = (
        b'{"id":"batch_req_1","custom_id":"ab12-7","response":{"status_code":200,'
        b'"body":{"custom_id":"not-this"}},"error":null}'
    )
    assert extract_custom_id(line) == "ab12-7"
    # key order differs: falls back to a full parse, still correct
    odd = b'{"response":{"body":{"custom_id":"inner"}},"custom_id":"outer"}'
    assert extract_custom_id(odd) == "outer"
    assert extract_custom_id(b'{"id":"x"}') is None
    assert extract_custom_id(b"not json") is None


def test_lines_are_judged_on_their_own_status() -> None:
    ok = b'{"custom_id":"c","response":{"status_code":200,"body":{"id":"r"}},"error":null}'
    assert decode_result(ok, dict, custom_id="c", batch_id="b") == {"id": "r"}
    bad = (
        b'{"custom_id":"c","response":{"status_code":400,"request_id":"req_9",'
        b'"body":{"error":{"message":"nope","code":"invalid_value","param":"model"}}},'
        b'"error":null}'
    )
    with pytest.raises(BadRequestError) as info:
        decode_result(bad, dict, custom_id="c", batch_id="b")
    error = info.value
    assert (error.status_code, error.code, error.param, error.request_id) == (
        400,
        "invalid_value",
        "model",
        "req_9",
    )
    assert (error.custom_id, error.batch_id) == ("c", "b")


def test_encoding_refuses_what_json_cannot_carry() -> None:
    line = encode_line("id-1", "/v1/embeddings", {"model": "m", "input": "é"})
    assert line.endswith(b"\n")
    assert b'"custom_id":"id-1"' in line
    with pytest.raises(TypeError):
        encode_line("id-2", "/v1/embeddings", {"input": {1, 2}})
    with pytest.raises(TypeError):
        encode_line("id-3", "/v1/embeddings", {"input": float("inf")})


async def test_identity_headers_are_sent_on_every_call() -> None:
    seen: list[httpx.Request] = []
    http = scripted([httpx.Response(200, json={"data": [], "has_more": False})], seen)
    config = BatcherConfig(
        api_key="sk-h",
        base_url="http://127.0.0.1:1/v1",
        organization="org-1",
        project="proj-1",
        default_headers={"X-Team": "evals"},
    )
    await Wire(config, http).call_json("GET", "batches")
    headers = seen[0].headers
    assert headers["openai-organization"] == "org-1"
    assert headers["openai-project"] == "proj-1"
    assert headers["x-team"] == "evals"
    assert headers["user-agent"].startswith("autobatcher/")


@pytest.mark.parametrize(
    "line",
    [
        # the documented layout (fast path), compact and spaced
        b'{"id":"r1","custom_id":"c","response":{"status_code":200,"request_id":"q",'
        b'"body":{"a":[1,{"b":null}]}},"error":null}',
        b'{"id": "r1", "custom_id": "c", "response": {"status_code": 201, "request_id": null,'
        b' "body": {"a": [1, {"b": null}]}}, "error": null}',
        # other layouts take the full parse and must agree
        b'{"custom_id":"c","id":"r1","response":{"body":{"a":[1,{"b":null}]},"status_code":200}}',
        b'{"id":"r1","custom_id":"c","response":{"status_code":200,"request_id":"q",'
        b'"body":"{\\"a\\": [1, {\\"b\\": null}]}"},"error":null}',
    ],
)
def test_fast_and_full_decoding_agree(line: bytes) -> None:
    assert extract_custom_id(line) == "c"
    assert decode_result(line, dict, custom_id="c", batch_id="b") == {"a": [1, {"b": None}]}


def test_the_fast_path_never_takes_an_error_line() -> None:
    line = (
        b'{"id":"r1","custom_id":"c","response":{"status_code":429,"request_id":"q",'
        b'"body":{"error":{"message":"slow down"}}},"error":null}'
    )
    with pytest.raises(RateLimitError, match="slow down"):
        decode_result(line, dict, custom_id="c", batch_id="b")
