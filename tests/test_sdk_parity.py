"""Drop-in parity with ``openai.AsyncOpenAI``: response objects and errors.

The openai SDK (installed for tests only) is the oracle. The same JSON is given to the
SDK's pydantic model and to ours, the same HTTP answer to the SDK's error factory and to
ours, and every observable output must be the same: ``model_dump()`` in all its options,
``to_dict()``, ``to_json()``, ``model_dump_json()``, iteration, ``model_fields``,
``model_copy()``; ``message``/``body``/``code``/``param``/``type``/``status_code``/
``request_id`` of errors. The end-to-end tests do the same through the emulator.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import httpx
import httpx2
import openai
import openai.types as sdk
import openai.types.chat as sdk_chat
import openai.types.responses as sdk_responses
import pydantic
import pytest

import autobatcher
import autobatcher._errors as errors_module
import autobatcher.types as t
from autobatcher._errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    BatchFailedError,
    InternalError,
    make_status_error,
)
from autobatcher._jsonl import decode_result
from tests import test_types as bodies
from tests._support import AUTH, InProcess, emulated

# -- realistic bodies: what the servers send, nulls, unknown fields, nested objects ----------

#: A chat completion as the API sends it today, plus a compatible server's extras at three
#: levels (vLLM/Groq style) and a tool call.
CHAT: dict[str, Any] = {
    "id": "chatcmpl-C1x2y3",
    "object": "chat.completion",
    "created": 1754000000,
    "model": "gpt-4.1-mini-2025-04-14",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "annotations": [],
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                    }
                ],
                "reasoning_content": "I should look it up.",
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
            "stop_reason": None,
        },
        {
            "index": 1,
            "message": {"role": "assistant", "content": "Hello.", "refusal": None},
            "logprobs": {
                "content": [
                    {"token": "Hello", "logprob": 0, "bytes": [72], "top_logprobs": []},
                    {"token": ".", "logprob": -0.5, "bytes": None, "top_logprobs": []},
                ],
                "refusal": None,
            },
            "finish_reason": "stop",
        },
    ],
    "usage": {
        "prompt_tokens": 30,
        "completion_tokens": 12,
        "total_tokens": 42,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": None,
    "x_groq": {"id": "req_01", "usage": {"queue_time": None}},
}

#: Embeddings: an integer component (the SDK reads it as a float), unknown top-level field.
EMBEDDINGS: dict[str, Any] = {
    "object": "list",
    "data": [
        {"object": "embedding", "index": 0, "embedding": [0.25, 0, -0.5]},
        {"object": "embedding", "index": 1, "embedding": [1, 0.0, 0.125]},
    ],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 4, "total_tokens": 4},
    "id": "embd-1",
}

#: A legacy completion: null logprobs, a null system_fingerprint, an unknown field.
COMPLETION: dict[str, Any] = {
    "id": "cmpl-9",
    "object": "text_completion",
    "created": 1754000000,
    "model": "gpt-3.5-turbo-instruct",
    "system_fingerprint": None,
    "choices": [
        {"text": "Say this is a test.", "index": 0, "logprobs": None, "finish_reason": "stop"},
        {
            "text": "!",
            "index": 1,
            "logprobs": {
                "tokens": ["!"],
                "token_logprobs": [0],
                "top_logprobs": [{"!": 0}],
                "text_offset": [0],
            },
            "finish_reason": "length",
        },
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    "warning": "This model version is deprecated.",
}

#: Moderations: integer scores, an absent optional category, an unknown category.
MODERATION: dict[str, Any] = {
    "id": "modr-1",
    "model": "omni-moderation-latest",
    "results": [
        {
            "flagged": False,
            "categories": {
                "harassment": False,
                "harassment/threatening": False,
                "hate": False,
                "hate/threatening": False,
                "self-harm": False,
                "self-harm/instructions": False,
                "self-harm/intent": False,
                "sexual": False,
                "sexual/minors": False,
                "violence": False,
                "violence/graphic": False,
                "illicit": None,
                "future/category": False,
            },
            "category_scores": {
                "harassment": 0,
                "harassment/threatening": 0.001,
                "hate": 0,
                "hate/threatening": 0,
                "illicit": 0,
                "illicit/violent": 0,
                "self-harm": 0.5,
                "self-harm/instructions": 0,
                "self-harm/intent": 0,
                "sexual": 0,
                "sexual/minors": 0,
                "violence": 1,
                "violence/graphic": 0,
            },
            "category_applied_input_types": {
                "harassment": ["text"],
                "harassment/threatening": ["text"],
                "hate": ["text"],
                "hate/threatening": ["text"],
                "illicit": ["text"],
                "illicit/violent": ["text"],
                "self-harm": ["text"],
                "self-harm/instructions": ["text"],
                "self-harm/intent": ["text"],
                "sexual": ["text"],
                "sexual/minors": ["text"],
                "violence": ["text"],
                "violence/graphic": ["text"],
            },
        }
    ],
}

#: A Responses answer as the API sends it: reasoning, a message with an empty annotation
#: list, a function call, echoed settings (reasoning, a json_schema text format, a function
#: tool), nulls everywhere, and fields the SDK does not know (``store``, ``billing``).
RESPONSE: dict[str, Any] = {
    "id": "resp_68a1",
    "object": "response",
    "created_at": 1754000000,
    "status": "completed",
    "background": False,
    "billing": {"payer": "developer"},
    "completed_at": 1754000003,
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "model": "gpt-5-mini-2025-08-07",
    "output": [
        {"id": "rs_1", "type": "reasoning", "summary": []},
        {
            "id": "msg_1",
            "type": "message",
            "status": "completed",
            "content": [
                {"type": "output_text", "annotations": [], "logprobs": [], "text": '{"a": 1}'}
            ],
            "role": "assistant",
        },
        {
            "id": "fc_1",
            "type": "function_call",
            "status": "completed",
            "arguments": '{"city": "Paris"}',
            "call_id": "call_1",
            "name": "get_weather",
        },
    ],
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "prompt_cache_retention": None,
    "reasoning": {"effort": "minimal", "summary": None},
    "safety_identifier": None,
    "service_tier": "default",
    "store": True,
    "temperature": 1,
    "text": {
        "format": {
            "type": "json_schema",
            "description": None,
            "name": "answer",
            "schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
            "strict": True,
        },
        "verbosity": "medium",
    },
    "tool_choice": "auto",
    "tools": [
        {
            "type": "function",
            "description": "Weather",
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": True,
        }
    ],
    "top_logprobs": 0,
    "top_p": 1,
    "truncation": "disabled",
    "usage": {
        "input_tokens": 60,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 90,
        "output_tokens_details": {"reasoning_tokens": 64},
        "total_tokens": 150,
    },
    "user": None,
    "metadata": {},
}

Case = tuple[type[t.BaseModel], type[pydantic.BaseModel], dict[str, Any]]

CASES: dict[str, Case] = {
    "chat": (t.ChatCompletion, sdk_chat.ChatCompletion, CHAT),
    "chat-tools": (t.ChatCompletion, sdk_chat.ChatCompletion, bodies.CHAT_TOOLS),
    "chat-vllm": (t.ChatCompletion, sdk_chat.ChatCompletion, bodies.CHAT_VLLM),
    "embeddings": (t.CreateEmbeddingResponse, sdk.CreateEmbeddingResponse, EMBEDDINGS),
    "completion": (t.Completion, sdk.Completion, COMPLETION),
    "completion-logprobs": (t.Completion, sdk.Completion, bodies.COMPLETION),
    "moderation": (t.ModerationCreateResponse, sdk.ModerationCreateResponse, MODERATION),
    "moderation-flagged": (
        t.ModerationCreateResponse,
        sdk.ModerationCreateResponse,
        bodies.MODERATION,
    ),
    "response": (t.Response, sdk_responses.Response, RESPONSE),
    "batch": (t.Batch, sdk.Batch, bodies.BATCH),
}


def _both(case: str) -> tuple[Any, Any]:
    ours, theirs, body = CASES[case]
    return ours.from_dict(copy.deepcopy(body)), theirs.model_validate(copy.deepcopy(body))


def assert_same(ours: Any, theirs: Any, path: str = "") -> None:
    """Equal values of the same types, dict keys in the same order, at every depth."""
    assert type(ours) is type(theirs), (path, ours, theirs)
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs), path
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), path
        for i, (mine, oracle) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(mine, oracle, f"{path}[{i}]")
    else:
        assert ours == theirs, path


def assert_same_json(ours: str, theirs: str, indent: int | None = None) -> None:
    # pydantic spells some floats differently (1e-6 vs Python's 1e-06): compare the data,
    # then the text with the SDK's data spelled by Python.
    data = json.loads(theirs)
    assert_same(json.loads(ours), data)
    if indent is None:
        assert ours == json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    else:
        assert ours == json.dumps(data, indent=indent, ensure_ascii=False)


DUMP_OPTIONS: list[dict[str, Any]] = [
    {},
    {"exclude_none": True},
    {"by_alias": True},
    {"by_alias": False},
    {"exclude_unset": True},
    {"exclude_defaults": True},
    {"mode": "json"},
    {"mode": "json", "by_alias": True, "exclude_none": True},
    {"exclude_unset": True, "exclude_none": True, "by_alias": True},
]


@pytest.mark.parametrize("options", DUMP_OPTIONS, ids=json.dumps)
@pytest.mark.parametrize("case", list(CASES))
def test_model_dump_is_the_sdks(case: str, options: dict[str, Any]) -> None:
    ours, theirs = _both(case)
    assert_same(ours.model_dump(**options), theirs.model_dump(**options))
    json_options = {k: v for k, v in options.items() if k != "mode"}
    assert_same_json(ours.model_dump_json(**json_options), theirs.model_dump_json(**json_options))
    assert_same_json(
        ours.model_dump_json(indent=2, **json_options),
        theirs.model_dump_json(indent=2, **json_options),
        indent=2,
    )


TO_DICT_OPTIONS: list[dict[str, Any]] = [
    {},
    {"exclude_none": True},
    {"use_api_names": False},
    {"exclude_unset": False},
    {"exclude_defaults": True},
    {"mode": "json"},
    {"exclude_unset": False, "exclude_none": True, "use_api_names": False},
]


@pytest.mark.parametrize("options", TO_DICT_OPTIONS, ids=json.dumps)
@pytest.mark.parametrize("case", list(CASES))
def test_to_dict_and_to_json_are_the_sdks(case: str, options: dict[str, Any]) -> None:
    ours, theirs = _both(case)
    assert_same(ours.to_dict(**options), theirs.to_dict(**options))
    json_options = {k: v for k, v in options.items() if k != "mode"}
    assert_same_json(ours.to_json(**json_options), theirs.to_json(**json_options), indent=2)
    assert_same_json(
        ours.to_json(indent=None, **json_options), theirs.to_json(indent=None, **json_options)
    )


@pytest.mark.parametrize("case", list(CASES))
def test_server_json_round_trips(case: str) -> None:
    ours, theirs = _both(case)
    body = CASES[case][2]
    # The contract: what the server sent comes back (unknown fields included).
    assert ours.to_dict() == body
    assert ours.model_dump(by_alias=True, exclude_unset=True) == body
    assert ours.model_extra == (theirs.model_extra or {})
    assert ours.model_fields_set == theirs.model_fields_set


@pytest.mark.parametrize("case", list(CASES))
def test_iteration_and_model_fields_are_the_sdks(case: str) -> None:
    ours, theirs = _both(case)
    assert [name for name, _ in ours] == [name for name, _ in theirs]
    for (name, mine), (_, oracle) in zip(ours, theirs, strict=True):
        if isinstance(oracle, pydantic.BaseModel):
            assert_same(mine.model_dump(), oracle.model_dump(), name)
        elif not isinstance(oracle, list) and not isinstance(mine, float | int):
            assert mine == oracle, name
    ours_cls, theirs_cls, _ = CASES[case]
    for cls, sdk_cls in [(ours_cls, theirs_cls), (type(ours), type(theirs))]:
        assert list(cls.model_fields) == list(sdk_cls.model_fields)
        for name, info in sdk_cls.model_fields.items():
            mine_info = cls.model_fields[name]
            assert mine_info.alias == info.alias, name
            assert mine_info.is_required() == info.is_required(), name
            if not info.is_required():
                assert mine_info.default == info.default, name
    assert ours.model_fields is type(ours).model_fields


@pytest.mark.parametrize("case", list(CASES))
def test_model_copy_is_the_sdks(case: str) -> None:
    ours, theirs = _both(case)
    first = next(iter(type(theirs).model_fields))
    update = {first: "changed", "brand_new": {"x": None}}
    for deep in (False, True):
        mine, oracle = (
            ours.model_copy(update=update, deep=deep),
            theirs.model_copy(update=update, deep=deep),
        )
        assert type(mine) is type(ours)
        assert mine is not ours
        # (pydantic warns that "changed" is not the declared type: not our concern here)
        assert_same(mine.model_dump(), oracle.model_dump(warnings=False))
        assert_same(mine.to_dict(), oracle.to_dict(warnings=False))
        assert getattr(mine, first) == "changed"
        assert mine.brand_new == {"x": None}
    # The original is untouched; a plain copy equals it.
    assert_same(ours.model_dump(), theirs.model_dump())
    assert ours.model_copy() == ours


@pytest.mark.parametrize("case", list(CASES))
def test_model_validate_json_is_the_sdks(case: str) -> None:
    ours_cls, theirs_cls, body = CASES[case]
    text = json.dumps(body)
    ours = ours_cls.model_validate_json(text.encode())
    theirs = theirs_cls.model_validate_json(text, strict=None)
    assert_same(ours.model_dump(), theirs.model_dump())
    assert ours == ours_cls.model_validate(body, strict=None, context={"unused": True})


def test_model_validate_json_rejects_what_is_not_an_object() -> None:
    with pytest.raises(TypeError, match=r"ChatCompletion\.from_dict\(\) needs a mapping"):
        t.ChatCompletion.model_validate_json("[1, 2]")
    with pytest.raises(ValueError, match="Expecting value"):
        t.ChatCompletion.model_validate_json("not json")


def test_model_copy_shares_or_not_like_pydantic() -> None:
    ours, theirs = _both("chat")
    shallow, deep = ours.model_copy(), ours.model_copy(deep=True)
    assert (shallow.choices is ours.choices) == (theirs.model_copy().choices is theirs.choices)
    assert deep.choices is not ours.choices
    deep.choices[1].message.content = "only in the copy"
    deep.x_groq["id"] = "changed"
    assert ours.choices[1].message.content == "Hello."
    assert ours.x_groq["id"] == "req_01"
    assert deep.to_dict()["choices"][1]["message"]["content"] == "only in the copy"


def test_include_and_exclude_like_pydantic() -> None:
    ours, theirs = _both("chat")
    specs: list[dict[str, Any]] = [
        {"include": {"id", "usage", "x_groq"}},
        {"exclude": {"choices", "x_groq"}},
        {"include": {"choices": {0: {"message": {"tool_calls"}}}}},
        {"exclude": {"choices": {"__all__": {"message": {"content", "refusal"}}}}},
        {"include": {"usage": {"prompt_tokens_details": True}}, "exclude_none": True},
    ]
    for spec in specs:
        assert_same(ours.model_dump(**spec), theirs.model_dump(**spec))
    with pytest.raises(TypeError, match="include/exclude"):
        not_a_spec: Any = "id"
        ours.model_dump(include=not_a_spec)


def test_assignments_show_in_every_dump() -> None:
    ours, theirs = _both("chat")
    for model in (ours, theirs):
        model.choices[1].message.content = "edited"
        model.system_fingerprint = "fp_1"
        model.service_tier = None
    assert_same(ours.model_dump(), theirs.model_dump())
    assert_same(ours.to_dict(), theirs.to_dict())
    assert_same(ours.model_dump(exclude_none=True), theirs.model_dump(exclude_none=True))


def test_generic_parts_dump_what_the_server_sent() -> None:
    """Parts typed as GenericObject (uncommon tools and items) keep the server's keys.

    The SDK would add its declared-but-absent fields as None there; everything around them
    still matches it.
    """
    body = copy.deepcopy(bodies.RESPONSE)
    ours = t.Response.from_dict(body)
    theirs = sdk_responses.Response.model_validate(copy.deepcopy(body))
    generic: dict[str, Any] = {"output": {1: True}, "tools": True}
    assert_same(ours.model_dump(exclude=generic), theirs.model_dump(exclude=generic))
    assert ours.model_dump()["tools"] == [{"type": "web_search_preview"}]
    assert ours.model_dump()["output"][1] == body["output"][1]
    assert ours.to_dict() == theirs.to_dict() == body


# -- errors ----------------------------------------------------------------------------

_sdk_client = openai.AsyncOpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
_URL = "http://127.0.0.1:9/v1/chat/completions"


def _sdk_error(status: int, content: bytes, headers: dict[str, str]) -> openai.APIStatusError:
    request = httpx2.Request("POST", _URL)
    response = httpx2.Response(status, content=content, headers=headers, request=request)
    # the SDK's own status -> error mapping (private in the SDK): what we must match
    return _sdk_client._make_status_error_from_response(response)


def _our_error(status: int, content: bytes, headers: dict[str, str]) -> APIStatusError:
    response = httpx.Response(
        status, content=content, headers=headers, request=httpx.Request("POST", _URL)
    )
    try:
        body: object = response.json()
    except ValueError:
        body = response.text
    return make_status_error(status, body, response=response)


ERROR_BODIES: dict[str, object] = {
    "openai": {
        "error": {
            "message": "Invalid 'messages[0].role': 'robot'.",
            "type": "invalid_request_error",
            "param": "messages[0].role",
            "code": "invalid_value",
        }
    },
    "int-code": {"error": {"message": "Too many requests", "type": "requests", "code": 429}},
    "no-message": {"error": {"type": "server_error", "param": None, "code": None}},
    "flat": {"message": "model not found", "code": "model_not_found", "object": "error"},
    "null-error": {"error": None, "detail": "x"},
    "list": [{"message": "odd"}],
}

STATUSES = [400, 401, 403, 404, 409, 422, 429, 500, 503, 418]


def _assert_same_error(ours: APIError, theirs: openai.APIError) -> None:
    assert type(ours).__name__ == type(theirs).__name__
    assert isinstance(ours, getattr(autobatcher, type(theirs).__name__))
    for name in ("message", "body", "code", "param", "type"):
        assert getattr(ours, name) == getattr(theirs, name), name
    if isinstance(theirs, openai.APIStatusError):
        assert isinstance(ours, APIStatusError)
        assert ours.status_code == theirs.status_code
        assert ours.request_id == theirs.request_id
    assert str(ours) == str(theirs)
    assert ours.args == theirs.args


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("shape", list(ERROR_BODIES))
def test_status_errors_are_the_sdks(status: int, shape: str) -> None:
    content = json.dumps(ERROR_BODIES[shape]).encode()
    headers = {"x-request-id": "req_abc", "content-type": "application/json"}
    ours = _our_error(status, content, headers)
    theirs = _sdk_error(status, content, headers)
    _assert_same_error(ours, theirs)
    assert ours.response is not None
    assert ours.request is not None
    assert ours.request.url == _URL
    # Our additions: which request and batch, appended to str() only.
    tagged = ours.for_request("req-7", "batch_1")
    assert tagged.message == theirs.message
    assert str(tagged) == f"{theirs} (batch batch_1, request req-7)"


def test_status_error_without_request_id_header() -> None:
    content = json.dumps(ERROR_BODIES["openai"]).encode()
    ours, theirs = _our_error(429, content, {}), _sdk_error(429, content, {})
    _assert_same_error(ours, theirs)
    assert ours.request_id is None


def test_plain_text_status_error_keeps_the_text_in_the_message() -> None:
    """The one deliberate difference: the SDK drops a text body from ``message``."""
    ours = _our_error(502, b"Bad gateway\n", {})
    theirs = _sdk_error(502, b"Bad gateway\n", {})
    assert type(ours).__name__ == type(theirs).__name__ == "InternalServerError"
    assert ours.body == theirs.body == "Bad gateway"
    assert theirs.message == "Error code: 502"
    assert ours.message == "Error code: 502 - Bad gateway"
    assert (ours.code, ours.param, ours.type) == (theirs.code, theirs.param, theirs.type)
    # The same for an error object that is just text.
    content = json.dumps({"error": "No such model"}).encode()
    ours, theirs = _our_error(404, content, {}), _sdk_error(404, content, {})
    assert ours.body == theirs.body == "No such model"
    assert (theirs.message, ours.message) == ("Error code: 404", "Error code: 404 - No such model")


def test_connection_errors_are_the_sdks() -> None:
    sdk_request = httpx2.Request("POST", _URL)
    request = httpx.Request("POST", _URL)
    pairs: list[tuple[APIError, openai.APIError]] = [
        (APIConnectionError(request=request), openai.APIConnectionError(request=sdk_request)),
        (APITimeoutError(request=request), openai.APITimeoutError(request=sdk_request)),
    ]
    for ours, theirs in pairs:
        _assert_same_error(ours, theirs)
        assert ours.request is request
    assert issubclass(autobatcher.APITimeoutError, autobatcher.APIConnectionError)


def _line(status: int, body: object, request_id: str | None = "req_line") -> bytes:
    return json.dumps(
        {
            "id": "batch_req_1",
            "custom_id": "c-1",
            "response": {"status_code": status, "request_id": request_id, "body": body},
            "error": None,
        }
    ).encode()


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500])
@pytest.mark.parametrize("shape", ["openai", "no-message", "flat"])
def test_batch_line_errors_are_the_sdks(status: int, shape: str) -> None:
    body = ERROR_BODIES[shape]
    with pytest.raises(APIStatusError) as caught:
        decode_result(
            _line(status, body), t.ChatCompletion.from_dict, custom_id="c-1", batch_id="b"
        )
    ours = caught.value
    theirs = _sdk_error(status, json.dumps(body).encode(), {"x-request-id": "req_line"})
    for name in ("message", "body", "code", "param", "type", "status_code", "request_id"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.response is None
    assert (ours.custom_id, ours.batch_id) == ("c-1", "b")
    assert str(ours) == f"{theirs} (batch b, request c-1)"


def test_batch_line_error_body_sent_as_json_text() -> None:
    body = ERROR_BODIES["openai"]
    with pytest.raises(APIStatusError) as caught:
        decode_result(
            _line(400, json.dumps(body)), t.ChatCompletion.from_dict, custom_id="c", batch_id=None
        )
    theirs = _sdk_error(400, json.dumps(body).encode(), {"x-request-id": "req_line"})
    assert (caught.value.message, caught.value.body) == (theirs.message, theirs.body)


def test_status_error_message_takes_the_sdk_form_once() -> None:
    plain = APIStatusError("expected a JSON object", status_code=200)
    assert plain.message == "Error code: 200 - expected a JSON object"
    already = APIStatusError("Error code: 404 - gone", status_code=404)
    assert already.message == "Error code: 404 - gone"
    assert APIStatusError("", status_code=500).message == "Error code: 500"
    assert APIStatusError("Error code: 500", status_code=500).message == "Error code: 500"


# -- for_request and InternalError -------------------------------------------------------


def _error_classes() -> list[type[APIError]]:
    found: list[type[APIError]] = []
    for name in errors_module.__all__:
        value = getattr(errors_module, name)
        if isinstance(value, type) and issubclass(value, APIError):
            found.append(value)
    return found


def _populated(cls: type[APIError]) -> APIError:
    """An instance of ``cls`` with every attribute it takes set to something distinctive."""
    request = httpx.Request("POST", _URL)
    common: dict[str, Any] = {
        "request": request,
        "body": {"message": "boom", "code": "c"},
        "code": "c",
        "param": "p",
        "type": "t",
        "batch_id": None,
        "custom_id": "original-id",
    }
    if issubclass(cls, APIStatusError):
        response = httpx.Response(429, request=request, headers={"x-request-id": "req_1"})
        return cls(
            "Error code: 429 - boom",
            status_code=429,
            response=response,
            request_id="req_1",
            **common,
        )
    if issubclass(cls, BatchFailedError):
        errors = [{"code": "invalid_json", "line": 2, "message": "bad line"}]
        return cls("the batch failed", errors=errors, line_error=errors[0], **common)
    if issubclass(cls, APIResponseValidationError):
        response = httpx.Response(200, request=request, text="<html>")
        return cls("not a batch", status_code=200, response=response, **common)
    return cls("boom", **common)


def _factory(cls: type[APIError]) -> Callable[[], APIError]:
    return lambda: _populated(cls)


FACTORIES: dict[str, Callable[[], APIError]] = {
    cls.__name__: _factory(cls) for cls in _error_classes()
}


def test_every_error_class_is_covered() -> None:
    assert {cls.__name__ for cls in _error_classes()} >= {
        "APIError",
        "InternalError",
        "APIStatusError",
        "RateLimitError",
        "InternalServerError",
        "BatchFailedError",
        "BatchLostError",
        "APITimeoutError",
    }
    assert len(FACTORIES) == len(_error_classes())


@pytest.mark.parametrize("name", list(FACTORIES))
def test_for_request_copies_every_attribute(name: str) -> None:
    original = FACTORIES[name]()
    cause = ValueError("underneath")
    original.__cause__ = cause
    own = original.for_request("caller-9", "batch_9")
    assert type(own) is type(original)
    assert own is not original
    assert own.custom_id == "caller-9"
    assert own.batch_id == "batch_9"
    assert own.__cause__ is cause
    assert own.args == original.args
    mine, theirs = vars(own), vars(original)
    assert set(mine) == set(theirs)
    for key, value in theirs.items():
        if key not in ("custom_id", "batch_id"):
            assert mine[key] is value or mine[key] == value, key
    # The original is untouched; a known batch id is kept.
    assert (original.custom_id, original.batch_id) == ("original-id", None)
    assert own.for_request("other", "batch_other").batch_id == "batch_9"
    assert str(own).endswith("(batch batch_9, request caller-9)")


def test_internal_error_is_public_and_an_api_error() -> None:
    assert autobatcher.InternalError is InternalError
    assert issubclass(InternalError, autobatcher.APIError)
    assert "please report it" in (InternalError.__doc__ or "")
    try:
        raise InternalError("internal error: KeyError('x')") from KeyError("x")
    except InternalError as exc:
        copy_ = exc.for_request("r", "b")
        assert isinstance(copy_.__cause__, KeyError)
        assert str(copy_) == "internal error: KeyError('x') (batch b, request r)"


# -- end to end through the emulator -------------------------------------------------------


async def _line_body(server: InProcess, index: int = 0) -> dict[str, Any]:
    """The ``response.body`` of the only output line of the emulator's only batch."""
    async with server.http(base_url=server.base_url, headers=AUTH) as http:
        batches = (await http.get("batches")).json()["data"]
        assert len(batches) == 1
        output = await http.get(f"files/{batches[0]['output_file_id']}/content")
        lines = [json.loads(line) for line in output.text.splitlines() if line.strip()]
    assert len(lines) == 1
    body: dict[str, Any] = lines[index]["response"]["body"]
    return body


