"""The OpenAI-shaped namespaces: ``client.chat.completions``, ``client.embeddings``, …

Each ``create`` has the openai SDK's keyword arguments, named and typed, so a misspelled one is a
``TypeError`` at the call (and a mypy error before it). It gathers the arguments that were given
and hands them to :meth:`BatchOpenAI._answer`, which encodes the request in the caller's task and
waits for its answer. ``create`` is a plain method returning that coroutine: a waiting request
keeps exactly one coroutine frame of ours alive.

The annotations are light stand-ins for the SDK's ``TypedDict`` params (no SDK import at run
time): structured arguments are ``Mapping[str, Any]``, enumerations are ``Literal``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeAlias, TypeVar

import attrs
import httpx

from ._job import Slot
from ._jsonl import decode_result
from .types import (
    ChatCompletion,
    Completion,
    CreateEmbeddingResponse,
    ModerationCreateResponse,
    Response,
)

if TYPE_CHECKING:
    from ._facade import BatchOpenAI

__all__ = [
    "NOT_GIVEN",
    "Chat",
    "ChatCompletions",
    "Completions",
    "Embeddings",
    "Moderations",
    "Omit",
    "RawResponse",
    "Responses",
    "omit",
]

T = TypeVar("T")
R = TypeVar("R")


class Omit:
    """The type of :data:`omit`: "this argument was not given", as the SDK's ``Omit``.

    An argument left at (or set to) ``omit`` is not sent at all, while ``None`` is sent as
    JSON ``null``. The openai SDK's own ``NOT_GIVEN`` / ``omit`` are recognised too.
    """

    _instance: Omit | None = None

    def __new__(cls) -> Omit:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "omit"


#: Leave an argument out of the request, as ``openai.omit`` / ``openai.NOT_GIVEN`` do.
omit: Final = Omit()
NOT_GIVEN: Final = omit

JSONObject: TypeAlias = Mapping[str, Any]
ChatCompletionMessageParam: TypeAlias = Mapping[str, Any]
ReasoningEffort: TypeAlias = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
ServiceTier: TypeAlias = Literal["auto", "default", "flex", "scale", "priority", "fast"]
ResponseIncludable: TypeAlias = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]


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
    "with_raw_response": "it is per endpoint: client.chat.completions.with_raw_response.create()",
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
    if isinstance(value, list | tuple) and value and isinstance(value[0], str | list | tuple):
        return len(value)
    return 1


class _Create(Generic[T, R]):
    """What every endpoint's ``create`` shares: its client and endpoint, and how a result line
    is finished into ``R`` (the parsed model, or for ``with_raw_response`` a :class:`RawResponse`).
    """

    def __init__(self, client: BatchOpenAI, endpoint: _Endpoint[T], *, raw: bool = False) -> None:
        self._client = client
        self._endpoint = endpoint
        self._raw = raw

    def _finish(self, slot: Slot, line: bytes) -> R:
        batch_id = slot.batch_id
        parsed = decode_result(
            line, self._endpoint.build, custom_id=slot.custom_id, batch_id=batch_id
        )
        if not self._raw:
            return parsed  # type: ignore[return-value]  # R is T for the plain namespace
        response = json.loads(line).get("response") or {}
        headers = httpx.Headers(
            {
                "x-request-id": str(response.get("request_id") or ""),
                "x-autobatcher-batch-id": batch_id or "",
                "x-autobatcher-custom-id": slot.custom_id,
            }
        )
        status = response.get("status_code")
        return RawResponse(parsed, headers, status if isinstance(status, int) else 200)  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        path = self._endpoint.name + (".with_raw_response" if self._raw else "")
        raise _not_batched(path, name)


class _ChatCreate(_Create[ChatCompletion, R]):
    """``chat.completions.create``, typed like the SDK's; ``R`` is the model or its raw wrapper."""

    def create(
        self,
        *,
        messages: Iterable[ChatCompletionMessageParam],
        model: str,
        audio: JSONObject | Omit | None = omit,
        frequency_penalty: float | Omit | None = omit,
        function_call: str | JSONObject | Omit = omit,
        functions: Iterable[JSONObject] | Omit = omit,
        logit_bias: Mapping[str, int] | Omit | None = omit,
        logprobs: bool | Omit | None = omit,
        max_completion_tokens: int | Omit | None = omit,
        max_tokens: int | Omit | None = omit,
        metadata: Mapping[str, str] | Omit | None = omit,
        modalities: Sequence[Literal["text", "audio"]] | Omit | None = omit,
        moderation: JSONObject | Omit | None = omit,
        n: int | Omit | None = omit,
        parallel_tool_calls: bool | Omit = omit,
        prediction: JSONObject | Omit | None = omit,
        presence_penalty: float | Omit | None = omit,
        prompt_cache_key: str | Omit | None = omit,
        prompt_cache_options: JSONObject | Omit = omit,
        prompt_cache_retention: Literal["in_memory", "24h"] | Omit | None = omit,
        reasoning_effort: ReasoningEffort | Omit | None = omit,
        response_format: JSONObject | Omit = omit,
        safety_identifier: str | Omit | None = omit,
        seed: int | Omit | None = omit,
        service_tier: ServiceTier | Omit | None = omit,
        stop: str | Sequence[str] | Omit | None = omit,
        store: bool | Omit | None = omit,
        stream: bool | Omit | None = omit,
        stream_options: JSONObject | Omit | None = omit,
        temperature: float | Omit | None = omit,
        tool_choice: str | JSONObject | Omit = omit,
        tools: Iterable[JSONObject] | Omit = omit,
        top_logprobs: int | Omit | None = omit,
        top_p: float | Omit | None = omit,
        user: str | Omit = omit,
        verbosity: Literal["low", "medium", "high"] | Omit | None = omit,
        web_search_options: JSONObject | Omit = omit,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, object] | None = None,
        extra_body: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, R]:
        """Queue this request for the next batch and return the awaitable of its answer.

        The arguments are the openai SDK's, checked at the call: a misspelled one raises
        ``TypeError`` at once; ``extra_body`` is merged into the request body. The request is
        encoded here, in the caller's task, so a bad value fails this call alone: ``TypeError``
        (no ``model=``, a value JSON cannot hold), ``UnsupportedParameterError`` (``stream=True``,
        ``extra_headers``, ``extra_query``), ``RequestTooLargeError`` (larger than a whole batch;
        refused before it is fully encoded), ``ClientClosedError`` (the client is closed).

        Awaiting suspends while the intake is full (``max_queued_requests``), then until the
        request's batch has run (its completion window: minutes to hours). The answer is the
        parsed model, or the typed error of this request's line (``BadRequestError``,
        ``BatchExpiredError``, … see ``autobatcher._errors``).

        Cancelling the awaiting task before the request is uploaded withdraws it: it is never
        sent. Cancelling it later drops its result; if nobody waits on that batch any more it is
        cancelled upstream (``cancel_abandoned_batches``). ``timeout=`` (seconds) is the deadline
        for the answer, not for one HTTP call: past it the call raises ``APITimeoutError`` and the
        request is withdrawn or dropped as on cancellation.
        """
        params: dict[str, Any] = {"messages": messages, "model": model}
        if audio is not omit:
            params["audio"] = audio
        if frequency_penalty is not omit:
            params["frequency_penalty"] = frequency_penalty
        if function_call is not omit:
            params["function_call"] = function_call
        if functions is not omit:
            params["functions"] = functions
        if logit_bias is not omit:
            params["logit_bias"] = logit_bias
        if logprobs is not omit:
            params["logprobs"] = logprobs
        if max_completion_tokens is not omit:
            params["max_completion_tokens"] = max_completion_tokens
        if max_tokens is not omit:
            params["max_tokens"] = max_tokens
        if metadata is not omit:
            params["metadata"] = metadata
        if modalities is not omit:
            params["modalities"] = modalities
        if moderation is not omit:
            params["moderation"] = moderation
        if n is not omit:
            params["n"] = n
        if parallel_tool_calls is not omit:
            params["parallel_tool_calls"] = parallel_tool_calls
        if prediction is not omit:
            params["prediction"] = prediction
        if presence_penalty is not omit:
            params["presence_penalty"] = presence_penalty
        if prompt_cache_key is not omit:
            params["prompt_cache_key"] = prompt_cache_key
        if prompt_cache_options is not omit:
            params["prompt_cache_options"] = prompt_cache_options
        if prompt_cache_retention is not omit:
            params["prompt_cache_retention"] = prompt_cache_retention
        if reasoning_effort is not omit:
            params["reasoning_effort"] = reasoning_effort
        if response_format is not omit:
            params["response_format"] = response_format
        if safety_identifier is not omit:
            params["safety_identifier"] = safety_identifier
        if seed is not omit:
            params["seed"] = seed
        if service_tier is not omit:
            params["service_tier"] = service_tier
        if stop is not omit:
            params["stop"] = stop
        if store is not omit:
            params["store"] = store
        if stream is not omit:
            params["stream"] = stream
        if stream_options is not omit:
            params["stream_options"] = stream_options
        if temperature is not omit:
            params["temperature"] = temperature
        if tool_choice is not omit:
            params["tool_choice"] = tool_choice
        if tools is not omit:
            params["tools"] = tools
        if top_logprobs is not omit:
            params["top_logprobs"] = top_logprobs
        if top_p is not omit:
            params["top_p"] = top_p
        if user is not omit:
            params["user"] = user
        if verbosity is not omit:
            params["verbosity"] = verbosity
        if web_search_options is not omit:
            params["web_search_options"] = web_search_options
        return self._client._answer(
            self._endpoint, params, extra_headers, extra_query, extra_body, timeout, self
        )


