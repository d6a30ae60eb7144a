"""Embeddings: ``CreateEmbeddingResponse`` (mirrors ``openai.types.CreateEmbeddingResponse``)."""

from __future__ import annotations

import attrs

from ._base import BaseModel, obj, objs, parsed

__all__ = ["CreateEmbeddingResponse", "Embedding", "EmbeddingUsage"]


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class Embedding(BaseModel):
    """One embedding vector (a base64 ``str`` when ``encoding_format="base64"`` was sent)."""

    embedding: list[float]
    index: int
    object: str = "embedding"


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class EmbeddingUsage(BaseModel):
    """Token usage of an embeddings call (the SDK's ``create_embedding_response.Usage``)."""

    prompt_tokens: int
    total_tokens: int


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class CreateEmbeddingResponse(BaseModel):
    """What ``client.embeddings.create(...)`` returns."""

    data: list[Embedding] = attrs.field(metadata=objs(Embedding, required=True))
    model: str
    object: str = "list"
    usage: EmbeddingUsage = attrs.field(metadata=obj(EmbeddingUsage))
