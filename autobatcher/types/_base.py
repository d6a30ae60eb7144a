"""The base class shared by every response model, and the cheap parsing helpers.

Design
------
Every model is an ``@attrs.define(slots=True, kw_only=True)`` class (declared as shown in
:func:`parsed`): slotted, keyword-only and mutable like the openai SDK's pydantic models,
with the SDK's fields in the SDK's order. Mutable rather than ``@attrs.frozen`` because

* it is what the SDK does: code written against ``AsyncOpenAI`` may assign attributes
  (``msg.content = msg.content.strip()``) and must keep working;
* it is measurably cheaper: a frozen slotted class must route every field of every
  object through ``object.__setattr__``; for a typical one-choice ``ChatCompletion``
  (six objects, ~35 fields) ``from_dict`` took ~7.1 us frozen vs ~4.2 us mutable via
  the attrs ``__init__``, and ~2.5 us with the generated slot-storing ``from_dict`` below.

Each model keeps a reference to the parsed JSON it came from (``_raw``; never copied at
construction). Dumps are computed from it, the way the SDK's pydantic models dump:

* ``to_dict()`` / ``to_json()`` (the SDK's defaults: JSON keys, only what was sent) give
  back the server's body (equal as data, unknown fields included; keys in the SDK's
  order: declared fields, then unknown ones);
* ``model_dump()`` / ``model_dump_json()`` give every declared field (``None`` for what
  the server left out) under its attribute name, then the unknown fields; ``exclude_*``,
  ``by_alias``, ``include``/``exclude`` behave as pydantic's. The ``None`` defaults are
  produced here, at dump time, not stored at construction;
* a declared attribute reassigned since construction (detected by identity) replaces the
  server's value, so no dump ever disagrees with the attributes.

The parts the SDK types in depth but autobatcher keeps as :class:`GenericObject`
(uncommon output items and tools, ``prompt``, ...) dump exactly the keys the server sent;
the SDK would add its declared-but-absent fields there as ``None``.

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

import copy
import json
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import attrs

__all__ = ["BaseModel", "FieldInfo", "GenericObject"]

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
    """Field metadata: the value goes through ``parse`` (None is stored as None)."""
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
        lines.append(f"    v = g({k!r})")
        if kind == "via":
            # Usually absent (request echoes, newer fields): skip the call for None.
            ns[f"F{i}"] = parse[1]
            lines.append(f"    {target} = v if v is None else F{i}(v)")
            continue
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


#: pydantic's include/exclude argument: a set of names, or a mapping of names (list
#: indices, ``"__all__"``) to ``True`` or a nested specification.
IncEx = set[int] | set[str] | Mapping[int, Any] | Mapping[str, Any]
#: The normalised form: a dict of key -> True or nested spec; None means "no filter".
Spec = dict[Any, Any] | None


class _DumpOptions:
    __slots__ = ("by_alias", "exclude_defaults", "exclude_none", "exclude_unset")

    def __init__(
        self, by_alias: bool, exclude_unset: bool, exclude_defaults: bool, exclude_none: bool
    ) -> None:
        self.by_alias = by_alias
        self.exclude_unset = exclude_unset
        self.exclude_defaults = exclude_defaults
        self.exclude_none = exclude_none


def _spec(value: object) -> Spec:
    """Normalise an include/exclude argument; reject what pydantic would not accept."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if v is not False}
    if isinstance(value, (set, frozenset, list, tuple)):
        return dict.fromkeys(value, True)
    raise TypeError(f"include/exclude must be a set or a mapping, not {type(value).__name__}")


def _pick(key: Any, include: Spec, exclude: Spec) -> tuple[Spec, Spec] | None:
    """None when ``key`` is filtered out, else the nested (include, exclude) for its value."""
    inner_include: Spec = None
    inner_exclude: Spec = None
    if include is not None:
        chosen = include.get(key, include.get("__all__"))
        if chosen is None:
            return None
        if chosen is not True:
            inner_include = _spec(chosen)
    if exclude is not None:
        dropped = exclude.get(key, exclude.get("__all__"))
        if dropped is True:
            return None
        if dropped is not None:
            inner_exclude = _spec(dropped)
    return inner_include, inner_exclude


