"""The base class shared by every response model, and the cheap parsing helpers.

Design
------
Every model is an ``@attrs.define(slots=True)`` class (declared as shown in
:func:`parsed`): slotted, and mutable like the openai SDK's pydantic models. Mutable
rather than ``@attrs.frozen`` because

* it is what the SDK does: code written against ``AsyncOpenAI`` may assign attributes
  (``msg.content = msg.content.strip()``) and must keep working;
* it is measurably cheaper: a frozen slotted class must route every field of every
  object through ``object.__setattr__``; for a typical one-choice ``ChatCompletion``
  (six objects, ~35 fields) ``from_dict`` took ~7.1 us frozen vs ~4.2 us mutable via
  the attrs ``__init__``, and ~2.5 us with the generated slot-storing ``from_dict`` below.

Each model keeps a reference to the parsed JSON it came from (``_raw``; never copied at
construction). ``to_dict()`` starts from that JSON, so the server's body round-trips
unchanged, unknown fields and key order included; a declared attribute reassigned since
construction (detected by identity) replaces the server's value, so ``to_dict()`` never
disagrees with the attributes.

Cost model (``from_dict`` runs once per request, tens of thousands of times):

* ``from_dict`` is generated once per class, at import time, from the field metadata
  (:func:`parsed`): straight-line code, one ``data.get`` and one slot store per field,
  nested objects parsed by their own generated ``from_dict``; no reflection, no
  validation, no copying, no ``__init__`` call;
* everything else (``model_extra``, ``to_dict`` copies, equality) is paid only when used,
  with the per-class reflection done once and cached.

Tolerance: ``from_dict`` never validates scalars. A missing field becomes ``None`` (or
``[]`` for the lists the SDK always has); a nested object or list with an unexpected JSON
type is kept as the raw value instead of being parsed. Field annotations describe what a
well-behaved OpenAI server sends, not a runtime guarantee.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import attrs

__all__ = ["BaseModel", "GenericObject"]

_M = TypeVar("_M", bound="BaseModel")
_C = TypeVar("_C")

_new = object.__new__


def parsed(cls: type[_C]) -> type[_C]:
    """Give an attrs model its generated ``from_dict`` (put it above ``@attrs.define``).

    Every model is declared as::

        @parsed
        @attrs.define(eq=False, weakref_slot=False)
        class Foo(BaseModel): ...

    i.e. a slotted, mutable attrs class; equality comes from :class:`BaseModel` (by value,
    including unknown fields) and hashing is disabled. Unless the class writes its own,
    ``from_dict`` is generated here, once, from the fields' metadata (:func:`key`,
    :func:`obj`, :func:`objs`, :func:`each`, :func:`via`): straight-line code that reads
    each key with ``data.get`` and stores it in its slot, bypassing ``__init__`` (about
    twice as fast as calling the attrs ``__init__`` with the same values).
    """
    if "from_dict" not in cls.__dict__:
        cls.from_dict = _compile_from_dict(cls)  # type: ignore[attr-defined]
    return cls


def key(json_key: str) -> dict[str, Any]:
    """Field metadata: the JSON key differs from the attribute name."""
    return {"key": json_key}


def obj(cls: type[BaseModel], **meta: Any) -> dict[str, Any]:
    """Field metadata: a nested object parsed with ``cls.from_dict``."""
    return {"parse": ("obj", cls), **meta}


def objs(cls: type[BaseModel], *, required: bool = False) -> dict[str, Any]:
    """Field metadata: a list of nested objects (``required``: missing -> ``[]``)."""
    return {"parse": ("objs", cls, required)}


def each(parse: Callable[[Any], Any], *, required: bool = False) -> dict[str, Any]:
    """Field metadata: a list whose elements go through ``parse`` (discriminated unions)."""
    return {"parse": ("each", parse, required)}


def via(parse: Callable[[Any], Any]) -> dict[str, Any]:
    """Field metadata: the value (possibly None) goes through ``parse``."""
    return {"parse": ("via", parse)}


def _compile_from_dict(cls: type[Any]) -> classmethod[Any, Any, Any]:
    ns: dict[str, Any] = {"check": check, "_new": _new, "sub": sub}
    lines = [
        "def from_dict(cls, data):",
        "    if data.__class__ is not dict:",
        "        check(cls, data)",
        "    g = data.get",
        "    self = _new(cls)",
        "    self._raw = data",
    ]
    for i, f in enumerate(attrs.fields(cls)):
        if f.name == "_raw":
            continue
        k = f.metadata.get("key", f.name)
        parse = f.metadata.get("parse")
        target = f"self.{f.name}"
        if parse is None:
            lines.append(f"    {target} = g({k!r})")
            continue
        kind = parse[0]
        if kind == "via":
            ns[f"F{i}"] = parse[1]
            lines.append(f"    {target} = F{i}(g({k!r}))")
            continue
        lines.append(f"    v = g({k!r})")
        if kind == "obj":
            ns[f"C{i}"] = parse[1]
            ns[f"F{i}"] = parse[1].from_dict
            lines.append(f"    {target} = F{i}(v) if v.__class__ is dict else sub(C{i}, v)")
            continue
        if kind == "objs":
            ns[f"F{i}"] = parse[1].from_dict
            item = f"F{i}(x) if x.__class__ is dict else x"
        else:
            ns[f"F{i}"] = parse[1]
            item = f"F{i}(x)"
        missing = "[]" if parse[2] else "None"
        lines.append("    if v.__class__ is list:")
        lines.append(f"        {target} = [{item} for x in v]")
        lines.append("    else:")
        lines.append(f"        {target} = {missing} if v is None else v")
    lines.append("    return self")
    source = "\n".join(lines) + "\n"
    code = compile(source, f"<autobatcher.types {cls.__qualname__}.from_dict>", "exec")
    exec(code, ns)
    fn = ns["from_dict"]
    fn.__qualname__ = f"{cls.__qualname__}.from_dict"
    fn.__doc__ = f"Build a :class:`{cls.__name__}` from the server's parsed JSON (no copy)."
    return classmethod(fn)


def check(cls: type[Any], data: object) -> None:
    """Reject a non-mapping argument to ``from_dict`` with a clear TypeError."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__}.from_dict() needs a mapping, got {type(data).__name__}")


