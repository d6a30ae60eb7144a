"""The emulator's ASGI layer: a gateway for faults and auth in front of starlette routes."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._model import ENDPOINTS, error_body

if TYPE_CHECKING:
    from ._emulator import Emulator

__all__ = ["ASGIApp", "build_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CHUNK = 1 << 20
_ID_PARENTS = ("files", "batches")


def _route_key(method: str, path: str) -> str:
    parts = path.split("/")
    # /v1/files/{id}[/content], /v1/batches/{id}[/cancel]
    if len(parts) >= 4 and parts[2] in _ID_PARENTS and parts[3]:
        parts[3] = "{id}"
    return f"{method} {'/'.join(parts)}"


async def _discard(_message: Message) -> None:
    return None


async def _drain(receive: Receive) -> None:
    """Read the request body before answering early, so the client sees a clean reply."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _send_json(
    send: Send, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    raw = json.dumps(body).encode()
    header_list = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
    ]
    header_list += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": header_list})
    await send({"type": "http.response.body", "body": raw})


async def _drop_connection(send: Send) -> None:
    # Promise a body, send part of it and stop: the server closes the connection and the
    # client sees it broken mid-response (it cannot tell whether the request took effect).
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"', "more_body": True})


class _Gateway:
    """Counts /v1 calls, injects connection-level faults, checks the bearer key."""

    def __init__(self, emulator: Emulator, app: ASGIApp) -> None:
        self._emulator = emulator
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        prefix = self._emulator.quirks.path_prefix
        if prefix and scope["type"] == "http":
            # The API lives under the prefix (Azure's and Groq's /openai/v1); the bare /v1
            # paths are not there, as upstream.
            if path.startswith(prefix + "/v1"):
                path = path[len(prefix) :]
                scope = {**scope, "path": path, "raw_path": path.encode()}
            elif path == "/v1" or path.startswith("/v1/"):
                await _drain(receive)
                await _send_json(send, 404, error_body(404, "Resource not found."))
                return
        if scope["type"] != "http" or not (path == "/v1" or path.startswith("/v1/")):
            await self._app(scope, receive, send)
            return
        emulator = self._emulator
        config = emulator.config
        emulator.count_call(_route_key(scope["method"], path))
        faulty = config.drop_rate or config.rate_limit_rate or config.error_rate
        if faulty and (
            config.fault_paths is None or any(path.startswith(p) for p in config.fault_paths)
        ):
            draw = emulator.fault_draw()
            if draw < config.drop_rate:
                emulator.count_fault("drop")
                if config.drop_after_processing:
                    await self._authorized(scope, receive, _discard)
                await _drop_connection(send)
                return
            draw -= config.drop_rate
            if draw < config.rate_limit_rate:
                emulator.count_fault("rate_limit")
                await _drain(receive)
                seconds = config.retry_after_seconds
                await _send_json(
                    send,
                    429,
                    error_body(
                        429,
                        "Rate limit reached (injected). Please try again later.",
                        code="rate_limit_exceeded",
                    ),
                    {"retry-after": f"{seconds:g}", "retry-after-ms": str(int(seconds * 1000))},
                )
                return
            draw -= config.rate_limit_rate
            if draw < config.error_rate:
                status = emulator.fault_choice(config.error_statuses)
                emulator.count_fault(f"status_{status}")
                await _drain(receive)
                headers = None
                if config.retry_after_on_errors:
                    seconds = config.retry_after_seconds
                    headers = {
                        "retry-after": f"{seconds:g}",
                        "retry-after-ms": str(int(seconds * 1000)),
                    }
                await _send_json(
                    send,
                    status,
                    error_body(status, f"The server had an error (injected {status})."),
                    headers,
                )
                return
        await self._authorized(scope, receive, send)

    async def _authorized(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self._emulator.config.api_key
        if key is not None:
            header = self._emulator.quirks.auth_header
            expected = key.encode() if header == "api-key" else b"Bearer " + key.encode()
            wanted = header.encode()
            given = b""
            for name, value in scope.get("headers", ()):
                if name == wanted:
                    given = value
                    break
            if not hmac.compare_digest(given, expected):
                await _drain(receive)
                await _send_json(
                    send,
                    401,
                    error_body(
                        401,
                        "Incorrect API key provided. You can find your API key in your "
                        "emulator configuration.",
                        code="invalid_api_key",
                    ),
                )
                return
        await self._app(scope, receive, send)


def _int_param(request: Request, name: str, default: int | None, low: int = 0) -> int | None:
    from ._emulator import ApiError

    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"Invalid '{name}': expected an integer.", param=name) from None
    if value < low:
        raise ApiError(400, f"Invalid '{name}': must be >= {low}.", param=name)
    return value


async def _json_body(request: Request) -> Any:
    from ._emulator import ApiError

    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly.)",
        ) from None


