"""The Files and Batches endpoints over raw httpx: retries, typed errors, typed objects.

Every call goes through :meth:`Wire.call`, which applies the one retry policy
(:mod:`autobatcher._retry`) and translates httpx's errors once, into the tree of
:mod:`autobatcher._errors`, with messages that name what was asked of which server. The
Batch API answers come back as the attrs models of :mod:`autobatcher.types` (``Batch``,
``FileObject``); an answer that is not one (an HTML page, a JSON object without an ``id``)
raises :class:`APIResponseValidationError` saying what was expected and what came.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import attrs
import httpx

from ._config import BatcherConfig
from ._errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    make_status_error,
)
from ._events import BatchEvent, EventHub
from ._jsonl import LineSplitter
from ._providers import normalise_batch
from ._retry import RetryPolicy
from ._version import __version__
from .types import Batch, FileObject

__all__ = ["Checkpoint", "LineSink", "ResumeMark", "Wire", "maybe_sent"]

T = TypeVar("T")
logger = logging.getLogger("autobatcher")

#: Called with each complete result line (without its newline).
LineSink = Callable[[bytes], None]
#: Awaited with (lines seen so far, whether the file is done, where a later download may
#: resume by bytes, if it may) as a download goes.
Checkpoint = Callable[[int, bool, "ResumeMark | None"], Awaitable[None]]

_UPLOAD_CHUNK = 1 << 20


def decode_body(response: httpx.Response) -> object:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text


def _connection_reason(exc: httpx.TransportError) -> str:
    """The plain reason of a transport error (``connection refused``), without the noise."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the server"
        if isinstance(cause, socket.gaierror):
            return f"host name not resolved ({cause.strerror})"
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
        grouped = getattr(cause, "exceptions", None)  # one error per address tried
        if isinstance(grouped, tuple) and grouped and isinstance(grouped[0], BaseException):
            cause = grouped[0]
            continue
        cause = cause.__cause__ or cause.__context__
    text = str(exc) or type(exc).__name__
    return text[:1].lower() + text[1:]


def maybe_sent(error: APIError) -> bool:
    """Whether the call that raised ``error`` may have taken effect on the server.

    False only when every attempt was refused before anything was sent (a connection that
    could not be made), or the server answered with an error status: then a retry needs no
    look-up first.
    """
    return bool(getattr(error, "_autobatcher_maybe_sent", True))


