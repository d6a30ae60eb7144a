"""One program against every emulated provider, on asyncio and trio (issue 14).

The program is the same for each flavour; only ``base_url``, the key and ``provider`` change
(the emulator's flavour supplies the quirks: Azure's ``api-key`` header, ``/openai/v1`` prefix,
``pending`` files, capitalised statuses and ISO timestamps; Together's ``batch-api`` purpose,
``{"job": …}`` create answer, upper-case statuses and ``progress``; Groq's prefix and long
windows; a generic gateway's millisecond timestamps, missing counts and late file ids). Then
the pieces that only some providers need: Azure's file cap, and the generic tolerances one
quirk at a time. Everything runs in-process (no sockets).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from autobatcher import (
    AuthenticationError,
    BadRequestError,
    BatcherConfig,
    BatchOpenAI,
    BatchRequestError,
    open_batcher,
)
from autobatcher._providers import (
    PROVIDERS,
    ProviderName,
    infer_provider,
    normalise_batch,
    normalise_status,
    normalise_timestamp,
)
from autobatcher._wire import Wire
from autobatcher.testing import Emulator, EmulatorConfig, emulator_client
from autobatcher.types import ChatCompletion, CreateEmbeddingResponse

from ._support import API_KEY, FAST, Recorder, chat, gather, virtual_time

FLAVOURS: tuple[ProviderName, ...] = (
    "openai",
    "azure",
    "doubleword",
    "together",
    "groq",
    "generic",
)
OPENAI_STATUSES = {
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
}


@asynccontextmanager
async def against(
    flavour: ProviderName, emulator_options: dict[str, Any] | None = None, **client_options: Any
) -> AsyncIterator[tuple[Emulator, BatchOpenAI]]:
    """The emulator in ``flavour``, and a client that knows only its URL, key and provider.

    Bounded in time: a quirk the client misreads (a status it never sees as final) fails the
    test in seconds instead of polling forever.
    """
    options = emulator_options or {}
    with anyio.fail_after(30):
        async with emulator_client(flavour=flavour, api_key=API_KEY, **options) as (
            emulator,
            http_client,
        ):
            async with open_batcher(
                api_key=API_KEY,
                base_url=emulator.in_process_base_url,
                provider=flavour,
                http_client=http_client,
                **{**FAST, **client_options},
            ) as client:
                yield emulator, client


async def the_program(client: BatchOpenAI) -> None:
    """Chat and embeddings round trips, with per-line errors among them."""
    texts = [f"question {i}" for i in range(8)]
    chats = [client.chat.completions.create(**chat(text)) for text in texts]
    refused = client.chat.completions.create(**chat("bad [[status:400]]"))
    errored = client.chat.completions.create(**chat("gone [[error:server_error]]"))
    embeds = [
        client.embeddings.create(model="text-embedding-3-small", input=f"text {i}")
        for i in range(3)
    ]
    results = await gather(*chats, refused, errored, *embeds)
    answers = results[: len(texts)]
    assert all(isinstance(r, ChatCompletion) for r in answers), answers
    assert [r.choices[0].message.content for r in answers] == texts
    assert isinstance(results[len(texts)], BadRequestError)
    assert results[len(texts)].status_code == 400
    assert isinstance(results[len(texts) + 1], BatchRequestError)
    assert results[len(texts) + 1].code == "server_error"
    vectors = results[len(texts) + 2 :]
    assert all(isinstance(r, CreateEmbeddingResponse) for r in vectors), vectors
    assert all(len(r.data[0].embedding) == 8 for r in vectors)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.anyio
async def test_the_same_program_passes_against_every_provider(flavour: ProviderName) -> None:
    recorder = Recorder()
    async with against(flavour, event_hook=recorder) as (emulator, client):
        await the_program(client)
    stats = emulator.stats()
    assert stats.batches_created == 2  # one lane for chat, one for embeddings
    assert stats.duplicate_executions == 0
    statuses = {event.status for event in recorder.events if event.status is not None}
    assert statuses and statuses <= OPENAI_STATUSES  # whatever the server's spelling
    if flavour == "azure":
        # the files were waited for, then deleted once consumed
        assert stats.api_calls_by_route.get("GET /v1/files/{id}", 0) >= 2
        assert not emulator.files


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.anyio
async def test_a_run_larger_than_one_file_is_split_by_the_file_limit(flavour: ProviderName) -> None:
    limit = 4
    async with against(flavour, {"max_lines": limit}, max_batch_lines=limit, batch_size=limit) as (
        emulator,
        client,
    ):
        texts = [f"line {i}" for i in range(4 * limit + 1)]
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert [r.choices[0].message.content for r in results] == texts
    batches = list(emulator.batches.values())
    assert len(batches) == 5
    assert all(len(batch.requests) <= limit for batch in batches)
    assert {batch.status for batch in batches} == {"completed"}


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.anyio
async def test_a_batch_where_every_line_failed_settles_every_caller(flavour: ProviderName) -> None:
    # OpenAI's shape: completed, no output file, only an error file
    async with against(flavour) as (emulator, client):
        results = await gather(
            *[client.chat.completions.create(**chat(f"no {i} [[status:400]]")) for i in range(3)]
        )
    assert all(isinstance(r, BadRequestError) for r in results), results
    (batch,) = emulator.batches.values()
    if flavour != "doubleword":  # (Doubleword's files exist from the start)
        assert batch.output_file is None
        assert batch.error_file is not None


# -- Azure ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_azure_deletes_consumed_files_under_the_file_cap() -> None:
    # 12 batches of 2 lines, at most 2 running: 24+ files over the run, never more than 6 held.
    cap = {"max_files": 6, "max_expiring_files": 6}
    async with against("azure", cap, max_batch_lines=2, max_batches_in_flight=2) as (
        emulator,
        client,
    ):
        texts = [f"azure {i}" for i in range(24)]
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert [r.choices[0].message.content for r in results] == texts
    assert emulator.stats().batches_created == 12
    assert not emulator.files  # inputs, outputs and error files all deleted


@pytest.mark.anyio
async def test_without_deleting_consumed_files_the_azure_cap_is_reached() -> None:
    # The control for the test above: a client that keeps its files (generic, with Azure's
    # key header by hand) runs into the same cap.
    async with emulator_client(
        flavour="azure",
        api_key=API_KEY,
        max_files=6,
        max_expiring_files=6,
        file_processing_seconds=0.0,  # (the other Azure quirks this client does not handle)
        endpoint_without_version=False,
    ) as (emulator, http_client):
        async with open_batcher(
            api_key="unused",
            default_headers={"api-key": API_KEY},
            base_url=emulator.in_process_base_url,
            provider="generic",
            http_client=http_client,
            max_batch_lines=2,
            max_batches_in_flight=2,
            **FAST,
        ) as client:
            texts = [f"azure {i}" for i in range(24)]
            results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    refused = [r for r in results if isinstance(r, BadRequestError)]
    assert refused and all(r.code == "quota_exceeded" for r in refused)


@pytest.mark.anyio
async def test_azure_uploads_files_with_an_expiry() -> None:
    # Files without an expiry are capped at one here: only expiring uploads get through.
    async with against("azure", {"max_files": 1}, max_batch_lines=2) as (emulator, client):
        texts = [f"expiring {i}" for i in range(6)]
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert [r.choices[0].message.content for r in results] == texts
    assert emulator.stats().uploads == 3


@pytest.mark.anyio
async def test_azure_wants_its_key_header() -> None:
    # A client that sends OpenAI's bearer token to Azure is refused, as upstream.
    async with emulator_client(flavour="azure", api_key=API_KEY) as (emulator, http_client):
        async with open_batcher(
            api_key=API_KEY,
            base_url=emulator.in_process_base_url,
            provider="openai",
            http_client=http_client,
            **FAST,
        ) as client:
            (result,) = await gather(client.chat.completions.create(**chat("hello")))
    assert isinstance(result, AuthenticationError)


@pytest.mark.anyio
async def test_azure_batches_past_their_window_keep_running() -> None:
    async with against("azure", {"expire_after_seconds": 0.05, "lines_per_second": 20}) as (
        emulator,
        client,
    ):
        texts = [f"slow {i}" for i in range(4)]
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert [r.choices[0].message.content for r in results] == texts
    (batch,) = emulator.batches.values()
    assert batch.status == "completed"
    assert batch.completed is not None and batch.completed - batch.created > 0.05


# -- generic tolerance, one quirk at a time -----------------------------------------------------

TOLERANCES: list[dict[str, Any]] = [
    {"status_case": "capitalized"},
    {"status_case": "upper"},
    {"timestamp_format": "milliseconds"},
    {"timestamp_format": "iso"},
    {"request_counts": False},
    {"file_ids_at": "finalizing", "finalizing_seconds": 0.05},
]


@pytest.mark.parametrize(
    "quirk", TOLERANCES, ids=lambda q: ",".join(f"{k}={v}" for k, v in q.items())
)
@pytest.mark.anyio
async def test_generic_tolerates(quirk: dict[str, Any]) -> None:
    options = {
        "status_case": "lower",
        "timestamp_format": "seconds",
        "request_counts": True,
        "file_ids_at": "terminal",
        **quirk,
    }
    async with against("generic", options) as (emulator, client):
        await the_program(client)
        (failed,) = await gather(client.chat.completions.create(**chat("x [[status:422]]")))
    assert isinstance(failed, Exception) and getattr(failed, "status_code", None) == 422
    assert emulator.stats().duplicate_executions == 0


# -- the capability records ---------------------------------------------------------------------


def test_the_provider_is_inferred_from_the_base_url() -> None:
    assert infer_provider("https://api.openai.com/v1") == "openai"
    assert infer_provider("https://myres.openai.azure.com/openai/v1/") == "azure"
    assert infer_provider("https://api.groq.com/openai/v1") == "groq"
    assert infer_provider("https://api.together.xyz/v1") == "together"
    assert infer_provider("https://api.doubleword.ai/v1") == "doubleword"
    assert infer_provider("http://127.0.0.1:8000/v1") == "generic"
    assert infer_provider("https://evil-api.openai.com.example/v1") == "generic"
    assert BatcherConfig(api_key="k", base_url="https://r.openai.azure.com/openai/v1").provider == (
        "azure"
    )


def test_limits_and_windows_default_to_the_providers() -> None:
    azure = BatcherConfig(api_key="k", provider="azure")
    assert (azure.max_batch_lines, azure.max_embedding_inputs) == (100_000, 100_000)
    assert azure.poll_interval_seconds == 60.0
    together = BatcherConfig(api_key="k", provider="together")
    assert together.max_batch_bytes <= 100 * 1000 * 1000
    openai = BatcherConfig(api_key="k", provider="openai")
    assert (openai.max_batch_lines, openai.completion_window) == (50_000, "24h")
    # an explicit option wins, within the provider's limit
    assert (
        BatcherConfig(api_key="k", provider="azure", poll_interval_seconds=2).poll_interval_seconds
        == 2
    )
    assert (
        BatcherConfig(api_key="k", provider="azure", max_batch_lines=80_000).max_batch_lines
        == 80_000
    )
    with pytest.raises(ValueError, match=r"max_batch_lines must be between 1 and 50000"):
        BatcherConfig(api_key="k", provider="openai", max_batch_lines=80_000)
    with pytest.raises(ValueError, match="max_batch_bytes"):
        BatcherConfig(api_key="k", provider="together", max_batch_bytes=150 * 1000 * 1000)


def test_windows_are_checked_against_the_provider() -> None:
    assert (
        BatcherConfig(api_key="k", provider="groq", completion_window="7d").completion_window
        == "7d"
    )
    assert BatcherConfig(api_key="k", provider="doubleword", completion_window="1h")
    for provider, window in [("groq", "8d"), ("groq", "12h"), ("openai", "1h"), ("azure", "48h")]:
        with pytest.raises(ValueError, match="completion_window"):
            BatcherConfig(api_key="k", provider=provider, completion_window=window)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="provider must be one of"):
        BatcherConfig(api_key="k", provider="mistral")  # type: ignore[arg-type]


def test_copy_to_another_provider_takes_its_defaults() -> None:
    client = BatchOpenAI(api_key="k", provider="openai", max_batch_bytes=1000)
    azure = client.copy(provider="azure")
    assert azure.config.provider == "azure"
    assert azure.config.max_batch_lines == 100_000  # the provider's, not OpenAI's
    assert azure.config.max_batch_bytes == 1000  # chosen, so kept
    assert client.copy().config.provider == "openai"


def test_batch_objects_are_read_tolerantly() -> None:
    together = PROVIDERS["together"]
    wrapped = {
        "job": {"id": "b1", "status": "IN_PROGRESS", "created_at": "2026-01-01T00:00:00Z"},
        "warning": None,
    }
    batch = normalise_batch(wrapped, together)
    assert batch["id"] == "b1" and batch["status"] == "in_progress"
    assert batch["created_at"] == 1767225600
    assert normalise_status("Validating") == "validating"
    assert normalise_status("CANCELED") == "cancelled"
    assert normalise_status("InProgress") == "in_progress"
    assert normalise_timestamp(1767225600123) == 1767225600
    assert normalise_timestamp("2026-01-01T01:00:00+01:00") == 1767225600
    assert normalise_timestamp(1767225600) == 1767225600
    plain = {"id": "b", "status": "completed", "created_at": 1}
    assert normalise_batch(plain, PROVIDERS["openai"]) is plain  # nothing to change, no copy


def test_emulator_flavours_have_their_quirks() -> None:
    assert EmulatorConfig(flavour="azure").api_root == "/openai/v1"
    assert EmulatorConfig(flavour="groq").api_root == "/openai/v1"
    assert EmulatorConfig(flavour="together").quirks.upload_purpose == "batch-api"
    # each quirk switches on its own
    assert EmulatorConfig(flavour="azure", status_case="lower").quirks.status_case == "lower"
    assert EmulatorConfig(flavour="openai", wrap_created_batch=True).quirks.wrap_created_batch
    with pytest.raises(ValueError, match="status_case"):
        EmulatorConfig(status_case="shouting")  # type: ignore[arg-type]


# -- the emulator's dialects, seen raw ----------------------------------------------------------


def _jsonl(*texts: str, url: str = "/v1/chat/completions") -> bytes:
    lines = [
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": url, "body": chat(text)})
        for i, text in enumerate(texts)
    ]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.anyio
@virtual_time()  # the file's "pending" spell (0.05 s) passes by a virtual-time sleep
async def test_azure_dialect() -> None:
    async with emulator_client(flavour="azure", api_key=API_KEY) as (emulator, http):
        headers = {"api-key": API_KEY}
        assert (await http.get("/v1/batches", headers=headers)).status_code == 404  # no prefix
        bearer = {"Authorization": f"Bearer {API_KEY}"}
        assert (await http.get("/openai/v1/batches", headers=bearer)).status_code == 401
        uploaded = await http.post(
            "/openai/v1/files",
            headers=headers,
            data={"purpose": "batch"},
            files={"file": ("in.jsonl", _jsonl("a", "b"))},
        )
        file = uploaded.json()
        assert file["status"] == "pending"
        create = {"input_file_id": file["id"], "completion_window": "24h"}
        early = await http.post(
            "/openai/v1/batches", headers=headers, json={**create, "endpoint": "/chat/completions"}
        )
        assert early.status_code == 400 and early.json()["error"]["code"] == "invalid_file_status"
        await anyio.sleep(0.06)  # virtual time
        ready = await http.get(f"/openai/v1/files/{file['id']}", headers=headers)
        assert ready.json()["status"] == "processed"
        versioned = await http.post(
            "/openai/v1/batches",
            headers=headers,
            json={**create, "endpoint": "/v1/chat/completions"},
        )
        assert versioned.status_code == 400  # Azure names the endpoint without /v1
        created = await http.post(
            "/openai/v1/batches", headers=headers, json={**create, "endpoint": "/chat/completions"}
        )
        batch = created.json()
        assert batch["status"] == "Validating"
        assert batch["created_at"].endswith("Z")  # ISO 8601
        assert batch["endpoint"] == "/chat/completions"
        assert emulator.config.api_root == "/openai/v1"


@pytest.mark.anyio
async def test_together_dialect() -> None:
    async with emulator_client(flavour="together") as (_emulator, http):
        wrong = await http.post(
            "/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", _jsonl("a"))}
        )
        create = {"endpoint": "/v1/chat/completions", "completion_window": "24h"}
        refused = await http.post(
            "/v1/batches", json={**create, "input_file_id": wrong.json()["id"]}
        )
        assert refused.status_code == 400  # purpose must be batch-api
        right = await http.post(
            "/v1/files", data={"purpose": "batch-api"}, files={"file": ("in.jsonl", _jsonl("a"))}
        )
        created = await http.post(
            "/v1/batches", json={**create, "input_file_id": right.json()["id"]}
        )
        answer = created.json()
        assert set(answer) == {"job", "warning"}
        job = answer["job"]
        assert job["status"] == "VALIDATING" and "request_counts" not in job
        done = (await http.get(f"/v1/batches/{job['id']}")).json()
        assert done["status"] == "COMPLETED" and done["progress"] == 100.0  # retrieve: bare


@pytest.mark.anyio
async def test_groq_dialect() -> None:
    async with emulator_client(flavour="groq") as (_emulator, http):
        uploaded = await http.post(
            "/openai/v1/files",
            data={"purpose": "batch"},
            files={"file": ("in.jsonl", _jsonl("a", url="/openai/v1/chat/completions"))},
        )
        base = {"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions"}
        for window, status in [("7d", 200), ("48h", 200), ("8d", 400), ("12h", 400)]:
            answer = await http.post(
                "/openai/v1/batches", json={**base, "completion_window": window}
            )
            assert answer.status_code == status, (window, answer.text)
        # a line whose url carries the base URL's /openai prefix fails validation
        batch_id = (await http.get("/openai/v1/batches")).json()["data"][0]["id"]
        failed = (await http.get(f"/openai/v1/batches/{batch_id}")).json()
        assert failed["status"] == "failed"
        assert failed["errors"]["data"][0]["code"] == "invalid_url"


@pytest.mark.anyio
async def test_generic_dialect() -> None:
    async with emulator_client(flavour="generic", finalizing_seconds=10.0) as (_emulator, http):
        uploaded = await http.post(
            "/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", _jsonl("a"))}
        )
        create = {
            "input_file_id": uploaded.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        }
        batch = (await http.post("/v1/batches", json=create)).json()
        assert batch["status"] == "Validating" and "request_counts" not in batch
        assert batch["created_at"] > 10**12  # milliseconds
        finalizing = (await http.get(f"/v1/batches/{batch['id']}")).json()
        assert finalizing["status"] == "Finalizing"
        assert finalizing["output_file_id"] is not None  # ids appear at finalizing


@pytest.mark.anyio
async def test_a_list_answered_as_a_bare_array_is_one_page() -> None:
    # Some servers answer GET /batches with a JSON array: the idempotency look-up still works.
    listed = [
        {"id": "b2", "status": "IN_PROGRESS", "created_at": "2026-01-01T00:00:00Z"},
        {"id": "b1", "status": "COMPLETED", "metadata": {"autobatcher_key": "k1"}},
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/batches"
        return httpx.Response(200, json=listed)

    config = BatcherConfig(api_key="k", base_url="https://api.together.xyz/v1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        wire = Wire(config, http)
        found = await wire.find_batch("autobatcher_key", "k1", not_older_than=0)
    assert found is not None and (found.id, found.status) == ("b1", "completed")


@pytest.mark.anyio
async def test_together_progress_percentages_are_reported_as_progress_events() -> None:
    recorder = Recorder()
    async with against("together", {"lines_per_second": 40}, event_hook=recorder) as (_, client):
        texts = [f"slow {i}" for i in range(8)]
        results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert [r.choices[0].message.content for r in results] == texts
    # beyond the status changes: one event per new percentage while in progress
    running = [e for e in recorder.kinds("batch_progress") if e.status == "in_progress"]
    assert len(running) >= 3
