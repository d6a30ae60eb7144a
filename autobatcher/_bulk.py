"""``client.map(requests)``: millions of requests through one process at flat memory.

One awaiting coroutine per request does not scale to a 10M-line job, so the bulk path keeps
none. A *feeder* task reads the input lazily (a sync or async iterable of
:class:`BulkRequest` or Batch API input lines), validates and encodes each item and hands it
to the engine as a :class:`BulkSlot`: the same :class:`~autobatcher._job.Slot` single calls
use, except that it is its own signal, and firing it (wherever the engine settles a request)
pushes it onto the map's anyio memory object stream instead of waking a waiting task. The
consumer's ``async for`` receives from that stream and turns a slot into a
:class:`BulkResult` in its own task (one ``json.loads`` of the line; the typed model is parsed
only when ``result.response`` is read).

Backpressure: at most ``max_in_flight`` items are *outstanding* (read from the input and not
yet handed to the consumer); the feeder stops reading at that bound. The stream's buffer is
that bound plus one (for the end-of-input marker), so a settling engine never blocks on it.
With ``ordered=True`` the consumer keeps results that arrive early in a reorder buffer until
the ones before them are in; they stay outstanding meanwhile, so the same bound covers it.

Who drives: in run mode (``open_batcher``, ``async with client``) the engine's own task. With
a plain client, the map's own task takes its turn among the waiting callers (as a ``create()``
caller would) for as long as the map is open. Both tasks (feeder, driver) live in a task group
owned by the ``async with client.map(...)`` block: nothing outlives it.

Leaving the block early (``break``, an exception, a cancellation) withdraws every outstanding
request, as a cancelled ``create()`` is withdrawn: what was not uploaded is never uploaded;
an uploaded batch whose requests were all withdrawn is cancelled upstream
(``cancel_abandoned_batches``) without a journal, and kept running with one, its answers
collected into the journal by this client (until it closes) or by the next run.

Memory per waiting request does not grow with its prompt: once uploaded, a bulk request's
encoded line (kept in case it must be sent again) moves to its job's
:class:`~autobatcher._job.LineSpill`, a temporary file.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._config import estimate_tokens
from ._errors import APIError, APIStatusError, AutobatcherError, InternalError
from ._job import Slot
from ._jsonl import (
    FAST_JSON,
    assemble_line,
    decode_json,
    decode_result,
    encode_canonical_body,
    encode_line,
    success_body_span,
)
from ._resources import (
    _CHAT,
    _COMPLETIONS,
    _EMBEDDINGS,
    _MODERATIONS,
    _RESPONSES,
    _count_inputs,
    _Endpoint,
)
from ._signals import Signal, fire, new_signal
from ._sizing import MAX_INFLATION, encoded_size_at_least

if TYPE_CHECKING:
    from ._engine import Engine
    from ._facade import BatchOpenAI

__all__ = [
    "BulkMap",
    "BulkRequest",
    "BulkResult",
    "BulkResults",
    "BulkSlot",
    "InvalidBulkRequestError",
]

#: the endpoints a map item may name, by the ``url`` of its Batch API input line
ENDPOINTS: Mapping[str, _Endpoint[Any]] = {
    endpoint.path: endpoint
    for endpoint in (_CHAT, _EMBEDDINGS, _RESPONSES, _COMPLETIONS, _MODERATIONS)
}

#: the feeder yields to the event loop after this many items read without waiting, so a fast
#: synchronous input never holds the loop for long
_FEED_BURST = 64
#: likewise the consumer, taking results that are already there
_RECEIVE_BURST = 64
#: answers read from the journal per trip to its worker thread, at most
_RECALL_BATCH = 1000


class InvalidBulkRequestError(APIError, ValueError):
    """One item of a ``client.map()`` input cannot be sent; the others are not affected.

    ``code`` says why: ``invalid_item`` (not a mapping or :class:`BulkRequest`),
    ``invalid_key`` (``custom_id``/``key`` missing, not a string, or empty),
    ``duplicate_key`` (a key seen earlier in this map, or in flight in another map of this
    client with the same request), ``unsupported_url``, ``unsupported_method``,
    ``invalid_body`` (not a JSON object, or not encodable as JSON), ``missing_model``,
    ``unsupported_parameter`` (``stream: true``) or ``request_too_large``.
    """


@attrs.frozen
class BulkRequest:
    """One request of a ``client.map()`` input: a Batch API input line with the user's key.

    ``key`` is the user's own id (``custom_id`` in a JSONL file), unique within one map;
    ``url`` one of ``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/responses``,
    ``/v1/completions``, ``/v1/moderations``; ``body`` the request body as in an input line.
    """

    key: str
    url: str
    body: Mapping[str, Any]
    method: str = "POST"


@attrs.frozen
class _EncodedRequest(BulkRequest):
    """A :class:`BulkRequest` with its body's canonical JSON made beforehand, off the event
    loop (``autobatcher run`` makes it in its reader thread, see :func:`encoded_request`): the
    map takes that text as the body's encoding and exact size instead of measuring and
    encoding the body itself."""

    body_text: str = ""


def encoded_request(key: str, url: str, body: Mapping[str, Any]) -> BulkRequest:
    """``BulkRequest(key, url, body)`` with its body's canonical JSON made now (call it in a
    worker thread); a body that cannot be encoded gives a plain ``BulkRequest``, which the map
    then refuses with its ``invalid_body`` error."""
    try:
        body_text = encode_canonical_body(body)
    except TypeError:
        return BulkRequest(key, url, body)
    return _EncodedRequest(key, url, body, body_text=body_text)


@attrs.frozen
class BulkResult:
    """One answer of ``client.map()``: the item's key and position, and its response or error.

    ``status_code``, ``request_id`` and ``body`` are the result line's (``None`` when the line
    had no response, or there was no line); ``error`` is the typed error the single-call API
    would raise for this request (its ``custom_id`` is the item's key), else ``None``.
    ``custom_id`` is the id the request travelled under in the batch file, and ``url`` the
    item's endpoint.
    """

    key: str
    index: int
    status_code: int | None
    body: dict[str, Any] | None
    error: APIError | None
    request_id: str | None
    batch_id: str | None
    custom_id: str | None = None
    url: str | None = None
    line_id: str | None = None
    _parsed: Any = attrs.field(default=None, init=False, eq=False, repr=False)
    #: a 2xx result line of the documented layout, and where its custom_id's JSON string
    #: starts and ends in it: its output line is that line under the key, without re-encoding
    _raw_line: tuple[bytes, int, int] | None = attrs.field(
        default=None, init=False, eq=False, repr=False
    )

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def response(self) -> Any:
        """The typed response (``ChatCompletion``, ``CreateEmbeddingResponse``, …), parsed on
        first access; raises :attr:`error` when the request failed."""
        if self.error is not None:
            raise self.error
        parsed = self._parsed
        if parsed is None:
            endpoint = ENDPOINTS.get(self.url or "")
            if endpoint is None or self.body is None:  # pragma: no cover - ok implies both
                raise InternalError(f"result {self.key!r} has no body to parse")
            parsed = endpoint.build(self.body)
            object.__setattr__(self, "_parsed", parsed)
        return parsed

    def output_line(self) -> dict[str, Any]:
        """This result in the Batch API's output-line format, under the item's key:
        ``{"id", "custom_id", "response": {"status_code", "request_id", "body"} | None,
        "error": {"code", "message"} | None}``."""
        response = None
        if self.status_code is not None:
            response = {
                "status_code": self.status_code,
                "request_id": self.request_id,
                "body": self.body,
            }
        error = None
        if self.error is not None and response is None:
            error = {"code": self.error.code, "message": self.error.message}
        return {"id": self.line_id, "custom_id": self.key, "response": response, "error": error}

    def output_line_bytes(self) -> bytes:
        """:meth:`output_line` as compact JSON bytes (no newline). A success line of the
        documented layout (``id``, ``custom_id``, ``response``, ``"error": null``, in that
        order) is the server's own line with its ``custom_id`` replaced by the key: the same
        JSON, made without decoding and encoding the body again."""
        raw = self._raw_line
        if raw is not None:
            line, start, end = raw
            return b"".join((line[:start], _encode_key(self.key).encode(), line[end:]))
        return _encode_output(self.output_line()).encode()


class _HandedOver:
    """The signal of a bulk slot whose result was handed over: any late fire is a no-op."""

    __slots__ = ()

    def set(self) -> None:
        pass

    def wait(self) -> Any:  # pragma: no cover - nobody waits on a bulk slot
        raise InternalError("a bulk request has no waiting task")


_HANDED_OVER = _HandedOver()


class BulkSlot(Slot):
    """A map item inside the engine: a :class:`Slot` that is its own signal, and delivers
    itself to its map's stream when fired (no task waits for it)."""

    __slots__ = ("index", "key", "owner")

    spills_line = True

    def __init__(
        self,
        owner: BulkMap,
        index: int,
        key: str,
        custom_id: str,
        endpoint: str,
        model: str,
        line: bytes,
        inputs: int,
    ) -> None:
        # its own signal: no future nobody awaits (the cycle is broken when it is handed over)
        super().__init__(custom_id, endpoint, model, line, inputs, signal=self)
        self.owner = owner
        self.index = index
        self.key = key

    def set(self) -> None:
        """Fired by the engine with the outcome in place: hand it to the map's consumer."""
        self.owner._deliver(self)

    def wait(self) -> Any:  # pragma: no cover - the engine never waits on a bulk slot
        raise InternalError("a bulk request has no waiting task")


class _End:
    """Marker on the results stream: the input is exhausted (or failed with ``error``)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


_Item = BulkSlot | BulkResult | _End


class _MapDriver:
    """Plain client: the map's turn among the callers that drive the engine."""

    __slots__ = ("bulk", "signal")

    def __init__(self, bulk: BulkMap) -> None:
        self.bulk = bulk
        self.signal: Signal = new_signal()

    def done(self) -> bool:
        return self.bulk._driver_may_stop()


class BulkMap:
    """``async with client.map(requests) as results: async for result in results: ...``

    See :meth:`BatchOpenAI.map`. The ``async with`` block owns the tasks that read the input
    and (with a plain client) drive the engine; leaving it is the clean-up point.
    """

    def __init__(
        self,
        client: BatchOpenAI,
        requests: Iterable[BulkRequest | Mapping[str, Any]]
        | AsyncIterable[BulkRequest | Mapping[str, Any]],
        *,
        ordered: bool,
        max_in_flight: int | None,
        keys_checked: bool = False,
    ) -> None:
        """``keys_checked``: the input's keys are known to be unique (``autobatcher run``'s
        reader refuses a repeated custom_id itself, with its line number), so the map keeps
        no set of them: a million keys' set is ~40 MB."""
        if not isinstance(requests, Iterable | AsyncIterable) or isinstance(
            requests, str | bytes | Mapping
        ):
            raise TypeError(
                "map() takes an iterable or async iterable of BulkRequest items or Batch API "
                f"input lines (mappings), not {type(requests).__name__}"
            )
        if max_in_flight is None:
            max_in_flight = client.config.max_queued_requests
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or max_in_flight < 1
        ):
            raise ValueError(f"max_in_flight must be a positive integer, got {max_in_flight!r}")
        self._client = client
        self._requests = requests
        self.ordered = bool(ordered)
        self.max_in_flight = max_in_flight
        self._entered = False
        self._engine: Engine | None = None
        self._tx: MemoryObjectSendStream[_Item] | None = None
        self._rx: MemoryObjectReceiveStream[_Item] | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._feed_scope = anyio.CancelScope()
        self._feed_done = anyio.Event()
        self._driver: _MapDriver | None = None
        self._driver_done: anyio.Event | None = None
        #: read from the input and not yet handed to the consumer
        self.outstanding = 0
        #: items read from the input so far
        self.read = 0
        #: items handed to the consumer so far
        self.delivered = 0
        self._live: set[BulkSlot] = set()
        self._keys: set[str] | None = None if keys_checked else set()
        self._room: anyio.Event | None = None
        self._input_done = False
        self._input_error: BaseException | None = None
        self._error_raised = False
        self._finished = False
        self._closing = False
        self._reorder: dict[int, BulkSlot | BulkResult] = {}
        self._burst = 0
        self._recall_tx: MemoryObjectSendStream[BulkSlot] | None = None
        #: the engine's live_bulk_ids with a journal; without one nothing needs it
        self._engine_live_ids: set[str] = (
            client._engine.live_bulk_ids if client._journal is not None else set()
        )

    def __aiter__(self) -> Any:
        raise TypeError(
            "iterate the results inside the block: `async with client.map(requests) as "
            "results: async for result in results: ...` (leaving the block is what withdraws "
            "requests not yet answered, so a bare `async for` cannot be made safe)"
        )

    # -- the block ----------------------------------------------------------------------------

    async def __aenter__(self) -> BulkResults:
        if self._entered:
            raise RuntimeError("a client.map() can be entered once; call client.map() again")
        self._entered = True
        engine = self._engine = self._client._begin_bulk()
        self._tx, self._rx = anyio.create_memory_object_stream[_Item](self.max_in_flight + 1)
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        if engine.standalone:
            self._driver = _MapDriver(self)
            self._driver_done = anyio.Event()
            tg.start_soon(self._drive, name="autobatcher map driver")
        if self._client._journal is not None:
            self._recall_tx, recall_rx = anyio.create_memory_object_stream[BulkSlot](
                self.max_in_flight
            )
            tg.start_soon(self._recall, recall_rx, name="autobatcher map recaller")
        tg.start_soon(self._feed, name="autobatcher map feeder")
        return BulkResults(self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tg = self._tg
        if tg is None:
            raise RuntimeError("__aexit__ without a matching __aenter__")
        self._tg = None
        engine = self._engine
        assert engine is not None
        timeout = self._client.config.shutdown_timeout_seconds
        try:
            self._closing = True
            self._feed_scope.cancel()
            with anyio.move_on_after(timeout, shield=True):
                await self._feed_done.wait()
            # Every request not answered yet is withdrawn: one not uploaded is never sent;
            # an uploaded batch all of whose requests left is cancelled (no journal) or kept
            # for the journal (see the module docstring).
            live_ids = engine.live_bulk_ids
            for slot in self._live:
                engine.withdraw(slot)
                live_ids.discard(slot.custom_id)
            self._live.clear()
            self._reorder.clear()
            self._finished = True
            driver = self._driver
            if driver is not None and self._driver_done is not None:
                # plain client: drive until the withdrawn batches are cancelled upstream
                fire(driver.signal)
                engine.poke()
                with anyio.move_on_after(timeout, shield=True):
                    await self._driver_done.wait()
        finally:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
            if self._tx is not None:
                self._tx.close()
            if self._rx is not None:
                self._rx.close()
        error = self._input_error
        if error is not None and not self._error_raised and exc is None:
            self._error_raised = True
            raise error

    # -- the tasks ----------------------------------------------------------------------------

    async def _drive(self) -> None:
        engine = self._engine
        assert engine is not None
        assert self._driver is not None
        assert self._driver_done is not None
        try:
            await engine.wait(self._driver)
        finally:
            self._driver_done.set()

    async def _recall(self, recall_rx: MemoryObjectReceiveStream[BulkSlot]) -> None:
        """With a journal: answer the items it holds, reading up to _RECALL_BATCH answers per
        trip to the worker thread (one line at a time costs ~1 ms, see SqliteStore)."""
        engine = self._engine
        assert engine is not None
        with recall_rx:
            try:
                while True:
                    batch = [await recall_rx.receive()]
                    while len(batch) < _RECALL_BATCH:
                        try:
                            batch.append(recall_rx.receive_nowait())
                        except anyio.WouldBlock:
                            break
                    for slot in await engine.recall_answered(batch):
                        if not engine.offer(slot):
                            await engine.send(slot)
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return
            except Exception as exc:  # the journal cannot be read: the map cannot go on
                if self._input_error is None:
                    self._input_error = exc
                assert self._tx is not None
                with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError):
                    self._tx.send_nowait(_End(exc))

    def _driver_may_stop(self) -> bool:
        if not self._finished:
            return False
        engine = self._engine
        return engine is None or not engine.has_abandoned()

    async def _feed(self) -> None:
        tx = self._tx
        assert tx is not None
        error: BaseException | None = None
        try:
            with self._feed_scope:
                requests = self._requests
                if isinstance(requests, AsyncIterable):
                    async for raw in requests:
                        await self._take(raw)
                else:
                    burst = 0
                    iterator: Iterator[Any] = iter(requests)
                    for raw in iterator:
                        if await self._take(raw):
                            burst = 0
                        else:
                            burst += 1
                            if burst >= _FEED_BURST:
                                burst = 0
                                await anyio.lowlevel.checkpoint()
                self._input_done = True
                # nothing more will join this map's lanes: no reason to wait for the window
                self._client._engine.request_flush()
        except Exception as exc:  # the input's own, or the client closing under the map
            error = exc
        finally:
            self._feed_done.set()
        if self._closing:
            return
        if error is not None:
            self._input_error = error
        tx.send_nowait(_End(error))

    async def _take(self, raw: object) -> bool:
        """Read one item into the engine (or straight to the consumer, if it is bad).
        Returns whether it waited."""
        engine = self._engine
        tx = self._tx
        assert engine is not None
        assert tx is not None
        index = self.read
        self.read = index + 1
        self.outstanding += 1
        waited = False
        item = self._prepare(raw, index)
        if isinstance(item, BulkSlot) and self._client._journal is not None:
            # (a journal's custom_id is the item's content and key: one in flight at a time)
            live = engine.live_bulk_ids
            if item.custom_id in live:
                item = _invalid(
                    item.key,
                    index,
                    "duplicate_key",
                    f"key {item.key!r} with this very request is in flight in another map of "
                    "this client",
                )
            else:
                live.add(item.custom_id)
        if isinstance(item, BulkResult):
            tx.send_nowait(item)
        else:
            self._live.add(item)
            recalled = False
            if engine.may_recall():
                await engine.load_journal()
                if engine.answered(item.custom_id):
                    # read from the journal by the recaller task, many at a time
                    assert self._recall_tx is not None
                    self._recall_tx.send_nowait(item)
                    recalled = True
                else:
                    recalled = engine.attach_resumed(item)
            if not recalled and not engine.offer(item):
                waited = True
                await engine.send(item)  # (cancelled: withdrawn with the rest at exit)
        while self.outstanding >= self.max_in_flight:
            waited = True
            room = self._room = anyio.Event()
            await room.wait()
        return waited

    def _prepare(self, raw: object, index: int) -> BulkSlot | BulkResult:
        """Validate and encode one item, in the feeder's task: a bad one becomes its own
        error result and touches nothing else."""
        key: object
        url: object
        body: object
        method: object
        if isinstance(raw, BulkRequest):
            key, url, body, method = raw.key, raw.url, raw.body, raw.method
        elif isinstance(raw, Mapping):
            key, url, body = raw.get("custom_id"), raw.get("url"), raw.get("body")
            method = raw.get("method", "POST")
        else:
            return _invalid(
                "",
                index,
                "invalid_item",
                f"item {index} is a {type(raw).__name__}: give a BulkRequest or a mapping "
                '{"custom_id", "method", "url", "body"}',
            )
        if not isinstance(key, str) or not key:
            return _invalid(
                "",
                index,
                "invalid_key",
                f"item {index} needs its key (custom_id) as a non-empty string, got {key!r}",
            )
        keys = self._keys
        if keys is not None:
            if key in keys:
                return _invalid(
                    key,
                    index,
                    "duplicate_key",
                    f"key {key!r} was already used by an earlier item of this map",
                )
            keys.add(key)
        endpoint = ENDPOINTS.get(url) if isinstance(url, str) else None
        if endpoint is None:
            return _invalid(
                key,
                index,
                "unsupported_url",
                f"url {url!r} is not an endpoint the client batches; use one of "
                + ", ".join(ENDPOINTS),
            )
        if method != "POST":
            return _invalid(
                key, index, "unsupported_method", f"method {method!r}: batch lines are POST"
            )
        if not isinstance(body, Mapping):
            return _invalid(
                key,
                index,
                "invalid_body",
                f"the body must be a JSON object (a mapping), got {type(body).__name__}",
            )
        if body.get("stream"):
            return _invalid(
                key,
                index,
                "unsupported_parameter",
                "stream=true: batch APIs do not stream; drop it and read the whole answer",
            )
        model = body.get("model")
        if model is None and not endpoint.model_required:
            model = ""
        if not isinstance(model, str) or (endpoint.model_required and not model):
            return _invalid(
                key,
                index,
                "missing_model",
                f'{endpoint.name} needs "model" in the body as a non-empty string',
            )
        client = self._client
        cap = client.config.max_batch_bytes
        # (canonical JSON is ASCII: its length is its size in bytes)
        body_text = raw.body_text if isinstance(raw, _EncodedRequest) else None
        if body_text is not None:
            at_least = len(body_text)
        else:
            at_least = encoded_size_at_least(body, cap)
            if cap >= at_least > cap // MAX_INFLATION:
                at_least = encoded_size_at_least(body, cap, measure_text=True)
        too_large = at_least > cap
        line = b""
        custom_id = ""
        if not too_large:
            journal = client._journal
            try:
                if journal is None:
                    custom_id = client._engine.next_custom_id()
                    if body_text is None:
                        line = encode_line(custom_id, endpoint.path, body)
                    else:
                        line = assemble_line(custom_id, endpoint.path, body_text)
                else:
                    if body_text is None:
                        body_text = encode_canonical_body(body)
                    custom_id = journal.item_custom_id(endpoint.path, body_text, key)
                    line = assemble_line(custom_id, endpoint.path, body_text)
            except TypeError as exc:
                return _invalid(key, index, "invalid_body", str(exc))
            too_large = len(line) > cap
        if too_large:
            return _invalid(
                key,
                index,
                "request_too_large",
                f"this request encodes to at least {max(at_least, len(line)):,} bytes, more "
                f"than a whole batch may hold (max_batch_bytes={cap:,})",
            )
        quota = client.config.max_enqueued_tokens
        if quota is not None and estimate_tokens(len(line)) > quota:
            return _invalid(
                key,
                index,
                "request_too_large",
                f"this request is estimated at {estimate_tokens(len(line)):,} input tokens "
                f"(its {len(line):,} encoded bytes / 4), more than max_enqueued_tokens="
                f"{quota:,} allows in one batch",
            )
        inputs = _count_inputs(endpoint, body) if endpoint.counts_inputs else 1
        return BulkSlot(self, index, key, custom_id, endpoint.path, model, line, inputs)

    # -- results ------------------------------------------------------------------------------

    def _deliver(self, slot: BulkSlot) -> None:
        """The engine settled ``slot`` (any task): put it on the results stream."""
        if self._closing or slot not in self._live:
            return
        tx = self._tx
        assert tx is not None
        tx.send_nowait(slot)  # never full: the buffer holds every outstanding item

    async def _next(self) -> BulkResult:
        """The next result (in completion order, or input order when ``ordered``)."""
        rx = self._rx
        assert rx is not None
        reorder = self._reorder
        while True:
            if (self.outstanding == 0 and self._input_done) or self._closing:
                self._finish()
                raise StopAsyncIteration
            if self.ordered and self.delivered in reorder:
                item: BulkSlot | BulkResult = reorder.pop(self.delivered)
            else:
                try:
                    # Results come in bursts (a downloaded file): take them without a trip
                    # through the event loop each, but let it run every _RECEIVE_BURST.
                    if self._burst < _RECEIVE_BURST:
                        try:
                            received = rx.receive_nowait()
                            self._burst += 1
                        except anyio.WouldBlock:
                            self._burst = 0
                            received = await rx.receive()
                    else:
                        self._burst = 0
                        received = await rx.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    raise StopAsyncIteration from None
                if isinstance(received, _End):
                    if received.error is not None:
                        self._error_raised = True
                        raise received.error
                    continue
                item = received
                if self.ordered and item.index != self.delivered:
                    reorder[item.index] = item
                    continue
            return self._hand_over(item)

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        driver = self._driver
        if driver is not None:  # its work for this map is done: let it hand over
            fire(driver.signal)
            self._client._engine.poke()

    def _hand_over(self, item: BulkSlot | BulkResult) -> BulkResult:
        self.outstanding -= 1
        self.delivered += 1
        room = self._room
        if room is not None and self.outstanding < self.max_in_flight:
            self._room = None
            room.set()
        if isinstance(item, BulkResult):
            return item
        self._live.discard(item)
        self._engine_live_ids.discard(item.custom_id)
        # break the slot's cycle with itself: reference counting frees it (and its result
        # line) as soon as the result is dropped, without waiting for the cyclic collector
        item.signal = _HANDED_OVER
        return _result_of(item)


