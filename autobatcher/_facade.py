"""``BatchOpenAI`` and ``open_batcher``; the namespaces they expose live in ``_resources``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.abc
import attrs
import httpx

from ._config import BatcherConfig
from ._engine import Engine
from ._errors import (
    APITimeoutError,
    ClientClosedError,
    RequestTooLargeError,
    UnsupportedParameterError,
)
from ._events import BatchEvent, emit
from ._jsonl import encode_line
from ._resources import (
    _COMPLETIONS,
    _EMBEDDINGS,
    _MODERATIONS,
    _RESPONSES,
    Chat,
    Completions,
    Embeddings,
    Moderations,
    Responses,
    _count_inputs,
    _Create,
    _Endpoint,
    _not_batched,
)
from ._wire import Wire

__all__ = ["BatchOpenAI", "open_batcher"]

R = TypeVar("R")

_CONFIG_FIELDS = frozenset(field.name for field in attrs.fields(BatcherConfig))


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
        self._wire = Wire(self._config, http_client)
        self._engine = Engine(self._config, self._wire)
        self._task_group: anyio.abc.TaskGroup | None = None
        self._run_started = False
        self._stop_requested = False
        self._run_done: anyio.Event | None = None
        self._closing: anyio.Event | None = None
        self._closed = False
        self.chat = Chat(self)
        self.embeddings = Embeddings(self, _EMBEDDINGS)
        self.responses = Responses(self, _RESPONSES)
        self.completions = Completions(self, _COMPLETIONS)
        self.moderations = Moderations(self, _MODERATIONS)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<BatchOpenAI {self._config.base_url} {state}>"

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

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Drive the engine until :meth:`close`; for ``await task_group.start(client.run)``.

        If this task is cancelled (its task group is torn down by an exception), upstream batches
        it started are cancelled (``cancel_batches_on_exit``), shielded and bounded in time, and
        every waiting caller gets :class:`ClientClosedError`.
        """
        engine = self._engine
        if self._run_started:
            raise RuntimeError("this client's engine is already running")
        if self._closed or self._closing is not None:
            raise ClientClosedError("the client is closed")
        if not engine.idle():
            raise RuntimeError("run() must start before the first request")
        self._run_started = True
        self._run_done = anyio.Event()
        engine.standalone = False
        engine._driver = self
        finished = False
        try:
            task_status.started()
            await engine.drive(lambda: self._stop_requested)
            finished = True
        finally:
            engine._driver = None
            if not finished:
                await engine.abort("the client's engine was stopped")
                await self._close_wire()
                self._closed = True
            self._run_done.set()

    async def __aenter__(self) -> BatchOpenAI:
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
        assert task_group is not None, "__aexit__ without __aenter__"
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
        if self._closing is not None:
            await self._closing.wait()
            return
        self._closing = anyio.Event()
        engine = self._engine
        engine.close("the client is closed")
        emit(self._config.event_hook, BatchEvent(kind="client_closing"))
        try:
            try:
                await engine.drain()
            except BaseException:
                await engine.abort("closing the client was cancelled")
                raise
            finally:
                if self._run_done is not None:
                    self._stop_requested = True
                    engine._poke()
                    with anyio.CancelScope(shield=True):
                        await self._run_done.wait()
        finally:
            await self._close_wire()
            self._closed = True
            self._closing.set()

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
        if not engine.has_room():
            await engine.wait_for_room()
        slot = engine.submit(endpoint.path, model, custom_id, line, inputs)
        del line
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
            engine.forget(slot)
            raise APITimeoutError(
                f"no answer within timeout={timeout}s",
                custom_id=custom_id,
                batch_id=slot.job.batch_id,
            ) from None
        except BaseException:
            engine.forget(slot)
            raise
        outcome = slot.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is None:  # pragma: no cover - the engine fires a signal only with an outcome
            raise ClientClosedError("internal error: woken without an answer")
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