def sub(cls: type[_M], value: Any) -> Any:
    """Parse an optional nested object; ``None`` and odd JSON types pass through unchanged."""
    if value.__class__ is dict:
        return cls.from_dict(value)
    if value is None or not isinstance(value, Mapping):
        return value
    return cls.from_dict(value)


def sub_list(cls: type[_M], value: Any) -> Any:
    """Parse an optional list of nested objects (missing -> None); odd elements kept raw."""
    if value.__class__ is list:
        return [cls.from_dict(x) if x.__class__ is dict else x for x in value]
    return value


def sub_list_req(cls: type[_M], value: Any) -> Any:
    """Parse a list the SDK always has (missing -> ``[]``); odd elements kept raw."""
    if value.__class__ is list:
        return [cls.from_dict(x) if x.__class__ is dict else x for x in value]
    return [] if value is None else value


def sub_list_by(parse: Callable[[Any], Any], value: Any, required: bool = False) -> Any:
    """Like :func:`sub_list`, with a per-element parser (for discriminated unions)."""
    if value.__class__ is list:
        return [parse(x) for x in value]
    if value is None and required:
        return []
    return value


def copy_json(value: Any) -> Any:
    """Deep copy of parsed JSON (dicts and lists; models become their ``to_dict()``)."""
    cls = value.__class__
    if cls is dict:
        return {k: copy_json(v) for k, v in value.items()}
    if cls is list:
        return [copy_json(v) for v in value]
    if cls is str or cls is int or cls is float or cls is bool or value is None:
        return value
    if isinstance(value, BaseModel):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [copy_json(v) for v in value]
    return value


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