@attrs.frozen
class BatchProgress:
    """One batch running upstream, in :attr:`BulkProgress.batches`.

    ``status`` is the last status the client saw (``validating``, ``in_progress``,
    ``finalizing``, …; ``None`` before its first poll in this process), ``requests`` the
    batch's lines, ``waiting`` those of the client's requests still waiting for their answer
    from it (fewer as its results are downloaded; none for a batch an earlier run left that
    no item of this run has attached to yet).
    """

    batch_id: str
    status: str | None
    requests: int
    waiting: int


@attrs.frozen
class BulkProgress:
    """Where a map's requests stand at one moment: :meth:`BulkResults.progress`.

    The map's own counts: ``read`` (items read from the input), ``delivered`` (results handed
    to you) and ``outstanding`` (read, not yet handed over). The client's, across all it was
    given (this map's items, and any other map's or ``create()`` call's on the same client):
    ``queued`` (waiting in a lane for its batch to fill or its window to close), ``uploading``
    (in a batch job being uploaded or created, not yet a batch upstream), ``in_batches``
    (waiting for an answer from a batch upstream) and ``batches`` (those batches). An item
    that is none of these is answered and on its way to you, refused (a bad item), or being
    answered from the journal.
    """

    read: int
    delivered: int
    outstanding: int
    queued: int
    uploading: int
    in_batches: int
    batches: tuple[BatchProgress, ...]


