"""Responses API: ``Response`` and its output items (mirrors ``openai.types.responses``).

The common output items are typed (``message``, ``function_call``, ``custom_tool_call``,
``reasoning``); every other item type (web search, file search, computer, MCP, ...) is a
:class:`GenericObject`, whose JSON keys are all attributes (``item.type``, ``item.id``).
"""

from __future__ import annotations

from typing import Any

import attrs

from ._base import BaseModel, GenericObject, each, generic, key, obj, objs, parsed, via
from ._batches import BatchUsage
from ._chat import ChatCompletionTokenLogprob

__all__ = [
    "IncompleteDetails",
    "ReasoningText",
    "Response",
    "ResponseCustomToolCall",
    "ResponseError",
    "ResponseFunctionToolCall",
    "ResponseOutputItem",
    "ResponseOutputMessage",
    "ResponseOutputRefusal",
    "ResponseOutputText",
    "ResponseReasoningItem",
    "ResponseUsage",
]


def _generic_item(item: Any) -> Any:
    return GenericObject(_raw=item) if item.__class__ is dict else item


@parsed
@attrs.define(eq=False, weakref_slot=False)
class ResponseOutputText(BaseModel):
    """An ``output_text`` content part; ``annotations`` are :class:`GenericObject`."""

    text: str
    type: str = "output_text"
    annotations: list[GenericObject] = attrs.field(
        factory=list, metadata=each(_generic_item, required=True)
    )
    logprobs: list[ChatCompletionTokenLogprob] | None = attrs.field(
        default=None, metadata=objs(ChatCompletionTokenLogprob)
    )


@parsed
@attrs.define(eq=False, weakref_slot=False)
class ResponseOutputRefusal(BaseModel):
    refusal: str
    type: str = "refusal"


_output_text = ResponseOutputText.from_dict
_refusal = ResponseOutputRefusal.from_dict


def _content(item: Any) -> Any:
    if item.__class__ is not dict:
        return item
    kind = item.get("type")
    if kind == "output_text":
        return _output_text(item)
    if kind == "refusal":
        return _refusal(item)
    return GenericObject(_raw=item)


@parsed
@attrs.define(eq=False, weakref_slot=False)
class ResponseOutputMessage(BaseModel):
    """A ``message`` output item; its ``content`` holds text and refusal parts."""

    id: str
    content: list[ResponseOutputText | ResponseOutputRefusal | GenericObject] = attrs.field(
        metadata=each(_content, required=True)
    )
    role: str = "assistant"
    status: str | None = None
    type: str = "message"
    phase: str | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False)
class ResponseFunctionToolCall(BaseModel):
    """A ``function_call`` output item: ``name``, JSON-text ``arguments``, ``call_id``."""

    arguments: str
    call_id: str
    name: str
    type: str = "function_call"
    id: str | None = None
    status: str | None = None
    namespace: str | None = None
    async_: bool | None = attrs.field(default=None, metadata=key("async"))


@parsed
@attrs.define(eq=False, weakref_slot=False)
class ResponseCustomToolCall(BaseModel):
    """A ``custom_tool_call`` output item: ``name``, free-text ``input``, ``call_id``."""

    call_id: str
    input: str
    name: str
    type: str = "custom_tool_call"
    id: str | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False)
class ReasoningText(BaseModel):
    """A ``summary_text`` or ``reasoning_text`` part of a reasoning item."""

    text: str
    type: str


@parsed
@attrs.define(eq=False, weakref_slot=False)
class ResponseReasoningItem(BaseModel):
    id: str
    summary: list[ReasoningText] = attrs.field(metadata=objs(ReasoningText, required=True))
    type: str = "reasoning"
    content: list[ReasoningText] | None = attrs.field(default=None, metadata=objs(ReasoningText))
    encrypted_content: str | None = None
    status: str | None = None


ResponseOutputItem = (
    ResponseOutputMessage
    | ResponseFunctionToolCall
    | ResponseCustomToolCall
    | ResponseReasoningItem
    | GenericObject
)

_ITEM_PARSERS: dict[Any, Any] = {
    "message": ResponseOutputMessage.from_dict,
    "function_call": ResponseFunctionToolCall.from_dict,
    "custom_tool_call": ResponseCustomToolCall.from_dict,
    "reasoning": ResponseReasoningItem.from_dict,
}


def _output_item(item: Any) -> Any:
    if item.__class__ is not dict:
        return item
    parse = _ITEM_PARSERS.get(item.get("type"))
    return GenericObject(_raw=item) if parse is None else parse(item)


@parsed
@attrs.define(eq=False, weakref_slot=False)
class ResponseError(BaseModel):
    code: str
    message: str
    param: str | None = None
    type: str | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False)
class IncompleteDetails(BaseModel):
    reason: str | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False)
class ResponseUsage(BatchUsage):
    """Token usage of a response: the same shape as a batch's usage."""


@parsed
@attrs.define(eq=False, weakref_slot=False)
class Response(BaseModel):
    """A model response (what ``client.responses.create(...)`` returns).

    Request-echo fields the SDK types in depth (``tools``, ``tool_choice``, ``reasoning``,
    ``text``, ``prompt``, ``conversation``) are :class:`GenericObject` here.
    """

    id: str
    created_at: float
    model: str
    output: list[ResponseOutputItem] = attrs.field(metadata=each(_output_item, required=True))
    object: str = "response"
    status: str | None = None
    error: ResponseError | None = attrs.field(default=None, metadata=obj(ResponseError))
    incomplete_details: IncompleteDetails | None = attrs.field(
        default=None, metadata=obj(IncompleteDetails)
    )
    instructions: Any = attrs.field(default=None, metadata=via(generic))
    metadata: dict[str, str] | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = None
    tool_choice: Any = attrs.field(default=None, metadata=via(generic))
    tools: list[Any] = attrs.field(factory=list, metadata=each(_generic_item, required=True))
    top_p: float | None = None
    background: bool | None = None
    completed_at: float | None = None
    conversation: GenericObject | None = attrs.field(default=None, metadata=via(generic))
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    previous_response_id: str | None = None
    prompt: GenericObject | None = attrs.field(default=None, metadata=via(generic))
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    reasoning: GenericObject | None = attrs.field(default=None, metadata=via(generic))
    safety_identifier: str | None = None
    service_tier: str | None = None
    text: GenericObject | None = attrs.field(default=None, metadata=via(generic))
    top_logprobs: int | None = None
    truncation: str | None = None
    usage: ResponseUsage | None = attrs.field(default=None, metadata=obj(ResponseUsage))
    user: str | None = None

    @property
    def output_text(self) -> str:
        """The ``text`` of every ``output_text`` part of every ``message`` item, joined.

        Same rule as the openai SDK's ``Response.output_text``.
        """
        texts: list[str] = []
        for item in self.output:
            if getattr(item, "type", None) != "message":
                continue
            content = getattr(item, "content", None)
            if not isinstance(content, list):
                continue
            for part in content:
                if getattr(part, "type", None) == "output_text":
                    text = getattr(part, "text", None)
                    if isinstance(text, str):
                        texts.append(text)
        return "".join(texts)