class _EmbeddingsCreate(_Create[CreateEmbeddingResponse, R]):
    """``embeddings.create``, typed like the SDK's; ``R`` is the model or its raw wrapper."""

    def create(
        self,
        *,
        input: str | Sequence[str] | Iterable[int] | Iterable[Iterable[int]],
        model: str,
        dimensions: int | Omit = omit,
        encoding_format: Literal["float", "base64"] | Omit = omit,
        user: str | Omit = omit,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, object] | None = None,
        extra_body: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, R]:
        """Queue this request for the next batch and return the awaitable of its answer.

        The arguments are the openai SDK's, checked at the call: a misspelled one raises
        ``TypeError`` at once; ``extra_body`` is merged into the request body. The request is
        encoded here, in the caller's task, so a bad value fails this call alone: ``TypeError``
        (no ``model=``, a value JSON cannot hold), ``UnsupportedParameterError`` (``stream=True``,
        ``extra_headers``, ``extra_query``), ``RequestTooLargeError`` (larger than a whole batch;
        refused before it is fully encoded), ``ClientClosedError`` (the client is closed).

        Awaiting suspends while the intake is full (``max_queued_requests``), then until the
        request's batch has run (its completion window: minutes to hours). The answer is the
        parsed model, or the typed error of this request's line (``BadRequestError``,
        ``BatchExpiredError``, … see ``autobatcher._errors``).

        Cancelling the awaiting task before the request is uploaded withdraws it: it is never
        sent. Cancelling it later drops its result; if nobody waits on that batch any more it is
        cancelled upstream (``cancel_abandoned_batches``). ``timeout=`` (seconds) is the deadline
        for the answer, not for one HTTP call: past it the call raises ``APITimeoutError`` and the
        request is withdrawn or dropped as on cancellation.
        """
        params: dict[str, Any] = {"input": input, "model": model}
        if dimensions is not omit:
            params["dimensions"] = dimensions
        if encoding_format is not omit:
            params["encoding_format"] = encoding_format
        if user is not omit:
            params["user"] = user
        return self._client._answer(
            self._endpoint, params, extra_headers, extra_query, extra_body, timeout, self
        )


