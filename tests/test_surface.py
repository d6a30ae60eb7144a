"""The client surface of ``AsyncOpenAI`` that code keeps when only the import changes:
typed ``create()`` arguments, the constructor's options, ``copy``/``with_options``,
``is_closed``, ``default_query``, the missing-key refusal, and early size refusal."""

from __future__ import annotations

import datetime
import inspect
import json
import random
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import openai
import pytest
from openai.resources.chat.completions import AsyncCompletions as SdkChatCompletions
from openai.resources.completions import AsyncCompletions as SdkCompletions
from openai.resources.embeddings import AsyncEmbeddings as SdkEmbeddings
from openai.resources.moderations import AsyncModerations as SdkModerations
from openai.resources.responses import AsyncResponses as SdkResponses

import autobatcher._jsonl
import autobatcher._sizing
from autobatcher import (
    AutobatcherError,
    BatcherConfig,
    BatchOpenAI,
    ClientClosedError,
    MissingAPIKeyError,
    RequestTooLargeError,
    omit,
    open_batcher,
)
from autobatcher._sizing import encoded_size_at_least

from ._support import API_KEY, FAST, InProcess, chat, emulated, gather, in_process

pytestmark = pytest.mark.anyio

_ENVELOPE = {"extra_headers", "extra_query", "extra_body", "timeout"}


def uploaded_bodies(server: InProcess) -> list[dict[str, Any]]:
    """The request bodies of every line the client uploaded, in upload order."""
    bodies: list[dict[str, Any]] = []
    for record in server.emulator.files.values():
        if record.purpose == "batch":
            bodies.extend(json.loads(line)["body"] for line in record.line_list())
    return bodies


# -- create() ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "sdk"),
    [
        ("chat.completions", SdkChatCompletions),
        ("embeddings", SdkEmbeddings),
        ("responses", SdkResponses),
        ("completions", SdkCompletions),
        ("moderations", SdkModerations),
    ],
)
def test_create_takes_exactly_the_sdks_arguments(ours: str, sdk: type[Any]) -> None:
    client = BatchOpenAI(api_key="k")
    namespace: Any = client
    for part in ours.split("."):
        namespace = getattr(namespace, part)
    for create in (namespace.create, namespace.with_raw_response.create):
        mine = inspect.signature(create).parameters
        theirs = inspect.signature(sdk.create).parameters
        assert set(mine) == set(theirs) - {"self"}
        for name, parameter in mine.items():
            assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, name
            # required exactly where the SDK requires it
            required = parameter.default is inspect.Parameter.empty
            assert required == (theirs[name].default is inspect.Parameter.empty), name
        assert create.__doc__ and "Cancelling" in create.__doc__ and "timeout=" in create.__doc__


async def test_misspelled_argument_is_a_type_error_at_the_call() -> None:
    async with emulated() as (server, client):
        with pytest.raises(TypeError, match="unexpected keyword argument 'max_token'"):
            _ = client.chat.completions.create(**chat("x"), max_token=5)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="'dimension'"):
            _ = client.embeddings.with_raw_response.create(model="m", input="x", dimension=3)  # type: ignore[call-arg]
        answer = await client.chat.completions.create(**chat("still fine"), max_tokens=5)
    assert answer.choices[0].message.content == "still fine"
    assert server.emulator.stats().total_executions == 1


async def test_only_given_arguments_are_sent_and_values_encode_like_the_sdk() -> None:
    async with emulated() as (server, client):
        first = await client.chat.completions.create(**chat("first"))
        when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)

        def messages() -> Iterator[Any]:  # an iterable, as the SDK accepts
            yield {"role": "user", "content": "first"}
            yield first.choices[0].message  # a model from an earlier answer, put back
            yield {"role": "user", "content": "second"}

        await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages(),
            temperature=None,  # sent as null
            top_p=omit,  # ours: left out
            seed=openai.NOT_GIVEN,  # type: ignore[arg-type]  # the SDK's: left out too
            max_tokens=openai.omit,  # type: ignore[arg-type]
            stream=False,
            extra_body={"when": when, "day": when.date()},
        )
    second = uploaded_bodies(server)[-1]
    assert second["temperature"] is None
    assert not {"top_p", "seed", "max_tokens", "stream"} & set(second)
    assert second["when"] == "2024-05-06T07:08:09+00:00"
    assert second["day"] == "2024-05-06"
    assert [m["content"] for m in second["messages"]] == ["first", "first", "second"]
    assert second["messages"][1]["role"] == "assistant"


# -- construction -----------------------------------------------------------------------------


def test_constructor_defaults_are_the_configs_and_every_field_is_an_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert BatchOpenAI(api_key="k").config == BatcherConfig(api_key="k")
    parameters = inspect.signature(BatchOpenAI).parameters
    fields = {field.name for field in BatcherConfig.__attrs_attrs__}
    assert set(parameters) == fields | {"http_client", "journal"}
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    # open_batcher takes the very same options, and copy() can override every one of them
    assert inspect.signature(open_batcher).parameters == parameters
    copy_parameters = inspect.signature(BatchOpenAI.copy).parameters
    # a journal is claimed by one client at a time: a copy never takes the original's
    assert set(copy_parameters) - {"self"} == set(parameters) - {"journal"} | {
        "set_default_headers",
        "set_default_query",
    }