class Wire:
    """HTTP client policy for the Batch API: one instance per batcher.

    Calls that are not idempotent take a ``reconcile`` callback: after an ambiguous failure (the
    request may have been processed) it looks for the effect before anything is sent again.
    """

    def __init__(
        self,
        config: BatcherConfig,
        http_client: httpx.AsyncClient | None = None,
        *,
        events: EventHub | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._config = config
        self.policy = policy or RetryPolicy(
            max_retries=config.max_retries, job_budget_seconds=config.job_error_budget_seconds
        )
        self._events = events or EventHub(config.event_hook)
        self._owns_client = http_client is None
        self._client = http_client or httpx.AsyncClient(
            timeout=config.timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )
        headers = {
            "Accept": "application/json",
            "User-Agent": f"autobatcher/{__version__}",
        }
        provider = config.capabilities
        self.provider = provider
        if config.api_key:
            headers[provider.auth_header] = f"{provider.auth_prefix}{config.api_key}"
        if config.organization:
            headers["OpenAI-Organization"] = config.organization
        if config.project:
            headers["OpenAI-Project"] = config.project
        headers.update(config.default_headers)
        self._headers = headers
        self._default_query: dict[str, Any] = dict(config.default_query)
        self._base = config.base_url
        #: a Range on a file download came back whole: the server ignores ranges
        self._ranges_ignored = False

    @property
    def http_client(self) -> httpx.AsyncClient:
        return self._client

    @property
    def base_url(self) -> str:
        return self._base

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
        policy = self.policy
        retries = policy.max_retries if max_retries is None else max_retries
        all_headers = {**self._headers, **(headers or {})}
        url = self.url(path)
        doing = f"{what} ({method} /{path.lstrip('/')})" if what else f"{method} /{path}"
        attempt = 0
        unsure = False
        started = anyio.current_time()
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
                error = APITimeoutError(
                    f"{self._base} did not answer in time: {doing} timed out ({type(exc).__name__})"
                )
                error.__cause__ = exc
                unsure = unsure or not isinstance(exc, httpx.ConnectTimeout)
            except httpx.TransportError as exc:
                error = APIConnectionError(
                    f"could not reach {self._base}: {_connection_reason(exc)} ({doing})"
                )
                error.__cause__ = exc
                unsure = unsure or not isinstance(exc, httpx.ConnectError)
            except APIError as exc:
                # raised by ``reconcile``: we still do not know, so we may not send again yet
                error = exc
            else:
                if response.is_success:
                    return parse(response)
                body = decode_body(response)
                error = make_status_error(
                    response.status_code,
                    body,
                    response=response,
                    request_id=response.headers.get("x-request-id"),
                )
                if not policy.response_is_retryable(response):
                    error._autobatcher_maybe_sent = unsure  # type: ignore[attr-defined]
                    raise error
                retry_headers = response.headers
                # A 429 was refused before any work; a 5xx/408/409 may have been processed.
                unsure = unsure or response.status_code != 429
            if attempt >= retries:
                error._autobatcher_maybe_sent = unsure  # type: ignore[attr-defined]
                raise error
            delay = policy.call_delay(attempt, retry_headers)
            attempt += 1
            self._events.emit(
                BatchEvent(
                    kind="retry",
                    detail=f"{doing} attempt {attempt}/{retries} in {delay:.2f}s: {error}",
                    elapsed=anyio.current_time() - started,
                )
            )
            await policy.sleep(delay)

    async def call_json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return await self.call(method, path, parse=_parse_json_object, **kwargs)

    # -- batches ------------------------------------------------------------------------------

    async def create_batch(
        self,
        body: Mapping[str, object],
        *,
        reconcile: Callable[[], Awaitable[Batch | None]] | None = None,
    ) -> Batch:
        return await self.call(
            "POST",
            "batches",
            parse=self._parse_batch,
            json_body=body,
            reconcile=reconcile,
            what="create batch",
        )

    async def retrieve_batch(self, batch_id: str) -> Batch:
        return await self.call(
            "GET", f"batches/{batch_id}", parse=self._parse_batch, what="retrieve batch"
        )

    async def cancel_batch(self, batch_id: str, *, max_retries: int | None = None) -> Batch:
        return await self.call(
            "POST",
            f"batches/{batch_id}/cancel",
            parse=self._parse_batch,
            what="cancel batch",
            max_retries=max_retries,
        )

    async def pages(
        self,
        path: str,
        params: Mapping[str, str | int],
        *,
        what: str,
        max_pages: int,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The items of a cursor-paged list (``data``, ``has_more``, ``after=<last id>``)."""
        after: str | None = None
        for _ in range(max_pages):
            query = dict(params)
            if after:
                query["after"] = after
            page = await self.call("GET", path, params=query, parse=_parse_page, what=what)
            data = page.get("data")
            items = (
                [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
            )
            yield items
            if not page.get("has_more") or not items:
                return
            last_id = items[-1].get("id")
            if not isinstance(last_id, str) or not last_id:
                return
            after = last_id

    async def find_batch(
        self, metadata_key: str, value: str, *, not_older_than: float, max_pages: int = 10
    ) -> Batch | None:
        """Look a batch up by one of its metadata pairs among the newest batches.

        Stops at batches created before ``not_older_than`` (epoch seconds).
        """
        async for items in self.pages(
            "batches", {"limit": 100}, what="list batches", max_pages=max_pages
        ):
            items = [normalise_batch(item, self.provider) for item in items]
            for item in items:
                metadata = item.get("metadata")
                if isinstance(metadata, dict) and metadata.get(metadata_key) == value:
                    return _batch_from(item)
            created = items[-1].get("created_at") if items else None
            if isinstance(created, int | float) and created < not_older_than:
                return None
        return None

    def _parse_batch(self, response: httpx.Response) -> Batch:
        data = normalise_batch(_parse_json_object(response), self.provider)
        if not _has_id(data):
            raise _unexpected(
                response, "a Batch object with an id", f"a JSON object with keys {sorted(data)[:8]}"
            )
        return _batch_from(data)

    # -- files --------------------------------------------------------------------------------

    async def upload_batch_file(
        self,
        filename: str,
        lines: Sequence[bytes],
        nbytes: int,
        *,
        reconcile: Callable[[], Awaitable[FileObject | None]] | None = None,
    ) -> FileObject:
        """Upload ``lines`` as one JSONL file (the provider's batch purpose), streamed.

        The multipart body is produced chunk by chunk from the already-encoded lines, so a
        200 MB file is never joined in one piece and the event loop never stalls on it. Where
        the provider caps the number of files, the file is uploaded with an expiry.
        """
        boundary = f"autobatcher-{random.getrandbits(96):024x}"
        fields = {"purpose": self.provider.upload_purpose}
        expiry = self.provider.file_expiry_seconds
        if expiry is not None:
            fields["expires_after[anchor]"] = "created_at"
            fields["expires_after[seconds]"] = str(expiry)
        head = (
            "".join(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                for name, value in fields.items()
            )
            + f"--{boundary}\r\n"
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
            parse=_parse_file,
            content=body,
            headers=headers,
            reconcile=reconcile,
            what="upload batch file",
        )

    async def find_file(
        self, filename: str, nbytes: int, *, max_pages: int = 5
    ) -> FileObject | None:
        """Look for an uploaded batch file by name and size among the newest files."""
        async for items in self.pages(
            "files",
            {"purpose": self.provider.upload_purpose, "limit": 100, "order": "desc"},
            what="list files",
            max_pages=max_pages,
        ):
            for item in items:
                if item.get("filename") == filename and item.get("bytes") in (nbytes, None):
                    return _file_from(item)
        return None

    async def retrieve_file(self, file_id: str) -> FileObject:
        return await self.call("GET", f"files/{file_id}", parse=_parse_file, what="retrieve file")

    async def delete_file(self, file_id: str) -> None:
        await self.call_json("DELETE", f"files/{file_id}", what="delete file")

    async def stream_lines(
        self,
        file_id: str,
        sink: LineSink,
        *,
        offset: int = 0,
        server_offset: bool = False,
        checkpoint: Checkpoint | None = None,
        resume: ResumeMark | None = None,
    ) -> tuple[int, bool]:
        """Feed each line of a file's content to ``sink``; returns (lines seen, more to come).

        ``checkpoint(lines seen, final, mark)`` is awaited after each chunk's lines were sunk
        (and once more, final, at the end): the journal commits what it collected there, and
        ``mark``, which lets a download in another process go on from there by bytes
        (``resume``; ignored unless it is of this file at ``offset``).

        ``offset`` lines are skipped (by the server with ``?offset=`` when ``server_offset``,
        by us otherwise). ``more to come`` is the server's ``X-Incomplete`` (partial results of
        a running batch): then a trailing line without its newline is not consumed yet.

        A broken download (``peer closed connection`` half-way through a big file) resumes
        where it stopped, within ``max_retries`` breaks in a row that delivered no new line;
        no line is sunk twice or lost, and the file is never held whole in memory. How it
        resumes, cheapest first (see :class:`_Download`): a ``Range`` request from the end of
        the last whole line read, when the content was announced complete (a growing partial
        file is never resumed by bytes); the server's line ``offset`` when it has one and
        ignores ranges; otherwise the bytes already read are skipped in a new full answer, if
        that answer is the same content (ETag, length), else the lines already seen are.
        """
        download = _Download(seen=offset, skip=0 if server_offset else offset)
        if resume is not None and resume.file_id == file_id and resume.seen == offset:
            download = resume.download()
        attempt = 0
        while True:
            seen_before = download.seen
            try:
                return await self._stream_once(file_id, download, sink, server_offset, checkpoint)
            except _ResumeElse as change:
                logger.info("download of %s: %s; resuming another way", file_id, change)
                continue
            except _StreamBroken as broken:
                error: APIError = broken.error
                if download.seen > seen_before:
                    # it got further: a big file on a link that breaks every few hundred MB
                    # still arrives (lines only advance, so this ends)
                    attempt = 0
            except APIStatusError as exc:
                if not self.policy.is_transient(exc):
                    raise
                error = exc
            if attempt >= self.policy.max_retries:
                raise error
            delay = self.policy.call_delay(attempt)
            attempt += 1
            self._events.emit(
                BatchEvent(kind="retry", detail=f"download {file_id} attempt {attempt}: {error}")
            )
            await self.policy.sleep(delay)

    async def _stream_once(
        self,
        file_id: str,
        download: _Download,
        sink: LineSink,
        server_offset: bool,
        checkpoint: Checkpoint | None,
    ) -> tuple[int, bool]:
        """One GET of the content, resuming ``download`` as it stands; raises
        :class:`_StreamBroken` when the connection breaks (``download`` holds how far it got),
        :class:`_ResumeElse` when the planned way of resuming turned out not to fit."""
        known = download.content
        resuming = known is not None and download.position > 0 and not download.bytes_unsure
        headers = dict(self._headers)
        ranged = (
            resuming
            and known is not None
            and known.complete
            and known.ranges
            and not (server_offset and self._ranges_ignored)
        )
        if known is not None and ranged:
            # from the newline that ends the last whole line: the server shows us where a
            # line ends, so content that changed under us cannot go unnoticed
            range_start = download.position - 1
            headers["Range"] = f"bytes={range_start}-"
            if known.encoded:  # our offsets count decoded bytes: ask for the plain bytes
                headers["Accept-Encoding"] = "identity"
            elif known.etag is not None and not known.etag.startswith("W/"):
                headers["If-Range"] = known.etag
            query_offset = known.offset
        elif known is not None and resuming and not server_offset:
            query_offset = known.offset  # the whole answer again, skipping what was read
        else:
            # a fresh answer: from the server's line offset, or from the top skipping lines
            query_offset = download.seen if server_offset else 0
            resuming = False
        params = {"offset": query_offset} if query_offset else {}
        try:
            async with self._client.stream(
                "GET",
                self.url(f"files/{file_id}/content"),
                params={**self._default_query, **params},
                headers=headers,
            ) as response:
                if ranged and response.status_code == 416:
                    download.bytes_unsure = True
                    raise _ResumeElse("the server says the range is past the end")
                if not response.is_success:
                    await response.aread()
                    raise make_status_error(
                        response.status_code,
                        decode_body(response),
                        response=response,
                        request_id=response.headers.get("x-request-id"),
                    )
                incomplete = response.headers.get("x-incomplete", "").lower() == "true"
                expect_newline = False
                skip_bytes = 0
                if ranged and response.status_code == 206:
                    assert known is not None
                    problem = _range_problem(response, known, range_start)
                    if problem is not None:
                        download.bytes_unsure = True
                        raise _ResumeElse(problem)
                    expect_newline = True
                else:
                    if ranged and server_offset:
                        # it ignores ranges: its line offset costs less than the bytes again
                        self._ranges_ignored = True
                        raise _ResumeElse("the server ignored the Range")
                    content = _Content.of(response, query_offset)
                    if resuming and known is not None and content.same_as(known):
                        skip_bytes = download.position - 1
                        expect_newline = True
                    else:
                        download.position = 0
                        download.skip = download.seen - query_offset
                    download.content = content
                download.bytes_unsure = False
                return await self._read_lines(
                    file_id,
                    response,
                    download,
                    sink,
                    checkpoint,
                    skip_bytes=skip_bytes,
                    expect_newline=expect_newline,
                    incomplete=incomplete,
                )
        except httpx.TimeoutException as exc:
            raise _StreamBroken(
                APITimeoutError(f"{self._base} did not answer in time: download of {file_id}")
            ) from exc
        except httpx.TransportError as exc:
            raise _StreamBroken(
                APIConnectionError(
                    f"could not reach {self._base}: {_connection_reason(exc)} "
                    f"(download of {file_id})"
                )
            ) from exc

    @staticmethod
    async def _read_lines(
        file_id: str,
        response: httpx.Response,
        download: _Download,
        sink: LineSink,
        checkpoint: Checkpoint | None,
        *,
        skip_bytes: int,
        expect_newline: bool,
        incomplete: bool,
    ) -> tuple[int, bool]:
        """Split the body into lines for ``sink``, from ``download.position`` on: the first
        ``skip_bytes`` bytes are what was read before, and then (``expect_newline``) the
        newline that ended the last line read must come."""
        splitter = LineSplitter()
        start = download.position
        fed = 0
        async for chunk in response.aiter_bytes():
            if skip_bytes:
                if len(chunk) <= skip_bytes:
                    skip_bytes -= len(chunk)
                    continue
                chunk = chunk[skip_bytes:]
                skip_bytes = 0
            if expect_newline:
                if not chunk:
                    continue
                if chunk[0] != _NEWLINE:
                    download.bytes_unsure = True
                    raise _ResumeElse("the content changed: no line ends where the last one did")
                chunk = chunk[1:]
                expect_newline = False
            lines = splitter.feed(chunk)
            fed += len(chunk)
            skip = download.skip
            seen = download.seen
            for line in lines:
                if not line or line.isspace():
                    continue
                if skip:
                    skip -= 1
                    continue
                seen += 1
                sink(line)
            download.skip = skip
            download.seen = seen
            download.position = start + fed - splitter.pending
            if checkpoint is not None:
                await checkpoint(seen, False, ResumeMark.of(file_id, download))
        if skip_bytes or expect_newline:
            download.bytes_unsure = True
            raise _ResumeElse("the content is shorter than what was read before")
        pending = splitter.tail()
        if pending.strip() and not incomplete:
            if download.skip:
                download.skip -= 1
            else:
                download.seen += 1
                sink(pending)
        if checkpoint is not None:
            await checkpoint(download.seen, True, None)
        return download.seen, incomplete


_NEWLINE = ord("\n")


@attrs.frozen
class _Content:
    """What one whole answer for a download said about the content it carries."""

    offset: int  # the line ``?offset=`` asked (0: none)
    etag: str | None
    length: int | None  # of the plain bytes, when the server gave it
    encoded: bool  # sent compressed: our byte offsets count the decoded bytes
    complete: bool  # not a growing file of partial results
    ranges: bool  # the server did not rule ranges out (``Accept-Ranges: none``)

    @classmethod
    def of(cls, response: httpx.Response, offset: int) -> _Content:
        headers = response.headers
        encoded = headers.get("content-encoding", "identity").lower() not in ("", "identity")
        length_text = headers.get("content-length", "")
        return cls(
            offset=offset,
            etag=headers.get("etag"),
            length=int(length_text) if length_text.isdigit() and not encoded else None,
            encoded=encoded,
            complete=headers.get("x-incomplete", "").lower() != "true",
            ranges=headers.get("accept-ranges", "").lower() != "none",
        )

    def same_as(self, other: _Content) -> bool:
        """Whether two answers may be taken for the same bytes (nothing says otherwise)."""
        return (
            self.complete
            and other.complete
            and self.encoded == other.encoded
            and self.offset == other.offset
            and (self.etag is None or other.etag is None or self.etag == other.etag)
            and (self.length is None or other.length is None or self.length == other.length)
        )


@attrs.define
class _Download:
    """How far one file download got, across the attempts it takes.

    ``seen`` lines were accounted for (sunk, or skipped because the caller had them); ``skip``
    lines are still to be skipped in ``content`` (when no server offset skipped them);
    ``position`` is the byte in ``content`` just after the last whole line read. Byte
    resumption needs both ``content`` (the answer the position counts in) and a position;
    ``bytes_unsure`` says the last try found the position no longer fits the content.
    """

    seen: int
    skip: int
    position: int = 0
    content: _Content | None = None
    bytes_unsure: bool = False


@attrs.frozen(kw_only=True)
class ResumeMark:
    """Where a download stood at a checkpoint, kept so that another process can go on from
    there by bytes (a ``Range`` from ``position``, checked as any resumption is)."""

    file_id: str
    seen: int
    skip: int
    position: int
    offset: int
    etag: str | None
    length: int | None
    encoded: bool
    ranges: bool

    @classmethod
    def of(cls, file_id: str, download: _Download) -> ResumeMark | None:
        """The mark of ``download`` now; ``None`` when its bytes could not be resumed (a
        growing partial file, nothing read yet)."""
        content = download.content
        if content is None or not content.complete or download.position <= 0:
            return None
        return cls(
            file_id=file_id,
            seen=download.seen,
            skip=download.skip,
            position=download.position,
            offset=content.offset,
            etag=content.etag,
            length=content.length,
            encoded=content.encoded,
            ranges=content.ranges,
        )

    def download(self) -> _Download:
        content = _Content(
            offset=self.offset,
            etag=self.etag,
            length=self.length,
            encoded=self.encoded,
            complete=True,
            ranges=self.ranges,
        )
        return _Download(seen=self.seen, skip=self.skip, position=self.position, content=content)

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: object) -> ResumeMark | None:
        """The mark in ``data`` (from a journal); ``None`` if it is not one."""
        if not isinstance(data, dict):
            return None
        try:
            mark = cls(**data)
        except TypeError:
            return None
        valid = (
            isinstance(mark.file_id, str)
            and all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0
                for n in (mark.seen, mark.skip, mark.position, mark.offset)
            )
            and (mark.etag is None or isinstance(mark.etag, str))
            and (mark.length is None or isinstance(mark.length, int))
            and isinstance(mark.encoded, bool)
            and isinstance(mark.ranges, bool)
        )
        return mark if valid and mark.position > 0 else None


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def _range_problem(response: httpx.Response, known: _Content, start: int) -> str | None:
    """Why a ``206`` is not the rest of ``known`` from byte ``start``; ``None`` if it is."""
    headers = response.headers
    match = _CONTENT_RANGE.match(headers.get("content-range", ""))
    if match is None:
        return f"the 206 has no usable Content-Range ({headers.get('content-range')!r})"
    if int(match.group(1)) != start:
        return f"the 206 starts at byte {match.group(1)}, not {start}"
    total = match.group(3)
    if known.length is not None and total != "*" and int(total) != known.length:
        return f"the file is {total} bytes now, not {known.length}"
    etag = headers.get("etag")
    if not known.encoded and known.etag is not None and etag is not None and etag != known.etag:
        return "the file's ETag changed"
    if headers.get("content-encoding", "identity").lower() not in ("", "identity"):
        return "the 206 came compressed"
    return None


class _StreamBroken(Exception):
    def __init__(self, error: APIError) -> None:
        super().__init__(str(error))
        self.error = error


class _ResumeElse(Exception):
    """The way a download was to resume does not fit (the server ignored the Range, or the
    content is not what was read before): resume another way, at once."""


def _unexpected(response: httpx.Response, expected: str, got: str) -> APIResponseValidationError:
    request = response.request
    return APIResponseValidationError(
        f"{request.method} {request.url} answered {response.status_code} with {got}; "
        f"expected {expected} (is base_url an OpenAI-compatible API?)",
        status_code=response.status_code,
        response=response,
        request=request,
    )


def _parse_json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise _unexpected(response, "a JSON object", f"{kind} {response.text[:120]!r}") from None
    if not isinstance(data, dict):
        raise _unexpected(response, "a JSON object", f"a JSON {type(data).__name__}")
    return data


def _parse_page(response: httpx.Response) -> dict[str, Any]:
    """A list page; a bare JSON array (some servers answer lists so) is one last page."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if isinstance(data, list):
        return {"data": data, "has_more": False}
    return _parse_json_object(response)


def _has_id(data: Mapping[str, Any]) -> bool:
    value = data.get("id")
    return isinstance(value, str) and bool(value)


def _batch_from(data: dict[str, Any]) -> Batch:
    return Batch.from_dict(data)


def _file_from(data: dict[str, Any]) -> FileObject:
    return FileObject.from_dict(data)


def _parse_file(response: httpx.Response) -> FileObject:
    data = _parse_json_object(response)
    if not _has_id(data):
        raise _unexpected(
            response, "a File object with an id", f"a JSON object with keys {sorted(data)[:8]}"
        )
    return _file_from(data)
