"""``BatchOpenAI``, ``open_batcher`` and the OpenAI-shaped namespaces."""

from __future__ import annotations

import asyncio
import enum
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import attrs
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream

from ._config import BatcherConfig
from ._engine import Engine
from ._errors import (
    APITimeoutError,
    ClientClosedError,
    InternalError,
    RequestTooLargeError,
    UnsupportedParameterError,
)
from ._events import BatchEvent, EventHub
from ._job import Slot
from ._jsonl import decode_result, encode_line
from ._wire import Wire
from .types import (
    ChatCompletion,
    Completion,
    CreateEmbeddingResponse,
    ModerationCreateResponse,
    Response,
)

__all__ = ["BatchOpenAI", "RawResponse", "open_batcher"]

T = TypeVar("T")
R = TypeVar("R")

_CONFIG_FIELDS = frozenset(field.name for field in attrs.fields(BatcherConfig))


@attrs.frozen
class RawResponse(Generic[T]):
    """What ``with_raw_response.create()`` returns, shaped like the SDK's ``LegacyAPIResponse``.

    There is no HTTP response of its own for a batched request; ``headers`` carries the line's
    ``x-request-id`` and the batch and custom ids it travelled under.
    """

    _parsed: T
    headers: httpx.Headers
    status_code: int = 200

    def parse(self) -> T:
        return self._parsed


@attrs.frozen
class _Endpoint(Generic[T]):
    path: str  # as written in the JSONL line and the batch's ``endpoint``
    name: str  # how users reach it, for messages
    build: Callable[[Mapping[str, Any]], T]
    model_required: bool = True
    counts_inputs: bool = False  # embeddings: a batch holds at most 50,000 inputs


_CHAT = _Endpoint("/v1/chat/completions", "chat.completions", ChatCompletion.from_dict)
_EMBEDDINGS = _Endpoint(
    "/v1/embeddings", "embeddings", CreateEmbeddingResponse.from_dict, counts_inputs=True
)
_RESPONSES = _Endpoint("/v1/responses", "responses", Response.from_dict)
_COMPLETIONS = _Endpoint("/v1/completions", "completions", Completion.from_dict)
_MODERATIONS = _Endpoint(
    "/v1/moderations", "moderations", ModerationCreateResponse.from_dict, model_required=False
)

_NOT_BATCHED_HINTS = {
    "parse": "call create(response_format=...) and parse message.content yourself",
    "stream": "batch APIs do not stream; call create() and await the whole answer",
    "with_streaming_response": "batch APIs do not stream; use create() or with_raw_response",
    "retrieve": "stored objects are not batched; use openai.AsyncOpenAI for real-time calls",
    "list": "stored objects are not batched; use openai.AsyncOpenAI for real-time calls",
    "delete": "stored objects are not batched; use openai.AsyncOpenAI for real-time calls",
    "update": "stored objects are not batched; use openai.AsyncOpenAI for real-time calls",
    "cancel": "cancel the awaiting task instead: its request is withdrawn or its result dropped",
}


def _not_batched(path: str, name: str) -> AttributeError:
    hint = _NOT_BATCHED_HINTS.get(
        name, "only create() is batched; use openai.AsyncOpenAI for anything else"
    )
    return AttributeError(f"'{path}.{name}' is not available in autobatcher: {hint}")


def _count_inputs(endpoint: _Endpoint[Any], body: Mapping[str, Any]) -> int:
    value = body.get("input")
    if isinstance(value, list) and value and isinstance(value[0], str | list):
        return len(value)
    return 1


class _Create(Generic[T, R]):
    """``create`` for one endpoint, finished into ``R`` by the subclass.

    ``create`` is a plain method returning the coroutine of :meth:`BatchOpenAI._answer`, so a
    waiting request keeps exactly one coroutine frame of ours alive, not a stack of them.
    """

    _path: str

    def __init__(self, client: BatchOpenAI, endpoint: _Endpoint[T]) -> None:
        self._client = client
        self._endpoint = endpoint

    def create(
        self,
        *,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, object] | None = None,
        extra_body: Mapping[str, object] | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> Coroutine[Any, Any, R]:
        return self._client._answer(
            self._endpoint, params, extra_headers, extra_query, extra_body, timeout, self
        )

    def _finish(self, slot: Slot, line: bytes) -> R:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        raise _not_batched(self._path.format(self._endpoint.name), name)