def _dump_value(value: Any, options: _DumpOptions, include: Spec, exclude: Spec) -> Any:
    """A fresh copy of one value for a dump: models dump themselves, JSON is copied."""
    if isinstance(value, BaseModel):
        return value._dump(options, include, exclude)
    cls = value.__class__
    if cls is str or cls is int or cls is float or cls is bool or value is None:
        return value
    if cls is list or cls is tuple or (isinstance(value, (list, tuple))):
        if include is None and exclude is None:
            return [_dump_value(v, options, None, None) for v in value]
        out = []
        for i, v in enumerate(value):
            picked = _pick(i, include, exclude)
            if picked is not None:
                out.append(_dump_value(v, options, *picked))
        return out
    if isinstance(value, Mapping):
        # A plain dict (``metadata``, an unknown field): copied, its None entries kept.
        items = {}
        for k, v in value.items():
            picked = _pick(k, include, exclude)
            if picked is not None:
                items[k] = _dump_value(v, options, *picked)
        return items
    return value


def _dump_generic(value: Any, options: _DumpOptions, include: Spec, exclude: Spec) -> Any:
    """Dump the JSON inside a :class:`GenericObject`: its objects count as models.

    The SDK types these parts (tools, annotations, uncommon output items) as models, so
    ``exclude_none``/``exclude_defaults`` drop their ``None`` fields at every depth.
    """
    if value.__class__ is dict or (isinstance(value, Mapping) and not isinstance(value, BaseModel)):
        drop_none = options.exclude_none or options.exclude_defaults
        out = {}
        for k, v in value.items():
            if v is None and drop_none:
                continue
            picked = _pick(k, include, exclude)
            if picked is not None:
                out[k] = _dump_generic(v, options, *picked)
        return out
    if isinstance(value, (list, tuple)):
        items = []
        for i, v in enumerate(value):
            picked = _pick(i, include, exclude)
            if picked is not None:
                items.append(_dump_generic(v, options, *picked))
        return items
    return _dump_value(value, options, include, exclude)


def _json_text(data: Any, indent: int | None) -> str:
    # pydantic writes UTF-8 (no \u escapes), compact without an indent.
    if indent is None:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(data, indent=indent, ensure_ascii=False)


class _ModelFields:
    """``Model.model_fields`` (on the class or an instance): name -> :class:`FieldInfo`."""

    def __get__(self, instance: object | None, owner: type[BaseModel]) -> dict[str, FieldInfo]:
        return _info(owner).model_fields(owner)


class FieldInfo:
    """What ``Model.model_fields[name]`` describes (the useful subset of pydantic's FieldInfo).

    ``alias`` is the JSON key when it differs from the attribute name (``"self-harm"`` for
    ``self_harm``), else None; ``default`` is None for optional fields and ``...`` (pydantic's
    marker) for required ones. A field is required
    when the SDK requires it: it has no default, or a non-None one (``object``, ``type``,
    lists the SDK always has).
    """

    __slots__ = ("_required", "alias", "annotation", "default")

    def __init__(self, annotation: Any, alias: str | None, default: Any, required: bool) -> None:
        self.annotation = annotation
        self.alias = alias
        self.default = default
        self._required = required

    def is_required(self) -> bool:
        return self._required

    def __repr__(self) -> str:
        alias = f", alias={self.alias!r}" if self.alias else ""
        tail = "required=True" if self._required else f"default={self.default!r}"
        return f"FieldInfo(annotation={self.annotation!r}{alias}, {tail})"


