"""The Files and Batches endpoints over raw httpx: retries, typed errors, streamed transfers."""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import httpx

from ._config import BatcherConfig
from ._errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    make_status_error,
)
from ._events import BatchEvent, emit
from ._version import __version__

__all__ = ["LineSink", "Wire"]

T = TypeVar("T")

#: Called with each complete result line (without its newline).
LineSink = Callable[[bytes], None]

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_INITIAL_BACKOFF = 0.5
_MAX_BACKOFF = 8.0
_MAX_RETRY_AFTER = 60.0
_UPLOAD_CHUNK = 1 << 20


def _retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Honour ``retry-after-ms`` then ``retry-after`` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return float(raw_ms) / 1000.0
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        return float(email.utils.mktime_tz(parsed)) - time.time()


def _backoff(attempt: int, headers: httpx.Headers | None) -> float:
    if headers is not None:
        told = _retry_after_seconds(headers)
        if told is not None and 0 <= told <= _MAX_RETRY_AFTER:
            return told
    delay = min(_INITIAL_BACKOFF * (2.0**attempt), _MAX_BACKOFF)
    return delay * (1.0 - 0.25 * random.random())


def _should_retry_status(response: httpx.Response) -> bool:
    hint = response.headers.get("x-should-retry")
    if hint == "true":
        return True
    if hint == "false":
        return False
    return response.status_code in _RETRYABLE_STATUS or response.status_code >= 500


def _decode_body(response: httpx.Response) -> object:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text