class BulkResults:
    """What ``async with client.map(...) as results`` gives: an async iterator of results."""

    __slots__ = ("_bulk",)

    def __init__(self, bulk: BulkMap) -> None:
        self._bulk = bulk

    def __aiter__(self) -> BulkResults:
        return self

    async def __anext__(self) -> BulkResult:
        return await self._bulk._next()

    @property
    def read(self) -> int:
        """Items read from the input so far."""
        return self._bulk.read

    @property
    def outstanding(self) -> int:
        """Items read and not yet handed over (at most ``max_in_flight``)."""
        return self._bulk.outstanding

    @property
    def delivered(self) -> int:
        """Results handed over so far."""
        return self._bulk.delivered

    def progress(self) -> BulkProgress:
        """Where the requests stand now (see :class:`BulkProgress`): counts only, made in one
        pass over the client's running batch jobs; cheap enough to call a few times a
        second."""
        bulk = self._bulk
        where = bulk._client._engine.whereabouts()
        return BulkProgress(
            read=bulk.read,
            delivered=bulk.delivered,
            outstanding=bulk.outstanding,
            queued=where.queued,
            uploading=where.uploading,
            in_batches=where.in_batches,
            batches=tuple(BatchProgress(*batch) for batch in where.batches),
        )


def _invalid(key: str, index: int, code: str, message: str) -> BulkResult:
    return BulkResult(
        key=key,
        index=index,
        status_code=None,
        body=None,
        error=InvalidBulkRequestError(message, code=code, custom_id=key or None),
        request_id=None,
        batch_id=None,
    )


