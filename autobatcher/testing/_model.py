"""The emulator's deterministic fake model.

It echoes: a chat reply is the text of the last user message, a completion is the prompt,
a response's output text is the input text. Embeddings are unit vectors derived from a
hash of the input. Markers in the request text inject per-request faults:

* ``[[status:NNN]]`` — the request fails with HTTP status NNN and an OpenAI error body;
  ``[[status:NNN:once]]`` (or ``:N``) only on the first (N) execution(s) of that very body,
  then it succeeds: a transient failure that a retry gets past;
* ``[[error:CODE]]`` — (batch) the line comes back as ``{"response": null, "error": {...}}``;
* ``[[drop]]`` — (batch) the request gets no line in either file;
* ``[[invalid]]`` — the request is invalid: a batch holding it fails *validation*, with an
  ``errors.data`` entry naming its line (``{code, message, param, line}``); a real-time call
  answers 400;
* ``[[flag]]`` — a moderation input is flagged;
* ``[[stuck]]`` — (batch) once its lines have run, a batch holding it stays ``finalizing``
  until it is cancelled (its results are then in its files, as after a cancel upstream).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import os
import re
import struct
from collections.abc import Callable
from typing import Any

__all__ = [
    "DROP",
    "ENDPOINTS",
    "INVALID",
    "LINE_ERROR",
    "STUCK",
    "Outcome",
    "error_body",
    "error_type",
    "execute",
]

ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/completions",
    "/v1/moderations",
)

#: Outcome status meaning "the line comes back as an error line" (payload: {code, message}).
LINE_ERROR = -1
#: Outcome status meaning "the line never comes back".
DROP = 0

#: (status, payload): status 2xx/4xx/5xx with a response body, LINE_ERROR, or DROP.
Outcome = tuple[int, dict[str, Any] | None]

_MARKER = re.compile(r"\[\[(?:status:(\d{3})(?::(once|\d+))?|error:([A-Za-z0-9_.:\-]+)|(drop))\]\]")
_FLAG = "[[flag]]"
#: The marker that makes a request fail validation (see the module docstring).
INVALID = "[[invalid]]"
STUCK = "[[stuck]]"
_PREFIX = os.urandom(4).hex()
_ids = itertools.count(1)

_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    409: ("invalid_request_error", "conflict"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("requests", "rate_limit_exceeded"),
}


def error_type(status: int) -> tuple[str, str]:
    """OpenAI's error ``type`` and ``code`` for an HTTP status."""
    if status in _TYPES:
        return _TYPES[status]
    if status >= 500:
        return ("server_error", "server_error")
    return ("invalid_request_error", "invalid_request")


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The OpenAI error envelope ``{"error": {"message", "type", "param", "code"}}``."""
    type_, default_code = error_type(status)
    return {
        "error": {
            "message": message,
            "type": type_,
            "param": param,
            "code": code if code is not None else default_code,
        }
    }


def _new_id(prefix: str) -> str:
    return f"{prefix}{_PREFIX}{next(_ids):016x}"


def _tokens(text: str) -> int:
    return len(text.split())


def _parts_text(content: Any, kinds: tuple[str, ...]) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in kinds:
                text = part.get("text")
                if isinstance(text, str):
                    out.append(text)
        return "".join(out)
    return ""


def _chat(body: dict[str, Any], now: int, _dims: int) -> Outcome:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return 400, error_body(400, "'messages' must be a non-empty array.", param="messages")
    reply = ""
    prompt_tokens = 0
    for message in messages:
        if not isinstance(message, dict):
            return 400, error_body(400, "Each message must be an object.", param="messages")
        text = _parts_text(message.get("content"), ("text",))
        prompt_tokens += _tokens(text) + 3
        if message.get("role") == "user":
            reply = text
    n = body.get("n") or 1
    completion_tokens = _tokens(reply) * n
    choices: list[dict[str, Any]] = [
        {
            "index": i,
            "message": {
                "role": "assistant",
                "content": reply,
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
        for i in range(n)
    ]
    return 200, {
        "id": _new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": now,
        "model": body["model"],
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }


def _completions(body: dict[str, Any], now: int, _dims: int) -> Outcome:
    prompt = body.get("prompt", "")
    prompts = (
        prompt
        if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt)
        else [prompt if isinstance(prompt, str) else ""]
    )
    tokens = sum(_tokens(p) for p in prompts)
    return 200, {
        "id": _new_id("cmpl-"),
        "object": "text_completion",
        "created": now,
        "model": body["model"],
        "choices": [
            {"text": p, "index": i, "logprobs": None, "finish_reason": "stop"}
            for i, p in enumerate(prompts)
        ],
        "usage": {
            "prompt_tokens": tokens,
            "completion_tokens": tokens,
            "total_tokens": 2 * tokens,
        },
        "system_fingerprint": "fp_emulator",
    }


def _responses(body: dict[str, Any], now: int, _dims: int) -> Outcome:
    inp = body.get("input")
    text = ""
    input_tokens = 0
    if isinstance(inp, str):
        text = inp
        input_tokens = _tokens(inp)
    elif isinstance(inp, list):
        for item in inp:
            if not isinstance(item, dict):
                continue
            item_text = _parts_text(item.get("content"), ("input_text", "text", "output_text"))
            input_tokens += _tokens(item_text)
            if item.get("role") == "user":
                text = item_text
    else:
        return 400, error_body(400, "'input' must be a string or an array.", param="input")
    output_tokens = _tokens(text)
    return 200, {
        "id": _new_id("resp_"),
        "object": "response",
        "created_at": now,
        "status": "completed",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": [
            {
                "type": "message",
                "id": _new_id("msg_"),
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                ],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": bool(body.get("store", True)),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _vector(seed: str, dims: int) -> list[float]:
    # Digests are collected and joined once: growing one bytes object would be quadratic in
    # ``dims`` (a few million dimensions make the multi-megabyte lines the benchmarks use).
    digests = []
    digest = seed.encode()
    for _ in range(-(-dims * 4 // 64)):
        digest = hashlib.blake2b(digest, digest_size=64).digest()
        digests.append(digest)
    raw = b"".join(digests)
    ints = struct.unpack(f"<{dims}i", raw[: dims * 4])
    vec = [i / 2147483648.0 for i in ints]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def _embeddings(body: dict[str, Any], _now: int, dims: int) -> Outcome:
    inp = body.get("input")
    if isinstance(inp, str) or (isinstance(inp, list) and inp and isinstance(inp[0], int)):
        inputs: list[Any] = [inp]
    elif isinstance(inp, list) and inp:
        inputs = inp
    else:
        return 400, error_body(400, "'input' must be a non-empty string or array.", param="input")
    size = body.get("dimensions") or dims
    if not isinstance(size, int) or size < 1:
        return 400, error_body(400, "'dimensions' must be a positive integer.", param="dimensions")
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            seed = item
            tokens += max(1, _tokens(item))
        else:
            seed = repr(item)
            tokens += len(item) if isinstance(item, list) else 1
        vec = _vector(seed, size)
        embedding: Any = (
            base64.b64encode(struct.pack(f"<{size}f", *vec)).decode() if as_base64 else vec
        )
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return 200, {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


def _moderations(body: dict[str, Any], _now: int, _dims: int) -> Outcome:
    inp = body.get("input")
    if isinstance(inp, str):
        texts = [inp]
    elif isinstance(inp, list) and inp and all(isinstance(x, str) for x in inp):
        texts = list(inp)
    elif isinstance(inp, list) and inp:
        texts = [_parts_text(inp, ("text",))]
    else:
        return 400, error_body(400, "'input' must be a string or an array.", param="input")
    results = []
    for text in texts:
        flagged = _FLAG in text
        results.append(
            {
                "flagged": flagged,
                "categories": {c: flagged and c == "harassment" for c in _CATEGORIES},
                "category_scores": {
                    c: (0.99 if flagged and c == "harassment" else 0.0001) for c in _CATEGORIES
                },
                "category_applied_input_types": {c: ["text"] for c in _CATEGORIES},
            }
        )
    return 200, {
        "id": _new_id("modr-"),
        "model": body.get("model") or "omni-moderation-latest",
        "results": results,
    }


_HANDLERS: dict[str, Callable[[dict[str, Any], int, int], Outcome]] = {
    "/v1/chat/completions": _chat,
    "/v1/embeddings": _embeddings,
    "/v1/responses": _responses,
    "/v1/completions": _completions,
    "/v1/moderations": _moderations,
}


def execute(
    url: str,
    body: Any,
    canonical: str,
    *,
    now: int,
    dims: int,
    known_models: tuple[str, ...] | None = None,
    attempt: int = 1,
) -> Outcome:
    """Run one request through the fake model.

    ``canonical`` is the body's canonical JSON; markers are searched for in it. With
    ``known_models``, a request naming any other model gets OpenAI's 404 ``model_not_found``.
    ``attempt`` is how many times this body has run, this time included (``[[status:N:once]]``).
    """
    if "[[" in canonical:
        if INVALID in canonical:
            return 400, error_body(
                400, f"The request is invalid (injected {INVALID}).", code="invalid_request"
            )
        match = _MARKER.search(canonical)
        if match is not None:
            status, times, code, drop = match.groups()
            if drop:
                return DROP, None
            if code:
                return LINE_ERROR, {
                    "code": code,
                    "message": f"The request failed with error code {code} (injected).",
                }
            failing = times is None or attempt <= (1 if times == "once" else int(times))
            if status and failing:
                n = int(status)
                if n >= 400:
                    return n, error_body(n, f"Injected failure with status {n}.")
    handler = _HANDLERS.get(url)
    if handler is None:
        return 404, error_body(404, f"Unknown endpoint {url!r}.")
    if not isinstance(body, dict):
        return 400, error_body(400, "The request body must be a JSON object.")
    if url != "/v1/moderations" and not isinstance(body.get("model"), str):
        return 400, error_body(400, "you must provide a model parameter", param="model")
    model = body.get("model")
    if known_models is not None and isinstance(model, str) and model not in known_models:
        return 404, error_body(
            404,
            f"The model `{model}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    return handler(body, now, dims)