class _ResponsesCreate(_Create[Response, R]):
    """``responses.create``, typed like the SDK's; ``R`` is the model or its raw wrapper."""

    def create(
        self,
        *,
        access_programs: JSONObject | Omit = omit,
        background: bool | Omit | None = omit,
        background_options: JSONObject | Omit = omit,
        context_management: Iterable[JSONObject] | Omit | None = omit,
        conversation: str | JSONObject | Omit | None = omit,
        image: JSONObject | Omit = omit,
        include: Sequence[ResponseIncludable] | Omit | None = omit,
        input: str | Iterable[JSONObject] | Omit = omit,
        instructions: str | Omit | None = omit,
        max_output_tokens: int | Omit | None = omit,
        max_tool_calls: int | Omit | None = omit,
        metadata: Mapping[str, str] | Omit | None = omit,
        model: str | Omit = omit,
        moderation: JSONObject | Omit | None = omit,
        parallel_tool_calls: bool | Omit | None = omit,
        previous_response_id: str | Omit | None = omit,
        prompt: JSONObject | Omit | None = omit,
        prompt_cache_key: str | Omit | None = omit,
        prompt_cache_options: JSONObject | Omit = omit,
        prompt_cache_retention: Literal["in_memory", "24h"] | Omit | None = omit,
        reasoning: JSONObject | Omit | None = omit,
        safety_identifier: str | Omit | None = omit,
        service_tier: ServiceTier | Omit | None = omit,
        store: bool | Omit | None = omit,
        stream: bool | Omit | None = omit,
        stream_options: JSONObject | Omit | None = omit,
        temperature: float | Omit | None = omit,
        text: JSONObject | Omit = omit,
        tool_choice: str | JSONObject | Omit = omit,
        tools: Iterable[JSONObject] | Omit = omit,
        top_logprobs: int | Omit | None = omit,
        top_p: float | Omit | None = omit,
        truncation: Literal["auto", "disabled"] | Omit | None = omit,
        user: str | Omit = omit,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, object] | None = None,
        extra_body: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, R]:
        """Queue this request for the next batch and return the awaitable of its answer.

        The arguments are the openai SDK's, checked at the call: a misspelled one raises
        ``TypeError`` at once; ``extra_body`` is merged into the request body. The request is
        encoded here, in the caller's task, so a bad value fails this call alone: ``TypeError``
        (no ``model=``, a value JSON cannot hold), ``UnsupportedParameterError`` (``stream=True``,
        ``extra_headers``, ``extra_query``), ``RequestTooLargeError`` (larger than a whole batch;
        refused before it is fully encoded), ``ClientClosedError`` (the client is closed).

        Awaiting suspends while the intake is full (``max_queued_requests``), then until the
        request's batch has run (its completion window: minutes to hours). The answer is the
        parsed model, or the typed error of this request's line (``BadRequestError``,
        ``BatchExpiredError``, … see ``autobatcher._errors``).

        Cancelling the awaiting task before the request is uploaded withdraws it: it is never
        sent. Cancelling it later drops its result; if nobody waits on that batch any more it is
        cancelled upstream (``cancel_abandoned_batches``). ``timeout=`` (seconds) is the deadline
        for the answer, not for one HTTP call: past it the call raises ``APITimeoutError`` and the
        request is withdrawn or dropped as on cancellation.
        """
        params: dict[str, Any] = {}
        if access_programs is not omit:
            params["access_programs"] = access_programs
        if background is not omit:
            params["background"] = background
        if background_options is not omit:
            params["background_options"] = background_options
        if context_management is not omit:
            params["context_management"] = context_management
        if conversation is not omit:
            params["conversation"] = conversation
        if image is not omit:
            params["image"] = image
        if include is not omit:
            params["include"] = include
        if input is not omit:
            params["input"] = input
        if instructions is not omit:
            params["instructions"] = instructions
        if max_output_tokens is not omit:
            params["max_output_tokens"] = max_output_tokens
        if max_tool_calls is not omit:
            params["max_tool_calls"] = max_tool_calls
        if metadata is not omit:
            params["metadata"] = metadata
        if model is not omit:
            params["model"] = model
        if moderation is not omit:
            params["moderation"] = moderation
        if parallel_tool_calls is not omit:
            params["parallel_tool_calls"] = parallel_tool_calls
        if previous_response_id is not omit:
            params["previous_response_id"] = previous_response_id
        if prompt is not omit:
            params["prompt"] = prompt
        if prompt_cache_key is not omit:
            params["prompt_cache_key"] = prompt_cache_key
        if prompt_cache_options is not omit:
            params["prompt_cache_options"] = prompt_cache_options
        if prompt_cache_retention is not omit:
            params["prompt_cache_retention"] = prompt_cache_retention
        if reasoning is not omit:
            params["reasoning"] = reasoning
        if safety_identifier is not omit:
            params["safety_identifier"] = safety_identifier
        if service_tier is not omit:
            params["service_tier"] = service_tier
        if store is not omit:
            params["store"] = store
        if stream is not omit:
            params["stream"] = stream
        if stream_options is not omit:
            params["stream_options"] = stream_options
        if temperature is not omit:
            params["temperature"] = temperature
        if text is not omit:
            params["text"] = text
        if tool_choice is not omit:
            params["tool_choice"] = tool_choice
        if tools is not omit:
            params["tools"] = tools
        if top_logprobs is not omit:
            params["top_logprobs"] = top_logprobs
        if top_p is not omit:
            params["top_p"] = top_p
        if truncation is not omit:
            params["truncation"] = truncation
        if user is not omit:
            params["user"] = user
        return self._client._answer(
            self._endpoint, params, extra_headers, extra_query, extra_body, timeout, self
        )


