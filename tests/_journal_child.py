"""A program that asks N questions through a journaled client: the victim of the kill tests.

    python tests/_journal_child.py BASE_URL JOURNAL N BACKEND [PAUSE_AT]

With ``PAUSE_AT`` it prints ``PAUSED <point>`` and hangs at that point of the batch lifecycle,
so the test can kill it there with SIGKILL; without, it prints ``ANSWERS {json}`` at the end.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import time
from collections.abc import Sequence

import anyio
import httpx

from autobatcher import BatchOpenAI, SqliteStore
from autobatcher._job import JobRecord

API_KEY = "sk-journal"
#: makes this run's questions its own on an emulator that other runs share
TAG = os.environ.get("AB_CHILD_TAG", "")


def paused(point: str) -> None:
    print(f"PAUSED {point}", flush=True)


class _PausingStore(SqliteStore):
    """Hangs right after the first results are committed, before any caller is woken."""

    def save_results(self, record: JobRecord, results: Sequence[tuple[str, bytes]]) -> None:
        super().save_results(record, results)
        paused("after-commit")
        time.sleep(120)


async def main(base_url: str, journal: str, n: int, pause_at: str | None) -> None:
    async def on_request(request: httpx.Request) -> None:
        path = request.url.path
        if pause_at == "mid-upload" and request.method == "POST" and path.endswith("/files"):
            paused(pause_at)
            await anyio.sleep(120)
        if pause_at == "poll" and request.method == "GET" and "/batches/" in path:
            paused(pause_at)
            await anyio.sleep(120)

    creates: list[str] = []

    async def on_response(response: httpx.Response) -> None:
        request = response.request
        path = request.url.path
        if pause_at == "after-upload" and request.method == "POST" and path.endswith("/files"):
            paused(pause_at)
            await anyio.sleep(120)
        if pause_at == "after-create" and request.method == "POST" and path.endswith("/batches"):
            paused(pause_at)
            await anyio.sleep(120)
        if pause_at == "after-resubmit" and request.method == "POST" and path.endswith("/batches"):
            creates.append(path)
            if len(creates) == 2:  # the batch that took over what the first did not run
                paused(pause_at)
                await anyio.sleep(120)
        if pause_at == "mid-download" and path.endswith("/content"):
            paused(pause_at)
            await anyio.sleep(120)

    http = httpx.AsyncClient(event_hooks={"request": [on_request], "response": [on_response]})
    store = _PausingStore(journal) if pause_at == "after-commit" else SqliteStore(journal)
    answers: dict[int, str] = {}
    async with BatchOpenAI(
        api_key=API_KEY,
        base_url=base_url,
        http_client=http,
        journal=store,
        batch_window_seconds=60.0 if pause_at == "window" else 0.3,
        poll_interval_seconds=0.05,
        max_retries=5,
    ) as client:

        async def ask(index: int) -> None:
            reply = await client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"{TAG}question {index}"}],
            )
            answers[index] = reply.choices[0].message.content or ""

        async with anyio.create_task_group() as tg:
            for index in range(n):
                tg.start_soon(ask, index)
            if pause_at == "window":
                await anyio.wait_all_tasks_blocked()
                paused(pause_at)  # every request waits in its lane; nothing is uploaded
                await anyio.sleep(120)
    await http.aclose()
    print("ANSWERS " + json.dumps(answers), flush=True)


if __name__ == "__main__":
    # a child that hangs can be asked for its stacks: kill -USR1 PID
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    base_url, journal, count, backend = sys.argv[1:5]
    pause = sys.argv[5] if len(sys.argv) > 5 else None
    anyio.run(main, base_url, journal, int(count), pause, backend=backend)
