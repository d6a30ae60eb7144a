"""autobatcher.types: attrs mirrors of the openai SDK's response models.

The SDK (installed for tests only) is the oracle: the same JSON is parsed by both and
every attribute both sides declare must agree.
"""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import attrs
import openai.types as sdk
import openai.types.chat as sdk_chat
import openai.types.responses as sdk_responses
import pydantic
import pytest

import autobatcher.types as t
from autobatcher.types import (
    Batch,
    ChatCompletion,
    ChatCompletionMessageCustomToolCall,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageToolCall,
    Completion,
    CreateEmbeddingResponse,
    FileDeleted,
    FileObject,
    GenericObject,
    ModerationCreateResponse,
    Response,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoningItem,
)

# -- realistic bodies (shapes from the API reference / openai SDK types) ----------------

CHAT: dict[str, Any] = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4.1-2025-04-14",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello! How can I assist you today?",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_44709d6fcb",
}

CHAT_TOOLS: dict[str, Any] = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1699896916,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_abc123",
                        "type": "function",
                        "function": {
                            "name": "get_current_weather",
                            "arguments": '{\n"location": "Boston, MA"\n}',
                        },
                    },
                    {
                        "id": "call_def456",
                        "type": "custom",
                        "custom": {"name": "run_sql", "input": "SELECT 1"},
                    },
                ],
            },
            "logprobs": {
                "content": [
                    {
                        "token": "Hi",
                        "logprob": -0.31,
                        "bytes": [72, 105],
                        "top_logprobs": [{"token": "Hi", "logprob": -0.31, "bytes": [72, 105]}],
                    }
                ],
                "refusal": None,
            },
            "finish_reason": "tool_calls",
        },
        {
            "index": 1,
            "message": {
                "role": "assistant",
                "content": "See https://example.com",
                "annotations": [
                    {
                        "type": "url_citation",
                        "url_citation": {
                            "end_index": 23,
                            "start_index": 4,
                            "title": "Example",
                            "url": "https://example.com",
                        },
                    }
                ],
            },
            "finish_reason": "stop",
        },
    ],
    "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99},
}

#: A vLLM-style body: extra fields at several levels, fields the SDK does not know.
CHAT_VLLM: dict[str, Any] = {
    "id": "chatcmpl-7f3e",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "Qwen/Qwen3-8B",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "reasoning_content": "The user greets me.",
                "content": "Hi!",
                "tool_calls": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
            "stop_reason": None,
        }
    ],
    "usage": {
        "prompt_tokens": 12,
        "total_tokens": 20,
        "completion_tokens": 8,
        "prompt_tokens_details": None,
    },
    "prompt_logprobs": None,
    "kv_transfer_params": {"remote": False},
}

COMPLETION: dict[str, Any] = {
    "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
    "object": "text_completion",
    "created": 1589478378,
    "model": "gpt-3.5-turbo-instruct",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [
        {
            "text": "\n\nThis is indeed a test",
            "index": 0,
            "logprobs": {
                "tokens": ["\n", "\n", "This"],
                "token_logprobs": [-0.1, -0.2, -0.3],
                "top_logprobs": [{"\n": -0.1}, {"\n": -0.2}, {"This": -0.3}],
                "text_offset": [0, 1, 2],
            },
            "finish_reason": "length",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}

EMBEDDINGS: dict[str, Any] = {
    "object": "list",
    "data": [
        {"object": "embedding", "embedding": [0.0023064255, -0.009327292, 0.015797347], "index": 0},
        {"object": "embedding", "embedding": [0.1, 0.2, 0.3], "index": 1},
    ],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}

RESPONSE: dict[str, Any] = {
    "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
    "object": "response",
    "created_at": 1741476542,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "model": "gpt-4.1-2025-04-14",
    "output": [
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "Thinking about unicorns."}],
        },
        {
            "type": "web_search_call",
            "id": "ws_1",
            "status": "completed",
            "action": {"type": "search", "query": "unicorn stories"},
        },
        {
            "type": "message",
            "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
            "status": "completed",
            "role": "assistant",
            "content": [
                {
                    "type": "output_text",
                    "text": "In a peaceful grove beneath a silver moon, ",
                    "annotations": [
                        {
                            "type": "url_citation",
                            "start_index": 0,
                            "end_index": 5,
                            "url": "https://example.com",
                            "title": "Example",
                        }
                    ],
                },
                {"type": "refusal", "refusal": "I won't say more."},
                {"type": "output_text", "text": "a unicorn named Lumina.", "annotations": []},
            ],
        },
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
            "status": "completed",
        },
    ],
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [{"type": "web_search_preview"}],
    "top_p": 1.0,
    "truncation": "disabled",
    "usage": {
        "input_tokens": 36,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 87,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 123,
    },
    "user": None,
    "metadata": {},
}