class _CompletionsCreate(_Create[Completion, R]):
    """``completions.create``, typed like the SDK's; ``R`` is the model or its raw wrapper."""

    def create(
        self,
        *,
        model: str,
        prompt: str | Sequence[str] | Iterable[int] | Iterable[Iterable[int]] | None,
        best_of: int | Omit | None = omit,
        echo: bool | Omit | None = omit,
        frequency_penalty: float | Omit | None = omit,
        logit_bias: Mapping[str, int] | Omit | None = omit,
        logprobs: int | Omit | None = omit,
        max_tokens: int | Omit | None = omit,
        n: int | Omit | None = omit,
        presence_penalty: float | Omit | None = omit,
        seed: int | Omit | None = omit,
        stop: str | Sequence[str] | Omit | None = omit,
        stream: bool | Omit | None = omit,
        stream_options: JSONObject | Omit | None = omit,
        suffix: str | Omit | None = omit,
        temperature: float | Omit | None = omit,
        top_p: float | Omit | None = omit,
        user: str | Omit = omit,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, object] | None = None,
        extra_body: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, R]:
        """Queue this request for the next batch and return the awaitable of its answer.

        The arguments are the openai SDK's, checked at the call: a misspelled one raises
        ``TypeError`` at once; ``extra_body`` is merged into the request body. The request is
        encoded here, in the caller's task, so a bad value fails this call alone: ``TypeError``
        (no ``model=``, a value JSON cannot hold), ``UnsupportedParameterError`` (``stream=True``,
        ``extra_headers``, ``extra_query``), ``RequestTooLargeError`` (larger than a whole batch;
        refused before it is fully encoded), ``ClientClosedError`` (the client is closed).

        Awaiting suspends while the intake is full (``max_queued_requests``), then until the
        request's batch has run (its completion window: minutes to hours). The answer is the
        parsed model, or the typed error of this request's line (``BadRequestError``,
        ``BatchExpiredError``, … see ``autobatcher._errors``).

        Cancelling the awaiting task before the request is uploaded withdraws it: it is never
        sent. Cancelling it later drops its result; if nobody waits on that batch any more it is
        cancelled upstream (``cancel_abandoned_batches``). ``timeout=`` (seconds) is the deadline
        for the answer, not for one HTTP call: past it the call raises ``APITimeoutError`` and the
        request is withdrawn or dropped as on cancellation.
        """
        params: dict[str, Any] = {"model": model, "prompt": prompt}
        if best_of is not omit:
            params["best_of"] = best_of
        if echo is not omit:
            params["echo"] = echo
        if frequency_penalty is not omit:
            params["frequency_penalty"] = frequency_penalty
        if logit_bias is not omit:
            params["logit_bias"] = logit_bias
        if logprobs is not omit:
            params["logprobs"] = logprobs
        if max_tokens is not omit:
            params["max_tokens"] = max_tokens
        if n is not omit:
            params["n"] = n
        if presence_penalty is not omit:
            params["presence_penalty"] = presence_penalty
        if seed is not omit:
            params["seed"] = seed
        if stop is not omit:
            params["stop"] = stop
        if stream is not omit:
            params["stream"] = stream
        if stream_options is not omit:
            params["stream_options"] = stream_options
        if suffix is not omit:
            params["suffix"] = suffix
        if temperature is not omit:
            params["temperature"] = temperature
        if top_p is not omit:
            params["top_p"] = top_p
        if user is not omit:
            params["user"] = user
        return self._client._answer(
            self._endpoint, params, extra_headers, extra_query, extra_body, timeout, self
        )


