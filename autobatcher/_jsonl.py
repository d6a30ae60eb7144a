"""Encoding request lines (in the caller's task) and reading result lines."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ._errors import (
    APIError,
    BatchCancelledError,
    BatchError,
    BatchExpiredError,
    BatchRequestError,
    make_status_error,
)

__all__ = [
    "BODY_TAILS",
    "FAST_JSON",
    "LineSplitter",
    "assemble_line",
    "decode_json",
    "decode_result",
    "encode_canonical_body",
    "encode_line",
    "extract_custom_id",
    "read_result_head",
    "success_body_span",
]

T = TypeVar("T")


def _json_default(value: object) -> object:
    """What the openai SDK sends for values plain JSON cannot hold, so a request body encodes
    here as it would through ``AsyncOpenAI``: dates as ISO 8601 text, models (ours and
    pydantic's, e.g. a message from an earlier answer put back into ``messages``) as their JSON,
    other mappings as objects, other iterables (generators, ``dict.values()``) as arrays. Sets
    are refused (no order), and anything else is the ``TypeError`` JSON raises.
    """
    if isinstance(value, datetime.date):  # datetime.datetime included
        return value.isoformat()
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump) and not isinstance(value, type):
        return model_dump(mode="json", exclude_unset=True, by_alias=True)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        raise TypeError("a set has no order to send as a JSON array: pass a list")
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | bytearray):
        return list(value)
    if type(value).__name__ in _SENTINELS and type(value).__module__.startswith(_SENTINEL_HOMES):
        raise TypeError(
            f"{type(value).__name__} sentinel inside a nested value: leave the key out instead"
        )
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_orjson_loads: Callable[[bytes], Any] | None = None
try:  # optional (the ``cli`` extra brings it): decodes JSON about four times as fast
    import orjson
except ImportError:  # pragma: no cover - the dev extra installs it
    pass
else:
    _orjson_loads = orjson.loads

#: whether :func:`decode_json` has orjson to decode with
FAST_JSON = _orjson_loads is not None
# a digit or a minus sign as "0": twenty in a row are all it takes to find a long integer
_DIGITS_AS_ZEROS = bytes.maketrans(b"-123456789", b"0000000000")
_TWENTY_DIGITS = b"0" * 20


def decode_json(data: bytes, text: str | None = None) -> Any:
    """``json.loads(data)`` (or ``json.loads(text)``, given ``data``'s text): the same value,
    or the same error, through orjson when it is installed. orjson reads an integer beyond 64
    bits as a float, so text with twenty digits in a row, or a minus and nineteen (such a
    number, or a string full of digits), goes to ``json``; so does anything orjson refuses
    (NaN, a lone surrogate, a byte-order mark), for ``json``'s own verdict."""
    if _orjson_loads is not None and _TWENTY_DIGITS not in data.translate(_DIGITS_AS_ZEROS):
        try:
            return _orjson_loads(data)
        except ValueError:  # (orjson.JSONDecodeError is one)
            pass
    return json.loads(data if text is None else text)


_SENTINELS = frozenset({"NotGiven", "Omit"})
_SENTINEL_HOMES = ("openai", "autobatcher")


def _object_encoder(*, sort_keys: bool) -> Callable[[Any], str]:
    """Compact JSON text of a body, as ``json.JSONEncoder(separators=(",", ":"),
    allow_nan=False, default=_json_default, sort_keys=...).encode`` makes it, through one C
    encoder made once: ``encode()`` builds a new C encoder on every call, which costs more
    than encoding a short body (~5 us against ~2). Without the encoder's table of objects
    being encoded (which it may leave stale after an error, and which threads would share),
    a cycle ends in ``RecursionError``, reported like any other unencodable body."""
    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    fallback = json.JSONEncoder(
        separators=(",", ":"), allow_nan=False, sort_keys=sort_keys, default=_json_default
    ).encode
    if make is None:  # pragma: no cover - CPython and PyPy have the C encoder
        return fallback
    encode_object = make(
        None,
        _json_default,
        json.encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        sort_keys,
        False,
        False,
    )

    def encode(body: Any) -> str:
        if not isinstance(body, dict):  # a string or number is encoded alone by encode()
            return fallback(body)
        try:
            return "".join(encode_object(body, 0))
        except RecursionError:
            raise ValueError(
                "circular reference (a value inside itself), or nested too deeply"
            ) from None

    return encode


_encode_body = _object_encoder(sort_keys=False)
_CUSTOM_ID_KEY = b'"custom_id"'


class LineSplitter:
    """Cuts a byte stream, fed chunk by chunk, into ``\\n``-terminated lines.

    Linear in the bytes fed whatever the line length: the pieces of a line that spans many
    chunks are kept in a list and joined once, when its newline arrives (re-joining the
    partial line on every chunk costs time quadratic in the line's length). Lines come out
    exactly as ``data.split(b"\\n")`` would cut them: without the newline, a ``\\r`` before it
    kept, empty lines included.
    """

    __slots__ = ("_pending", "_pieces")

    def __init__(self) -> None:
        self._pieces: list[bytes] = []
        self._pending = 0

    @property
    def pending(self) -> int:
        """How many bytes fed so far belong to no complete line yet (the unfinished tail)."""
        return self._pending

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines this chunk completes (possibly none)."""
        if b"\n" not in chunk:
            if chunk:
                self._pieces.append(chunk)
                self._pending += len(chunk)
            return []
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if self._pieces:
            self._pieces.append(lines[0])
            lines[0] = b"".join(self._pieces)
            self._pieces = []
        self._pending = len(rest)
        if rest:
            self._pieces.append(rest)
        return lines

    def tail(self) -> bytes:
        """The bytes after the last newline so far: a line not (yet) terminated, or ``b""``."""
        if len(self._pieces) > 1:
            self._pieces = [b"".join(self._pieces)]
        return self._pieces[0] if self._pieces else b""


_encode_canonical = _object_encoder(sort_keys=True)


def encode_canonical_body(body: Mapping[str, Any]) -> str:
    """The body as canonical JSON (keys sorted): equal requests give equal text, whatever the
    order their keyword arguments came in. A request's journal identity is its hash."""
    try:
        return _encode_canonical(body)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"request body cannot be encoded as JSON: {exc}") from exc


def assemble_line(custom_id: str, url: str, body_text: str) -> bytes:
    """The JSONL line around an already-encoded body, newline included."""
    return (
        f'{{"custom_id":"{custom_id}","method":"POST","url":"{url}","body":{body_text}}}\n'.encode()
    )


def encode_line(custom_id: str, url: str, body: Mapping[str, Any]) -> bytes:
    """The JSONL line for one request, newline included.

    ``custom_id`` and ``url`` are ours (plain ASCII, nothing to escape), so only the body goes
    through the JSON encoder. Anything JSON cannot represent (objects, NaN, cycles) raises
    ``TypeError`` here, in the caller's task, before any other request can be affected.
    """
    try:
        text = _encode_body(body)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"request body cannot be encoded as JSON: {exc}") from exc
    return f'{{"custom_id":"{custom_id}","method":"POST","url":"{url}","body":{text}}}\n'.encode()