def _form_expiry(anchor: object, seconds: object) -> float | None:
    """The ``expires_after[anchor]`` / ``expires_after[seconds]`` form fields of an upload."""
    from ._emulator import ApiError

    if anchor is None and seconds is None:
        return None
    try:
        value = float(seconds) if isinstance(seconds, str) else None
    except ValueError:
        value = None
    if anchor != "created_at" or value is None or value <= 0:
        raise ApiError(
            400,
            "Invalid 'expires_after': expected anchor 'created_at' and a positive number of "
            "seconds.",
            param="expires_after",
        )
    return value


def _byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The one byte range ``[start, stop)`` a ``Range`` header asks of ``size`` bytes;
    ``None`` to ignore it (absent, malformed, several ranges: a server may answer those
    whole), ``"unsatisfiable"`` when it starts at or past the end."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first:  # a suffix: the last N bytes
            count = int(last)
            if count <= 0 or size == 0:
                return "unsatisfiable"
            return max(size - count, 0), size
        start = int(first)
        stop = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size:
        return "unsatisfiable"
    if stop <= start:
        return None
    return start, min(stop, size)


def _byte_slices(pieces: list[bytes], start: int, stop: int) -> Iterator[bytes | memoryview]:
    """Bytes ``[start, stop)`` of the concatenated ``pieces`` in chunks of about ``_CHUNK``,
    without joining the whole."""
    buffer: list[bytes | memoryview] = []
    buffered = 0
    position = 0
    for piece in pieces:
        end = position + len(piece)
        low = max(start - position, 0)
        high = min(stop, end) - position
        position = end
        if high <= low:
            if position >= stop:
                break
            continue
        view = memoryview(piece)
        while low < high:
            take = min(high - low, _CHUNK - buffered)
            buffer.append(piece if take == len(piece) else view[low : low + take])
            buffered += take
            low += take
            if buffered >= _CHUNK:
                yield buffer[0] if len(buffer) == 1 else b"".join(buffer)
                buffer, buffered = [], 0
    if buffer:
        yield buffer[0] if len(buffer) == 1 else b"".join(buffer)