MODERATION: dict[str, Any] = {
    "id": "modr-0d9740456c391e43c445bf0f010940c7",
    "model": "omni-moderation-latest",
    "results": [
        {
            "flagged": True,
            "categories": {
                "harassment": True,
                "harassment/threatening": True,
                "sexual": False,
                "hate": False,
                "hate/threatening": False,
                "illicit": False,
                "illicit/violent": False,
                "self-harm/intent": False,
                "self-harm/instructions": False,
                "self-harm": False,
                "sexual/minors": False,
                "violence": True,
                "violence/graphic": True,
            },
            "category_scores": {
                "harassment": 0.8189693396524255,
                "harassment/threatening": 0.804985420696006,
                "sexual": 1.573112165348997e-6,
                "hate": 0.007562942636942845,
                "hate/threatening": 0.004208854591835476,
                "illicit": 0.030535955153511665,
                "illicit/violent": 0.008925306722380033,
                "self-harm/intent": 0.00023023930975076432,
                "self-harm/instructions": 0.0002293869201073356,
                "self-harm": 0.012598046106750154,
                "sexual/minors": 2.212566909570261e-8,
                "violence": 0.9999992735124786,
                "violence/graphic": 0.843064871157054,
            },
            "category_applied_input_types": {
                "harassment": ["text"],
                "harassment/threatening": ["text"],
                "sexual": ["text", "image"],
                "hate": ["text"],
                "hate/threatening": ["text"],
                "illicit": ["text"],
                "illicit/violent": ["text"],
                "self-harm/intent": ["text", "image"],
                "self-harm/instructions": ["text", "image"],
                "self-harm": ["text", "image"],
                "sexual/minors": ["text"],
                "violence": ["text", "image"],
                "violence/graphic": ["text", "image"],
            },
        }
    ],
}

BATCH: dict[str, Any] = {
    "id": "batch_abc123",
    "object": "batch",
    "endpoint": "/v1/chat/completions",
    "errors": {
        "object": "list",
        "data": [
            {
                "code": "invalid_json",
                "message": "Line 3 is not valid JSON.",
                "param": None,
                "line": 3,
            }
        ],
    },
    "input_file_id": "file-abc123",
    "completion_window": "24h",
    "status": "completed",
    "output_file_id": "file-cvaTdG",
    "error_file_id": "file-HOWS94",
    "created_at": 1711471533,
    "in_progress_at": 1711471538,
    "expires_at": 1711557933,
    "finalizing_at": 1711493133,
    "completed_at": 1711493163,
    "failed_at": None,
    "expired_at": None,
    "cancelling_at": None,
    "cancelled_at": None,
    "request_counts": {"total": 100, "completed": 95, "failed": 5},
    "metadata": {"customer_id": "user_123456789", "batch_description": "Nightly eval job"},
    "model": "gpt-4o-mini",
    "usage": {
        "input_tokens": 1500,
        "input_tokens_details": {"cached_tokens": 1024},
        "output_tokens": 500,
        "output_tokens_details": {"reasoning_tokens": 300},
        "total_tokens": 2000,
    },
}

FILE: dict[str, Any] = {
    "id": "file-abc123",
    "object": "file",
    "bytes": 120000,
    "created_at": 1677610602,
    "expires_at": 1680202602,
    "filename": "batch_input.jsonl",
    "purpose": "batch",
    "status": "processed",
    "status_details": None,
}

FILE_DELETED: dict[str, Any] = {"id": "file-abc123", "object": "file", "deleted": True}