class _ModerationsCreate(_Create[ModerationCreateResponse, R]):
    """``moderations.create``, typed like the SDK's; ``R`` is the model or its raw wrapper."""

    def create(
        self,
        *,
        input: str | Sequence[str] | Iterable[JSONObject],
        model: str | Omit = omit,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, object] | None = None,
        extra_body: Mapping[str, object] | None = None,
        timeout: float | None = None,
    ) -> Coroutine[Any, Any, R]:
        """Queue this request for the next batch and return the awaitable of its answer.

        The arguments are the openai SDK's, checked at the call: a misspelled one raises
        ``TypeError`` at once; ``extra_body`` is merged into the request body. The request is
        encoded here, in the caller's task, so a bad value fails this call alone: ``TypeError``
        (no ``model=``, a value JSON cannot hold), ``UnsupportedParameterError`` (``stream=True``,
        ``extra_headers``, ``extra_query``), ``RequestTooLargeError`` (larger than a whole batch;
        refused before it is fully encoded), ``ClientClosedError`` (the client is closed).

        Awaiting suspends while the intake is full (``max_queued_requests``), then until the
        request's batch has run (its completion window: minutes to hours). The answer is the
        parsed model, or the typed error of this request's line (``BadRequestError``,
        ``BatchExpiredError``, … see ``autobatcher._errors``).

        Cancelling the awaiting task before the request is uploaded withdraws it: it is never
        sent. Cancelling it later drops its result; if nobody waits on that batch any more it is
        cancelled upstream (``cancel_abandoned_batches``). ``timeout=`` (seconds) is the deadline
        for the answer, not for one HTTP call: past it the call raises ``APITimeoutError`` and the
        request is withdrawn or dropped as on cancellation.
        """
        params: dict[str, Any] = {"input": input}
        if model is not omit:
            params["model"] = model
        return self._client._answer(
            self._endpoint, params, extra_headers, extra_query, extra_body, timeout, self
        )