class _Creator(_Create[T, T]):
    """``create``: the parsed model."""

    _path = "{}"

    def _finish(self, slot: Slot, line: bytes) -> T:
        return decode_result(
            line, self._endpoint.build, custom_id=slot.custom_id, batch_id=slot.batch_id
        )


class _RawCreator(_Create[T, "RawResponse[T]"]):
    """``with_raw_response.create``: the parsed model plus the line's headers and status."""

    _path = "{}.with_raw_response"

    def _finish(self, slot: Slot, line: bytes) -> RawResponse[T]:
        batch_id = slot.batch_id
        parsed = decode_result(
            line, self._endpoint.build, custom_id=slot.custom_id, batch_id=batch_id
        )
        response = json.loads(line).get("response") or {}
        headers = httpx.Headers(
            {
                "x-request-id": str(response.get("request_id") or ""),
                "x-autobatcher-batch-id": batch_id or "",
                "x-autobatcher-custom-id": slot.custom_id,
            }
        )
        status = response.get("status_code")
        return RawResponse(parsed, headers, status if isinstance(status, int) else 200)


class _Resource(_Creator[T]):
    def __init__(self, client: BatchOpenAI, endpoint: _Endpoint[T]) -> None:
        super().__init__(client, endpoint)
        self.with_raw_response = _RawCreator(client, endpoint)


class ChatCompletions(_Resource[ChatCompletion]):
    """``client.chat.completions``."""


class Chat:
    """``client.chat``."""

    def __init__(self, client: BatchOpenAI) -> None:
        self.completions = ChatCompletions(client, _CHAT)

    def __getattr__(self, name: str) -> Any:
        raise _not_batched("chat", name)


class Embeddings(_Resource[CreateEmbeddingResponse]):
    """``client.embeddings``."""


class Responses(_Resource[Response]):
    """``client.responses``."""


class Completions(_Resource[Completion]):
    """``client.completions``."""


class Moderations(_Resource[ModerationCreateResponse]):
    """``client.moderations``."""


class _State(enum.Enum):
    UNOPENED = "unopened"  # built, no request yet
    RUNNING = "running"  # run mode: the batcher's own task drives (async with, run())
    STANDALONE = "standalone"  # plain mode: waiting callers drive in turn
    CLOSING = "closing"
    CLOSED = "closed"


