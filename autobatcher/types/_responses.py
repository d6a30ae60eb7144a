"""Responses API: ``Response`` and its output items (mirrors ``openai.types.responses``).

The common output items are typed (``message``, ``function_call``, ``custom_tool_call``,
``reasoning``); every other item type (web search, file search, computer, MCP, ...) is a
:class:`GenericObject`, whose JSON keys are all attributes (``item.type``, ``item.id``).
"""

from __future__ import annotations

from typing import Any

import attrs

from ._base import BaseModel, GenericObject, each, generic, key, obj, objs, parsed, via
from ._batches import OutputTokensDetails

__all__ = [
    "AnnotationContainerFileCitation",
    "AnnotationFileCitation",
    "AnnotationFilePath",
    "FunctionTool",
    "IncompleteDetails",
    "InputTokensDetails",
    "Logprob",
    "LogprobTopLogprob",
    "Reasoning",
    "ReasoningText",
    "Response",
    "ResponseAnnotationURLCitation",
    "ResponseCustomToolCall",
    "ResponseError",
    "ResponseFormatJSONObject",
    "ResponseFormatText",
    "ResponseFormatTextJSONSchemaConfig",
    "ResponseFunctionToolCall",
    "ResponseOutputItem",
    "ResponseOutputMessage",
    "ResponseOutputRefusal",
    "ResponseOutputText",
    "ResponseOutputTextAnnotation",
    "ResponseReasoningItem",
    "ResponseTextConfig",
    "ResponseUsage",
]


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class AnnotationFileCitation(BaseModel):
    """A ``file_citation`` annotation of an ``output_text`` part."""

    file_id: str
    filename: str
    index: int
    type: str = "file_citation"


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ResponseAnnotationURLCitation(BaseModel):
    """A ``url_citation`` annotation of an ``output_text`` part.

    The SDK's ``responses.response_output_text.AnnotationURLCitation`` (the chat message's
    citation, :class:`AnnotationURLCitation`, has no ``type``).
    """

    end_index: int
    start_index: int
    title: str
    type: str = "url_citation"
    url: str


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class AnnotationContainerFileCitation(BaseModel):
    """A ``container_file_citation`` annotation of an ``output_text`` part."""

    container_id: str
    end_index: int
    file_id: str
    filename: str
    start_index: int
    type: str = "container_file_citation"


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class AnnotationFilePath(BaseModel):
    """A ``file_path`` annotation of an ``output_text`` part."""

    file_id: str
    index: int
    type: str = "file_path"


_ANNOTATION_PARSERS: dict[Any, Any] = {
    "file_citation": AnnotationFileCitation.from_dict,
    "url_citation": ResponseAnnotationURLCitation.from_dict,
    "container_file_citation": AnnotationContainerFileCitation.from_dict,
    "file_path": AnnotationFilePath.from_dict,
}

ResponseOutputTextAnnotation = (
    AnnotationFileCitation
    | ResponseAnnotationURLCitation
    | AnnotationContainerFileCitation
    | AnnotationFilePath
    | GenericObject
)


def _annotation(item: Any) -> Any:
    if item.__class__ is not dict:
        return item
    parse = _ANNOTATION_PARSERS.get(item.get("type"))
    return GenericObject(_raw=item) if parse is None else parse(item)


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class LogprobTopLogprob(BaseModel):
    """One alternative of an ``output_text`` token (``bytes`` required, unlike chat's)."""

    token: str
    bytes: list[int]
    logprob: float


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class Logprob(BaseModel):
    """The log probability of one ``output_text`` token."""

    token: str
    bytes: list[int]
    logprob: float
    top_logprobs: list[LogprobTopLogprob] = attrs.field(
        factory=list, metadata=objs(LogprobTopLogprob, required=True)
    )


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ResponseOutputText(BaseModel):
    """An ``output_text`` content part (``text``, typed ``annotations``, ``logprobs``)."""

    annotations: list[ResponseOutputTextAnnotation] = attrs.field(
        factory=list, metadata=each(_annotation, required=True)
    )
    text: str
    type: str = "output_text"
    logprobs: list[Logprob] | None = attrs.field(default=None, metadata=objs(Logprob))


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
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
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ResponseOutputMessage(BaseModel):
    """A ``message`` output item; its ``content`` holds text and refusal parts."""

    id: str
    content: list[ResponseOutputText | ResponseOutputRefusal | GenericObject] = attrs.field(
        metadata=each(_content, required=True)
    )
    role: str = "assistant"
    status: str
    type: str = "message"
    phase: str | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ResponseFunctionToolCall(BaseModel):
    """A ``function_call`` output item: ``name``, JSON-text ``arguments``, ``call_id``."""

    arguments: str
    call_id: str
    name: str
    type: str = "function_call"
    id: str | None = None
    async_: bool | None = attrs.field(default=None, metadata=key("async"))
    caller: GenericObject | None = attrs.field(default=None, metadata=via(generic))
    namespace: str | None = None
    status: str | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ResponseCustomToolCall(BaseModel):
    """A ``custom_tool_call`` output item: ``name``, free-text ``input``, ``call_id``."""

    call_id: str
    input: str
    name: str
    type: str = "custom_tool_call"
    id: str | None = None
    async_: bool | None = attrs.field(default=None, metadata=key("async"))
    caller: GenericObject | None = attrs.field(default=None, metadata=via(generic))
    namespace: str | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ReasoningText(BaseModel):
    """A ``summary_text`` or ``reasoning_text`` part of a reasoning item."""

    text: str
    type: str


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
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
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ResponseError(BaseModel):
    code: str
    message: str
    misalignment: GenericObject | None = attrs.field(default=None, metadata=via(generic))
    param: str | None = None
    type: str | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class IncompleteDetails(BaseModel):
    reason: str | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class InputTokensDetails(BaseModel):
    """Input-token breakdown of a response's usage."""

    cache_write_tokens: int
    cached_tokens: int
    cache_write_tokens_details: GenericObject | None = attrs.field(
        default=None, metadata=via(generic)
    )


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ResponseUsage(BaseModel):
    """Token usage of a response."""

    input_tokens: int
    input_tokens_details: InputTokensDetails = attrs.field(metadata=obj(InputTokensDetails))
    output_tokens: int
    output_tokens_details: OutputTokensDetails = attrs.field(metadata=obj(OutputTokensDetails))
    total_tokens: int