def test_seed_readme_constructor_as_written() -> None:
    client = BatchOpenAI(
        api_key="sk-...",
        base_url=None,
        batch_size=100,
        batch_window_seconds=1.0,
        poll_interval_seconds=5.0,
        completion_window="24h",
    )
    config = client.config
    assert (config.batch_size, config.batch_window_seconds, config.completion_window) == (
        100,
        1.0,
        "24h",
    )


def test_open_batcher_checks_its_options_at_the_call() -> None:
    with pytest.raises(TypeError, match="batch_sise"):
        open_batcher(api_key="k", batch_sise=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="batch_size"):
        open_batcher(api_key="k", batch_size=0)


def test_missing_api_key_is_refused_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY") as caught:
        BatchOpenAI()
    assert isinstance(caught.value, AutobatcherError)
    with pytest.raises(MissingAPIKeyError):
        open_batcher(batch_size=3)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert BatchOpenAI().api_key == "sk-env"
    assert BatchOpenAI(api_key="sk-arg").api_key == "sk-arg"


# -- copy / with_options, is_closed, default_query ----------------------------------------------


async def test_with_options_is_a_new_unopened_client_sharing_only_the_users_http_client() -> None:
    seen: list[httpx.URL] = []

    async def record(request: httpx.Request) -> None:
        seen.append(request.url)

    async with in_process() as server:
        async with server.http(event_hooks={"request": [record]}) as http:
            client = BatchOpenAI(
                api_key=API_KEY,
                base_url=server.base_url,
                http_client=http,
                default_query={"tenant": "a"},
                max_retries=1,
                **FAST,
            )
            copy = client.with_options(batch_size=7, default_query={"region": "eu"})
            assert copy is not client and type(copy) is BatchOpenAI
            assert copy.config.batch_size == 7 and client.config.batch_size == 100
            assert copy.max_retries == 1 and copy.timeout == client.timeout
            assert copy.default_query == {"tenant": "a", "region": "eu"}
            assert client.default_query == {"tenant": "a"}
            # no public accessor for the connection pool: which one a copy uses is the contract
            assert copy._wire.http_client is http
            assert not copy.is_closed()

            async with copy:
                answer = await copy.chat.completions.create(**chat("via copy"))
            assert answer.choices[0].message.content == "via copy"
            assert copy.is_closed() and not client.is_closed()
            assert not http.is_closed  # the user's client is the user's to close
            assert seen and all(
                url.params.get("tenant") == "a" and url.params.get("region") == "eu" for url in seen
            )

            seen.clear()
            replaced = client.copy(set_default_query={"only": "this"})
            assert replaced.default_query == {"only": "this"}
            answer = await client.chat.completions.create(**chat("original still works"))
            await client.close()
            assert answer.choices[0].message.content == "original still works"
            assert all(dict(url.params) == {"tenant": "a"} for url in seen if url.params)
            await replaced.close()


async def test_copy_of_a_client_with_its_own_pool_gets_its_own() -> None:
    # A client that builds its own pool (no http_client given); nothing is sent.
    async with BatchOpenAI(api_key=API_KEY, base_url="http://127.0.0.1:9/v1") as client:
        copy = client.copy(batch_window_seconds=0.01)
        # no public accessor for the connection pool: which one a copy uses is the contract
        assert copy._wire.http_client is not client._wire.http_client
        assert copy.config.batch_window_seconds == 0.01
        assert copy.api_key == client.api_key and copy.base_url == client.base_url
        same = client.copy()
        assert same.config == client.config
        await same.close()
        with pytest.raises(ValueError, match="batch_size"):
            client.copy(batch_size=0)
        with pytest.raises(ValueError, match="mutually exclusive"):
            client.copy(default_query={"a": 1}, set_default_query={"b": 2})
        with pytest.raises(ValueError, match="mutually exclusive"):
            client.with_options(default_headers={"a": "1"}, set_default_headers={"b": "2"})
        await copy.close()


def test_client_level_with_raw_response_points_to_the_endpoint_level_one() -> None:
    client = BatchOpenAI(api_key="k")
    with pytest.raises(AttributeError, match=r"chat\.completions\.with_raw_response\.create"):
        _ = client.with_raw_response


async def test_is_closed_tells_whether_create_would_refuse() -> None:
    async with in_process() as server:
        client = server.client()
        assert not client.is_closed()
        await client.chat.completions.create(**chat("x"))
        await client.close()
        assert client.is_closed()
        with pytest.raises(ClientClosedError):
            await client.chat.completions.create(**chat("y"))


# -- a request too large for any batch ----------------------------------------------------------


class CountingMapping(Mapping[str, Any]):
    """A message that counts how often it is looked at."""

    visits = 0

    def __getitem__(self, key: str) -> Any:
        CountingMapping.visits += 1
        return {"role": "user", "content": "x"}[key]

    def __iter__(self) -> Iterator[str]:
        CountingMapping.visits += 1
        return iter(("role", "content"))

    def __len__(self) -> int:
        CountingMapping.visits += 1
        return 2