#: (our model, the SDK's model, body)
CASES: list[tuple[type[t.BaseModel], type[pydantic.BaseModel], dict[str, Any]]] = [
    (ChatCompletion, sdk_chat.ChatCompletion, CHAT),
    (ChatCompletion, sdk_chat.ChatCompletion, CHAT_TOOLS),
    (ChatCompletion, sdk_chat.ChatCompletion, CHAT_VLLM),
    (Completion, sdk.Completion, COMPLETION),
    (CreateEmbeddingResponse, sdk.CreateEmbeddingResponse, EMBEDDINGS),
    (Response, sdk_responses.Response, RESPONSE),
    (ModerationCreateResponse, sdk.ModerationCreateResponse, MODERATION),
    (Batch, sdk.Batch, BATCH),
    (FileObject, sdk.FileObject, FILE),
    (FileDeleted, sdk.FileDeleted, FILE_DELETED),
]
CASE_IDS = [
    "chat",
    "chat-tools",
    "chat-vllm",
    "completion",
    "embeddings",
    "response",
    "moderation",
    "batch",
    "file",
    "file-deleted",
]


def _models() -> list[type[t.BaseModel]]:
    found = []
    for name in t.__all__:
        value = getattr(t, name)
        if isinstance(value, type) and issubclass(value, t.BaseModel) and value is not t.BaseModel:
            found.append(value)
    return found


# -- the SDK as oracle --------------------------------------------------------------


def _sdk_json(model: pydantic.BaseModel) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _agree(ours: Any, theirs: Any, path: str) -> int:
    """Compare every attribute both sides declare, recursively; return how many leaves."""
    if isinstance(ours, GenericObject):
        assert isinstance(theirs, pydantic.BaseModel), path
        assert ours.to_dict() == _sdk_json(theirs), path
        return 1
    if isinstance(ours, t.BaseModel):
        assert isinstance(theirs, pydantic.BaseModel), path
        checked = 0
        for field in attrs.fields(type(ours)):
            if field.name != "_raw" and field.name in type(theirs).model_fields:
                checked += _agree(
                    getattr(ours, field.name),
                    getattr(theirs, field.name),
                    f"{path}.{field.name}",
                )
        return checked
    if isinstance(ours, list):
        assert isinstance(theirs, list), path
        assert len(ours) == len(theirs), path
        return sum(
            _agree(o, s, f"{path}[{i}]") for i, (o, s) in enumerate(zip(ours, theirs, strict=True))
        )
    if isinstance(theirs, pydantic.BaseModel):  # e.g. a raw dict we chose not to type
        assert ours == _sdk_json(theirs), path
        return 1
    assert ours == theirs, path
    return 1


@pytest.mark.parametrize(("ours", "theirs", "body"), CASES, ids=CASE_IDS)
def test_agrees_with_the_openai_sdk(
    ours: type[t.BaseModel], theirs: type[pydantic.BaseModel], body: dict[str, Any]
) -> None:
    mine = ours.from_dict(copy.deepcopy(body))
    oracle = theirs.model_validate(copy.deepcopy(body))
    assert _agree(mine, oracle, ours.__name__) >= 3
    # The SDK keeps what it was given (extras included): so do we, byte for byte.
    assert mine.to_dict() == _sdk_json(oracle) == body
    assert mine.model_extra == (oracle.model_extra or {})


@pytest.mark.parametrize(("ours", "theirs", "body"), CASES, ids=CASE_IDS)
def test_round_trip_and_copies(
    ours: type[t.BaseModel], theirs: type[pydantic.BaseModel], body: dict[str, Any]
) -> None:
    data = copy.deepcopy(body)
    model = ours.from_dict(data)
    out = model.to_dict()
    assert out == body
    # Keys in the SDK's order (declared fields, then unknown ones), as its to_dict() has them.
    oracle = theirs.model_validate(copy.deepcopy(body))
    assert list(out) == list(oracle.model_dump(by_alias=True, exclude_unset=True))
    assert model.model_dump(by_alias=True, exclude_unset=True) == body
    assert json.loads(model.to_json()) == body
    dumped = model.model_dump()
    assert model.model_dump_json() == json.dumps(dumped, separators=(",", ":"), ensure_ascii=False)
    assert model.model_dump_json(indent=2) == json.dumps(dumped, indent=2, ensure_ascii=False)
    # Fresh deep copies: mutating them touches neither the model nor the input.
    out.clear()
    nested = model.to_dict()
    for value in nested.values():
        if isinstance(value, list):
            value.clear()
        elif isinstance(value, dict):
            value["mutated"] = True
    assert model.to_dict() == body
    assert data == body
    # Value semantics.
    assert ours.from_dict(copy.deepcopy(body)) == model
    assert ours.model_validate(body) == model
    assert copy.deepcopy(model) == model
    assert copy.copy(model) == model
    assert pickle.loads(pickle.dumps(model)) == model
    assert pickle.loads(pickle.dumps(model)).to_dict() == body