# -- request echoes the SDK types in depth ---------------------------------------------


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class Reasoning(BaseModel):
    """``response.reasoning``: the reasoning settings the response ran with."""

    context: str | None = None
    effort: str | None = None
    generate_summary: str | None = None
    mode: str | None = None
    summary: str | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ResponseFormatText(BaseModel):
    type: str = "text"


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ResponseFormatJSONObject(BaseModel):
    type: str = "json_object"


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ResponseFormatTextJSONSchemaConfig(BaseModel):
    """A ``json_schema`` text format; the schema is ``schema_`` (JSON key ``schema``)."""

    name: str
    schema_: dict[str, Any] = attrs.field(metadata=key("schema"))
    type: str = "json_schema"
    description: str | None = None
    strict: bool | None = None


_FORMAT_PARSERS: dict[Any, Any] = {
    "text": ResponseFormatText.from_dict,
    "json_schema": ResponseFormatTextJSONSchemaConfig.from_dict,
    "json_object": ResponseFormatJSONObject.from_dict,
}


def _text_format(value: Any) -> Any:
    if value.__class__ is not dict:
        return value
    parse = _FORMAT_PARSERS.get(value.get("type"))
    return GenericObject(_raw=value) if parse is None else parse(value)


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ResponseTextConfig(BaseModel):
    """``response.text``: the text output settings (``format``, ``verbosity``)."""

    format: (
        ResponseFormatText
        | ResponseFormatTextJSONSchemaConfig
        | ResponseFormatJSONObject
        | GenericObject
        | None
    ) = attrs.field(default=None, metadata=via(_text_format))
    verbosity: str | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class FunctionTool(BaseModel):
    """A ``function`` entry of ``response.tools`` (other tool types are GenericObject)."""

    name: str
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    type: str = "function"
    allowed_callers: list[str] | None = None
    async_: bool | None = attrs.field(default=None, metadata=key("async"))
    defer_loading: bool | None = None
    description: str | None = None
    output_schema: dict[str, Any] | None = None


_function_tool = FunctionTool.from_dict


def _tool(item: Any) -> Any:
    if item.__class__ is not dict:
        return item
    if item.get("type") == "function":
        return _function_tool(item)
    return GenericObject(_raw=item)


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class Response(BaseModel):
    """A model response (what ``client.responses.create(...)`` returns).

    ``reasoning``, ``text`` and ``function`` tools are typed; the other request echoes and
    newer parts the SDK types in depth (``tool_choice`` objects, other tools, ``prompt``,
    ``conversation``, ``moderation``...) are :class:`GenericObject` here.
    """

    id: str
    access_programs: GenericObject | None = attrs.field(default=None, metadata=via(generic))
    created_at: float
    error: ResponseError | None = attrs.field(default=None, metadata=obj(ResponseError))
    incomplete_details: IncompleteDetails | None = attrs.field(
        default=None, metadata=obj(IncompleteDetails)
    )
    instructions: Any = attrs.field(default=None, metadata=via(generic))
    metadata: dict[str, str] | None = None
    model: str
    object: str = "response"
    output: list[ResponseOutputItem] = attrs.field(metadata=each(_output_item, required=True))
    parallel_tool_calls: bool
    temperature: float | None = None
    tool_choice: Any = attrs.field(metadata=via(generic))
    tools: list[FunctionTool | GenericObject] = attrs.field(
        factory=list, metadata=each(_tool, required=True)
    )
    top_p: float | None = None
    background: bool | None = None
    completed_at: float | None = None
    conversation: GenericObject | None = attrs.field(default=None, metadata=via(generic))
    image: GenericObject | None = attrs.field(default=None, metadata=via(generic))
    input_transformations: list[GenericObject] | None = attrs.field(
        default=None, metadata=via(generic)
    )
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    moderation: GenericObject | None = attrs.field(default=None, metadata=via(generic))
    previous_response_id: str | None = None
    prompt: GenericObject | None = attrs.field(default=None, metadata=via(generic))
    prompt_cache_diagnostics: GenericObject | None = attrs.field(
        default=None, metadata=via(generic)
    )
    prompt_cache_key: str | None = None
    prompt_cache_options: GenericObject | None = attrs.field(default=None, metadata=via(generic))
    prompt_cache_retention: str | None = None
    reasoning: Reasoning | None = attrs.field(default=None, metadata=obj(Reasoning))
    safety_identifier: str | None = None
    service_tier: str | None = None
    status: str | None = None
    text: ResponseTextConfig | None = attrs.field(default=None, metadata=obj(ResponseTextConfig))
    tool_usage: GenericObject | None = attrs.field(default=None, metadata=via(generic))
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