class _ClassInfo:
    """Per-class facts derived by reflection once, on first use (never in ``from_dict``)."""

    __slots__ = (
        "_floats",
        "_model_fields",
        "field_names",
        "fields",
        "json_keys",
        "keys",
        "optional",
        "pairs",
    )

    def __init__(self, cls: type[BaseModel]) -> None:
        fields = [f for f in attrs.fields(cls) if f.name != "_raw"]
        self.fields = fields
        self.field_names: tuple[str, ...] = tuple(f.name for f in fields)
        self.json_keys: tuple[str, ...] = tuple(f.metadata.get("key", f.name) for f in fields)
        self.pairs: tuple[tuple[str, str], ...] = tuple(
            zip(self.field_names, self.json_keys, strict=True)
        )
        self.keys: frozenset[str] = frozenset(self.json_keys)
        #: The SDK's optional fields are exactly those whose default is None here; only
        #: they are dropped by ``exclude_defaults`` (the SDK's other fields are required).
        self.optional: frozenset[str] = frozenset(f.name for f in fields if f.default is None)
        self._model_fields: dict[str, FieldInfo] | None = None
        self._floats: dict[str, Callable[[Any], Any]] | None = None

    def floats(self, cls: type[BaseModel]) -> dict[str, Callable[[Any], Any]]:
        """Per field declared ``float`` (alone or inside lists/dicts): int -> float.

        The SDK's pydantic models turn a JSON ``0`` sent for a float field into ``0.0``;
        doing the same when dumping (not when parsing) keeps ``from_dict`` cheap.
        """
        if self._floats is None:
            hints = _hints(cls)
            found = {}
            for f in self.fields:
                convert = _float_converter(hints.get(f.name))
                if convert is not None:
                    found[f.name] = convert
            self._floats = found
        return self._floats

    def model_fields(self, cls: type[BaseModel]) -> dict[str, FieldInfo]:
        if self._model_fields is None:
            hints = _hints(cls)
            self._model_fields = {
                f.name: FieldInfo(
                    hints.get(f.name, f.type),
                    f.metadata.get("key"),
                    None if f.name in self.optional else ...,
                    f.name not in self.optional,
                )
                for f in self.fields
            }
        return self._model_fields


_INFO: dict[type[Any], _ClassInfo] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an unresolvable annotation: leave it out
        return {}


def _to_float(value: Any) -> Any:
    return float(value) if value.__class__ is int else value