def _identity(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body


def _result_of(slot: BulkSlot) -> BulkResult:
    """The consumer's view of a settled slot: one ``json.loads`` of its line, no model."""
    outcome = slot.outcome
    key = slot.key
    batch_id = slot.batch_id
    slot.line = None
    if isinstance(outcome, bytes):
        return _result_of_line(slot, outcome, batch_id)
    if isinstance(outcome, APIError):
        error = outcome.for_request(key, batch_id)
        status = outcome.status_code if isinstance(outcome, APIStatusError) else None
        return BulkResult(
            key=key,
            index=slot.index,
            status_code=status,
            body=None,
            error=error,
            request_id=getattr(outcome, "request_id", None),
            batch_id=error.batch_id,
            custom_id=slot.custom_id,
            url=slot.endpoint,
        )
    if isinstance(outcome, AutobatcherError):
        raise outcome  # the client stopped (RequestAbortedError): no item can go on
    raise InternalError(f"request {key!r} settled without an answer ({outcome!r})")


def _result_of_line(slot: BulkSlot, line: bytes, batch_id: str | None) -> BulkResult:
    key = slot.key
    status: int | None = None
    request_id: str | None = None
    body: dict[str, Any] | None = None
    line_id: str | None = None
    envelope = _success_envelope(line)
    splice: tuple[bytes, int, int] | None = None
    if envelope is not None:
        line_id, status, request_id, body, splice = envelope
    else:
        try:
            data = json.loads(line)
        except ValueError:
            data = None
        if isinstance(data, dict):
            identifier = data.get("id")
            line_id = identifier if isinstance(identifier, str) else None
            response = data.get("response")
            if isinstance(response, dict):
                code = response.get("status_code")
                status = code if isinstance(code, int) and not isinstance(code, bool) else None
                rid = response.get("request_id")
                request_id = rid if isinstance(rid, str) else None
                raw_body = response.get("body")
                if isinstance(raw_body, str):  # some servers send the body as JSON text
                    try:
                        raw_body = json.loads(raw_body)
                    except ValueError:
                        pass
                body = raw_body if isinstance(raw_body, dict) else None
    error: APIError | None = None
    if not (status is not None and 200 <= status < 300 and body is not None):
        try:
            decode_result(line, _identity, custom_id=key, batch_id=batch_id)
        except APIError as exc:
            error = exc
        if error is None:  # pragma: no cover - decode_result raises for every such line
            error = APIError("the result line has no usable response", custom_id=key)
    result = BulkResult(
        key=key,
        index=slot.index,
        status_code=status,
        body=body,
        error=error,
        request_id=request_id,
        batch_id=batch_id,
        custom_id=slot.custom_id,
        url=slot.endpoint,
        line_id=line_id,
    )
    if splice is not None and error is None:
        object.__setattr__(result, "_raw_line", splice)
    return result


# The documented layout of a 2xx result line, read by one anchored match (as
# ``_jsonl._SUCCESS_PREFIX``, with the id, custom_id, status and request id captured): only
# the body is then parsed. Any other layout takes the full parse.
_WS = rb"[ \t\n\r]*"  # JSON's own whitespace (``\s`` would let through more)
_SUCCESS_ENVELOPE = re.compile(
    rb'\{%(ws)s"id"%(ws)s:%(ws)s"([^"\\]*)"%(ws)s,%(ws)s"custom_id"%(ws)s:%(ws)s("[^"\\]*")%(ws)s,'
    rb'%(ws)s"response"%(ws)s:%(ws)s\{%(ws)s"status_code"%(ws)s:%(ws)s(2\d\d)%(ws)s,'
    rb'%(ws)s"request_id"%(ws)s:%(ws)s(?:"([^"\\]*)"|null)%(ws)s,%(ws)s"body"%(ws)s:%(ws)s(?=\{)'
    % {b"ws": _WS}
)
# What may follow the body for the line to be exactly an output line's fields: the end of
# ``response``, then ``"error": null``, then the end of the line.
_ENVELOPE_END = re.compile(
    r'{ws}\}}{ws},{ws}"error"{ws}:{ws}null{ws}\}}{ws}\Z'.format(ws=_WS.decode())
)
_raw_decode = json.JSONDecoder().raw_decode
_encode_key = json.JSONEncoder().encode
_encode_output = json.JSONEncoder(separators=(",", ":")).encode


def _success_envelope(
    line: bytes,
) -> tuple[str, int, str | None, dict[str, Any], tuple[bytes, int, int] | None] | None:
    """A 2xx line of the documented layout: its id, status, request id and body, and (when
    nothing but ``"error": null`` follows the body) the line and its custom_id's span."""
    match = _SUCCESS_ENVELOPE.match(line)
    if match is None:
        return None
    span = success_body_span(line, match.end()) if FAST_JSON else None
    if span is not None:
        # the usual spelling: the body alone decoded (by orjson), the line kept as it is
        try:
            body = decode_json(line[span[0] : span[1]])
            line_id = match.group(1).decode()
            request_id = match.group(4)
            request_text = None if request_id is None else request_id.decode()
        except ValueError:  # (UnicodeDecodeError is one)
            body = None
        if isinstance(body, dict):
            start, stop = match.span(2)
            return line_id, int(match.group(3)), request_text, body, (line, start, stop)
    try:
        rest = line[match.end() :].decode()
        line_id = match.group(1).decode()
        request_id = match.group(4)
        body, end = _raw_decode(rest)
    except ValueError:  # (UnicodeDecodeError is one)
        return None
    if not isinstance(body, dict):
        return None
    splice = None
    if _ENVELOPE_END.match(rest, end) is not None:
        start, stop = match.span(2)
        splice = (line.rstrip(b" \t\n\r"), start, stop)
    return (
        line_id,
        int(match.group(3)),
        None if request_id is None else request_id.decode(),
        body,
        splice,
    )