class _ClassInfo:
    """Per-class facts derived by reflection once, on first use (never in ``from_dict``)."""

    __slots__ = ("field_names", "json_keys", "keys", "pairs")

    def __init__(self, cls: type[BaseModel]) -> None:
        fields = [f for f in attrs.fields(cls) if f.name != "_raw"]
        self.field_names: tuple[str, ...] = tuple(f.name for f in fields)
        self.json_keys: tuple[str, ...] = tuple(f.metadata.get("key", f.name) for f in fields)
        self.pairs: tuple[tuple[str, str], ...] = tuple(
            zip(self.field_names, self.json_keys, strict=True)
        )
        self.keys: frozenset[str] = frozenset(self.json_keys)


_INFO: dict[type[Any], _ClassInfo] = {}


def _info(cls: type[BaseModel]) -> _ClassInfo:
    info = _INFO.get(cls)
    if info is None:
        info = _INFO[cls] = _ClassInfo(cls)
    return info


def _is_empty(value: Any) -> bool:
    return value is None or (value.__class__ is list and not value)


@attrs.define(eq=False, weakref_slot=False)
class BaseModel:
    """Base of every autobatcher response model (the counterpart of ``openai.BaseModel``).

    Subclasses are ``@attrs.define(slots=True)`` classes whose attribute names mirror the
    openai SDK's. On top of the attrs fields every model offers:

    * ``from_dict(data)`` / ``model_validate(data)``: build from the server's parsed JSON;
    * unknown server fields: ``obj.some_new_field`` (raw value) and ``obj.model_extra``;
    * ``to_dict()`` / ``model_dump()`` / ``model_dump_json()`` / ``to_json()``: the
      server's JSON (a fresh copy each call; unchanged unless you assigned attributes);
    * equality by value (known fields, then unknown fields); no hashing (like the SDK).
    """

    #: The parsed JSON this object was built from (not a copy), or None. Keyword-only, so
    #: it goes last and never disturbs the SDK-like order of the declared fields.
    _raw: Mapping[str, Any] | None = attrs.field(
        default=None, kw_only=True, alias="_raw", repr=False, eq=False
    )

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_dict(cls: type[_M], data: Mapping[str, Any]) -> _M:
        """Build the model (and its nested models) from parsed JSON, without copying it."""
        raise NotImplementedError(f"{cls.__name__} has no from_dict")

    @classmethod
    def model_validate(cls: type[_M], obj: Mapping[str, Any]) -> _M:
        """Alias of :meth:`from_dict` (pydantic / openai SDK spelling)."""
        return cls.from_dict(obj)

    @classmethod
    def construct(cls: type[_M], **fields: Any) -> _M:
        """Build from keyword arguments keyed like the JSON (extras kept, nothing checked)."""
        return cls.from_dict(fields)

    model_construct = construct

    # -- unknown fields ---------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup failed: not a field, method or property.
        if name[:1] != "_":
            raw = self._raw
            if raw is not None and name in raw and name not in _info(type(self)).keys:
                return raw[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def model_extra(self) -> dict[str, Any]:
        """The fields the server sent that this model does not declare (raw values)."""
        raw = self._raw
        if raw is None:
            return {}
        keys = _info(type(self)).keys
        return {k: v for k, v in raw.items() if k not in keys}

    @property
    def model_fields_set(self) -> set[str]:
        """Names of the declared fields present in the server's JSON."""
        raw = self._raw
        info = _info(type(self))
        if raw is None:
            return set(info.field_names)
        return {n for n, k in info.pairs if k in raw}

    # -- serialisation ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The server's JSON for this object, as a fresh deep copy.

        Declared attributes reassigned since construction replace the server's values;
        anything else (unknown fields, key order, odd values) is exactly as received.
        """
        raw = self._raw
        pairs = _info(type(self)).pairs
        if raw is None:
            return {k: copy_json(getattr(self, n)) for n, k in pairs}
        out = dict(raw)
        for name, key in pairs:
            value = getattr(self, name)
            if key in raw:
                # Unparsed values are the very objects in raw; parsed ones (models,
                # lists of models) are serialised again, which gives back the same JSON.
                # A null list was read as [] (the SDK's type): keep the server's null.
                original = raw[key]
                if value is not original and not (original is None and _is_empty(value)):
                    out[key] = value
            elif not _is_empty(value):
                out[key] = value
        result: dict[str, Any] = copy_json(out)
        return result

    def model_dump(
        self,
        *,
        mode: str = "python",
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        by_alias: bool | None = None,
        exclude_unset: bool = False,
        exclude_defaults: bool = False,
        exclude_none: bool = False,
    ) -> dict[str, Any]:
        """The server's JSON (a fresh copy; see :meth:`to_dict`); keys are the JSON keys.

        ``include``/``exclude`` filter top-level keys; ``exclude_none`` drops ``None`` values
        at every depth. ``exclude_unset``/``exclude_defaults`` only matter for models built
        from keyword arguments (they drop ``None`` fields); ``mode``/``by_alias`` are
        accepted for SDK compatibility (the data is already JSON, keyed like the JSON).
        """
        del mode, by_alias
        data = self.to_dict()
        if (exclude_unset or exclude_defaults) and self._raw is None:
            data = {k: v for k, v in data.items() if v is not None}
        if include is not None:
            wanted = set(include)
            data = {k: v for k, v in data.items() if k in wanted}
        if exclude is not None:
            unwanted = set(exclude)
            data = {k: v for k, v in data.items() if k not in unwanted}
        if exclude_none:
            data = _drop_none(data)
        return data

    def model_dump_json(
        self,
        *,
        indent: int | None = None,
        include: Iterable[str] | None = None,
        exclude: Iterable[str] | None = None,
        by_alias: bool | None = None,
        exclude_unset: bool = False,
        exclude_defaults: bool = False,
        exclude_none: bool = False,
    ) -> str:
        """JSON text of :meth:`model_dump` (compact when ``indent`` is None, like pydantic)."""
        data = self.model_dump(
            include=include,
            exclude=exclude,
            by_alias=by_alias,
            exclude_unset=exclude_unset,
            exclude_defaults=exclude_defaults,
            exclude_none=exclude_none,
        )
        if indent is None:
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return json.dumps(data, indent=indent, ensure_ascii=False)

    def to_json(self, *, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict` (openai SDK spelling; indented by default)."""
        return self.model_dump_json(indent=indent)

    # -- value semantics ----------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, BaseModel)
        for name in _info(type(self)).field_names:
            if getattr(self, name) != getattr(other, name):
                return False
        return self.model_extra == other.model_extra

    __hash__ = None  # type: ignore[assignment]  # mutable, like the SDK's models


def _wrap(value: Any) -> Any:
    if value.__class__ is dict:
        return GenericObject(_raw=value)
    if value.__class__ is list:
        return [_wrap(v) for v in value]
    return value


@attrs.define(eq=False, weakref_slot=False)
class GenericObject(BaseModel):
    """An object the SDK models but autobatcher does not type field by field.

    Every key of the JSON object is an attribute (``item.type``, ``item.status``); nested
    objects are wrapped in ``GenericObject`` on access, so ``r.text.format.type`` works.
    Used for rarely-needed parts: uncommon Responses output items and annotations, and
    request-echo fields (``reasoning``, ``text``, ``tools``...).
    """

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenericObject:
        if data.__class__ is not dict:
            check(cls, data)
        return cls(_raw=data)

    def __getattr__(self, name: str) -> Any:
        if name[:1] != "_":
            raw = self._raw
            if raw is not None and name in raw:
                return _wrap(raw[name])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def get(self, key: str, default: Any = None) -> Any:
        """``dict.get`` on the JSON (for keys that are not identifiers)."""
        raw = self._raw
        if raw is None or key not in raw:
            return default
        return _wrap(raw[key])

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in (self._raw or {}).items())
        return f"{type(self).__name__}({inner})"


def generic(value: Any) -> Any:
    """Parse an optional object as :class:`GenericObject` (lists element-wise)."""
    if value.__class__ is dict:
        return GenericObject(_raw=value)
    if value.__class__ is list:
        return [GenericObject(_raw=v) if v.__class__ is dict else v for v in value]
    return value
