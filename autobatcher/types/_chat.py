"""Chat Completions: ``ChatCompletion`` and its parts (mirrors ``openai.types.chat``)."""

from __future__ import annotations

from typing import Any

import attrs

from ._base import BaseModel, GenericObject, each, generic, obj, objs, parsed, via

__all__ = [
    "Annotation",
    "AnnotationURLCitation",
    "ChatCompletion",
    "ChatCompletionAudio",
    "ChatCompletionMessage",
    "ChatCompletionMessageCustomToolCall",
    "ChatCompletionMessageFunctionToolCall",
    "ChatCompletionMessageToolCall",
    "ChatCompletionMessageToolCallUnion",
    "ChatCompletionTokenLogprob",
    "Choice",
    "ChoiceLogprobs",
    "CompletionTokensDetails",
    "CompletionUsage",
    "Custom",
    "Function",
    "FunctionCall",
    "PromptTokensDetails",
    "TopLogprob",
]

# -- usage (shared with text completions) ---------------------------------------------


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class CompletionTokensDetails(BaseModel):
    accepted_prediction_tokens: int | None = None
    audio_tokens: int | None = None
    reasoning_tokens: int | None = None
    rejected_prediction_tokens: int | None = None
    text_tokens: int | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class PromptTokensDetails(BaseModel):
    audio_tokens: int | None = None
    cache_write_tokens: int | None = None
    cached_tokens: int | None = None
    image_tokens: int | None = None
    text_tokens: int | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class CompletionUsage(BaseModel):
    completion_tokens: int
    prompt_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails | None = attrs.field(
        default=None, metadata=obj(CompletionTokensDetails)
    )
    prompt_tokens_details: PromptTokensDetails | None = attrs.field(
        default=None, metadata=obj(PromptTokensDetails)
    )


# -- logprobs -----------------------------------------------------------------------


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class TopLogprob(BaseModel):
    token: str
    bytes: list[int] | None = None
    logprob: float


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ChatCompletionTokenLogprob(BaseModel):
    token: str
    bytes: list[int] | None = None
    logprob: float
    top_logprobs: list[TopLogprob] = attrs.field(
        factory=list, metadata=objs(TopLogprob, required=True)
    )


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ChoiceLogprobs(BaseModel):
    content: list[ChatCompletionTokenLogprob] | None = attrs.field(
        default=None, metadata=objs(ChatCompletionTokenLogprob)
    )
    refusal: list[ChatCompletionTokenLogprob] | None = attrs.field(
        default=None, metadata=objs(ChatCompletionTokenLogprob)
    )


# -- tool calls -----------------------------------------------------------------------


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class Function(BaseModel):
    """The function a tool call invokes: ``name`` and JSON-text ``arguments``."""

    arguments: str
    name: str


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ChatCompletionMessageFunctionToolCall(BaseModel):
    """A tool call of ``type == "function"``: ``call.function.name`` / ``.arguments``."""

    id: str
    function: Function = attrs.field(metadata=obj(Function))
    type: str = "function"


#: The SDK's (older) name for a function tool call.
ChatCompletionMessageToolCall = ChatCompletionMessageFunctionToolCall


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class Custom(BaseModel):
    input: str
    name: str


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ChatCompletionMessageCustomToolCall(BaseModel):
    """A tool call of ``type == "custom"``: ``call.custom.name`` / ``.input``."""

    id: str
    custom: Custom = attrs.field(metadata=obj(Custom))
    type: str = "custom"


ChatCompletionMessageToolCallUnion = (
    ChatCompletionMessageFunctionToolCall | ChatCompletionMessageCustomToolCall
)

_function_tool_call = ChatCompletionMessageFunctionToolCall.from_dict
_custom_tool_call = ChatCompletionMessageCustomToolCall.from_dict


def _tool_call(item: Any) -> Any:
    if item.__class__ is not dict:
        return item
    if item.get("type") == "custom":
        return _custom_tool_call(item)
    # "function", or whatever a compatible server sends (or omits): parse as a function.
    return _function_tool_call(item)


# -- message ------------------------------------------------------------------------


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class FunctionCall(BaseModel):
    """The deprecated ``function_call`` of a message."""

    arguments: str
    name: str


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class AnnotationURLCitation(BaseModel):
    end_index: int
    start_index: int
    title: str
    url: str


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class Annotation(BaseModel):
    type: str
    url_citation: AnnotationURLCitation = attrs.field(metadata=obj(AnnotationURLCitation))


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ChatCompletionAudio(BaseModel):
    id: str
    data: str
    expires_at: int
    transcript: str


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ChatCompletionMessage(BaseModel):
    """The assistant message of a choice (``choice.message.content``, ``.tool_calls``)."""

    content: str | None = None
    refusal: str | None = None
    role: str = "assistant"
    annotations: list[Annotation] | None = attrs.field(default=None, metadata=objs(Annotation))
    audio: ChatCompletionAudio | None = attrs.field(default=None, metadata=obj(ChatCompletionAudio))
    function_call: FunctionCall | None = attrs.field(default=None, metadata=obj(FunctionCall))
    tool_calls: list[ChatCompletionMessageToolCallUnion] | None = attrs.field(
        default=None, metadata=each(_tool_call)
    )


# -- completion -----------------------------------------------------------------------


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class Choice(BaseModel):
    finish_reason: str
    index: int
    logprobs: ChoiceLogprobs | None = attrs.field(default=None, metadata=obj(ChoiceLogprobs))
    message: ChatCompletionMessage = attrs.field(metadata=obj(ChatCompletionMessage))


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ChatCompletion(BaseModel):
    """A chat completion (what ``client.chat.completions.create(...)`` returns)."""

    id: str
    choices: list[Choice] = attrs.field(metadata=objs(Choice, required=True))
    created: int
    model: str
    object: str = "chat.completion"
    metadata: dict[str, str] | None = None
    #: Moderation results, when the request asked for them (kept as sent: a GenericObject).
    moderation: GenericObject | None = attrs.field(default=None, metadata=via(generic))
    service_tier: str | None = None
    system_fingerprint: str | None = None
    usage: CompletionUsage | None = attrs.field(default=None, metadata=obj(CompletionUsage))