def _each(convert: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    if convert is None:
        return None
    item = convert
    return lambda v: [item(x) for x in v] if v.__class__ is list else v


def _each_value(convert: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    if convert is None:
        return None
    item = convert
    return lambda v: {k: item(x) for k, x in v.items()} if v.__class__ is dict else v


def _float_converter(annotation: Any) -> Callable[[Any], Any] | None:
    """A function turning the ints inside a value of this annotation into floats, or None."""
    if annotation is float:
        return _to_float
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is list and args:
        return _each(_float_converter(args[0]))
    if origin is dict and len(args) == 2:
        return _each_value(_float_converter(args[1]))
    if args and origin is not None and origin not in (list, dict):  # Optional[...] / unions
        converters = [c for c in map(_float_converter, args) if c is not None]
        if len(converters) == 1 and len(args) == 1:
            return converters[0]
    return None


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
    * ``to_dict()`` / ``to_json()``: the server's JSON; ``model_dump()`` /
      ``model_dump_json()``: every field, as the SDK dumps it (fresh copies each call);
    * ``model_fields``, ``model_fields_set``, ``model_copy()``, iteration over
      ``(name, value)`` pairs, as pydantic's;
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
    def model_validate(
        cls: type[_M],
        obj: Mapping[str, Any],
        *,
        strict: bool | None = None,
        context: Any = None,
    ) -> _M:
        """:meth:`from_dict` under pydantic's name; nothing is validated (see the module doc).

        ``strict`` and ``context`` are accepted so SDK-style calls work, and change nothing.
        """
        del strict, context
        return cls.from_dict(obj)

    @classmethod
    def model_validate_json(
        cls: type[_M],
        json_data: str | bytes | bytearray,
        *,
        strict: bool | None = None,
        context: Any = None,
    ) -> _M:
        """Build from JSON text (pydantic's name); a JSON value that is not an object is a
        ``TypeError``, malformed JSON a ``ValueError``."""
        del strict, context
        return cls.from_dict(json.loads(json_data))

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
        """Names of the fields the server sent: declared ones present, and unknown ones.

        Like pydantic (unknown fields count as set); a model built from keywords has every
        declared field set.
        """
        raw = self._raw
        info = _info(type(self))
        if raw is None:
            return set(info.field_names)
        fields = {n for n, k in info.pairs if k in raw}
        fields.update(k for k in raw if k not in info.keys)
        return fields

    # -- serialisation ----------------------------------------------------------------
    #
    # Everything here mirrors pydantic v2 / the openai SDK: ``model_dump()`` gives every
    # declared field (``None`` for what the server left out) under its attribute name, then
    # the unknown fields; ``to_dict()`` gives what the server sent, under its JSON keys.
    # The ``None`` defaults are produced here, at dump time, so ``from_dict`` stays cheap.

    def to_dict(
        self,
        *,
        mode: str = "python",
        use_api_names: bool = True,
        exclude_unset: bool = True,
        exclude_defaults: bool = False,
        exclude_none: bool = False,
        warnings: bool = True,
    ) -> dict[str, Any]:
        """The server's JSON for this object, as a fresh deep copy (the SDK's ``to_dict``).

        By default only the fields the server sent (unknown ones included), under their
        JSON keys; declared attributes reassigned since construction replace the server's
        values. ``use_api_names=False`` keys by attribute name; ``exclude_unset=False`` adds
        the declared fields the server left out (as ``None``); ``exclude_none`` drops
        ``None`` fields at every model level. ``mode``/``warnings`` are accepted for
        compatibility (the values are already JSON data).
        """
        del mode, warnings
        options = _DumpOptions(use_api_names, exclude_unset, exclude_defaults, exclude_none)
        return self._dump(options, None, None)

    def model_dump(
        self,
        *,
        mode: str = "python",
        include: IncEx | None = None,
        exclude: IncEx | None = None,
        context: Any = None,
        by_alias: bool | None = None,
        exclude_unset: bool = False,
        exclude_defaults: bool = False,
        exclude_none: bool = False,
        round_trip: bool = False,
        warnings: bool | str = True,
    ) -> dict[str, Any]:
        """A fresh dict of every field, like pydantic's ``model_dump`` on the SDK's model.

        Declared fields come first, in the SDK's order and keyed by attribute name (by JSON
        key with ``by_alias=True``), ``None`` for those the server left out; then the
        unknown fields the server sent. ``include``/``exclude`` take pydantic's sets or
        nested mappings of names (list indices and ``"__all__"`` for lists);
        ``exclude_unset`` keeps only what the server sent; ``exclude_defaults`` drops the
        optional fields that are ``None``; ``exclude_none`` drops ``None`` fields of every
        model (not entries of plain dicts, like pydantic). ``mode``, ``context``,
        ``round_trip`` and ``warnings`` change nothing: the values are already JSON data.
        """
        del mode, context, round_trip, warnings
        options = _DumpOptions(bool(by_alias), exclude_unset, exclude_defaults, exclude_none)
        return self._dump(options, _spec(include), _spec(exclude))

    def model_dump_json(
        self,
        *,
        indent: int | None = None,
        include: IncEx | None = None,
        exclude: IncEx | None = None,
        context: Any = None,
        by_alias: bool | None = None,
        exclude_unset: bool = False,
        exclude_defaults: bool = False,
        exclude_none: bool = False,
        round_trip: bool = False,
        warnings: bool | str = True,
    ) -> str:
        """JSON text of :meth:`model_dump` (compact when ``indent`` is None, like pydantic)."""
        data = self.model_dump(
            include=include,
            exclude=exclude,
            context=context,
            by_alias=by_alias,
            exclude_unset=exclude_unset,
            exclude_defaults=exclude_defaults,
            exclude_none=exclude_none,
            round_trip=round_trip,
            warnings=warnings,
        )
        return _json_text(data, indent)

    def to_json(
        self,
        *,
        indent: int | None = 2,
        use_api_names: bool = True,
        exclude_unset: bool = True,
        exclude_defaults: bool = False,
        exclude_none: bool = False,
        warnings: bool = True,
    ) -> str:
        """JSON text of :meth:`to_dict` (the SDK's ``to_json``: indented by default)."""
        data = self.to_dict(
            use_api_names=use_api_names,
            exclude_unset=exclude_unset,
            exclude_defaults=exclude_defaults,
            exclude_none=exclude_none,
            warnings=warnings,
        )
        return _json_text(data, indent)

    def _dump(self, options: _DumpOptions, include: Spec, exclude: Spec) -> dict[str, Any]:
        raw = self._raw
        info = _info(type(self))
        optional = info.optional
        floats = info.floats(type(self))
        out: dict[str, Any] = {}
        for name, json_key in info.pairs:
            value = getattr(self, name)
            if floats and name in floats and value is not None:
                value = floats[name](value)
            if raw is not None:
                if json_key in raw:
                    # A null the server sent for a list we read as [] stays null.
                    if raw[json_key] is None and _is_empty(value):
                        value = None
                elif options.exclude_unset and _is_empty(value):
                    continue  # not sent, not assigned since
            elif options.exclude_unset and value is None:
                continue  # built from keywords: None is taken as "not given"
            if value is None:
                if options.exclude_none or (options.exclude_defaults and name in optional):
                    continue
                if include is None and exclude is None:
                    out[json_key if options.by_alias else name] = None
                    continue
            if include is None and exclude is None:
                out[json_key if options.by_alias else name] = _dump_value(
                    value, options, None, None
                )
                continue
            picked = _pick(name, include, exclude)
            if picked is not None:
                out[json_key if options.by_alias else name] = _dump_value(value, options, *picked)
        if raw is not None:
            keys = info.keys
            for json_key, value in raw.items():
                if json_key in keys or (value is None and options.exclude_none):
                    continue
                picked = _pick(json_key, include, exclude)
                if picked is not None:
                    out[json_key] = _dump_value(value, options, *picked)
        return out

    # -- pydantic-style helpers ---------------------------------------------------------

    #: ``Model.model_fields`` / ``obj.model_fields``: name -> :class:`FieldInfo`, SDK order.
    model_fields = _ModelFields()

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        """``(name, value)`` of every declared field, then of every unknown one (pydantic)."""
        for name in _info(type(self)).field_names:
            yield name, getattr(self, name)
        yield from self.model_extra.items()

    def model_copy(self: _M, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> _M:
        """A copy (``deep=True``: nothing shared), with ``update`` applied by attribute name.

        Like pydantic, ``update`` is not validated; a name that is not a declared field
        becomes an unknown field of the copy.
        """
        new = copy.deepcopy(self) if deep else copy.copy(self)
        if update:
            names = _info(type(self)).field_names
            extras = {k: v for k, v in update.items() if k not in names}
            for name, value in update.items():
                if name in names:
                    setattr(new, name, value)
            if extras:
                new._raw = {**(new._raw or {}), **extras}
        return new

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

    def _dump(self, options: _DumpOptions, include: Spec, exclude: Spec) -> dict[str, Any]:
        result: dict[str, Any] = _dump_generic(self._raw or {}, options, include, exclude)
        return result

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for name, value in (self._raw or {}).items():
            yield name, _wrap(value)

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