# -- chat -------------------------------------------------------------------------------


def test_chat_completion_attributes() -> None:
    c = ChatCompletion.from_dict(CHAT)
    assert c.id == "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
    assert c.object == "chat.completion"
    assert c.created == 1741569952
    assert c.choices[0].message.content == "Hello! How can I assist you today?"
    assert c.choices[0].message.role == "assistant"
    assert c.choices[0].message.tool_calls is None
    assert c.choices[0].message.annotations == []
    assert c.choices[0].finish_reason == "stop"
    assert c.choices[0].logprobs is None
    assert c.usage is not None
    assert c.usage.prompt_tokens == 19
    assert c.usage.total_tokens == 29
    assert c.usage.prompt_tokens_details is not None
    assert c.usage.prompt_tokens_details.cached_tokens == 0
    assert c.usage.completion_tokens_details is not None
    assert c.usage.completion_tokens_details.reasoning_tokens == 0
    assert c.service_tier == "default"
    assert c.system_fingerprint == "fp_44709d6fcb"
    assert c.model_extra == {}
    assert isinstance(c.choices[0], t.Choice)
    assert isinstance(c.usage, t.CompletionUsage)


def test_chat_tool_calls_and_logprobs() -> None:
    c = ChatCompletion.from_dict(CHAT_TOOLS)
    calls = c.choices[0].message.tool_calls
    assert calls is not None
    first, second = calls
    assert isinstance(first, ChatCompletionMessageToolCall)
    assert ChatCompletionMessageToolCall is ChatCompletionMessageFunctionToolCall
    assert first.id == "call_abc123"
    assert first.type == "function"
    assert first.function.name == "get_current_weather"
    assert json.loads(first.function.arguments) == {"location": "Boston, MA"}
    assert isinstance(second, ChatCompletionMessageCustomToolCall)
    assert second.custom.name == "run_sql"
    assert second.custom.input == "SELECT 1"
    logprobs = c.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.content is not None
    assert logprobs.content[0].token == "Hi"
    assert logprobs.content[0].top_logprobs[0].bytes == [72, 105]
    annotations = c.choices[1].message.annotations
    assert annotations is not None
    assert annotations[0].url_citation.url == "https://example.com"


def test_tool_call_without_type_is_a_function_call() -> None:
    body = {"choices": [{"message": {"tool_calls": [{"id": "x", "function": {"name": "f"}}]}}]}
    calls = ChatCompletion.from_dict(body).choices[0].message.tool_calls
    assert calls is not None
    assert isinstance(calls[0], ChatCompletionMessageFunctionToolCall)
    assert calls[0].function.name == "f"
    assert calls[0].function.arguments is None


def test_unknown_fields_reachable_at_every_level() -> None:
    c = ChatCompletion.from_dict(CHAT_VLLM)
    assert c.kv_transfer_params == {"remote": False}
    assert c.prompt_logprobs is None
    assert c.model_extra == {"prompt_logprobs": None, "kv_transfer_params": {"remote": False}}
    assert c.choices[0].stop_reason is None
    assert c.choices[0].model_extra == {"stop_reason": None}
    assert c.choices[0].message.reasoning_content == "The user greets me."
    assert c.choices[0].message.tool_calls == []
    assert hasattr(c, "kv_transfer_params")
    assert not hasattr(c, "nope")
    with pytest.raises(AttributeError, match="nope"):
        _ = c.nope
    with pytest.raises(AttributeError):
        _ = c._private
    # Extras are not in the repr, neither is the raw dict.
    assert "kv_transfer_params" not in repr(c)
    assert repr(c).startswith("ChatCompletion(id='chatcmpl-7f3e', choices=[Choice(")


