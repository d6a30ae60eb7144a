"""``BatchOpenAI`` and ``open_batcher``; the namespaces they expose live in ``_resources``."""

from __future__ import annotations

import asyncio
import enum
import inspect
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar

import anyio
import anyio.abc
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream

from ._bulk import BulkMap, BulkRequest
from ._config import BatcherConfig
from ._engine import Engine
from ._errors import (
    APITimeoutError,
    ClientClosedError,
    InternalError,
    MissingAPIKeyError,
    RequestTooLargeError,
    UnsupportedParameterError,
)
from ._events import BatchEvent, EventHub
from ._job import Slot
from ._journal import Journal, JournalMeta, Store, key_fingerprint, open_store
from ._jsonl import assemble_line, encode_canonical_body, encode_line
from ._providers import ProviderName
from ._resources import (
    Chat,
    Completions,
    Embeddings,
    Moderations,
    Omit,
    Responses,
    _count_inputs,
    _Create,
    _Endpoint,
    _not_batched,
    omit,
)
from ._sizing import MAX_INFLATION, encoded_size_at_least
from ._wire import Wire

__all__ = ["BatchOpenAI", "open_batcher"]

R = TypeVar("R")
P = ParamSpec("P")


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
        organization: str | None = None,
        project: str | None = None,
        base_url: str | httpx.URL | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = 2,
        default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, object] | None = None,
        http_client: httpx.AsyncClient | None = None,
        provider: ProviderName | None = None,
        batch_size: int = 100,
        batch_window_seconds: float = 1.0,
        poll_interval_seconds: float | None = None,
        completion_window: str | None = None,
        batch_metadata: Mapping[str, str] | None = None,
        max_batch_bytes: int | None = None,
        max_batch_lines: int | None = None,
        max_embedding_inputs: int | None = None,
        max_batches_in_flight: int | None = None,
        max_queued_requests: int = 100_000,
        job_error_budget_seconds: float = 600.0,
        cancel_abandoned_batches: bool = True,
        cancel_batches_on_exit: bool | None = None,
        shutdown_timeout_seconds: float = 10.0,
        fetch_partial_results: bool = True,
        max_resubmits: int = 3,
        event_hook: Callable[[BatchEvent], object] | None = None,
        journal: str | os.PathLike[str] | Store | None = None,
    ) -> None:
        """Every option is keyword-only and checked here (see :class:`BatcherConfig`).

        The first nine are ``AsyncOpenAI``'s; ``http_client`` is yours to close (we never do).
        Raises :class:`MissingAPIKeyError` when there is no ``api_key`` and no
        ``OPENAI_API_KEY``, ``TypeError`` / ``ValueError`` for an option of the wrong type or
        out of range, naming it.

        ``journal`` (a path, or a :class:`Store`) makes the client durable: see
        :mod:`autobatcher._journal`. A journal that cannot be used raises :class:`JournalError`
        here. ``cancel_batches_on_exit`` defaults to True without a journal and False with one
        (the next run collects them).
        """
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise TypeError("http_client must be an httpx.AsyncClient")
        self._config = BatcherConfig(
            api_key=api_key,
            organization=organization,
            project=project,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            default_headers={} if default_headers is None else default_headers,
            default_query={} if default_query is None else default_query,
            provider=provider,
            batch_size=batch_size,
            batch_window_seconds=batch_window_seconds,
            poll_interval_seconds=poll_interval_seconds,
            completion_window=completion_window,
            batch_metadata=batch_metadata,
            max_batch_bytes=max_batch_bytes,
            max_batch_lines=max_batch_lines,
            max_embedding_inputs=max_embedding_inputs,
            max_batches_in_flight=max_batches_in_flight,
            max_queued_requests=max_queued_requests,
            job_error_budget_seconds=job_error_budget_seconds,
            cancel_abandoned_batches=cancel_abandoned_batches,
            cancel_batches_on_exit=cancel_batches_on_exit,
            shutdown_timeout_seconds=shutdown_timeout_seconds,
            fetch_partial_results=fetch_partial_results,
            max_resubmits=max_resubmits,
            event_hook=event_hook,
        )
        if self._config.api_key is None:
            raise MissingAPIKeyError(
                "The api_key client option must be set either by passing api_key to the client "
                "or by setting the OPENAI_API_KEY environment variable"
            )
        self._http_client = http_client
        self._journal = (
            None
            if journal is None
            else Journal(
                open_store(journal),
                JournalMeta(self._config.base_url, key_fingerprint(self._config.api_key)),
            )
        )
        self._events = EventHub(self._config.event_hook)
        self._wire = Wire(self._config, http_client, events=self._events)
        self._engine = Engine(self._config, self._wire, self._events, self._journal)
        self._state = _State.UNOPENED
        self._task_group: anyio.abc.TaskGroup | None = None
        self._stop: anyio.Event | None = None  # set by close(): the engine's task may end
        self._run_done: anyio.Event | None = None
        self._closed_event: anyio.Event | None = None
        self.chat = Chat(self)
        self.embeddings = Embeddings(self)
        self.responses = Responses(self)
        self.completions = Completions(self)
        self.moderations = Moderations(self)

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
    def api_key(self) -> str:
        api_key = self._config.api_key
        assert api_key is not None  # refused in __init__ otherwise
        return api_key

    @property
    def organization(self) -> str | None:
        return self._config.organization

    @property
    def project(self) -> str | None:
        return self._config.project

    @property
    def timeout(self) -> httpx.Timeout:
        """The timeout of each Files/Batches HTTP call (not a deadline for answers)."""
        return self._config.timeout

    @property
    def max_retries(self) -> int:
        """How often one Files/Batches HTTP call is retried after a transient failure."""
        return self._config.max_retries

    @property
    def default_query(self) -> dict[str, object]:
        """Query parameters added to every Files/Batches call."""
        return dict(self._config.default_query)

    def is_closed(self) -> bool:
        """Whether this client has stopped taking requests (closing, closed, or its engine
        stopped): ``create()`` would raise :class:`ClientClosedError`. A client never reopens.
        """
        return self._engine.closed_reason is not None

    def copy(
        self,
        *,
        api_key: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        base_url: str | httpx.URL | None = None,
        timeout: float | httpx.Timeout | Omit | None = omit,
        http_client: httpx.AsyncClient | None = None,
        max_retries: int | Omit = omit,
        default_headers: Mapping[str, str] | None = None,
        set_default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, object] | None = None,
        set_default_query: Mapping[str, object] | None = None,
        provider: ProviderName | None = None,
        batch_size: int | Omit = omit,
        batch_window_seconds: float | Omit = omit,
        poll_interval_seconds: float | Omit = omit,
        completion_window: str | Omit = omit,
        batch_metadata: Mapping[str, str] | Omit | None = omit,
        max_batch_bytes: int | Omit = omit,
        max_batch_lines: int | Omit = omit,
        max_embedding_inputs: int | Omit = omit,
        max_batches_in_flight: int | Omit | None = omit,
        max_queued_requests: int | Omit = omit,
        job_error_budget_seconds: float | Omit = omit,
        cancel_abandoned_batches: bool | Omit = omit,
        cancel_batches_on_exit: bool | Omit = omit,
        shutdown_timeout_seconds: float | Omit = omit,
        fetch_partial_results: bool | Omit = omit,
        max_resubmits: int | Omit = omit,
        event_hook: Callable[[BatchEvent], object] | Omit | None = omit,
    ) -> BatchOpenAI:
        """A new, independent client with this one's options, some of them overridden.

        As the SDK's ``copy``: ``None`` (or leaving an argument out) keeps the current value;
        ``default_headers`` / ``default_query`` are merged into the current ones, while
        ``set_default_headers`` / ``set_default_query`` replace them.

        Unlike the SDK's, the copy does not share this client's work: a batching client owns an
        engine (lanes, upstream batches, waiting callers), so the copy gets its own and starts
        unopened — use it with ``async with`` or ``close()`` it like any new client. It shares
        the ``http_client`` you gave this one (you close it); a connection pool this client made
        itself is not shared, because closing this client closes it. This client is untouched.
        """
        if default_headers is not None and set_default_headers is not None:
            raise ValueError(
                "The `default_headers` and `set_default_headers` arguments are mutually exclusive"
            )
        if default_query is not None and set_default_query is not None:
            raise ValueError(
                "The `default_query` and `set_default_query` arguments are mutually exclusive"
            )
        config = self._config
        headers: Mapping[str, str] = config.default_headers
        if default_headers is not None:
            headers = {**headers, **default_headers}
        elif set_default_headers is not None:
            headers = set_default_headers
        query: Mapping[str, object] = config.default_query
        if default_query is not None:
            query = {**query, **default_query}
        elif set_default_query is not None:
            query = set_default_query
        # Rebuilt through __init__, not attrs.evolve: overridden values are checked with the
        # same messages, and the copy gets its own engine and wire.
        overrides: dict[str, Any] = {
            "batch_size": batch_size,
            "batch_window_seconds": batch_window_seconds,
            "poll_interval_seconds": poll_interval_seconds,
            "completion_window": completion_window,
            "batch_metadata": batch_metadata,
            "max_batch_bytes": max_batch_bytes,
            "max_batch_lines": max_batch_lines,
            "max_embedding_inputs": max_embedding_inputs,
            "max_batches_in_flight": max_batches_in_flight,
            "max_queued_requests": max_queued_requests,
            "job_error_budget_seconds": job_error_budget_seconds,
            "cancel_abandoned_batches": cancel_abandoned_batches,
            "cancel_batches_on_exit": cancel_batches_on_exit,
            "shutdown_timeout_seconds": shutdown_timeout_seconds,
            "fetch_partial_results": fetch_partial_results,
            "max_resubmits": max_resubmits,
            "event_hook": event_hook,
        }
        # Another provider (named, or implied by another base_url) brings its own defaults
        # and limits: options this client took from its provider are not carried over.
        new_provider: ProviderName | None = provider
        if provider is None and base_url is None:
            new_provider = config.provider
        # (None: inferred from the new base_url)
        provided = _provider_defaults(config) if new_provider != config.provider else set()
        options: dict[str, Any] = {
            name: (None if name in provided else getattr(config, name)) if value is omit else value
            for name, value in overrides.items()
        }
        return type(self)(
            api_key=api_key or config.api_key,
            organization=organization or config.organization,
            project=project or config.project,
            base_url=base_url or config.base_url,
            timeout=config.timeout if isinstance(timeout, Omit) else timeout,
            max_retries=config.max_retries if isinstance(max_retries, Omit) else max_retries,
            default_headers=headers,
            default_query=query,
            http_client=http_client or self._http_client,
            provider=new_provider,
            **options,
        )

    #: The SDK's other name for :meth:`copy`.
    with_options = copy

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
            # the journal is loaded before the first request is taken, so no caller waits
            # for it (``async with`` returns once it is)
            await self._engine.load_journal()
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
        """Release the connection pool (if ours) and the journal, shielded and bounded."""
        with anyio.move_on_after(self._config.shutdown_timeout_seconds, shield=True):
            await self._wire.aclose()
            if self._journal is not None:
                await self._journal.aclose()

    async def collect(self) -> None:
        """Wait until every batch this client follows is finished and its answers stored,
        including the batches an earlier run left in the journal that nobody asked for again
        (what ``autobatcher journal PATH collect`` does)."""
        if self._journal is None:
            raise RuntimeError("collect() needs a client with a journal")
        if self._state is _State.UNOPENED:
            self._state = _State.STANDALONE
        await self._engine.collect()

    # -- many requests -----------------------------------------------------------------------

    def map(
        self,
        requests: Iterable[BulkRequest | Mapping[str, Any]]
        | AsyncIterable[BulkRequest | Mapping[str, Any]],
        *,
        ordered: bool = False,
        max_in_flight: int | None = None,
    ) -> BulkMap:
        """Send many requests, reading them lazily, and get their results as they complete.

        ``async with client.map(requests) as results: async for result in results: ...``

        ``requests`` is an iterable or async iterable of :class:`BulkRequest` or Batch API
        input lines (``{"custom_id", "method", "url", "body"}``), read as room frees up: at
        most ``max_in_flight`` (default: ``max_queued_requests``) are read and not yet handed
        to you. Each :class:`BulkResult` carries the item's key and index, and its response or
        typed error; a bad item gets its own error and stops nothing. ``ordered=True`` gives
        the results in input order (those that finish early wait in a buffer, which counts
        against ``max_in_flight``). Leaving the block before the end withdraws every request
        not answered yet (see the README, *Millions of requests*). An exception raised by the
        input comes out of the ``async with``.
        """
        return BulkMap(self, requests, ordered=ordered, max_in_flight=max_in_flight)

    def _begin_bulk(self) -> Engine:
        engine = self._engine
        if engine.closed_reason is not None:
            raise ClientClosedError(f"{engine.closed_reason}: it cannot take new requests")
        if self._state is _State.UNOPENED:
            self._state = _State.STANDALONE
        return engine

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
        sdk_types = sys.modules.get("openai._types")
        if sdk_types is not None:
            _drop_sdk_sentinels(params, sdk_types)
        model = params.get("model")
        if model is None and not endpoint.model_required:
            model = ""
        if not isinstance(model, str) or (endpoint.model_required and not model):
            raise TypeError(f"{endpoint.name}.create() needs model= as a non-empty string")
        cap = self._config.max_batch_bytes
        # Sized before it is encoded: a body too large for any batch is refused without
        # copying or encoding it (a 250 MB one used to block the loop for a second). A big body
        # whose non-ASCII text escaping could still carry past the cap has that text measured.
        at_least = encoded_size_at_least(params, cap)
        if cap >= at_least > cap // MAX_INFLATION:
            at_least = encoded_size_at_least(params, cap, measure_text=True)
        if at_least > cap:
            raise RequestTooLargeError(
                f"this request encodes to at least {at_least:,} bytes, more than a whole batch "
                f"may hold (max_batch_bytes={cap:,}); it was refused before being encoded"
            )
        if self._journal is None:
            custom_id = engine.next_custom_id()
            line = encode_line(custom_id, endpoint.path, params)
        else:
            # a custom_id a later run re-derives: the hash of the canonical request and its
            # occurrence number among identical ones
            body_text = encode_canonical_body(params)
            custom_id = self._journal.custom_id(endpoint.path, body_text)
            line = assemble_line(custom_id, endpoint.path, body_text)
        if len(line) > cap:
            raise RequestTooLargeError(
                f"this request encodes to {len(line):,} bytes, more than a whole batch may hold "
                f"(max_batch_bytes={cap:,})"
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
        if engine.may_recall() and await engine.recall(slot):
            pass  # answered from the journal, or attached to its batch of an earlier run
        elif not engine.offer(slot):
            try:
                await engine.send(slot)
            except BaseException:
                # cancelled while waiting for room, perhaps just as it was admitted: a request
                # already in the intake is skipped when taken, never uploaded
                engine.withdraw(slot)
                raise
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


def _drop_sdk_sentinels(params: dict[str, Any], sdk_types: ModuleType) -> None:
    """Leave out arguments set to the openai SDK's ``NOT_GIVEN`` / ``omit``, as the SDK does.

    Only looked for when the SDK is imported (code moving from ``AsyncOpenAI`` may still pass
    them); it is never imported by us.
    """
    sentinels = tuple(
        cls
        for cls in (getattr(sdk_types, "NotGiven", None), getattr(sdk_types, "Omit", None))
        if isinstance(cls, type)
    )
    if sentinels:
        for name in [name for name, value in params.items() if isinstance(value, sentinels)]:
            del params[name]


def _options_of(
    constructor: Callable[P, BatchOpenAI],
) -> Callable[[Callable[..., AbstractAsyncContextManager[BatchOpenAI]]], OpenBatcher[P]]:
    """Give ``open_batcher`` the constructor's typed keyword-only options (one list, not two):
    type checkers see them through ``P``, ``help()`` and ``inspect`` through ``__signature__``.
    """

    def adopt(
        func: Callable[..., AbstractAsyncContextManager[BatchOpenAI]],
    ) -> OpenBatcher[P]:
        func.__signature__ = inspect.signature(constructor).replace(  # type: ignore[attr-defined]
            return_annotation="AbstractAsyncContextManager[BatchOpenAI]"
        )
        return func

    return adopt


def _provider_defaults(config: BatcherConfig) -> set[str]:
    """The options of ``config`` that hold its provider's default (taken from it, presumably)."""
    defaults = config.capabilities.option_defaults()
    return {name for name, value in defaults.items() if getattr(config, name) == value}


if TYPE_CHECKING:
    from typing import TypeAlias

    OpenBatcher: TypeAlias = Callable[P, AbstractAsyncContextManager[BatchOpenAI]]


@_options_of(BatchOpenAI)
def open_batcher(**options: Any) -> AbstractAsyncContextManager[BatchOpenAI]:
    """``async with open_batcher(**options) as client:`` — the engine lives inside the block.

    Takes exactly :class:`BatchOpenAI`'s keyword-only options, checked at this call (a
    misspelled one is a ``TypeError`` here, and a mypy error before).

    Leaving normally flushes and waits for every answer; leaving by an exception or cancellation
    cancels upstream batches (by default) and fails the callers still waiting. The block's own
    exception comes out unwrapped (no exception group), on asyncio and trio.
    """
    return _owned(BatchOpenAI(**options))


@asynccontextmanager
async def _owned(client: BatchOpenAI) -> AsyncIterator[BatchOpenAI]:
    async with client:
        yield client