class _FileContent(Response):
    """A file download: bytes ``[start, stop)`` of the lines, streamed; cut off mid-body when
    the emulator is set to drop downloads (``content_drop_after_bytes``)."""

    def __init__(
        self,
        emulator: Emulator,
        pieces: list[bytes],
        start: int,
        stop: int,
        status: int,
        headers: dict[str, str],
        media_type: str,
    ) -> None:
        self.status_code = status
        self.background = None
        self.media_type = media_type
        self._emulator = emulator
        self._pieces = pieces
        self._start = start
        self._stop = stop
        all_headers = {**headers, "content-type": media_type, "content-length": str(stop - start)}
        self.raw_headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in all_headers.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        emulator = self._emulator
        length = self._stop - self._start
        if scope.get("method") == "HEAD":
            length = 0
        drop_at = emulator.content_drop_point()
        dropping = drop_at is not None and drop_at < length
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        stop = self._start + (drop_at if dropping and drop_at is not None else length)
        for chunk in _byte_slices(self._pieces, self._start, stop):
            emulator.count_content_bytes(len(chunk))
            await send({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
        if dropping:
            emulator.count_content_drop()
            return  # the body stays unfinished: the server closes the connection mid-file
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def build_app(emulator: Emulator) -> ASGIApp:
    """The emulator's ASGI application."""
    from ._emulator import ApiError

    def created() -> int:
        return 201 if emulator.config.flavour == "doubleword" else 200

    async def upload_file(request: Request) -> Response:
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            purpose = form.get("purpose")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "Missing required parameter: 'file'.", param="file")
            if not isinstance(purpose, str):
                raise ApiError(400, "Missing required parameter: 'purpose'.", param="purpose")
            content = await upload.read()
            filename = upload.filename or "upload.jsonl"
            expires_after = _form_expiry(
                form.get("expires_after[anchor]"), form.get("expires_after[seconds]")
            )
        record = emulator.upload(filename, purpose, content, expires_after_seconds=expires_after)
        return JSONResponse(emulator.file_dict(record), status_code=created())

    async def list_files(request: Request) -> Response:
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, "Invalid 'order': expected 'asc' or 'desc'.", param="order")
        limit = _int_param(request, "limit", 10_000, low=1)
        page = emulator.list_files(
            purpose=request.query_params.get("purpose"),
            after=request.query_params.get("after"),
            limit=limit or 10_000,
            order=order,
        )
        page["data"] = [emulator.file_dict(f) for f in page["data"]]
        return JSONResponse(page)

    async def get_file(request: Request) -> Response:
        return JSONResponse(emulator.file_dict(emulator.get_file(request.path_params["file_id"])))

    async def delete_file(request: Request) -> Response:
        return JSONResponse(emulator.delete_file(request.path_params["file_id"]))

    async def file_content(request: Request) -> Response:
        offset = _int_param(request, "offset", None)
        if offset is None:
            offset = _int_param(request, "skip", 0)
        limit = _int_param(request, "limit", None)
        file_id = request.path_params["file_id"]
        lines, incomplete, last_line = emulator.file_content(
            file_id, offset=offset or 0, limit=limit
        )
        doubleword = emulator.config.flavour == "doubleword"
        headers: dict[str, str] = {}
        if doubleword:
            headers = {
                "X-Incomplete": "true" if incomplete else "false",
                "X-Last-Line": str(last_line),
            }
        media_type = "application/x-ndjson" if doubleword else "application/octet-stream"
        size = sum(map(len, lines))
        # one ETag per representation: a file that grows (partial results) changes it
        etag = f'"{file_id}-{offset or 0}-{limit if limit is not None else "all"}-{size}"'
        headers["etag"] = etag
        start, stop, status = 0, size, 200
        if emulator.config.content_ranges:
            headers["accept-ranges"] = "bytes"
            wanted = _byte_range(request.headers.get("range"), size)
            if_range = request.headers.get("if-range")
            if wanted is not None and (if_range is None or if_range == etag):
                if isinstance(wanted, str):  # unsatisfiable
                    raise ApiError(
                        416,
                        f"Range not satisfiable: the file has {size} bytes.",
                        headers={"content-range": f"bytes */{size}"},
                    )
                start, stop = wanted
                status = 206
                headers["content-range"] = f"bytes {start}-{stop - 1}/{size}"
        return _FileContent(emulator, lines, start, stop, status, headers, media_type)

    async def create_batch(request: Request) -> Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        batch = emulator.create_batch(
            input_file_id=body.get("input_file_id"),
            endpoint=body.get("endpoint"),
            completion_window=body.get("completion_window"),
            metadata=body.get("metadata"),
            output_expires_after=body.get("output_expires_after"),
        )
        answer = emulator.batch_dict(batch)
        if emulator.quirks.wrap_created_batch:
            # Together: the create answer wraps the job (retrieve answers it bare)
            answer = {"job": answer, "warning": None}
        return JSONResponse(answer, status_code=created())

    async def list_batches(request: Request) -> Response:
        limit = _int_param(request, "limit", 20, low=1)
        page = emulator.list_batches(
            after=request.query_params.get("after"), limit=min(limit or 20, 100)
        )
        page["data"] = [emulator.batch_dict(b) for b in page["data"]]
        return JSONResponse(page)

    async def get_batch(request: Request) -> Response:
        batch = emulator.get_batch(request.path_params["batch_id"])
        return JSONResponse(emulator.batch_dict(batch))

    async def cancel_batch(request: Request) -> Response:
        batch = emulator.cancel_batch(request.path_params["batch_id"])
        return JSONResponse(emulator.batch_dict(batch))

    def realtime(url: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            body = await _json_body(request)
            if isinstance(body, dict) and body.get("stream"):
                raise ApiError(400, "Streaming is not supported by the emulator.", param="stream")
            status, payload = emulator.realtime(url, body)
            return JSONResponse(payload, status_code=status)

        return endpoint

    async def admin_stats(_request: Request) -> Response:
        return JSONResponse(emulator.stats().to_dict())

    async def admin_config(request: Request) -> Response:
        changes = await _json_body(request)
        if not isinstance(changes, dict) or "clock" in changes:
            raise ApiError(400, "Expected a JSON object of configuration changes (not 'clock').")
        for name in ("error_statuses", "fault_paths", "known_models", "windows"):
            if isinstance(changes.get(name), list):
                changes[name] = tuple(changes[name])
        try:
            config = emulator.configure(**changes)
        except (TypeError, ValueError) as exc:
            raise ApiError(400, f"Invalid configuration: {exc}") from None
        return JSONResponse(config_dict(config))

    async def admin_lose_batch(request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        try:
            emulator.lose_batch(batch_id)
        except KeyError:
            raise ApiError(
                404, f"No such Batch object: {batch_id}", param="batch_id", code="not_found"
            ) from None
        return JSONResponse({"id": batch_id, "lost": True})

    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = "Invalid URL or method." if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code)

    routes = [
        Route("/v1/files", upload_file, methods=["POST"]),
        Route("/v1/files", list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", get_file, methods=["GET"]),
        Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
        Route("/v1/batches", create_batch, methods=["POST"]),
        Route("/v1/batches", list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", get_batch, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", cancel_batch, methods=["POST"]),
        *(Route(url, realtime(url), methods=["POST"]) for url in ENDPOINTS),
        Route("/_emulator/stats", admin_stats, methods=["GET"]),
        Route("/_emulator/config", admin_config, methods=["POST"]),
        Route("/_emulator/batches/{batch_id}/lose", admin_lose_batch, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={ApiError: api_error, HTTPException: http_error},
    )
    return _Gateway(emulator, app)


def config_dict(config: Any) -> dict[str, Any]:
    """The JSON-ready fields of an :class:`EmulatorConfig` (all but ``clock``)."""
    import attrs

    out = {
        field.name: getattr(config, field.name)
        for field in attrs.fields(type(config))
        if field.name != "clock"
    }
    if out.get("api_key") is not None:
        out["api_key"] = "***"
    return out
