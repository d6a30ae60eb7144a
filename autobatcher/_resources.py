"""The OpenAI-shaped namespaces: ``client.chat.completions``, ``client.embeddings``, …

Each namespace's ``create`` validates nothing itself: it hands its arguments to
:meth:`BatchOpenAI._answer`, which encodes the request in the caller's task and waits for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import httpx

from ._engine import Slot
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
    "Chat",
    "ChatCompletions",
    "Completions",
    "Embeddings",
    "Moderations",
    "RawResponse",
    "Responses",
]

T = TypeVar("T")
R = TypeVar("R")


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
            line, self._endpoint.build, custom_id=slot.custom_id, batch_id=slot.job.batch_id
        )


class _RawCreator(_Create[T, "RawResponse[T]"]):
    """``with_raw_response.create``: the parsed model plus the line's headers and status."""

    _path = "{}.with_raw_response"

    def _finish(self, slot: Slot, line: bytes) -> RawResponse[T]:
        batch_id = slot.job.batch_id
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