async def test_a_request_too_large_is_refused_before_it_is_encoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    produced: list[int] = []
    real_encode_line = autobatcher._jsonl.encode_line

    def counting_encode_line(custom_id: str, url: str, body: Mapping[str, Any]) -> bytes:
        line = real_encode_line(custom_id, url, body)
        produced.append(len(line))
        return line

    monkeypatch.setattr("autobatcher._facade.encode_line", counting_encode_line)
    async with emulated(max_batch_bytes=10_000) as (server, client):
        big, many, fits = await gather(
            client.chat.completions.create(**chat("x" * 50_000)),
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[CountingMapping()] * 20_000
            ),
            client.chat.completions.create(**chat("fits")),
        )
        cyclic: dict[str, Any] = {}
        cyclic["again"] = cyclic
        with pytest.raises(TypeError, match=r"[Cc]ircular"):  # the encoder's verdict, not a size
            await client.chat.completions.create(**chat("cycle"), extra_body=cyclic)
    assert isinstance(big, RequestTooLargeError) and "max_batch_bytes=10,000" in str(big)
    assert isinstance(many, RequestTooLargeError)
    assert CountingMapping.visits == 0  # sized by len() of the list, no message looked at
    assert fits.choices[0].message.content == "fits"
    assert len(produced) == 1  # only the request that fits was ever encoded (the cycle fails in it)
    assert server.emulator.stats().total_executions == 1


def test_size_bound_stops_walking_once_past_the_limit() -> None:
    CountingMapping.visits = 0
    body = {"model": "m", "messages": [CountingMapping()] * 1_000_000}
    assert encoded_size_at_least(body, 1_000) > 1_000
    assert CountingMapping.visits == 0
    huge = "x" * 50_000_000  # sized by len(): nothing copied, nothing encoded
    assert encoded_size_at_least({"input": huge}, 1_000_000) == len('{"input":""}') + 50_000_000


def test_size_bound_is_a_lower_bound_and_exact_for_plain_ascii() -> None:
    rng = random.Random(7)

    def value(depth: int) -> Any:
        kind = rng.randrange(8 if depth < 4 else 4)
        if kind == 0:
            return rng.choice([None, True, False, 0, -12, 3.5, 1e300])
        if kind == 1:
            return "".join(rng.choice("ab c") for _ in range(rng.randrange(20)))
        if kind == 2:
            return rng.choice(["é", "\n", '"q"', "\\", "\u2603x"])
        if kind == 3:
            return [rng.randrange(10**6) for _ in range(rng.randrange(5))]
        if kind in (4, 5):
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {f"k{i}": value(depth + 1) for i in range(rng.randrange(4))}

    for _ in range(500):
        body = {"model": "m", "x": value(0)}
        encoded = len(json.dumps(body, separators=(",", ":")))
        estimated = encoded_size_at_least(body, 10**9)
        measured = encoded_size_at_least(body, 10**9, measure_text=True)
        assert estimated <= measured <= encoded
    plain = {"model": "gpt", "messages": [{"role": "user", "content": "hello"}], "n": [1, 2]}
    assert encoded_size_at_least(plain, 10**9) == len(json.dumps(plain, separators=(",", ":")))
    text = {"input": ["é\U0001f600 \u2603" * 5000, "plain"]}
    assert encoded_size_at_least(text, 10**9, measure_text=True) == len(
        json.dumps(text, separators=(",", ":"))
    )


async def test_escaped_text_is_measured_in_slices_that_stop_at_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Non-ASCII text grows sixfold when encoded: its bound fits, its encoding does not."""
    encoded_slices: list[int] = []
    real_encode_text = autobatcher._sizing._encode_text

    def counting_encode_text(text: str) -> str:
        encoded = real_encode_text(text)
        encoded_slices.append(len(encoded))
        return encoded

    produced: list[bytes] = []
    real_encode_line = autobatcher._jsonl.encode_line

    def counting_encode_line(custom_id: str, url: str, body: Mapping[str, Any]) -> bytes:
        produced.append(real_encode_line(custom_id, url, body))
        return produced[-1]

    monkeypatch.setattr("autobatcher._sizing.TEXT_SLICE", 100)
    monkeypatch.setattr("autobatcher._sizing._encode_text", counting_encode_text)
    monkeypatch.setattr("autobatcher._facade.encode_line", counting_encode_line)
    async with emulated(max_batch_bytes=12_000) as (server, client):
        with pytest.raises(RequestTooLargeError):
            await client.chat.completions.create(**chat("é" * 3_000))  # 18,000 bytes encoded
        assert produced == []  # never encoded
        # 30 slices of 100 characters (600 bytes each) in all; the 20th passes 12,000
        assert len(encoded_slices) == 20
        answer = await client.chat.completions.create(**chat("é" * 1_500))  # 9,000: fits
    assert answer.choices[0].message.content == "é" * 1_500
    assert len(produced) == 1 and len(produced[0]) <= 12_000
    assert server.emulator.stats().total_executions == 1
