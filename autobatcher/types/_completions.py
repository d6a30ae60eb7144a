"""Text completions: ``Completion`` (mirrors ``openai.types.Completion``)."""

from __future__ import annotations

import attrs

from ._base import BaseModel, obj, objs, parsed
from ._chat import CompletionUsage

__all__ = ["Completion", "CompletionChoice", "Logprobs"]


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class Logprobs(BaseModel):
    """Logprobs of a text-completion choice (the SDK's ``completion_choice.Logprobs``)."""

    text_offset: list[int] | None = None
    token_logprobs: list[float] | None = None
    tokens: list[str] | None = None
    top_logprobs: list[dict[str, float]] | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class CompletionChoice(BaseModel):
    finish_reason: str
    index: int
    logprobs: Logprobs | None = attrs.field(default=None, metadata=obj(Logprobs))
    text: str


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class Completion(BaseModel):
    """A text completion (what ``client.completions.create(...)`` returns)."""

    id: str
    choices: list[CompletionChoice] = attrs.field(metadata=objs(CompletionChoice, required=True))
    created: int
    model: str
    object: str = "text_completion"
    system_fingerprint: str | None = None
    usage: CompletionUsage | None = attrs.field(default=None, metadata=obj(CompletionUsage))
