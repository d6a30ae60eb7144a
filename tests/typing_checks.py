"""Checked by mypy (``files`` in pyproject), never run: what the type checker must accept and
what it must reject.

Each line that must be rejected carries ``# type: ignore[code]``. mypy's ``warn_unused_ignores``
(on under ``strict``) turns an ignore that is not needed into an error, so if one of these lines
ever stops being an error, ``mypy`` fails.
"""

from __future__ import annotations

import datetime

import httpx

from autobatcher import NOT_GIVEN, BatchOpenAI, RawResponse, omit, open_batcher
from autobatcher.types import ChatCompletion, CreateEmbeddingResponse, Response


def seed_readme_constructor() -> BatchOpenAI:
    # The seed README's constructor, every parameter and default as written there.
    return BatchOpenAI(
        api_key="sk-...",
        base_url=None,
        batch_size=100,
        batch_window_seconds=1.0,
        poll_interval_seconds=5.0,
        completion_window="24h",
    )


def providers() -> None:
    BatchOpenAI(api_key="k", provider="azure", max_batch_lines=None)
    open_batcher(api_key="k", provider="groq", completion_window="7d")
    BatchOpenAI(api_key="k", provider="mistral")  # type: ignore[arg-type]
    open_batcher(api_key="k", provider="anthropic")  # type: ignore[arg-type]


def misspelled_options() -> None:
    BatchOpenAI(api_key="k", batch_sise=3)  # type: ignore[call-arg]
    BatchOpenAI(api_key="k", batch_size="3")  # type: ignore[arg-type]
    BatchOpenAI("sk-positional")  # type: ignore[call-arg]
    open_batcher(api_key="k", batch_window_second=1.0)  # type: ignore[call-arg]
    open_batcher(api_key="k", http_client=httpx.Client())  # type: ignore[arg-type]


async def calls(client: BatchOpenAI) -> None:
    completion: ChatCompletion = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=5,
        temperature=None,
        top_p=NOT_GIVEN,
        stop=["\n"],
        metadata={"when": datetime.date(2024, 1, 2).isoformat()},
        reasoning_effort="low",
        extra_body={"custom": 1},
        timeout=30,
    )
    raw: RawResponse[ChatCompletion] = await client.chat.completions.with_raw_response.create(
        model="m", messages=[]
    )
    embedded: CreateEmbeddingResponse = await client.embeddings.create(
        model="text-embedding-3-small", input=[[1, 2, 3]], dimensions=omit
    )
    answered: Response = await client.responses.create(model="m", input="hi")
    del completion, raw, embedded, answered

    await client.chat.completions.create(
        model="m",
        messages=[],
        max_token=5,  # type: ignore[call-arg]
    )
    await client.chat.completions.create(messages=[])  # type: ignore[call-arg]
    await client.chat.completions.create(
        model="m",
        messages=[],
        reasoning_effort="extreme",  # type: ignore[arg-type]
    )
    await client.embeddings.create(model="m", input="x", encoding_format="hex")  # type: ignore[arg-type]
    await client.moderations.create(model="m")  # type: ignore[call-arg]
    await client.completions.create(model="m", prompt="p", suffx="s")  # type: ignore[call-arg]


def surface(client: BatchOpenAI) -> None:
    copy: BatchOpenAI = client.with_options(batch_size=10, max_retries=0, timeout=5.0)
    closed: bool = copy.is_closed()
    retries: int = client.max_retries
    timeout: httpx.Timeout = client.timeout
    client.copy(batch_sise=10)  # type: ignore[call-arg]
    del closed, retries, timeout
