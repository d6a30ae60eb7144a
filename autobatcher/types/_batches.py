"""Batch API objects: ``Batch`` and its parts (mirrors ``openai.types.Batch``)."""

from __future__ import annotations

import attrs

from ._base import BaseModel, obj, objs, parsed

__all__ = [
    "Batch",
    "BatchError",
    "BatchErrors",
    "BatchInputTokensDetails",
    "BatchRequestCounts",
    "BatchUsage",
    "OutputTokensDetails",
]


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class BatchError(BaseModel):
    """One entry of ``batch.errors.data`` (e.g. a line that failed validation)."""

    code: str | None = None
    line: int | None = None
    message: str | None = None
    param: str | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class BatchErrors(BaseModel):
    """``batch.errors`` (the SDK's ``batch.Errors``)."""

    data: list[BatchError] | None = attrs.field(default=None, metadata=objs(BatchError))
    object: str | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class BatchRequestCounts(BaseModel):
    completed: int
    failed: int
    total: int


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class BatchInputTokensDetails(BaseModel):
    """Input-token breakdown of a batch's usage (the SDK's ``batch_usage.InputTokensDetails``)."""

    cached_tokens: int


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class OutputTokensDetails(BaseModel):
    """Output-token breakdown (of ``BatchUsage`` and ``ResponseUsage``)."""

    reasoning_tokens: int


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class BatchUsage(BaseModel):
    input_tokens: int
    input_tokens_details: BatchInputTokensDetails = attrs.field(
        metadata=obj(BatchInputTokensDetails)
    )
    output_tokens: int
    output_tokens_details: OutputTokensDetails = attrs.field(metadata=obj(OutputTokensDetails))
    total_tokens: int


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class Batch(BaseModel):
    """A batch job (``client.batches.create/retrieve/cancel``)."""

    id: str
    completion_window: str
    created_at: int
    endpoint: str
    input_file_id: str
    object: str = "batch"
    status: str = "validating"
    cancelled_at: int | None = None
    cancelling_at: int | None = None
    completed_at: int | None = None
    error_file_id: str | None = None
    errors: BatchErrors | None = attrs.field(default=None, metadata=obj(BatchErrors))
    expired_at: int | None = None
    expires_at: int | None = None
    failed_at: int | None = None
    finalizing_at: int | None = None
    in_progress_at: int | None = None
    metadata: dict[str, str] | None = None
    model: str | None = None
    output_file_id: str | None = None
    request_counts: BatchRequestCounts | None = attrs.field(
        default=None, metadata=obj(BatchRequestCounts)
    )
    usage: BatchUsage | None = attrs.field(default=None, metadata=obj(BatchUsage))
