"""Moderations: ``ModerationCreateResponse`` (mirrors ``openai.types.ModerationCreateResponse``).

Category names containing ``/`` or ``-`` in the JSON (``"self-harm/intent"``) are exposed
under the SDK's attribute names (``self_harm_intent``): ``model_dump()`` uses them, like the
SDK's; ``to_dict()`` and ``model_dump(by_alias=True)`` use the JSON keys.
"""

from __future__ import annotations

import attrs

from ._base import BaseModel, key, obj, objs, parsed

__all__ = [
    "Categories",
    "CategoryAppliedInputTypes",
    "CategoryScores",
    "Moderation",
    "ModerationCreateResponse",
]


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class Categories(BaseModel):
    harassment: bool
    harassment_threatening: bool = attrs.field(metadata=key("harassment/threatening"))
    hate: bool
    hate_threatening: bool = attrs.field(metadata=key("hate/threatening"))
    illicit: bool | None = None
    illicit_violent: bool | None = attrs.field(default=None, metadata=key("illicit/violent"))
    self_harm: bool = attrs.field(metadata=key("self-harm"))
    self_harm_instructions: bool = attrs.field(metadata=key("self-harm/instructions"))
    self_harm_intent: bool = attrs.field(metadata=key("self-harm/intent"))
    sexual: bool
    sexual_minors: bool = attrs.field(metadata=key("sexual/minors"))
    violence: bool
    violence_graphic: bool = attrs.field(metadata=key("violence/graphic"))


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class CategoryScores(BaseModel):
    harassment: float
    harassment_threatening: float = attrs.field(metadata=key("harassment/threatening"))
    hate: float
    hate_threatening: float = attrs.field(metadata=key("hate/threatening"))
    illicit: float
    illicit_violent: float = attrs.field(metadata=key("illicit/violent"))
    self_harm: float = attrs.field(metadata=key("self-harm"))
    self_harm_instructions: float = attrs.field(metadata=key("self-harm/instructions"))
    self_harm_intent: float = attrs.field(metadata=key("self-harm/intent"))
    sexual: float
    sexual_minors: float = attrs.field(metadata=key("sexual/minors"))
    violence: float
    violence_graphic: float = attrs.field(metadata=key("violence/graphic"))


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class CategoryAppliedInputTypes(BaseModel):
    harassment: list[str]
    harassment_threatening: list[str] = attrs.field(metadata=key("harassment/threatening"))
    hate: list[str]
    hate_threatening: list[str] = attrs.field(metadata=key("hate/threatening"))
    illicit: list[str]
    illicit_violent: list[str] = attrs.field(metadata=key("illicit/violent"))
    self_harm: list[str] = attrs.field(metadata=key("self-harm"))
    self_harm_instructions: list[str] = attrs.field(metadata=key("self-harm/instructions"))
    self_harm_intent: list[str] = attrs.field(metadata=key("self-harm/intent"))
    sexual: list[str]
    sexual_minors: list[str] = attrs.field(metadata=key("sexual/minors"))
    violence: list[str]
    violence_graphic: list[str] = attrs.field(metadata=key("violence/graphic"))


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class Moderation(BaseModel):
    """One moderation result (``response.results[i]``)."""

    categories: Categories = attrs.field(metadata=obj(Categories))
    category_applied_input_types: CategoryAppliedInputTypes | None = attrs.field(
        metadata=obj(CategoryAppliedInputTypes)
    )
    category_scores: CategoryScores = attrs.field(metadata=obj(CategoryScores))
    flagged: bool


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class ModerationCreateResponse(BaseModel):
    """What ``client.moderations.create(...)`` returns."""

    id: str
    model: str
    results: list[Moderation] = attrs.field(metadata=objs(Moderation, required=True))