def test_to_dict_follows_assignments() -> None:
    c = ChatCompletion.from_dict(copy.deepcopy(CHAT))
    c.choices[0].message.content = "changed"
    c.model = "other"
    out = c.to_dict()
    assert out["choices"][0]["message"]["content"] == "changed"
    assert out["model"] == "other"
    out["model"] = CHAT["model"]
    out["choices"][0]["message"]["content"] = CHAT["choices"][0]["message"]["content"]
    assert out == CHAT
    c.system_fingerprint = None
    assert c.to_dict()["system_fingerprint"] is None
    c2 = ChatCompletion.from_dict({"id": "x"})
    c2.usage = t.CompletionUsage(completion_tokens=1, prompt_tokens=2, total_tokens=3)
    # Like the SDK: a model built from keywords has only those fields "set".
    assert c2.to_dict() == {
        "id": "x",
        "usage": {"completion_tokens": 1, "prompt_tokens": 2, "total_tokens": 3},
    }
    assert c2.model_dump()["usage"] == {
        "completion_tokens": 1,
        "prompt_tokens": 2,
        "total_tokens": 3,
        "completion_tokens_details": None,
        "prompt_tokens_details": None,
    }


def test_models_built_from_keywords() -> None:
    message = t.ChatCompletionMessage(content="hi")
    choice = t.Choice(finish_reason="stop", index=0, message=message)
    c = ChatCompletion(id="x", choices=[choice], created=1, model="m")
    assert c.choices[0].message.content == "hi"
    assert c.model_extra == {}
    out = c.to_dict()
    assert out["choices"][0]["message"]["content"] == "hi"
    assert out["object"] == "chat.completion"
    assert ChatCompletion.from_dict(out) == c
    assert c.model_dump(exclude_none=True)["choices"][0]["message"] == {
        "content": "hi",
        "role": "assistant",
    }
    assert "usage" not in c.model_dump(exclude_unset=True)
    evolved = attrs.evolve(c, model="n")
    assert evolved.model == "n"
    assert evolved.to_dict()["model"] == "n"
    # construct(): keyword arguments keyed like the JSON, extras kept.
    built = ChatCompletion.construct(id="y", choices=[], extra_field=1)
    assert built.extra_field == 1
    assert built.to_dict() == {"id": "y", "choices": [], "extra_field": 1}


def test_equality() -> None:
    a = ChatCompletion.from_dict(copy.deepcopy(CHAT))
    b = ChatCompletion.from_dict(copy.deepcopy(CHAT))
    assert a == b
    assert a != ChatCompletion.from_dict(CHAT_TOOLS)
    b.choices[0].message.content = "different"
    assert a != b
    extra = copy.deepcopy(CHAT)
    extra["new_field"] = 1
    assert a != ChatCompletion.from_dict(extra)
    assert a != CHAT  # a model never equals a dict
    assert a.choices[0] != a.choices[0].message
    with pytest.raises(TypeError):
        hash(a)


# -- tolerance -------------------------------------------------------------------------


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.__name__)
def test_every_model_accepts_an_empty_object(model: type[t.BaseModel]) -> None:
    obj = model.from_dict({})
    for field in attrs.fields(model):
        if field.name != "_raw":
            value = getattr(obj, field.name)
            assert value is None or value == [], field.name
    assert obj.to_dict() == {}
    assert obj.model_extra == {}
    assert obj.model_fields_set == set()
    assert model.from_dict({}) == obj
    repr(obj)