class BatchOpenAI:
    """A drop-in for ``openai.AsyncOpenAI`` whose calls go through the Batch API.

    Three ways to own it, on asyncio and trio alike:

    * ``async with BatchOpenAI(...) as client:`` (or ``async with open_batcher(...)``): the engine
      runs in a task group owned by the block; leaving the block normally flushes what is
      pending at once and waits for every answer.
    * ``await tg.start(client.run)`` in a task group of your own; ``await client.close()`` ends it.
    * plain ``client = BatchOpenAI(...)`` … ``await client.close()``: no background task at all;
      the callers that wait take turns driving the engine inside their own calls.
    """

    chat: Chat
    embeddings: Embeddings
    responses: Responses
    completions: Completions
    moderations: Moderations

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        batch_size: int = 100,
        batch_window_seconds: float = 1.0,
        poll_interval_seconds: float = 5.0,
        completion_window: str = "24h",
        http_client: httpx.AsyncClient | None = None,
        **options: Any,
    ) -> None:
        unknown = set(options) - _CONFIG_FIELDS
        if unknown:
            raise TypeError(
                f"BatchOpenAI got unknown option(s) {', '.join(sorted(unknown))}; "
                f"valid options: {', '.join(sorted(_CONFIG_FIELDS | {'http_client'}))}"
            )
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError("http_client must be an httpx.AsyncClient")
        self._config = BatcherConfig(
            api_key=api_key,
            base_url=base_url,
            batch_size=batch_size,
            batch_window_seconds=batch_window_seconds,
            poll_interval_seconds=poll_interval_seconds,
            completion_window=completion_window,
            **options,
        )
        self._events = EventHub(self._config.event_hook)
        self._wire = Wire(self._config, http_client, events=self._events)
        self._engine = Engine(self._config, self._wire, self._events)
        self._state = _State.UNOPENED
        self._task_group: anyio.abc.TaskGroup | None = None
        self._stop: anyio.Event | None = None  # set by close(): the engine's task may end
        self._run_done: anyio.Event | None = None
        self._closed_event: anyio.Event | None = None
        self.chat = Chat(self)
        self.embeddings = Embeddings(self, _EMBEDDINGS)
        self.responses = Responses(self, _RESPONSES)
        self.completions = Completions(self, _COMPLETIONS)
        self.moderations = Moderations(self, _MODERATIONS)

    def __repr__(self) -> str:
        return f"<BatchOpenAI {self._config.base_url} {self._state.value}>"

    def __getattr__(self, name: str) -> Any:
        raise _not_batched("client", name)

    @property
    def config(self) -> BatcherConfig:
        return self._config

    @property
    def base_url(self) -> str:
        return self._config.base_url

    @property
    def api_key(self) -> str | None:
        return self._config.api_key

    # -- the engine's owner ------------------------------------------------------------------

    def events(self, *, max_buffer: int = 1000) -> MemoryObjectReceiveStream[BatchEvent]:
        """``async for event in client.events():`` — lifecycle events, as they happen.

        An alternative to the synchronous ``event_hook``: each call subscribes a new stream
        (an anyio memory object stream) that ends when the client closes. The engine never
        waits for a reader; a reader more than ``max_buffer`` events behind misses events
        (logged once). Use it as ``with client.events() as events: async for e in events:``
        to unsubscribe when you stop reading early.
        """
        return self._events.subscribe(max_buffer)

    def _refuse_to_start(self) -> None:
        state = self._state
        if state is _State.RUNNING:
            raise RuntimeError("this client's engine is already running (async with or run())")
        if state is _State.STANDALONE:
            raise RuntimeError(
                "this client already has requests in plain mode (without async with); "
                "enter `async with` or start run() before its first request"
            )
        if state is not _State.UNOPENED:
            raise ClientClosedError(
                "this client is closed and cannot be opened again; create a new BatchOpenAI"
            )

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Drive the engine until :meth:`close`; for ``await task_group.start(client.run)``.

        If this task is cancelled (its task group is torn down by an exception), upstream batches
        it started are cancelled (``cancel_batches_on_exit``), shielded and bounded in time, and
        every waiting caller gets :class:`ClientClosedError`.
        """
        self._refuse_to_start()
        self._state = _State.RUNNING
        stop = self._stop = anyio.Event()
        run_done = self._run_done = anyio.Event()
        finished = False
        try:
            task_status.started()
            await self._engine.run(stop)
            finished = True
        finally:
            try:
                if not finished:
                    await self._engine.abort("the client's engine was stopped")
                    await self._close_wire()
                    self._state = _State.CLOSED
            finally:
                run_done.set()

    async def __aenter__(self) -> BatchOpenAI:
        self._refuse_to_start()
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        try:
            await task_group.start(self.run)
        except BaseException as exc:
            await task_group.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group = self._task_group
        self._task_group = None
        if task_group is None:
            raise RuntimeError("__aexit__ without a matching __aenter__")
        try:
            if exc is None:
                await self.close()
            else:
                # The user's exception is not passed into the task group: it leaves unwrapped.
                task_group.cancel_scope.cancel()
        except BaseException:
            task_group.cancel_scope.cancel()
            raise
        finally:
            await task_group.__aexit__(None, None, None)

    async def close(self) -> None:
        """Flush what is pending at once, wait for every answer, then release the connection.

        Idempotent, and safe to call from any task; a second call waits for the first.
        Cancelling it stops the engine the hard way (upstream batches are cancelled, waiting
        callers get :class:`ClientClosedError`).
        """
        if self._closed_event is not None:
            await self._closed_event.wait()
            return
        closed_event = self._closed_event = anyio.Event()
        if self._state is _State.CLOSED:  # the engine's task already stopped it
            closed_event.set()
            return
        self._state = _State.CLOSING
        engine = self._engine
        engine.close("the client is closed")
        self._events.emit(BatchEvent(kind="client_closing"))
        try:
            try:
                await engine.drain()
            except BaseException:
                await engine.abort("closing the client was cancelled")
                raise
            finally:
                await self._stop_engine_task()
        finally:
            await self._close_wire()
            self._events.close()
            self._state = _State.CLOSED
            closed_event.set()

    async def _stop_engine_task(self) -> None:
        """Let the engine's own task (run mode) end, and wait for it, shielded and bounded."""
        if self._stop is None or self._run_done is None:
            return
        self._stop.set()
        self._engine.poke()
        with anyio.move_on_after(self._config.shutdown_timeout_seconds, shield=True):
            await self._run_done.wait()

    aclose = close

    async def _close_wire(self) -> None:
        with anyio.move_on_after(self._config.shutdown_timeout_seconds, shield=True):
            await self._wire.aclose()

    # -- one request -------------------------------------------------------------------------

    def _encode(
        self,
        endpoint: _Endpoint[Any],
        params: dict[str, Any],
        extra_headers: Mapping[str, str] | None,
        extra_query: Mapping[str, object] | None,
        extra_body: Mapping[str, object] | None,
        timeout: float | None,
    ) -> tuple[str, str, bytes, int]:
        """Validate one call and encode its JSONL line, in the caller's task: bad input fails
        here, before anyone else's request is touched. Returns (model, custom_id, line, inputs).
        """
        engine = self._engine
        if engine.closed_reason is not None:
            raise ClientClosedError(f"{engine.closed_reason}: it cannot take new requests")
        if self._state is _State.UNOPENED:
            self._state = _State.STANDALONE
        if "stream" in params or "stream_options" in params:
            if params.pop("stream", None):
                raise UnsupportedParameterError(
                    f"{endpoint.name}.create(stream=True): batch APIs do not stream; "
                    "drop stream= and await the whole answer"
                )
            params.pop("stream_options", None)
        if extra_headers:
            raise UnsupportedParameterError(
                "extra_headers cannot be sent per request in a batch; set default_headers on "
                "the client for the Files/Batches calls"
            )
        if extra_query:
            raise UnsupportedParameterError(
                "extra_query cannot be sent per request in a batch (batch lines carry a body only)"
            )
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
        ):
            raise UnsupportedParameterError(
                "timeout must be a positive number of seconds (the deadline for this answer)"
            )
        if extra_body:
            params.update(extra_body)
        model = params.get("model")
        if model is None and not endpoint.model_required:
            model = ""
        if not isinstance(model, str) or (endpoint.model_required and not model):
            raise TypeError(f"{endpoint.name}.create() needs model= as a non-empty string")
        custom_id = engine.next_custom_id()
        line = encode_line(custom_id, endpoint.path, params)
        if len(line) > self._config.max_batch_bytes:
            raise RequestTooLargeError(
                f"this request encodes to {len(line):,} bytes, more than a whole batch may hold "
                f"(max_batch_bytes={self._config.max_batch_bytes:,})"
            )
        inputs = _count_inputs(endpoint, params) if endpoint.counts_inputs else 1
        return model, custom_id, line, inputs

    async def _answer(
        self,
        endpoint: _Endpoint[Any],
        params: dict[str, Any],
        extra_headers: Mapping[str, str] | None,
        extra_query: Mapping[str, object] | None,
        extra_body: Mapping[str, object] | None,
        timeout: float | None,
        finisher: _Create[Any, R],
    ) -> R:
        """Submit one request, wait for its result line, and ``finish`` it (or raise its error).

        ``finisher`` is the namespace object itself, not a bound method: nothing extra is
        allocated (and kept alive) per waiting request.

        The common case (run mode, no deadline) awaits the request's own signal right here:
        no extra coroutine layers stay alive per waiting request.
        """
        model, custom_id, line, inputs = self._encode(
            endpoint, params, extra_headers, extra_query, extra_body, timeout
        )
        del params
        engine = self._engine
        slot = Slot(custom_id, endpoint.path, model, line, inputs)
        del line
        if not engine.offer(slot):
            await engine.send(slot)
        try:
            if timeout is None and not engine.standalone:
                signal = slot.signal
                if isinstance(signal, asyncio.Future):
                    await signal
                else:
                    await signal.wait()
            elif timeout is None:
                await engine.wait(slot)
            else:
                with anyio.fail_after(timeout):
                    await engine.wait(slot)
        except TimeoutError:
            engine.withdraw(slot)
            raise APITimeoutError(
                f"no answer within timeout={timeout}s",
                custom_id=custom_id,
                batch_id=slot.batch_id,
            ) from None
        except BaseException:
            engine.withdraw(slot)
            raise
        outcome = slot.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is None:  # pragma: no cover - the engine fires a signal only with an outcome
            raise InternalError("woken without an answer")
        return finisher._finish(slot, outcome)


@asynccontextmanager
async def open_batcher(**options: Any) -> AsyncIterator[BatchOpenAI]:
    """``async with open_batcher(**options) as client:`` — the engine lives inside the block.

    Leaving normally flushes and waits for every answer; leaving by an exception or cancellation
    cancels upstream batches (by default) and fails the callers still waiting. The block's own
    exception comes out unwrapped (no exception group), on asyncio and trio.
    """
    client = BatchOpenAI(**options)
    async with client:
        yield client
