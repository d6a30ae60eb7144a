"""The journal: re-running collects what was paid for, and a kill at any point pays nothing twice.

The kill tests run the client in a child process (``tests/_journal_child.py``, forked from a
fork server that has imported it) against the emulator served on 127.0.0.1 in a process of
its own, SIGKILL it at a point of the batch lifecycle, run the same program again, and check
with the emulator's own counts that every request was answered once, none was executed twice,
and no batch was created twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from autobatcher import (
    BatchOpenAI,
    ClientClosedError,
    JournalBusyError,
    JournalError,
    SqliteStore,
    Store,
    open_batcher,
)
from autobatcher._cli import main
from autobatcher.testing import IN_PROCESS_BASE_URL, Emulator

from ._journal_child import run_child
from ._support import API_KEY, chat, virtual_time, volume

CHILD_KEY = "sk-journal"


def journaled(emulator: Emulator, path: Path, **options: Any) -> BatchOpenAI:
    return BatchOpenAI(
        api_key=API_KEY,
        base_url=IN_PROCESS_BASE_URL,
        http_client=httpx.AsyncClient(transport=emulator.transport()),
        journal=path,
        **{"batch_window_seconds": 0.05, "poll_interval_seconds": 0.02, **options},
    )


async def ask_all(client: BatchOpenAI, texts: list[str]) -> list[tuple[str, str]]:
    """(response id, content) per question, in order."""
    out: list[tuple[str, str]] = [("", "")] * len(texts)

    async def one(index: int) -> None:
        reply = await client.chat.completions.create(**chat(texts[index]), temperature=0.7)
        out[index] = (reply.id, reply.choices[0].message.content or "")

    async with anyio.create_task_group() as tg:
        for index in range(len(texts)):
            tg.start_soon(one, index)
    return out


async def ask_until_the_crash(client: BatchOpenAI, texts: list[str]) -> None:
    """Callers of a program about to die: their ClientClosedError is the crash, not news."""

    async def one(text: str) -> None:
        try:
            await client.chat.completions.create(**chat(text), temperature=0.7)
        except ClientClosedError:
            pass

    async with anyio.create_task_group() as tg:
        for text in texts:
            tg.start_soon(one, text)


# -- re-running ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rerunning_a_finished_program_answers_from_the_journal_alone(tmp_path: Path) -> None:
    emulator = Emulator(api_key=API_KEY)
    path = tmp_path / "run.journal"
    texts = ["same", "same", "same", "other"]  # three identical questions: three answers
    async with journaled(emulator, path) as client:
        first = await ask_all(client, texts)
    calls_after_first = emulator.stats().api_calls
    executed = emulator.stats().executions
    same = json.dumps(chat("same") | {"temperature": 0.7}, sort_keys=True, separators=(",", ":"))
    assert executed[same] == 3
    assert len({reply_id for reply_id, _ in first}) == 4  # three distinct answers to "same"

    async with journaled(emulator, path) as client:
        second = await ask_all(client, texts)
    # identical concurrent questions are indistinguishable: which of them gets which of the
    # three answers follows the order they run in (trio shuffles it), the three answers do not
    assert sorted(second) == sorted(first)
    assert second[3] == first[3]
    assert emulator.stats().api_calls == calls_after_first  # no Files/Batches call at all
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.anyio
async def test_a_new_run_attaches_to_the_batch_an_earlier_run_left_running(tmp_path: Path) -> None:
    emulator = Emulator(api_key=API_KEY, lines_per_second=20.0)
    path = tmp_path / "run.journal"
    texts = [f"q{i}" for i in range(10)]
    submitted = anyio.Event()

    client = journaled(emulator, path, event_hook=lambda e: submitted.set())
    async with anyio.create_task_group() as tg:
        async with client:
            tg.start_soon(ask_until_the_crash, client, texts)
            await submitted.wait()
            tg.cancel_scope.cancel()  # the program is stopped with its batch running upstream
    assert emulator.stats().batches_created == 1
    assert emulator.stats().batches_by_status.get("cancelled", 0) == 0  # kept for the next run

    async with journaled(emulator, path) as client:
        answers = await ask_all(client, texts)
    assert [content for _, content in answers] == texts
    stats = emulator.stats()
    assert stats.batches_created == 1  # attached, never resubmitted
    assert stats.duplicate_executions == 0


@virtual_time()
@pytest.mark.anyio
async def test_a_batch_resumed_from_the_journal_is_polled_at_once(tmp_path: Path) -> None:
    """The earlier run's poll schedule was on its own clock: the next run asks at once
    instead of waiting a poll interval (an hour here) for a batch that may be long done."""
    emulator = Emulator(api_key=API_KEY)
    path = tmp_path / "run.journal"
    texts = ["a", "b", "c"]
    submitted = anyio.Event()
    client = journaled(
        emulator, path, poll_interval_seconds=3600, event_hook=lambda e: submitted.set()
    )
    async with anyio.create_task_group() as tg:
        async with client:
            tg.start_soon(ask_until_the_crash, client, texts)
            await submitted.wait()
            tg.cancel_scope.cancel()

    async with journaled(emulator, path, poll_interval_seconds=3600) as client:
        started = anyio.current_time()
        answers = await ask_all(client, texts)
        waited = anyio.current_time() - started
    assert [content for _, content in answers] == texts
    assert waited < 3600  # virtual time: exact, whatever the machine's load
    assert emulator.stats().batches_created == 1


@pytest.mark.anyio
async def test_collect_finishes_batches_nobody_asks_for_again(tmp_path: Path) -> None:
    emulator = Emulator(api_key=API_KEY, lines_per_second=20.0)
    path = tmp_path / "run.journal"
    submitted = anyio.Event()
    client = journaled(emulator, path, event_hook=lambda e: submitted.set())
    async with anyio.create_task_group() as tg:
        async with client:
            tg.start_soon(ask_until_the_crash, client, ["a", "b", "c"])
            await submitted.wait()
            tg.cancel_scope.cancel()

    async with journaled(emulator, path) as collector:
        await collector.collect()
    store = SqliteStore(path)
    store.open_readonly()
    assert store.counts() == {"requests": 3, "answered": 3, "waiting": 0}
    store.close()
    assert emulator.stats().batches_created == 1


def release(client: BatchOpenAI) -> None:
    """Close a client that was never used (it releases its claim on the journal)."""
    anyio.run(client.close)


# -- bad journals -------------------------------------------------------------------------------


def test_a_journal_that_is_not_one_is_refused_at_construction(tmp_path: Path) -> None:
    path = tmp_path / "garbage.journal"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match="cannot be read"):
        BatchOpenAI(api_key="k", journal=path)


def test_a_journal_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.journal"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(JournalError, match="schema version 99"):
        BatchOpenAI(api_key="k", journal=path)


def test_a_journal_of_another_server_or_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.journal"
    release(BatchOpenAI(api_key="k", base_url="http://127.0.0.1:1/v1", journal=path))
    with pytest.raises(JournalError, match=r"written for http://127\.0\.0\.1:1/v1"):
        BatchOpenAI(api_key="k", base_url="http://127.0.0.1:2/v1", journal=path)
    with pytest.raises(JournalError, match="another API key"):
        BatchOpenAI(api_key="other", base_url="http://127.0.0.1:1/v1", journal=path)


def test_the_api_key_is_never_stored(tmp_path: Path) -> None:
    path = tmp_path / "run.journal"
    secret = "sk-very-secret-value-123"
    release(BatchOpenAI(api_key=secret, base_url="http://127.0.0.1:1/v1", journal=path))
    for file in tmp_path.iterdir():
        assert secret.encode() not in file.read_bytes()


def test_a_place_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(JournalError, match="cannot use journal"):
        BatchOpenAI(api_key="k", journal=blocker / "run.journal")


def test_a_directory_is_not_a_journal(tmp_path: Path) -> None:
    with pytest.raises(JournalError):
        BatchOpenAI(api_key="k", journal=tmp_path)


def test_two_processes_one_journal_the_second_is_told_who_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "run.journal"
    # a documented real sleep: the holder, a process of its own, only holds the journal's
    # lock until the test kills it (the test waits for its "held", not for any time)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from autobatcher import BatchOpenAI; "
            f"c = BatchOpenAI(api_key='k', journal={str(path)!r}); print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(JournalBusyError, match=f"pid {holder.pid}"):
            BatchOpenAI(api_key="k", journal=path)
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: the journal is usable again
    release(BatchOpenAI(api_key="k", journal=path))


def test_a_store_object_is_accepted_and_a_wrong_one_refused(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "mine.journal")
    assert isinstance(store, Store)
    release(BatchOpenAI(api_key="k", journal=store))
    with pytest.raises(TypeError, match="Store"):
        BatchOpenAI(api_key="k", journal=42)  # type: ignore[arg-type]


# -- kill -9 at every point of the lifecycle ----------------------------------------------------

KILL_POINTS = [
    "window",  # requests wait in their lane; nothing journaled
    "mid-upload",  # the job's intent is journaled; the upload is in flight
    "after-upload",  # the file exists upstream; no batch yet
    "after-create",  # the batch exists upstream; its id is not recorded
    "poll",  # the batch id is recorded; polling
    "mid-download",  # the output is being read
    "after-commit",  # results are journaled; their callers not woken
]


def emulate_command(flags: tuple[str, ...], lines_per_second: float | None) -> list[str]:
    args = [sys.executable, "-m", "autobatcher", "emulate", "--port", "0", "--api-key", CHILD_KEY]
    if lines_per_second is not None:
        args += ["--lines-per-second", str(lines_per_second)]
    return [*args, *flags]


@asynccontextmanager
async def emulator_process(*flags: str, lines_per_second: float | None = 30) -> AsyncIterator[str]:
    """The emulator in a process of its own (``autobatcher emulate``); yields its base URL."""
    args = emulate_command(flags, lines_per_second)
    async with await anyio.open_process(args) as process:
        assert process.stdout is not None
        with anyio.fail_after(30):
            first = (await process.stdout.receive()).decode()
        base_url = first.split("serving at ", 1)[1].split()[0]
        try:
            yield base_url
        finally:
            process.terminate()
            with anyio.move_on_after(10, shield=True):
                await process.wait()
            if process.returncode is None:
                process.kill()


async def emulator_stats(base_url: str) -> dict[str, Any]:
    root = base_url.removesuffix("/v1")
    async with httpx.AsyncClient() as http:
        stats: dict[str, Any] = (await http.get(f"{root}/_emulator/stats")).json()
    return stats


async def _run_child(
    base_url: str, journal: Path, n: int, backend: str, pause: str | None, tag: str = ""
) -> str:
    """The child program once (see ``_journal_child.run_child``), from an async test."""
    return await anyio.to_thread.run_sync(run_child, base_url, str(journal), n, backend, pause, tag)


def _answers(output: str) -> dict[int, str]:
    line = next(line for line in output.splitlines() if line.startswith("ANSWERS "))
    return {int(k): v for k, v in json.loads(line.removeprefix("ANSWERS ")).items()}


@contextmanager
def emulator_process_sync(*flags: str, lines_per_second: float | None = 30) -> Iterator[str]:
    """``emulator_process`` for synchronous tests (and module fixtures)."""
    args = emulate_command(flags, lines_per_second)
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        yield first.split("serving at ", 1)[1].split()[0]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[str]:
    """One emulator process for the kill tests (each asks its own questions): its start-up
    is most of what a fresh one per test would cost. 120 lines a second: a batch of 12
    still runs when its program is killed polling it, and is done 0.1 s later."""
    with emulator_process_sync(lines_per_second=120) as base_url:
        yield base_url


def stats_sync(base_url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{base_url.removesuffix('/v1')}/_emulator/stats").json()
    return stats


@volume
@pytest.mark.anyio
@pytest.mark.parametrize("point", KILL_POINTS)
async def test_kill_9_then_rerun_answers_everything_once_and_pays_once(
    point: str, anyio_backend: tuple[str, Any], shared_emulator: str, tmp_path: Path
) -> None:
    backend = anyio_backend[0]
    n = 12
    tag = f"{point}-{backend}-{tmp_path.name}: "
    journal = tmp_path / "run.journal"
    base_url = shared_emulator
    before = await emulator_stats(base_url)
    assert await _run_child(base_url, journal, n, backend, point, tag) == "killed"
    output = await _run_child(base_url, journal, n, backend, None, tag)
    after = await emulator_stats(base_url)
    assert _answers(output) == {i: f"{tag}question {i}" for i in range(n)}
    mine = [count for body, count in after["executions"].items() if tag in body]
    assert sorted(mine) == [1] * n  # every request ran, and once
    assert after["batches_created"] - before["batches_created"] == 1


@pytest.mark.anyio
async def test_kill_9_under_random_faults_still_pays_once(
    anyio_backend: tuple[str, Any], tmp_path: Path
) -> None:
    backend = anyio_backend[0]
    n = 12
    journal = tmp_path / "run.journal"
    faults = ("--error-rate", "0.15", "--drop-rate", "0.1", "--fault-seed", "7")
    async with emulator_process(*faults) as base_url:
        assert await _run_child(base_url, journal, n, backend, "poll") == "killed"
        output = await _run_child(base_url, journal, n, backend, None)
        stats = await emulator_stats(base_url)
    assert _answers(output) == {i: f"question {i}" for i in range(n)}
    assert stats["duplicate_executions"] == 0
    assert stats["batches_created"] == 1


@pytest.mark.anyio
async def test_the_journal_holds_every_answer_before_its_caller_sees_it(tmp_path: Path) -> None:
    emulator = Emulator(api_key=API_KEY)
    path = tmp_path / "run.journal"
    seen_in_journal: list[bool] = []
    async with journaled(emulator, path) as client:
        reply = await client.chat.completions.create(**chat("hello"))
        db = sqlite3.connect(path)
        stored = [json.loads(ids) for (ids,) in db.execute("SELECT ids FROM chunks")]
        db.close()
        seen_in_journal.append(len(stored) == 1 and len(stored[0]) == 1)
    assert reply.choices[0].message.content == "hello"
    assert seen_in_journal == [True]


@pytest.mark.anyio
async def test_open_batcher_takes_a_journal_too(tmp_path: Path) -> None:
    emulator = Emulator(api_key=API_KEY)
    async with open_batcher(
        api_key=API_KEY,
        base_url=IN_PROCESS_BASE_URL,
        http_client=httpx.AsyncClient(transport=emulator.transport()),
        journal=tmp_path / "j",
        batch_window_seconds=0.01,
        poll_interval_seconds=0.01,
    ) as client:
        assert (await client.embeddings.create(model="e", input="x")).data


def journal_cli(capsys: pytest.CaptureFixture[str], journal: Path, *args: str) -> Any:
    """``autobatcher journal PATH --json ARGS`` run in this process; its JSON answer."""
    assert main(["journal", str(journal), "--json", *args]) == 0
    out = capsys.readouterr().out
    return json.loads(out) if args[0] != "export" else None


def test_the_journal_command_shows_collects_exports_and_prunes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CHILD_KEY)
    journal = tmp_path / "run.journal"
    exported = tmp_path / "out.jsonl"
    # every line runs at once: the batch is done upstream when the program dies polling it,
    # so collect's first poll finds it so (its next would come the default 5 s later)
    with emulator_process_sync(lines_per_second=None) as base_url:
        # a program dies polling its batch
        assert run_child(base_url, str(journal), 12, "asyncio", "poll") == "killed"
        before = journal_cli(capsys, journal, "status")
        assert before["waiting"] == 12
        assert before["jobs_by_phase"] == {"submitted": 1}
        (job,) = journal_cli(capsys, journal, "list")
        assert job["batch_id"].startswith("batch_")
        collected = journal_cli(capsys, journal, "collect")
        stats = stats_sync(base_url)
    assert collected == {"requests": 12, "answered": 12, "waiting": 0}
    assert stats["batches_created"] == 1
    after = journal_cli(capsys, journal, "status")
    assert after["jobs_by_phase"] == {"done": 1}
    assert after["tokens"]["total"] > 0
    journal_cli(capsys, journal, "export", "-o", str(exported))
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(job_ids(journal))
    assert all(line["response"]["status_code"] == 200 for line in lines)
    assert journal_cli(capsys, journal, "prune", "--older-than-days", "0") == {"pruned": 12}
    assert journal_cli(capsys, journal, "status")["requests"] == 0
    # and in words, for people
    assert main(["journal", str(journal), "status"]) == 0
    assert "requests: 0 (0 answered, 0 waiting)" in capsys.readouterr().out


def test_the_journal_command_cancels_what_an_earlier_run_left_running(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CHILD_KEY)
    journal = tmp_path / "run.journal"
    with emulator_process_sync(lines_per_second=0.5) as base_url:
        assert run_child(base_url, str(journal), 12, "asyncio", "poll") == "killed"
        (job,) = journal_cli(capsys, journal, "list")
        cancelled = journal_cli(capsys, journal, "cancel")
        assert cancelled == {"cancelled": [job["batch_id"]], "failed": {}}
        collected = journal_cli(capsys, journal, "collect")
        stats = stats_sync(base_url)
    assert stats["batches_by_status"] == {"cancelled": 1}
    # what ran before the cancel is kept; the rest never ran and is not charged
    assert collected["answered"] == stats["total_executions"] < 12


def test_the_journal_command_says_what_is_wrong_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert main(["journal", str(tmp_path / "missing"), "status"]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    journal = tmp_path / "run.journal"
    release(BatchOpenAI(api_key="k", base_url="http://127.0.0.1:1/v1", journal=journal))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["journal", str(journal), "collect"]) == 1
    assert "OPENAI_API_KEY" in capsys.readouterr().err


def job_ids(journal: Path) -> list[str]:
    """Every custom_id the journal's jobs carry (schema 3: a JSON list in each job's row)."""
    db = sqlite3.connect(journal)
    try:
        return [
            custom_id
            for (ids,) in db.execute("SELECT ids FROM jobs WHERE ids IS NOT NULL")
            for custom_id in json.loads(ids)
        ]
    finally:
        db.close()
