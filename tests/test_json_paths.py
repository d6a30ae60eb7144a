"""The fast JSON paths give exactly what the plain ones give.

Result lines are read by two anchored matches and, when orjson is installed (the ``cli``
extra; the dev extra has it), their bodies decoded by orjson; request bodies are encoded by
one C encoder made once. Each of those is checked here against the ``json`` module's own
answer, with orjson and without it (the ``json_path`` fixture switches it off), on lines
chosen to make the shortcuts wrong if they were: integers beyond 64 bits (which orjson
would read as floats), NaN, lone surrogates, a byte-order mark, other layouts and tails.
The end-to-end test runs ``client.map()`` on both backends down either path.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from autobatcher import BulkRequest, _bulk, _jsonl, open_batcher
from autobatcher._bulk import _success_envelope
from autobatcher._jsonl import (
    _json_default,
    decode_json,
    decode_result,
    encode_canonical_body,
    encode_line,
    read_result_head,
)

from ._support import chat, in_process

CHAT = "/v1/chat/completions"


@pytest.fixture(params=["orjson", "json"])
def json_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each test twice: with orjson decoding (its calls counted in the list returned), and
    with ``json`` alone. (Whether a given line reaches orjson depends on its digits: the
    emulator's ids carry random hex, so an end-to-end run may, rightly, take ``json``.)"""
    calls = [0]
    if request.param == "json":
        monkeypatch.setattr(_jsonl, "_orjson_loads", None)
        monkeypatch.setattr(_bulk, "FAST_JSON", False)
    else:
        import orjson

        def counted(data: bytes) -> Any:
            calls[0] += 1
            return orjson.loads(data)

        monkeypatch.setattr(_jsonl, "_orjson_loads", counted)
        monkeypatch.setattr(_bulk, "FAST_JSON", True)
    return calls if request.param == "orjson" else []


DOCUMENTS = [
    b'{"a":[1,2.5,-0.0,1e5,null,true,false],"b":{"c":"d"}}',
    b'{"a":1,"a":2}',  # duplicate keys: the last one wins in both
    b'{"big":18446744073709551616}',  # beyond 64 bits: orjson would give a float
    b'{"small":-9223372036854775809}',
    b'{"edge":18446744073709551615,"low":-9223372036854775808}',  # still 64-bit
    b'{"f":0.12345678901234567890123}',
    b'{"nan":NaN,"inf":-Infinity}',  # json reads them, orjson refuses: json decides
    b'{"s":"\\ud800"}',  # a lone surrogate
    b'\xef\xbb\xbf{"bom":1}',
    b'{"e":"\\u00e9\\ud83d\\ude00\xc3\xa9","z":"\\u0000"}',
    b' {"padded":1}\n',
    b"[1,2,3]",
    b'"text"',
]
NOT_JSON = [b'{"a":}', b'{"a":1}x', b"", b'{"a":"\xff"}', b'{"a":"tab\there"}']


def test_decode_json_is_json_loads(json_path: list[int]) -> None:
    for document in DOCUMENTS:
        assert repr(decode_json(document)) == repr(json.loads(document)), document
        text = document.decode("utf-8-sig")
        assert repr(decode_json(document, text)) == repr(json.loads(text)), document
    for document in NOT_JSON:
        errors = []
        for decode in (decode_json, json.loads):
            try:
                decode(document)
            except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for bad UTF-8
                errors.append(type(exc))
        assert len(errors) == 2 and errors[0] is errors[1], document
    if json_path:  # the orjson leg really decoded through orjson
        assert json_path[0] > 0, "the orjson path was never taken"
    # given the text, a byte-order mark is json's verdict on the text (an error), not bytes'
    with pytest.raises(json.JSONDecodeError):
        decode_json(b'\xef\xbb\xbf{"bom":1}', '\ufeff{"bom":1}')


BODY = '{"choices":[{"message":{"content":"x \\"error\\":null}"}}],"usage":{"n":%s}}'


def _line(body: str, *, status: int = 200, tail: str = ',"error":null}') -> bytes:
    return (
        f'{{"id":"r1","custom_id":"c1","response":{{"status_code":{status},'
        f'"request_id":"q","body":{body}}}{tail}'
    ).encode()


LINES = {
    "compact": _line(BODY % "1"),
    "spaced tail": _line(BODY % "1", tail=', "error": null}'),
    "odd whitespace in the tail": _line(BODY % "1", tail='\t, "error" :null }\r'),
    "a big integer": _line(BODY % "123456789012345678901234567890"),
    "NaN in the body": _line(BODY % "NaN"),
    "a 201": _line(BODY % "1", status=201),
    "an error after the body": _line(BODY % "1", tail=',"error":{"code":"batch_expired"}}'),
    "an extra field": _line(BODY % "1", tail=',"error":null,"x":1}'),
    "a field after the body": _line(BODY % "1" + ',"x":1', tail=',"error":null}'),
    "a body that is not JSON": _line('{"a":}'),
    "a body that is not an object": _line("[1]", tail=',"error":null}'),
}