def extract_custom_id(line: bytes) -> str | None:
    """Read a result line's ``custom_id`` without parsing the whole body.

    Fastest path: the documented layout (``id`` then ``custom_id``). Next: the first
    ``"custom_id"`` key comes before any nested object. Otherwise parse the line fully.
    """
    match = _ID_PREFIX.match(line)
    if match is not None:
        return match.group(1).decode()
    at = line.find(_CUSTOM_ID_KEY)
    if at > 0 and line.find(b"{", 1, at) < 0:
        colon = at + len(_CUSTOM_ID_KEY)
        start = line.find(b'"', colon)
        if start > 0 and line[colon:start].strip() == b":":
            end = line.find(b'"', start + 1)
            value = line[start + 1 : end]
            if end > 0 and b"\\" not in value:
                return value.decode()
    try:
        parsed = json.loads(line)
    except ValueError:
        return None
    custom_id = parsed.get("custom_id") if isinstance(parsed, dict) else None
    return custom_id if isinstance(custom_id, str) else None


_raw_decode = json.JSONDecoder().raw_decode

# The documented line layout, ``{"id": …, "custom_id": …, "response": {"status_code": …,
# "request_id": …, "body": {…}}, "error": …}``, read by one anchored match. It is sound: the
# strings it skips cannot hold an unescaped quote, so every key it names sits exactly where the
# pattern says. Lines laid out otherwise take the general (full-parse) path.
_ID_PREFIX = re.compile(rb'\{\s*"id"\s*:\s*"[^"\\]*"\s*,\s*"custom_id"\s*:\s*"([^"\\]*)"')
# The same prefix with the status code, for routing: a 200 whose line ends in the documented
# ``"error": null}`` is an answer, with no transient failure to look for. (The last ``}`` of
# a line that is one JSON object closes it, so the key right before it is a top-level one.)
_ROUTE_PREFIX = re.compile(
    rb'\{\s*"id"\s*:\s*"[^"\\]*"\s*,\s*"custom_id"\s*:\s*"([^"\\]*)"'
    rb'(?:\s*,\s*"response"\s*:\s*\{\s*"status_code"\s*:\s*(200)(?![0-9.eE]))?'
)
_ANSWER_TAIL = re.compile(rb'(?<!\\)"error"[ \t\r\n]*:[ \t\r\n]*null[ \t\r\n]*\}[ \t\r\n]*\Z')
_TAIL_WINDOW = 32
#: the two usual spellings of that tail, checked first (a regex search costs ~7x as much)
_ANSWER_ENDS = (b',"error":null}', b', "error": null}')


