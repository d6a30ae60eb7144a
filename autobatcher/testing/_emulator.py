"""The emulator's state: files, batches, the lifecycle clock and the statistics.

Nothing here does I/O or imports a web framework: the ASGI layer (``_app.py``) calls these
methods and turns :class:`ApiError` into OpenAI error responses. Batch state advances
lazily: every call first moves each unfinished batch forward to "now" on the configured
clock, computing each transition at the time it was due, so a batch nobody polls for a
while is exactly where it would have been.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import sniffio

from ._config import EmulatorConfig, EmulatorStats, Quirks
from ._model import DROP, ENDPOINTS, INVALID, LINE_ERROR, STUCK, error_body, execute

if TYPE_CHECKING:
    from ._app import ASGIApp
    from ._inprocess import EmulatorTransport

__all__ = ["ApiError", "BatchRecord", "Emulator", "FileRecord"]

_ACTIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
#: Groq: windows from 24 h to 7 d, written as a number and a unit
_WINDOW_RANGE = (86_400.0, 7 * 86_400.0)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}
_MAX_REPORTED_ERRORS = 100
_dumps = json.dumps
_loads = json.loads
_encode = json.JSONEncoder(check_circular=False, separators=(",", ":")).encode
_canonical = json.JSONEncoder(check_circular=False, sort_keys=True, separators=(",", ":")).encode


class ApiError(Exception):
    """An API call that fails with an OpenAI error envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(status, message, param=param, code=code)
        self.headers = dict(headers or {})


@attrs.define(eq=False)
class FileRecord:
    """A stored file: uploaded bytes, or the growing lines of a batch's output/error file."""

    id: str
    filename: str
    purpose: str
    created_at: int
    seq: int
    content: bytes | None = None
    lines: list[bytes] | None = None
    batch_id: str | None = None
    #: clock time at which the file is processed (usable by a batch)
    processed_at: float = 0.0
    #: clock time at which the file expires (and is gone), when uploaded with an expiry
    expires: float | None = None

    @property
    def size(self) -> int:
        if self.content is not None:
            return len(self.content)
        return sum(map(len, self.lines or ()))

    def data(self) -> bytes:
        if self.content is not None:
            return self.content
        return b"".join(self.lines or ())

    def line_list(self) -> list[bytes]:
        if self.lines is not None:
            return self.lines
        return (self.content or b"").splitlines(keepends=True)

    def to_dict(self, *, processed: bool = True, expires_at: int | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed" if processed else "pending",
            "status_details": None,
            "expires_at": expires_at,
        }


@attrs.define(eq=False)
class BatchRecord:
    """One batch and its progress (read-only for users: see :attr:`Emulator.batches`)."""

    id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    created: float
    seq: int
    expires: float
    deadline: float | None
    requests: list[tuple[str, str, Any]]
    order: list[int]
    tokens: int
    model: str | None
    errors: list[dict[str, Any]] | None = None
    status: str = "validating"
    processed: int = 0
    credit: float = 0.0
    last: float = 0.0
    in_progress: float | None = None
    finalizing: float | None = None
    completed: float | None = None
    failed: float | None = None
    expired: float | None = None
    cancelling: float | None = None
    cancelled: float | None = None
    n_completed: int = 0
    n_failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    output_lines: list[bytes] = attrs.field(factory=list)
    error_lines: list[bytes] = attrs.field(factory=list)
    output_file: FileRecord | None = None
    error_file: FileRecord | None = None
    #: seconds its output and error files live (``output_expires_after``), if given
    output_expiry: float | None = None
    #: a line holds ``[[stuck]]``: the batch stays ``finalizing`` until cancelled
    stuck: bool = False

    @property
    def running(self) -> bool:
        return self.status in _ACTIVE