def test_success_lines_read_the_same_both_ways(json_path: list[int]) -> None:
    for name, line in LINES.items():
        envelope = _success_envelope(line)
        body = envelope[3] if envelope is not None else None
        try:
            expected = json.loads(line)["response"]["body"]
        except ValueError:
            expected = None
        if name in ("a body that is not JSON", "a body that is not an object"):
            assert envelope is None, name
            continue
        assert envelope is not None, name
        assert repr(body) == repr(expected), name
        # spliced (the line kept as it is) exactly when only "error": null follows the body
        assert (envelope[4] is not None) == (
            name not in ("an error after the body", "an extra field", "a field after the body")
        ), name
        if envelope[4] is not None:
            kept, start, stop = envelope[4]
            assert kept[start:stop] == b'"c1"', name
        assert repr(decode_result(line, dict, custom_id="c1", batch_id="b")) == repr(expected)
    if json_path:  # these lines have no long digit runs: the orjson leg used orjson
        assert json_path[0] > 0, "the orjson path was never taken"


def test_a_line_is_an_answer_only_when_it_surely_is() -> None:
    answered = {
        "compact": LINES["compact"],
        "spaced tail": LINES["spaced tail"],
        "odd whitespace in the tail": LINES["odd whitespace in the tail"],
    }
    look_closer = {
        "an error after the body": LINES["an error after the body"],
        "a 201": LINES["a 201"],
        "a 500": _line(BODY % "1", status=500),
        "a 2000": _line(BODY % "1").replace(b'"status_code":200', b'"status_code":2000'),
        "a 200.5": _line(BODY % "1").replace(b'"status_code":200', b'"status_code":200.5'),
        "an escaped quote before the key": _line(
            BODY % "1", tail=',"error":{"code":"batch_expired"},"a\\"error":null}'
        ),
        "no response": b'{"id":"r1","custom_id":"c1","response":null,'
        b'"error":{"code":"batch_expired","message":"expired"}}',
    }
    for name, line in answered.items():
        assert read_result_head(line) == ("c1", True), name
    for name, line in look_closer.items():
        assert read_result_head(line) == ("c1", False), name
    # another layout: the id by the general rules, and a closer look
    assert read_result_head(b'{"custom_id":"c2","response":{"status_code":200}}') == (
        "c2",
        False,
    )
    assert read_result_head(b'{"id":"r1"}') == (None, False)


BODIES: list[Any] = [
    {"model": "m", "messages": [{"role": "user", "content": "h\u00e9llo \u2028 \U0001f600"}]},
    {"z": 1, "a": {"y": [1.5, -0.0, 10**30, True, None], "b": "x"}},
    {"when": __import__("datetime").date(2026, 12, 2), "tuple": (1, 2)},
    {1: "int key"},
]


def test_bodies_encode_as_the_json_module_encodes_them() -> None:
    for sort_keys, encode in ((True, encode_canonical_body), (False, None)):
        reference = json.JSONEncoder(
            separators=(",", ":"), allow_nan=False, sort_keys=sort_keys, default=_json_default
        ).encode
        for body in BODIES:
            text = reference(body)
            if encode is not None:
                assert encode(body) == text
            else:
                line = encode_line("c", CHAT, body)
                prefix = f'{{"custom_id":"c","method":"POST","url":"{CHAT}","body":'
                assert line == f"{prefix}{text}}}\n".encode()
    looped: dict[str, Any] = {}
    looped["self"] = looped
    for bad in (looped, {"x": float("nan")}, {"x": object()}, {"x": {1, 2}}):
        with pytest.raises(TypeError, match="cannot be encoded as JSON"):
            encode_canonical_body(bad)
        with pytest.raises(TypeError, match="cannot be encoded as JSON"):
            encode_line("c", CHAT, bad)
    with pytest.raises(TypeError, match="cannot be encoded as JSON"):  # keys sort apart
        encode_canonical_body({"a": 1, 2: 3})  # type: ignore[dict-item]
    # the encoder keeps no state between calls: an error leaves the next body unharmed
    body = {"k": [1, 2]}
    assert encode_canonical_body(body) == '{"k":[1,2]}'


@pytest.mark.anyio
async def test_a_map_reads_the_same_answers_down_either_path(json_path: list[int]) -> None:
    items = [BulkRequest(key=f"k{i}", url=CHAT, body=chat(f"m{i} \u00e9")) for i in range(40)]
    async with in_process() as server:
        async with open_batcher(**server.options(batch_size=15)) as client:
            async with client.map(items, ordered=True) as results:
                got = [result async for result in results]
    assert [result.key for result in got] == [item.key for item in items]
    for i, result in enumerate(got):
        assert result.ok and result.body is not None
        assert result.body["choices"][0]["message"]["content"] == f"m{i} \u00e9"
        assert json.loads(result.output_line_bytes()) == result.output_line()
        assert result._raw_line is not None  # the emulator's lines are the documented layout