class ChatCompletions(_ChatCreate[ChatCompletion]):
    """``client.chat.completions``."""

    def __init__(self, client: BatchOpenAI) -> None:
        super().__init__(client, _CHAT)
        self.with_raw_response = _ChatCreate[RawResponse[ChatCompletion]](client, _CHAT, raw=True)


class Chat:
    """``client.chat``."""

    def __init__(self, client: BatchOpenAI) -> None:
        self.completions = ChatCompletions(client)

    def __getattr__(self, name: str) -> Any:
        raise _not_batched("chat", name)


class Embeddings(_EmbeddingsCreate[CreateEmbeddingResponse]):
    """``client.embeddings``."""

    def __init__(self, client: BatchOpenAI) -> None:
        super().__init__(client, _EMBEDDINGS)
        self.with_raw_response = _EmbeddingsCreate[RawResponse[CreateEmbeddingResponse]](
            client, _EMBEDDINGS, raw=True
        )


class Responses(_ResponsesCreate[Response]):
    """``client.responses``."""

    def __init__(self, client: BatchOpenAI) -> None:
        super().__init__(client, _RESPONSES)
        self.with_raw_response = _ResponsesCreate[RawResponse[Response]](
            client, _RESPONSES, raw=True
        )


class Completions(_CompletionsCreate[Completion]):
    """``client.completions``."""

    def __init__(self, client: BatchOpenAI) -> None:
        super().__init__(client, _COMPLETIONS)
        self.with_raw_response = _CompletionsCreate[RawResponse[Completion]](
            client, _COMPLETIONS, raw=True
        )


class Moderations(_ModerationsCreate[ModerationCreateResponse]):
    """``client.moderations``."""

    def __init__(self, client: BatchOpenAI) -> None:
        super().__init__(client, _MODERATIONS)
        self.with_raw_response = _ModerationsCreate[RawResponse[ModerationCreateResponse]](
            client, _MODERATIONS, raw=True
        )