def read_result_head(line: bytes) -> tuple[str | None, bool]:
    """A result line's ``custom_id`` (None if it has none), and whether the line is surely an
    answer: a 200 in the documented layout with ``"error": null``, which can say neither that
    its request did not run nor that it failed transiently. Two anchored matches, no parse;
    ``False`` only means "look closer" (:func:`extract_custom_id` rules for the id)."""
    match = _ROUTE_PREFIX.match(line)
    if match is None:
        return extract_custom_id(line), False
    answered = match.group(2) is not None and (
        line.endswith(_ANSWER_ENDS)
        or _ANSWER_TAIL.search(line, max(match.end(), len(line) - _TAIL_WINDOW)) is not None
    )
    return match.group(1).decode(), answered


_SUCCESS_PREFIX = re.compile(
    r'\{\s*"id"\s*:\s*"[^"\\]*"\s*,\s*"custom_id"\s*:\s*"[^"\\]*"\s*,'
    r'\s*"response"\s*:\s*\{\s*"status_code"\s*:\s*2\d\d\s*,'
    r'\s*"request_id"\s*:\s*(?:"[^"\\]*"|null)\s*,\s*"body"\s*:\s*(?=\{)'
)


_SUCCESS_PREFIX_BYTES = re.compile(_SUCCESS_PREFIX.pattern.encode())
#: what follows the body of a success line in the documented layout, as servers spell it:
#: the end of ``response``, then ``"error": null`` and the end of the line
BODY_TAILS = (b'},"error":null}', b'}, "error": null}')


def success_body_span(line: bytes, body_start: int) -> tuple[int, int] | None:
    """Where the body of a documented-layout line whose body starts at ``body_start`` ends,
    when the line ends with one of :data:`BODY_TAILS`: the body is then exactly the bytes in
    between (if they decode to an object, the line is the documented layout throughout)."""
    for tail in BODY_TAILS:
        if line.endswith(tail):
            return body_start, len(line) - len(tail)
    return None


def _fast_success_body(line: bytes) -> dict[str, Any] | None:
    """The body of a 2xx line in the documented layout, parsing the body alone.

    ``None`` means "take the full path". A line is mostly its body: skipping ``json.loads``
    of the envelope (and its bytes-to-text detection) saves about a quarter of the decoding.
    """
    if _orjson_loads is not None:
        head = _SUCCESS_PREFIX_BYTES.match(line)
        if head is None:
            return None
        span = success_body_span(line, head.end())
        if span is not None:
            try:
                body = decode_json(line[span[0] : span[1]])
            except ValueError:
                body = None
            if isinstance(body, dict):
                return body
    try:
        text = line.decode()
    except UnicodeDecodeError:
        return None
    match = _SUCCESS_PREFIX.match(text)
    if match is None:
        return None
    try:
        body, _end = _raw_decode(text, match.end())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def decode_result(
    line: bytes,
    build: Callable[[Mapping[str, Any]], T],
    *,
    custom_id: str,
    batch_id: str | None,
) -> T:
    """Turn one output/error-file line into the caller's model, or raise its typed error.

    Every line is judged on its own ``response.status_code``, whichever file it came from.
    """
    body = _fast_success_body(line)
    if body is not None:
        return build(body)
    try:
        parsed = json.loads(line)
    except ValueError as exc:
        raise APIError(
            f"the batch returned an unreadable result line: {line[:200]!r}",
            custom_id=custom_id,
            batch_id=batch_id,
        ) from exc
    if not isinstance(parsed, dict):
        raise APIError("the batch returned a result line that is not an object", batch_id=batch_id)
    response = parsed.get("response")
    if isinstance(response, dict):
        status = response.get("status_code")
        body = response.get("body")
        if isinstance(body, str):
            # Some servers send the body as JSON text; a plain string stays a string.
            try:
                body = json.loads(body)
            except ValueError:
                pass
        request_id = response.get("request_id")
        if isinstance(status, int) and 200 <= status < 300 and isinstance(body, dict):
            return build(body)
        if isinstance(status, int) and status >= 300:
            raise make_status_error(
                status,
                body,
                request_id=request_id if isinstance(request_id, str) else None,
                custom_id=custom_id,
                batch_id=batch_id,
            )
    error = parsed.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message")
        code_text = code if isinstance(code, str) else None
        text = message if isinstance(message, str) and message else f"request failed: {code}"
        cls: type[BatchError] = BatchRequestError
        if code_text == "batch_expired":
            cls = BatchExpiredError
        elif code_text == "batch_cancelled":
            cls = BatchCancelledError
        raise cls(text, code=code_text, custom_id=custom_id, batch_id=batch_id, body=error)
    raise APIError(
        f"the batch returned a result line with neither a usable response nor an error: "
        f"{line[:200]!r}",
        custom_id=custom_id,
        batch_id=batch_id,
    )