class Emulator:
    """A local, deterministic Batch API: state plus an ASGI app (:attr:`app`).

    Serve it on loopback with :func:`serve_emulator`, call it in-process through
    :meth:`transport` (or :func:`emulator_client`), or mount :attr:`app` in any ASGI server.
    It runs no background tasks: every call first advances the batches to "now".
    """

    def __init__(self, config: EmulatorConfig | None = None, **changes: Any) -> None:
        config = config if config is not None else EmulatorConfig()
        self._config = attrs.evolve(config, **changes) if changes else config
        self._quirks = self._config.quirks
        self._files: dict[str, FileRecord] = {}
        self._batches: dict[str, BatchRecord] = {}
        self._active: dict[str, BatchRecord] = {}
        self._seq = 0
        # The loop clock as the emulator sees it (see ``now``): which loop we last read,
        # what we add to its readings, and the last emulator time we handed out.
        self._loop: object = None
        self._loop_offset = 0.0
        self._loop_last = 0.0
        self._fault_rng = random.Random(self._config.fault_seed)
        self._shuffle_rng = random.Random(self._config.fault_seed)
        self._anchor()
        self._app: ASGIApp | None = None
        self._content_drops_done = 0
        self.reset_stats()

    # -- configuration and statistics -------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        return self._config

    @property
    def in_process_base_url(self) -> str:
        """The base URL for a client on :meth:`transport` (``http://emulator/v1``, or
        ``http://emulator/openai/v1`` for the flavours whose API lives under a prefix)."""
        return "http://emulator" + self._config.api_root

    @property
    def quirks(self) -> Quirks:
        """The flavour's quirks as configured (see :class:`EmulatorConfig`)."""
        return self._quirks

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Change the configuration at run time (validated); returns the new config.

        Running batches first advance to "now" under the old settings.
        """
        new = attrs.evolve(self._config, **changes)
        self.advance()
        old = self._config
        self._config = new
        self._quirks = new.quirks
        if "content_drop_after_bytes" in changes or "content_drops" in changes:
            self._content_drops_done = 0
        if "fault_seed" in changes:
            self._fault_rng = random.Random(new.fault_seed)
            self._shuffle_rng = random.Random(new.fault_seed)
        if new.clock is not old.clock:
            self._anchor()
            now = self.now()
            for batch in self._active.values():
                batch.last = now
        return new

    def stats(self) -> EmulatorStats:
        """A frozen snapshot of the counters."""
        self.advance()
        by_status = Counter(b.status for b in self._batches.values())
        return EmulatorStats(
            uploads=self._uploads,
            upload_bytes=self._upload_bytes,
            batches_created=self._batches_created,
            batches_by_status=dict(by_status),
            realtime_calls=self._realtime_calls,
            api_calls=sum(self._api_calls.values()),
            api_calls_by_route=dict(self._api_calls),
            faults_injected=sum(self._faults.values()),
            faults_by_kind=dict(self._faults),
            executions=dict(self._executions),
            content_bytes=self._content_bytes,
        )

    def reset_stats(self) -> None:
        """Zero the counters (files and batches are kept)."""
        self._uploads = 0
        self._upload_bytes = 0
        self._batches_created = 0
        self._realtime_calls = 0
        self._api_calls: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._executions: Counter[str] = Counter()
        self._content_bytes = 0

    @property
    def batches(self) -> Mapping[str, BatchRecord]:
        """Every batch by id (advanced to now). Treat the records as read-only."""
        self.advance()
        return dict(self._batches)

    @property
    def files(self) -> Mapping[str, FileRecord]:
        """Every file by id. Treat the records as read-only."""
        return dict(self._files)

    @property
    def app(self) -> ASGIApp:
        """The ASGI application (needs the ``emulator`` extra: starlette)."""
        if self._app is None:
            from ._app import build_app

            self._app = build_app(self)
        return self._app

    def transport(self) -> EmulatorTransport:
        """An httpx transport that calls this emulator in-process (see
        :class:`EmulatorTransport`; needs the ``emulator`` extra)."""
        from ._inprocess import EmulatorTransport

        return EmulatorTransport(self)

    # -- bookkeeping used by the ASGI layer -----------------------------------------------

    def count_call(self, route: str) -> None:
        self._api_calls[route] += 1

    def count_fault(self, kind: str) -> None:
        self._faults[kind] += 1

    def content_drop_point(self) -> int | None:
        """After how many body bytes the next download is to be dropped, if it is."""
        config = self._config
        if config.content_drop_after_bytes is None:
            return None
        if self._content_drops_done >= config.content_drops:
            return None
        return config.content_drop_after_bytes

    def count_content_drop(self) -> None:
        self._content_drops_done += 1
        self.count_fault("content_drop")

    def count_content_bytes(self, nbytes: int) -> None:
        self._content_bytes += nbytes

    def fault_draw(self) -> float:
        return self._fault_rng.random()

    def fault_choice(self, options: tuple[int, ...]) -> int:
        return self._fault_rng.choice(options)

    # -- time ------------------------------------------------------------------------

    def _anchor(self) -> None:
        self._wall0 = float(int(time.time()))  # whole seconds: stable timestamp differences
        self._clock0 = self.now()

    def now(self) -> float:
        """The emulator's clock: the configured ``clock``, else the event loop's clock.

        On the loop clock, time passes only while an event loop runs: outside one it stands
        still, and a new loop (another ``anyio.run``, or trio's ``MockClock`` starting at 0)
        continues where the previous one stopped, from its first call to the emulator, so
        batch timings never jump. (Like the rest of the emulator, this assumes one thread
        and one loop at a time.)
        """
        clock = self._config.clock
        if clock is not None:
            return clock()
        try:
            loop = _current_loop()
            loop_time = anyio.current_time()
        except RuntimeError:  # no event loop running here (sniffio's error is a RuntimeError)
            return self._loop_last
        if loop is not self._loop:
            self._loop = loop
            self._loop_offset = self._loop_last - loop_time
        now = loop_time + self._loop_offset
        self._loop_last = now
        return now

    def wall(self, t: float | None) -> int | None:
        """A clock reading as a Unix timestamp (seconds)."""
        if t is None:
            return None
        return int(self._wall0 + (t - self._clock0))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- files -----------------------------------------------------------------------

    def upload(
        self,
        filename: str,
        purpose: str,
        content: bytes,
        *,
        expires_after_seconds: float | None = None,
    ) -> FileRecord:
        if not purpose:
            raise ApiError(400, "Missing required parameter: 'purpose'.", param="purpose")
        self.advance()
        quirks = self._quirks
        expiring = expires_after_seconds is not None
        cap = quirks.max_expiring_files if expiring else quirks.max_files
        if cap is not None:
            held = sum(1 for f in self._files.values() if (f.expires is not None) == expiring)
            if held >= cap:
                kind = "files with an expiry" if expiring else "files"
                raise ApiError(
                    400,
                    f"The maximum number of {kind} ({cap}) has been reached. Delete files "
                    "you no longer need, or upload them with an expiry (expires_after).",
                    code="quota_exceeded",
                )
        self._uploads += 1
        self._upload_bytes += len(content)
        now = self.now()
        record = FileRecord(
            id=self._file_id(),
            filename=filename,
            purpose=purpose,
            created_at=self.wall(now) or 0,
            seq=self._next_seq(),
            content=content,
            processed_at=now + quirks.file_processing_seconds,
            expires=None if expires_after_seconds is None else now + expires_after_seconds,
        )
        self._files[record.id] = record
        return record

    def file_dict(self, record: FileRecord) -> dict[str, Any]:
        """A file as the API shows it (``pending`` until processed, its expiry)."""
        return record.to_dict(
            processed=self.now() >= record.processed_at,
            expires_at=self.wall(record.expires),
        )

    def _drop_expired_files(self) -> None:
        now = self.now()
        for file_id in [f.id for f in self._files.values() if f.expires is not None]:
            expires = self._files[file_id].expires
            if expires is not None and expires <= now:
                del self._files[file_id]

    def _file_id(self) -> str:
        if self._config.flavour == "doubleword":
            import uuid

            return str(uuid.uuid4())
        return "file-" + os.urandom(12).hex()

    def get_file(self, file_id: str) -> FileRecord:
        self.advance()
        self._drop_expired_files()
        try:
            return self._files[file_id]
        except KeyError:
            raise ApiError(
                404, f"No such File object: {file_id}", param="id", code="not_found"
            ) from None

    def delete_file(self, file_id: str) -> dict[str, Any]:
        record = self.get_file(file_id)
        del self._files[record.id]
        return {"id": record.id, "object": "file", "deleted": True}

    def list_files(
        self, *, purpose: str | None, after: str | None, limit: int, order: str
    ) -> dict[str, Any]:
        self.advance()
        self._drop_expired_files()
        items = [f for f in self._files.values() if purpose is None or f.purpose == purpose]
        return _page(items, after=after, limit=limit, newest_first=order != "asc")

    def file_content(
        self, file_id: str, *, offset: int = 0, limit: int | None = None
    ) -> tuple[list[bytes], bool, int]:
        """(lines, incomplete, last_line) of a file from line ``offset``."""
        record = self.get_file(file_id)
        incomplete = False
        if record.batch_id is not None:
            batch = self._batches.get(record.batch_id)
            incomplete = batch is not None and batch.running
        if offset == 0 and limit is None:
            if record.content is not None:
                content = record.content
                count = content.count(b"\n") + (0 if content.endswith(b"\n") or not content else 1)
                return [content], incomplete, count
            lines = list(record.line_list())
        else:
            all_lines = record.line_list()
            end = None if limit is None else offset + limit
            lines = all_lines[offset:end]
        return lines, incomplete, offset + len(lines)

    # -- batches -----------------------------------------------------------------------

    def create_batch(
        self,
        *,
        input_file_id: Any,
        endpoint: Any,
        completion_window: Any,
        metadata: Any,
        output_expires_after: Any = None,
    ) -> BatchRecord:
        config = self._config
        quirks = self._quirks
        if not isinstance(input_file_id, str) or not input_file_id:
            raise ApiError(
                400, "Missing required parameter: 'input_file_id'.", param="input_file_id"
            )
        # Azure names the batch endpoint without the version ("/chat/completions") while
        # its lines keep it ("/v1/chat/completions").
        shown = endpoint
        supported: tuple[str, ...] = ENDPOINTS
        if quirks.endpoint_without_version:
            supported = tuple(e.removeprefix("/v1") for e in ENDPOINTS)
            endpoint = "/v1" + endpoint if endpoint in supported else None
        if endpoint not in ENDPOINTS:
            raise ApiError(
                400,
                f"Invalid value for 'endpoint': {shown!r}. Supported values are: "
                + ", ".join(supported),
                param="endpoint",
                code="invalid_value",
            )
        window_seconds = _window_seconds(completion_window, quirks.windows)
        if window_seconds is None:
            windows = (
                ", ".join(quirks.windows)
                if quirks.windows is not None
                else "a duration from 24h to 7d"
            )
            raise ApiError(
                400,
                f"Invalid value for 'completion_window': {completion_window!r}. "
                f"Supported values are: {windows}.",
                param="completion_window",
                code="invalid_value",
            )
        output_expiry = _expiry_seconds(output_expires_after, "output_expires_after")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        ):
            raise ApiError(
                400,
                "Invalid 'metadata': expected an object of at most 16 string pairs.",
                param="metadata",
            )
        source = self._files.get(input_file_id)
        if source is None:
            raise ApiError(
                404,
                f"No such File object: {input_file_id}",
                param="input_file_id",
                code="not_found",
            )
        if source.purpose != quirks.upload_purpose:
            raise ApiError(
                400,
                f"File {input_file_id} has purpose {source.purpose!r}; expected "
                f"{quirks.upload_purpose!r}.",
                param="input_file_id",
            )
        self.advance()
        now = self.now()
        if now < source.processed_at:
            raise ApiError(
                400,
                f"File {input_file_id} is still being processed (status 'pending'); create the "
                "batch once its status is 'processed'.",
                param="input_file_id",
                code="invalid_file_status",
            )
        requests, errors, model = self._validate(source.data(), endpoint)
        tokens = (source.size + 3) // 4
        if not errors and config.enqueued_token_limit is not None:
            enqueued = sum(b.tokens for b in self._active.values() if not b.errors)
            if enqueued + tokens > config.enqueued_token_limit:
                errors = [
                    {
                        "code": "token_limit_exceeded",
                        "message": (
                            f"Enqueued token limit reached for {model}. Limit: "
                            f"{config.enqueued_token_limit} enqueued tokens; already "
                            f"enqueued: {enqueued}; this batch: about {tokens}. Try again "
                            "once some in-progress batches have completed."
                        ),
                        "param": None,
                        "line": None,
                    }
                ]
        order = list(range(len(requests)))
        if config.shuffle_output:
            self._shuffle_rng.shuffle(order)
        # A batch unfinished when its window ends expires, as upstream; the window is the
        # requested one (24 h, 1 h) unless ``expire_after_seconds`` shortens it for tests.
        window: float = window_seconds
        if config.expire_after_seconds is not None:
            window = config.expire_after_seconds
        deadline: float | None = now + window if quirks.expire_batches else None
        batch = BatchRecord(
            id=self._batch_id(),
            endpoint=shown,
            input_file_id=input_file_id,
            completion_window=completion_window,
            metadata=dict(metadata) if metadata is not None else None,
            created=now,
            seq=self._next_seq(),
            expires=now + window,
            deadline=deadline,
            requests=requests if not errors else [],
            order=order if not errors else [],
            tokens=tokens,
            model=model,
            errors=errors or None,
            output_expiry=output_expiry,
            stuck=not errors and STUCK.encode() in source.data(),
        )
        if quirks.file_ids_at == "created":
            batch.output_file = self._batch_file(batch, "output", batch.output_lines, now)
            batch.error_file = self._batch_file(batch, "error", batch.error_lines, now)
        self._batches[batch.id] = batch
        self._active[batch.id] = batch
        self._batches_created += 1
        return batch

    def _batch_id(self) -> str:
        if self._config.flavour == "doubleword":
            import uuid

            return str(uuid.uuid4())
        return "batch_" + os.urandom(12).hex()

    def _batch_file(
        self, batch: BatchRecord, kind: str, lines: list[bytes], at: float
    ) -> FileRecord:
        record = FileRecord(
            id=self._file_id(),
            filename=f"batch_{batch.id}_{kind}.jsonl",
            purpose="batch_output",
            created_at=self.wall(at) or 0,
            seq=self._next_seq(),
            lines=lines,
            batch_id=batch.id,
            processed_at=at,
            expires=None if batch.output_expiry is None else at + batch.output_expiry,
        )
        self._files[record.id] = record
        return record

    def _validate(
        self, content: bytes, endpoint: str
    ) -> tuple[list[tuple[str, str, Any]], list[dict[str, Any]], str | None]:
        quirks = self._quirks
        mixed = not quirks.single_model
        errors: list[dict[str, Any]] = []

        def error(code: str, message: str, param: str | None, line: int | None) -> None:
            if len(errors) < _MAX_REPORTED_ERRORS:
                errors.append({"code": code, "message": message, "param": param, "line": line})

        max_file_bytes = quirks.max_file_bytes
        max_lines = quirks.max_lines
        if len(content) > max_file_bytes:
            error(
                "file_too_large",
                f"The input file is {len(content)} bytes; the limit is {max_file_bytes} bytes.",
                None,
                None,
            )
            return [], errors, None
        raw_lines = content.decode("utf-8", errors="replace").split("\n")
        count = sum(1 for raw in raw_lines if raw.strip())
        if count > max_lines:
            error(
                "too_many_lines",
                f"The input file has {count} requests; the limit is {max_lines}.",
                None,
                None,
            )
            return [], errors, None
        if count == 0:
            error("empty_file", "The input file contains no requests.", None, None)
            return [], errors, None
        requests: list[tuple[str, str, Any]] = []
        seen: set[str] = set()
        model: str | None = None
        for number, raw in enumerate(raw_lines, 1):
            if not raw.strip():
                continue
            try:
                item = _loads(raw)
            except ValueError:
                error("invalid_json_line", f"Line {number} is not valid JSON.", None, number)
                continue
            if not isinstance(item, dict):
                error("invalid_json_line", f"Line {number} is not a JSON object.", None, number)
                continue
            custom_id = item.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                error(
                    "missing_required_parameter",
                    f"Line {number} has no 'custom_id' string.",
                    "custom_id",
                    number,
                )
                continue
            if custom_id in seen:
                error(
                    "duplicate_custom_id",
                    f"The custom_id {custom_id!r} on line {number} is not unique.",
                    "custom_id",
                    number,
                )
                continue
            seen.add(custom_id)
            if item.get("method") != "POST":
                error(
                    "invalid_method",
                    f"Line {number}: method must be 'POST', got {item.get('method')!r}.",
                    "method",
                    number,
                )
                continue
            url = item.get("url")
            if (url not in ENDPOINTS) if mixed else (url != endpoint):
                error(
                    "invalid_url",
                    f"Line {number}: url {url!r} does not match the batch endpoint {endpoint!r}.",
                    "url",
                    number,
                )
                continue
            body = item.get("body")
            if not isinstance(body, dict):
                error(
                    "invalid_request", f"Line {number}: 'body' must be an object.", "body", number
                )
                continue
            line_model = body.get("model")
            if url != "/v1/moderations" and not isinstance(line_model, str):
                error(
                    "missing_required_parameter",
                    f"Line {number}: the body has no 'model'.",
                    "body.model",
                    number,
                )
                continue
            if model is None:
                model = line_model
            elif line_model != model and not mixed:
                error(
                    "mismatched_model",
                    f"Line {number}: model {line_model!r} differs from {model!r}; a batch "
                    "may use only one model.",
                    "body.model",
                    number,
                )
                continue
            if INVALID in raw:
                error(
                    "invalid_request",
                    f"Line {number}: the request body is invalid (injected {INVALID}).",
                    "body",
                    number,
                )
                continue
            requests.append((custom_id, str(url), body))
        return requests, errors, model

    def get_batch(self, batch_id: str) -> BatchRecord:
        self.advance()
        try:
            return self._batches[batch_id]
        except KeyError:
            raise ApiError(
                404, f"No such Batch object: {batch_id}", param="batch_id", code="not_found"
            ) from None

    def cancel_batch(self, batch_id: str) -> BatchRecord:
        batch = self.get_batch(batch_id)
        if batch.status in ("cancelling", "cancelled"):
            return batch
        if not batch.running:
            raise ApiError(
                409,
                f"Cannot cancel a batch with status '{batch.status}'.",
                code="batch_not_cancellable",
            )
        batch.status = "cancelling"
        batch.cancelling = self.now()
        return batch

    def lose_batch(self, batch_id: str) -> None:
        """Fault: the server forgets a batch. Later calls about it answer 404, it leaves the
        batch list, and it never finishes; its files stay (their ids were never sent).

        Raises :class:`KeyError` for an id the emulator does not know (or already lost).
        """
        self.advance()
        if batch_id not in self._batches:
            raise KeyError(f"the emulator has no batch {batch_id!r}")
        del self._batches[batch_id]
        self._active.pop(batch_id, None)
        self.count_fault("lost_batch")

    def list_batches(self, *, after: str | None, limit: int) -> dict[str, Any]:
        self.advance()
        return _page(list(self._batches.values()), after=after, limit=limit, newest_first=True)

    def batch_dict(self, batch: BatchRecord) -> dict[str, Any]:
        """A batch as the API shows it, in the flavour's dialect (see :class:`Quirks`)."""
        quirks = self._quirks
        seconds = self.wall
        style = quirks.timestamp_format

        def wall(t: float | None) -> Any:
            value = seconds(t)
            if value is None or style == "seconds":
                return value
            if style == "milliseconds":
                return value * 1000
            moment = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
            return moment.isoformat().replace("+00:00", "Z")

        errors = None
        if batch.errors:
            errors = {"object": "list", "data": batch.errors}
        total = len(batch.requests)
        status = batch.status
        if quirks.status_case == "capitalized":
            status = status.capitalize()
        elif quirks.status_case == "upper":
            status = status.upper()
        data = {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "model": batch.model,
            "errors": errors,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": status,
            "output_file_id": batch.output_file.id if batch.output_file else None,
            "error_file_id": batch.error_file.id if batch.error_file else None,
            "created_at": wall(batch.created),
            "in_progress_at": wall(batch.in_progress),
            "expires_at": wall(batch.expires),
            "finalizing_at": wall(batch.finalizing),
            "completed_at": wall(batch.completed),
            "failed_at": wall(batch.failed),
            "expired_at": wall(batch.expired),
            "cancelling_at": wall(batch.cancelling),
            "cancelled_at": wall(batch.cancelled),
            "request_counts": {
                "total": total,
                "completed": batch.n_completed,
                "failed": batch.n_failed,
            },
            "usage": {
                "input_tokens": batch.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": batch.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": batch.input_tokens + batch.output_tokens,
            },
            "metadata": batch.metadata,
        }
        if not quirks.request_counts:
            del data["request_counts"]
        if quirks.progress_percent:
            data["progress"] = round(100.0 * batch.processed / total, 1) if total else 0.0
        return data

    # -- real-time calls --------------------------------------------------------------

    def realtime(self, url: str, body: Any) -> tuple[int, dict[str, Any]]:
        """Run one real-time (non-batch) request; returns (HTTP status, JSON body)."""
        self.advance()
        self._realtime_calls += 1
        canonical = _canonical(body)
        self._executions[canonical] += 1
        status, payload = execute(
            url,
            body,
            canonical,
            now=self.wall(self.now()) or 0,
            dims=self._config.embedding_dimensions,
            known_models=self._config.known_models,
            attempt=self._executions[canonical],
        )
        if status == LINE_ERROR and payload is not None:
            return 500, error_body(500, payload["message"], code=payload["code"])
        if status == DROP or payload is None:
            return 500, error_body(500, "The request was dropped (injected).")
        return status, payload

    # -- the lifecycle -----------------------------------------------------------------

    def advance(self) -> None:
        """Move every unfinished batch forward to now."""
        if not self._active:
            return
        now = self.now()
        for batch in list(self._active.values()):
            self._advance_batch(batch, now)

    def _advance_batch(self, batch: BatchRecord, now: float) -> None:
        config = self._config
        while True:
            status = batch.status
            if status == "validating":
                due = batch.created + config.validation_seconds
                if batch.deadline is not None and batch.deadline <= due and now >= batch.deadline:
                    self._finish(batch, "expired", batch.deadline)
                    return
                if now < due:
                    return
                if batch.errors:
                    batch.status = "failed"
                    batch.failed = due
                    self._active.pop(batch.id, None)
                    return
                batch.status = "in_progress"
                batch.in_progress = batch.last = due
            elif status == "in_progress":
                limit = now if batch.deadline is None else min(now, batch.deadline)
                self._process(batch, limit)
                if batch.status == "in_progress":
                    if batch.deadline is not None and now >= batch.deadline:
                        self._finish(batch, "expired", batch.deadline)
                    return
            elif status == "finalizing":
                assert batch.finalizing is not None
                due = batch.finalizing + config.finalizing_seconds
                if now < due or batch.stuck:
                    return
                self._finish(batch, "completed", due)
                return
            elif status == "cancelling":
                assert batch.cancelling is not None
                due = batch.cancelling + config.cancelling_seconds
                if now < due:
                    return
                self._finish(batch, "cancelled", due)
                return
            else:
                self._active.pop(batch.id, None)
                return

    def _process(self, batch: BatchRecord, limit: float) -> None:
        total = len(batch.order)
        remaining = total - batch.processed
        lps = self._config.lines_per_second
        if lps is None:
            count = remaining
            done_at = batch.last
        else:
            elapsed = limit - batch.last
            if elapsed < 0:
                return
            credit = batch.credit + elapsed * lps
            count = min(remaining, int(credit))
            done_at = batch.last + max(0.0, remaining - batch.credit) / lps
            batch.credit = credit - count
            batch.last = limit
        ran_at = min(done_at, limit) if lps is not None else done_at
        if count > 0:
            self._run_lines(
                batch, batch.order[batch.processed : batch.processed + count], at=ran_at
            )
            batch.processed += count
        if batch.processed >= total:
            batch.status = "finalizing"
            batch.finalizing = ran_at
            if self._quirks.file_ids_at == "finalizing":
                self._expose_files(batch, ran_at)

    def _run_lines(self, batch: BatchRecord, indices: list[int], *, at: float) -> None:
        requests = batch.requests
        executions = self._executions
        dims = self._config.embedding_dimensions
        known_models = self._config.known_models
        created = self.wall(at) or 0  # when these lines ran, not when someone looked
        out_append = batch.output_lines.append
        err_append = batch.error_lines.append
        prefix = "batch_req_" + os.urandom(6).hex()
        req_prefix = "req_" + os.urandom(6).hex()
        for index in indices:
            custom_id, url, body = requests[index]
            canonical = _canonical(body)
            executions[canonical] += 1
            status, payload = execute(
                url,
                body,
                canonical,
                now=created,
                dims=dims,
                known_models=known_models,
                attempt=executions[canonical],
            )
            if status == DROP:
                continue
            line_id = f"{prefix}{index:08x}"
            if status == LINE_ERROR:
                batch.n_failed += 1
                err_append(
                    _encode(
                        {"id": line_id, "custom_id": custom_id, "response": None, "error": payload}
                    ).encode()
                    + b"\n"
                )
                continue
            line = (
                _encode(
                    {
                        "id": line_id,
                        "custom_id": custom_id,
                        "response": {
                            "status_code": status,
                            "request_id": f"{req_prefix}{index:08x}",
                            "body": payload,
                        },
                        "error": None,
                    }
                ).encode()
                + b"\n"
            )
            if 200 <= status < 300:
                batch.n_completed += 1
                usage = payload.get("usage") if payload else None
                if isinstance(usage, dict):
                    batch.input_tokens += int(
                        usage.get("prompt_tokens") or usage.get("input_tokens") or 0
                    )
                    batch.output_tokens += int(
                        usage.get("completion_tokens") or usage.get("output_tokens") or 0
                    )
                out_append(line)
            else:
                batch.n_failed += 1
                err_append(line)

    def _finish(self, batch: BatchRecord, status: str, at: float) -> None:
        """End a batch as completed, expired or cancelled at clock time ``at``."""
        if status != "completed":
            code, message = {
                "expired": (
                    "batch_expired",
                    "This request could not be executed before the completion window expired.",
                ),
                "cancelled": (
                    "batch_cancelled",
                    "This request was not executed because the batch was cancelled.",
                ),
            }[status]
            error = {"code": code, "message": message}
            prefix = "batch_req_" + os.urandom(6).hex()
            requests = batch.requests
            for index in batch.order[batch.processed :]:
                batch.error_lines.append(
                    _encode(
                        {
                            "id": f"{prefix}{index:08x}",
                            "custom_id": requests[index][0],
                            "response": None,
                            "error": error,
                        }
                    ).encode()
                    + b"\n"
                )
                batch.n_failed += 1
            batch.processed = len(batch.order)
        batch.status = status
        setattr(batch, status, at)
        if self._quirks.file_ids_at != "created":
            self._expose_files(batch, at)
        self._active.pop(batch.id, None)

    def _expose_files(self, batch: BatchRecord, at: float) -> None:
        """Give the batch its output and error files (each only if it has lines, as OpenAI:
        a batch whose every request failed has no output file)."""
        if batch.output_lines and batch.output_file is None:
            batch.output_file = self._batch_file(batch, "output", batch.output_lines, at)
        if batch.error_lines and batch.error_file is None:
            batch.error_file = self._batch_file(batch, "error", batch.error_lines, at)


def _window_seconds(window: Any, accepted: tuple[str, ...] | None) -> float | None:
    """The length of a completion window, or ``None`` if the flavour does not take it."""
    if not isinstance(window, str) or len(window) < 2:
        return None
    if accepted is not None and window not in accepted:
        return None
    number, unit = window[:-1], window[-1]
    if unit not in _UNIT_SECONDS or not number.isdigit():
        return None
    seconds = float(int(number) * _UNIT_SECONDS[unit])
    if accepted is None and not _WINDOW_RANGE[0] <= seconds <= _WINDOW_RANGE[1]:
        return None
    return seconds


def _expiry_seconds(value: Any, param: str) -> float | None:
    """``{"anchor": "created_at", "seconds": N}`` → N (``None`` when not given)."""
    if value is None:
        return None
    seconds = value.get("seconds") if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or value.get("anchor") != "created_at"
        or isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or seconds <= 0
    ):
        raise ApiError(
            400,
            f'Invalid \'{param}\': expected {{"anchor": "created_at", "seconds": N}}.',
            param=param,
        )
    return float(seconds)


def _current_loop() -> object:
    """An object that identifies the running event loop (raises RuntimeError outside one)."""
    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_trio_token()
    import asyncio

    return asyncio.get_running_loop()


def _page(items: list[Any], *, after: str | None, limit: int, newest_first: bool) -> dict[str, Any]:
    items.sort(key=lambda item: item.seq, reverse=newest_first)
    if after is not None:
        for position, item in enumerate(items):
            if item.id == after:
                items = items[position + 1 :]
                break
        else:
            items = []
    data = items[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0].id if data else None,
        "last_id": data[-1].id if data else None,
        "has_more": len(items) > limit,
    }