def test_tolerates_odd_types() -> None:
    body: dict[str, Any] = {
        "id": 123,
        "created": "yesterday",
        "choices": [
            "not an object",
            {"index": "0", "message": "plain text", "finish_reason": 7, "logprobs": []},
            {"message": {"tool_calls": "none", "annotations": {"a": 1}, "content": ["x"]}},
            {"message": {"tool_calls": [None, 3, {"type": "weird", "id": "t"}]}},
        ],
        "usage": "n/a",
    }
    c: Any = ChatCompletion.from_dict(body)  # Any: the values defy the annotations
    assert c.id == 123
    assert c.created == "yesterday"
    assert c.choices[0] == "not an object"
    assert c.choices[1].message == "plain text"
    assert c.choices[1].logprobs == []
    assert c.choices[2].message.tool_calls == "none"
    assert c.choices[2].message.annotations == {"a": 1}
    assert c.choices[2].message.content == ["x"]
    calls = c.choices[3].message.tool_calls
    assert calls is not None
    assert calls[:2] == [None, 3]
    assert isinstance(calls[2], ChatCompletionMessageFunctionToolCall)
    assert calls[2].type == "weird"
    assert c.usage == "n/a"
    assert c.to_dict() == body
    # Not a list at all, or null where a list is expected.
    odd: Any = ChatCompletion.from_dict({"choices": {"0": {}}})
    assert odd.choices == {"0": {}}
    assert ChatCompletion.from_dict({"choices": None}).choices == []
    assert ChatCompletion.from_dict({"choices": None}).to_dict() == {"choices": None}
    # Missing required fields are None; missing nested objects too.
    choice = ChatCompletion.from_dict({"choices": [{}]}).choices[0]
    assert choice.message is None
    assert choice.index is None


def test_mapping_input_and_type_errors() -> None:
    from types import MappingProxyType

    c = ChatCompletion.from_dict(MappingProxyType({"id": "x", "usage": MappingProxyType({})}))
    assert c.id == "x"
    assert isinstance(c.usage, t.CompletionUsage)
    assert c.to_dict() == {"id": "x", "usage": {}}
    with pytest.raises(TypeError, match=r"ChatCompletion\.from_dict\(\) needs a mapping"):
        ChatCompletion.from_dict([])  # type: ignore[arg-type]


def test_no_copy_at_construction() -> None:
    data = copy.deepcopy(CHAT)
    c = ChatCompletion.from_dict(data)
    # "no copy" is about identity, and the raw dict has no public name: the private one, on purpose
    assert c._raw is data
    assert c.choices[0]._raw is data["choices"][0]


def test_model_dump_options() -> None:
    c = ChatCompletion.from_dict(CHAT)
    dumped = c.model_dump(exclude_none=True)
    assert "refusal" not in dumped["choices"][0]["message"]
    assert "logprobs" not in dumped["choices"][0]
    assert c.model_dump(include={"id", "model"}) == {"id": CHAT["id"], "model": CHAT["model"]}
    assert "usage" not in c.model_dump(exclude={"usage"})
    assert c.model_dump(mode="json", by_alias=True, exclude_unset=True) == CHAT
    assert json.loads(c.model_dump_json(exclude_none=True)) == dumped


# -- other endpoints ----------------------------------------------------------------------


def test_completion() -> None:
    c = Completion.from_dict(COMPLETION)
    assert c.choices[0].text == "\n\nThis is indeed a test"
    assert c.choices[0].index == 0
    assert c.choices[0].finish_reason == "length"
    assert c.choices[0].logprobs is not None
    assert c.choices[0].logprobs.tokens == ["\n", "\n", "This"]
    assert c.usage is not None
    assert c.usage.completion_tokens == 7
    assert c.object == "text_completion"


def test_embeddings() -> None:
    e = CreateEmbeddingResponse.from_dict(EMBEDDINGS)
    assert [d.index for d in e.data] == [0, 1]
    assert e.data[0].embedding[1] == -0.009327292
    assert e.data[0].object == "embedding"
    assert e.model == "text-embedding-3-small"
    assert e.usage is not None
    assert e.usage.prompt_tokens == 8
    b64: Any = CreateEmbeddingResponse.from_dict({"data": [{"embedding": "AAAA", "index": 0}]})
    assert b64.data[0].embedding == "AAAA"