def _sdk_model(sdk_cls: type[openai.BaseModel], body: Any) -> openai.BaseModel:
    """The SDK's model of ``body``: validated, or built as ``AsyncOpenAI`` builds it.

    The emulator's Responses usage lacks ``cache_write_tokens``, which the installed SDK
    declares required, so validation refuses it; ``AsyncOpenAI`` itself does not validate
    responses (it constructs them), so fall back to that, but only for missing fields.
    """
    try:
        return sdk_cls.model_validate(copy.deepcopy(body))
    except pydantic.ValidationError as exc:
        problems = exc.errors()
    assert {problem["type"] for problem in problems} == {"missing"}, problems
    return sdk_cls.construct(**copy.deepcopy(body))


def _assert_line_parity(ours: t.BaseModel, sdk_cls: type[openai.BaseModel], body: Any) -> None:
    theirs = _sdk_model(sdk_cls, body)
    assert_same(ours.model_dump(), theirs.model_dump(warnings=False))
    assert_same(
        ours.model_dump(exclude_none=True), theirs.model_dump(exclude_none=True, warnings=False)
    )
    assert ours.to_dict() == body


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("endpoint", "sdk_cls"),
    [
        ("chat", sdk_chat.ChatCompletion),
        ("embeddings", sdk.CreateEmbeddingResponse),
        ("responses", sdk_responses.Response),
        ("completions", sdk.Completion),
        ("moderations", sdk.ModerationCreateResponse),
    ],
)
async def test_e2e_response_objects_are_the_sdks(
    endpoint: str, sdk_cls: type[openai.BaseModel]
) -> None:
    async with emulated() as (server, client):
        ours: t.BaseModel
        if endpoint == "chat":
            ours = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "parity"}]
            )
        elif endpoint == "embeddings":
            ours = await client.embeddings.create(model="text-embedding-3-small", input="parity")
        elif endpoint == "responses":
            ours = await client.responses.create(model="gpt-4.1-mini", input="parity")
        elif endpoint == "completions":
            ours = await client.completions.create(model="gpt-3.5-turbo-instruct", prompt="parity")
        else:
            ours = await client.moderations.create(
                model="omni-moderation-latest", input="parity [[flag]]"
            )
        body = await _line_body(server)
    _assert_line_parity(ours, sdk_cls, body)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 429])
async def test_e2e_line_errors_are_the_sdks(status: int) -> None:
    async with emulated() as (server, client):
        with pytest.raises(APIStatusError) as caught:
            await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"fail [[status:{status}]]"}],
            )
        async with server.http(base_url=server.base_url, headers=AUTH) as http:
            batch = (await http.get("batches")).json()["data"][0]
            file_id = batch["error_file_id"] or batch["output_file_id"]
            text = (await http.get(f"files/{file_id}/content")).text
    line = json.loads(text.splitlines()[0])
    response = line["response"]
    theirs = _sdk_error(
        status,
        json.dumps(response["body"]).encode(),
        {"x-request-id": response["request_id"]},
    )
    ours = caught.value
    assert type(ours).__name__ == type(theirs).__name__
    for name in ("message", "body", "code", "param", "type", "status_code", "request_id"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert isinstance(ours.body, dict)
    assert "message" in ours.body  # the inner error object, not the envelope
    assert ours.message.startswith(f"Error code: {status} - ")
    assert ours.custom_id is not None
    assert ours.batch_id == batch["id"]
