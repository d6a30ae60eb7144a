"""Files API objects: ``FileObject`` and ``FileDeleted``."""

from __future__ import annotations

import attrs

from ._base import BaseModel, parsed

__all__ = ["FileDeleted", "FileObject"]


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class FileObject(BaseModel):
    """An uploaded file (``client.files.create/retrieve``)."""

    id: str
    bytes: int
    created_at: int
    filename: str
    object: str = "file"
    purpose: str = "batch"
    status: str
    expires_at: int | None = None
    status_details: str | None = None


@parsed
@attrs.define(eq=False, weakref_slot=False, kw_only=True)
class FileDeleted(BaseModel):
    """What ``client.files.delete(...)`` returns."""

    id: str
    deleted: bool
    object: str = "file"