def test_response_output_text_and_items() -> None:
    r = Response.from_dict(RESPONSE)
    assert r.output_text == "In a peaceful grove beneath a silver moon, a unicorn named Lumina."
    reasoning, search, message, call = r.output
    assert isinstance(reasoning, ResponseReasoningItem)
    assert reasoning.summary[0].text == "Thinking about unicorns."
    assert isinstance(search, GenericObject)
    assert search.type == "web_search_call"
    assert search.action.query == "unicorn stories"
    assert search.get("status") == "completed"
    assert search.get("missing", 1) == 1
    assert "web_search_call" in repr(search)
    assert isinstance(message, ResponseOutputMessage)
    assert isinstance(message.content[0], ResponseOutputText)
    assert message.content[0].annotations[0].url == "https://example.com"
    assert isinstance(message.content[1], t.ResponseOutputRefusal)
    assert message.content[1].refusal == "I won't say more."
    assert isinstance(call, ResponseFunctionToolCall)
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.call_id == "call_1"
    assert r.usage is not None
    assert r.usage.input_tokens == 36
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    assert r.status == "completed"
    assert r.error is None
    assert r.incomplete_details is None
    assert r.tool_choice == "auto"
    assert r.text is not None
    assert isinstance(r.text.format, t.ResponseFormatText)
    assert r.text.format.type == "text"
    assert r.tools[0].type == "web_search_preview"
    assert r.store is True  # not declared: an extra
    assert r.model_extra == {"store": True}


def test_response_output_text_matches_sdk_on_odd_outputs() -> None:
    body: dict[str, Any] = {
        "output": [
            {"type": "message", "content": [{"type": "output_text", "text": None}]},
            {"type": "message", "content": "oops"},
            {"type": "message", "content": [{"type": "output_text", "text": "a"}, 5]},
            {"type": "function_call", "text": "not a message"},
            "junk",
        ]
    }
    assert Response.from_dict(body).output_text == "a"
    assert Response.from_dict({}).output_text == ""
    failed = Response.from_dict(
        {
            "status": "failed",
            "error": {"code": "server_error", "message": "boom"},
            "incomplete_details": {"reason": "max_output_tokens"},
        }
    )
    assert failed.error is not None
    assert failed.error.message == "boom"
    assert failed.incomplete_details is not None
    assert failed.incomplete_details.reason == "max_output_tokens"


def test_moderation_aliases() -> None:
    m = ModerationCreateResponse.from_dict(MODERATION)
    result = m.results[0]
    assert result.flagged is True
    assert result.categories.harassment_threatening is True
    assert result.categories.self_harm_intent is False
    assert result.categories.illicit_violent is False
    assert result.category_scores.violence == 0.9999992735124786
    assert result.category_scores.self_harm == 0.012598046106750154
    assert result.category_applied_input_types is not None
    assert result.category_applied_input_types.sexual == ["text", "image"]
    assert result.categories.model_extra == {}
    assert m.to_dict() == MODERATION


def test_batch_and_files() -> None:
    b = Batch.from_dict(BATCH)
    assert b.status == "completed"
    assert b.errors is not None
    assert b.errors.data is not None
    assert b.errors.data[0].code == "invalid_json"
    assert b.errors.data[0].line == 3
    assert b.errors.data[0].param is None
    assert b.request_counts is not None
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (
        100,
        95,
        5,
    )
    assert b.metadata == {"customer_id": "user_123456789", "batch_description": "Nightly eval job"}
    assert b.output_file_id == "file-cvaTdG"
    assert b.error_file_id == "file-HOWS94"
    assert b.usage is not None
    assert b.usage.input_tokens_details.cached_tokens == 1024
    assert b.cancelled_at is None
    minimal = Batch.from_dict({"id": "batch_1", "status": "validating"})
    assert minimal.errors is None
    assert minimal.request_counts is None
    f = FileObject.from_dict(FILE)
    assert (f.id, f.bytes, f.filename, f.purpose, f.status) == (
        "file-abc123",
        120000,
        "batch_input.jsonl",
        "batch",
        "processed",
    )
    assert f.expires_at == 1680202602
    assert FileDeleted.from_dict(FILE_DELETED).deleted is True


def test_public_names() -> None:
    assert sorted(t.__all__) == t.__all__
    for name in t.__all__:
        assert getattr(t, name) is not None


def test_no_openai_import() -> None:
    package = Path(t.__file__).parent
    for source in package.glob("*.py"):
        text = source.read_text()
        assert "import openai" not in text, source
        assert "from openai" not in text, source
