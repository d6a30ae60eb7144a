"""The emulator's opt-in unknown-model check (``known_models``), end to end."""

from __future__ import annotations

import httpx
import openai
import pytest

from autobatcher import NotFoundError
from autobatcher.testing import Emulator, EmulatorConfig, serve_emulator
from tests._support import chat, emulated, gather
from tests.test_emulator import chat_file, chat_line, content, create_batch, upload, wait_done

pytestmark = pytest.mark.anyio

KNOWN = ("gpt-4o-mini", "text-embedding-3-small")
MISSING_MESSAGE = "The model `gpt-nope` does not exist or you do not have access to it."
MISSING_BODY = {
    "error": {
        "message": MISSING_MESSAGE,
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    }
}


async def test_the_caller_of_an_unknown_model_gets_not_found() -> None:
    async with emulated({"known_models": KNOWN}) as (server, client):
        missing, known, vector = await gather(
            client.chat.completions.create(**chat("hi", model="gpt-nope")),
            client.chat.completions.create(**chat("hello")),
            client.embeddings.create(model="text-embedding-3-small", input="x"),
        )
        assert server.emulator.stats().batches_created == 3  # one per (endpoint, model)
    assert isinstance(missing, NotFoundError)
    assert missing.status_code == 404
    assert missing.code == "model_not_found"
    assert MISSING_MESSAGE in str(missing)
    assert known.choices[0].message.content == "hello"
    assert len(vector.data[0].embedding) == 8


@pytest.mark.loopback
async def test_an_unknown_model_line_has_openais_error_shape() -> None:
    async with (
        serve_emulator(known_models=KNOWN) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as http,
    ):
        data = chat_file(2) + (chat_line("bad", "x", model="gpt-nope") + "\n").encode()
        # One model per batch (OpenAI's rule) is checked first, so the odd line is alone.
        batch = await create_batch(http, await upload(http, data))
        assert (await wait_done(http, batch["id"]))["status"] == "failed"
        lone = (chat_line("bad", "x", model="gpt-nope") + "\n").encode()
        batch = await wait_done(http, (await create_batch(http, await upload(http, lone)))["id"])
        assert batch["status"] == "completed"
        assert batch["request_counts"] == {"total": 1, "completed": 0, "failed": 1}
        assert await content(http, batch["output_file_id"]) == []
        [line] = await content(http, batch["error_file_id"])
        assert line["custom_id"] == "bad"
        assert line["error"] is None
        assert line["response"]["status_code"] == 404
        assert line["response"]["body"] == MISSING_BODY
        # A real-time call answers the same body with HTTP 404.
        response = await http.post("/chat/completions", json=chat("x", model="gpt-nope"))
        assert response.status_code == 404
        assert response.json() == MISSING_BODY


@pytest.mark.loopback
async def test_every_model_is_known_by_default_and_the_list_can_change() -> None:
    async with (
        serve_emulator() as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as http,
    ):
        assert (await http.post("/chat/completions", json=chat("x", "any"))).status_code == 200
        admin = server.url + "/_emulator/config"
        answer = await http.post(admin, json={"known_models": ["only-this"]})
        assert answer.status_code == 200
        assert answer.json()["known_models"] == ["only-this"]
        assert (await http.post("/chat/completions", json=chat("x", "any"))).status_code == 404
        ok = await http.post("/chat/completions", json=chat("x", "only-this"))
        assert ok.status_code == 200
        # A moderation that names no model uses the default one and is not checked.
        moderation = await http.post("/moderations", json={"input": "fine"})
        assert moderation.status_code == 200
        named = await http.post("/moderations", json={"input": "fine", "model": "other"})
        assert named.status_code == 404


@pytest.mark.loopback
async def test_the_openai_sdk_sees_the_same_error() -> None:
    async with serve_emulator(known_models=KNOWN) as server:
        sdk = openai.AsyncOpenAI(
            base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=10
        )
        async with sdk:
            with pytest.raises(openai.NotFoundError) as caught:
                await sdk.chat.completions.create(
                    model="gpt-nope", messages=[{"role": "user", "content": "x"}]
                )
    assert caught.value.code == "model_not_found"
    assert caught.value.body == MISSING_BODY["error"]


def test_known_models_are_validated() -> None:
    assert EmulatorConfig(known_models="m").known_models == ("m",)
    assert EmulatorConfig(known_models=["a", "b"]).known_models == ("a", "b")
    assert EmulatorConfig().known_models is None
    with pytest.raises(ValueError, match="known_models"):
        EmulatorConfig(known_models=["a", ""])
    with pytest.raises(ValueError, match="known_models"):
        Emulator().configure(known_models=[7])


@pytest.mark.loopback
async def test_configure_applies_to_lines_not_yet_run() -> None:
    # The check happens when a line runs, so a list set mid-batch applies to the rest.
    emulator = Emulator(lines_per_second=1.0, validation_seconds=0.0, shuffle_output=False)
    async with (
        serve_emulator(emulator) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as http,
    ):
        batch = await create_batch(http, await upload(http, chat_file(1)))
        emulator.configure(known_models=["another"], lines_per_second=None)
        done = await wait_done(http, batch["id"])
        [line] = await content(http, done["error_file_id"])
        assert line["response"]["status_code"] == 404
        assert line["response"]["body"]["error"]["code"] == "model_not_found"