class Wire:
    """HTTP client policy for the Batch API: one instance per batcher.

    Every call retries connect errors, timeouts, 408/409/429 and 5xx with exponential backoff and
    jitter (bounded by ``max_retries``), honours ``retry-after-ms`` / ``retry-after`` /
    ``x-should-retry``, and raises the typed error of :mod:`autobatcher._errors` otherwise.
    Calls that are not idempotent take a ``reconcile`` callback: after an ambiguous failure (the
    request may have been processed) it looks for the effect before anything is sent again.
    """

    def __init__(
        self,
        config: BatcherConfig,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._config = config
        self._owns_client = http_client is None
        self._client = http_client or httpx.AsyncClient(
            timeout=config.timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )
        headers = {
            "Accept": "application/json",
            "User-Agent": f"autobatcher/{__version__}",
        }
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        if config.organization:
            headers["OpenAI-Organization"] = config.organization
        if config.project:
            headers["OpenAI-Project"] = config.project
        headers.update(config.default_headers)
        self._headers = headers
        self._default_query: dict[str, Any] = dict(config.default_query)
        self._base = config.base_url

    @property
    def http_client(self) -> httpx.AsyncClient:
        return self._client

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def url(self, path: str) -> str:
        return f"{self._base}/{path.lstrip('/')}"

    # -- the retry loop ---------------------------------------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        *,
        parse: Callable[[httpx.Response], T],
        json_body: object = None,
        params: Mapping[str, str | int] | None = None,
        content: Callable[[], AsyncIterator[bytes]] | None = None,
        headers: Mapping[str, str] | None = None,
        reconcile: Callable[[], Awaitable[T | None]] | None = None,
        what: str = "",
        max_retries: int | None = None,
    ) -> T:
        retries = self._config.max_retries if max_retries is None else max_retries
        all_headers = {**self._headers, **(headers or {})}
        url = self.url(path)
        attempt = 0
        unsure = False
        started = time.monotonic()
        while True:
            error: APIError
            retry_headers: httpx.Headers | None = None
            try:
                if unsure and reconcile is not None:
                    found = await reconcile()
                    if found is not None:
                        return found
                    unsure = False
                response = await self._client.request(
                    method,
                    url,
                    json=json_body,
                    params={**self._default_query, **params} if params else self._default_query,
                    content=content() if content is not None else None,
                    headers=all_headers,
                )
            except httpx.TimeoutException as exc:
                error = APITimeoutError(f"{what or path}: timed out ({type(exc).__name__})")
                error.__cause__ = exc
                unsure = unsure or not isinstance(exc, httpx.ConnectTimeout)
            except httpx.TransportError as exc:
                error = APIConnectionError(f"{what or path}: connection error: {exc!r}")
                error.__cause__ = exc
                unsure = unsure or not isinstance(exc, httpx.ConnectError)
            except APIError as exc:
                # raised by ``reconcile``: we still do not know, so we may not send again yet
                error = exc
            else:
                if response.is_success:
                    return parse(response)
                body = _decode_body(response)
                error = make_status_error(
                    response.status_code,
                    body,
                    response=response,
                    request_id=response.headers.get("x-request-id"),
                )
                if not _should_retry_status(response):
                    raise error
                retry_headers = response.headers
                # A 429 was refused before any work; a 5xx/408/409 may have been processed.
                unsure = unsure or response.status_code != 429
            if attempt >= retries:
                raise error
            delay = _backoff(attempt, retry_headers)
            attempt += 1
            emit(
                self._config.event_hook,
                BatchEvent(
                    kind="retry",
                    detail=f"{method} {path} attempt {attempt}/{retries} in {delay:.2f}s: {error}",
                    elapsed=time.monotonic() - started,
                ),
            )
            await anyio.sleep(delay)

    async def call_json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return await self.call(method, path, parse=_parse_json_object, **kwargs)

    # -- files --------------------------------------------------------------------------------

    async def upload_batch_file(
        self,
        filename: str,
        lines: Sequence[bytes],
        nbytes: int,
        *,
        reconcile: Callable[[], Awaitable[dict[str, Any] | None]] | None = None,
    ) -> dict[str, Any]:
        """Upload ``lines`` as one JSONL file with purpose ``batch``, streamed from memory.

        The multipart body is produced chunk by chunk from the already-encoded lines, so a
        200 MB file is never joined in one piece and the event loop never stalls on it.
        """
        boundary = f"autobatcher-{random.getrandbits(96):024x}"
        head = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="purpose"\r\n\r\n'
            f"batch\r\n--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        async def body() -> AsyncIterator[bytes]:
            yield head
            group: list[bytes] = []
            size = 0
            for line in lines:
                group.append(line)
                size += len(line)
                if size >= _UPLOAD_CHUNK:
                    yield b"".join(group)
                    group.clear()
                    size = 0
                    await anyio.lowlevel.checkpoint()
            if group:
                yield b"".join(group)
            yield tail

        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + nbytes + len(tail)),
        }
        return await self.call(
            "POST",
            "files",
            parse=_parse_json_object,
            content=body,
            headers=headers,
            reconcile=reconcile,
            what="upload batch file",
        )

    async def find_file(
        self, filename: str, nbytes: int, *, pages: int = 5
    ) -> dict[str, Any] | None:
        """Look for an uploaded batch file by name and size among the newest files."""
        after: str | None = None
        for _ in range(pages):
            params: dict[str, str | int] = {"purpose": "batch", "limit": 100, "order": "desc"}
            if after:
                params["after"] = after
            page = await self.call_json("GET", "files", params=params, what="list files")
            data = page.get("data") or []
            for item in data:
                if (
                    isinstance(item, dict)
                    and item.get("filename") == filename
                    and item.get("bytes") in (nbytes, None)
                ):
                    return item
            if not page.get("has_more") or not data:
                return None
            last = data[-1]
            after = last.get("id") if isinstance(last, dict) else None
            if not after:
                return None
        return None

    async def delete_file(self, file_id: str) -> None:
        await self.call_json("DELETE", f"files/{file_id}", what="delete file")

    async def stream_lines(
        self,
        file_id: str,
        sink: LineSink,
        *,
        offset: int = 0,
        server_offset: bool = False,
    ) -> tuple[int, bool]:
        """Feed each line of a file's content to ``sink``; returns (lines seen, more to come).

        ``offset`` lines are skipped (by the server with ``?offset=`` when ``server_offset``,
        by us otherwise). A broken download is resumed where it stopped, within ``max_retries``.
        ``more to come`` is the server's ``X-Incomplete`` (partial results of a running batch):
        then a trailing line without its newline is not consumed yet.
        """
        seen = offset
        attempt = 0
        while True:
            try:
                return await self._stream_once(file_id, sink, seen, server_offset)
            except _StreamBroken as broken:
                seen = broken.seen
                error: APIError = broken.error
            except APIStatusError as exc:
                if not _should_retry_status_code(exc):
                    raise
                error = exc
            if attempt >= self._config.max_retries:
                raise error
            delay = _backoff(attempt, None)
            attempt += 1
            emit(
                self._config.event_hook,
                BatchEvent(kind="retry", detail=f"download {file_id} attempt {attempt}: {error}"),
            )
            await anyio.sleep(delay)

    async def _stream_once(
        self, file_id: str, sink: LineSink, seen: int, server_offset: bool
    ) -> tuple[int, bool]:
        params: dict[str, int] = {}
        skip = seen
        if server_offset and seen:
            params["offset"] = seen
            skip = 0
        try:
            async with self._client.stream(
                "GET",
                self.url(f"files/{file_id}/content"),
                params={**self._default_query, **params},
                headers=self._headers,
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise make_status_error(
                        response.status_code,
                        _decode_body(response),
                        response=response,
                        request_id=response.headers.get("x-request-id"),
                    )
                incomplete = response.headers.get("x-incomplete", "").lower() == "true"
                pending = b""
                async for chunk in response.aiter_bytes():
                    pieces = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
                    pending = pieces.pop()
                    for line in pieces:
                        if not line or line.isspace():
                            continue
                        if skip:
                            skip -= 1
                            continue
                        seen += 1
                        sink(line)
                if pending.strip() and not incomplete:
                    if skip:
                        skip -= 1
                    else:
                        seen += 1
                        sink(pending)
                return seen, incomplete
        except httpx.TimeoutException as exc:
            raise _StreamBroken(seen, APITimeoutError(f"download {file_id}: timed out")) from exc
        except httpx.TransportError as exc:
            raise _StreamBroken(
                seen, APIConnectionError(f"download {file_id}: connection error: {exc!r}")
            ) from exc


def _should_retry_status_code(error: APIStatusError) -> bool:
    if error.response is not None:
        return _should_retry_status(error.response)
    return error.status_code in _RETRYABLE_STATUS or error.status_code >= 500


class _StreamBroken(Exception):
    def __init__(self, seen: int, error: APIError) -> None:
        super().__init__(str(error))
        self.seen = seen
        self.error = error


def _parse_json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIStatusError(
            f"expected a JSON object, got {response.text[:200]!r}",
            status_code=response.status_code,
            response=response,
        ) from exc
    if not isinstance(data, dict):
        raise APIStatusError(
            f"expected a JSON object, got {type(data).__name__}",
            status_code=response.status_code,
            response=response,
        )
    return data
