"""Every resubmission is on record: events say which requests went on, why, from which batch
(``batch_resubmitted`` / ``batch_escalated``) and the ``batch_submitted`` of the batch that
took them says so; the journal keeps the same (one row per request: reason, from batch, into
job), and ``autobatcher journal PATH status`` shows it. A journal of schema 1 still opens.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from autobatcher import BatchOpenAI, SqliteStore
from autobatcher._cli import main
from autobatcher._journal import SCHEMA_VERSION
from autobatcher.types import ChatCompletion

from ._support import Recorder, chat, gather, in_process, virtual_time

pytestmark = pytest.mark.anyio

EXPIRED = "batch expired before running them"


def status(capsys: pytest.CaptureFixture[str], journal: Path, *, text: bool = False) -> Any:
    args = ["journal", str(journal)] + ([] if text else ["--json"]) + ["status"]
    assert main(args) == 0
    out = capsys.readouterr().out
    return out if text else json.loads(out)


@virtual_time()
async def test_events_and_the_journal_say_which_requests_went_where_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 40 requests, 10 lines a second, expiry after 3 s: 30 run, 10 go into a second batch.
    journal = tmp_path / "run.journal"
    recorder = Recorder()
    texts = [f"l{i}" for i in range(40)]
    async with in_process(lines_per_second=10.0, expire_after_seconds=3.0) as server:
        async with BatchOpenAI(
            **server.options(
                batch_size=40, poll_interval_seconds=0.5, journal=journal, event_hook=recorder
            )
        ) as client:
            results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
    assert all(isinstance(r, ChatCompletion) for r in results)
    assert server.emulator.stats().duplicate_executions == 0
    expired_batch = next(b for b in server.emulator.batches.values() if b.status == "expired")
    second_batch = next(b for b in server.emulator.batches.values() if b.status == "completed")
    unrun = {cid for cid, *_ in expired_batch.requests} - {
        json.loads(line)["custom_id"] for line in expired_batch.output_lines
    }
    assert len(unrun) == 10
    # events: which, why, from where; and the batch that took them says so
    (moved,) = recorder.kinds("batch_resubmitted")
    assert (moved.requests, moved.detail, moved.batch_id) == (10, EXPIRED, expired_batch.id)
    assert set(moved.custom_ids) == unrun
    submitted = {e.batch_id: e for e in recorder.kinds("batch_submitted")}
    assert submitted[expired_batch.id].detail is None
    assert submitted[expired_batch.id].custom_ids == ()
    assert submitted[second_batch.id].detail == (
        f"carries 10 request(s) resubmitted from {expired_batch.id}"
    )
    assert set(submitted[second_batch.id].custom_ids) == unrun
    # the journal: the same, with the batch they went into
    data = status(capsys, journal)
    assert data["resubmissions"] == {
        "requests": 10,
        "by_reason": {EXPIRED: 10},
        "moves": [
            {
                "requests": 10,
                "reason": EXPIRED,
                "from_batch": expired_batch.id,
                "into": "batch",
                "into_job": data["resubmissions"]["moves"][0]["into_job"],
                "into_batch": second_batch.id,
            }
        ],
    }
    store = SqliteStore(journal)
    store.open_readonly()
    try:
        rows = store._require().execute("SELECT custom_id FROM resubmissions").fetchall()
    finally:
        store.close()
    assert {row[0] for row in rows} == unrun
    text = status(capsys, journal, text=True)
    assert "resubmitted: 10 requests" in text
    assert f"  10 from {expired_batch.id} into {second_batch.id}: {EXPIRED}" in text


@virtual_time()
async def test_the_journal_records_escalations_to_the_realtime_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "run.journal"
    recorder = Recorder()
    async with in_process(lines_per_second=1.0, expire_after_seconds=4.0) as server:
        async with BatchOpenAI(
            **server.options(
                batch_size=10,
                poll_interval_seconds=0.5,
                journal=journal,
                on_expired="realtime",
                event_hook=recorder,
            )
        ) as client:
            results = await gather(
                *[client.chat.completions.create(**chat(f"e{i}")) for i in range(10)]
            )
    assert all(isinstance(r, ChatCompletion) for r in results)
    (escalated,) = recorder.kinds("batch_escalated")
    assert escalated.requests == len(escalated.custom_ids) == 6
    data = status(capsys, journal)
    (move,) = data["resubmissions"]["moves"]
    assert move["into"] == "realtime"
    assert move["requests"] == 6
    assert move["from_batch"] == escalated.batch_id
    assert "to the real-time endpoint" in status(capsys, journal, text=True)


async def test_a_journal_of_schema_1_opens_and_gains_the_resubmissions_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "old.journal"
    async with in_process() as server:
        async with BatchOpenAI(**server.options(journal=journal)) as client:
            first = await client.chat.completions.create(**chat("old"))
        # as version 1 wrote it: no resubmissions table
        db = sqlite3.connect(journal)
        db.execute("DROP TABLE resubmissions")
        db.execute("PRAGMA user_version=1")
        db.commit()
        db.close()
        # read-only inspection of the old file works (it shows no resubmissions) …
        data = status(capsys, journal)
        assert data["resubmissions"] == {"requests": 0, "by_reason": {}, "moves": []}
        assert data["answered"] == 1
        # … and a client opens it, answers from it, and upgrades it
        async with BatchOpenAI(**server.options(journal=journal)) as client:
            again = await client.chat.completions.create(**chat("old"))
        assert again.to_dict() == first.to_dict()
        assert server.emulator.stats().batches_created == 1
    db = sqlite3.connect(journal)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT count(*) FROM resubmissions").fetchone()[0] == 0
    finally:
        db.close()


@virtual_time()
async def test_quota_rejections_are_on_record_and_a_second_run_pays_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "run.journal"
    texts = [f"q{i}" for i in range(30)]
    quota = "batch rejected over the enqueued-token quota (token_limit_exceeded)"
    async with in_process(enqueued_token_limit=450, lines_per_second=50.0) as server:
        for run in range(2):
            async with BatchOpenAI(
                **server.options(batch_size=10, poll_interval_seconds=0.5, journal=journal)
            ) as client:
                results = await gather(*[client.chat.completions.create(**chat(t)) for t in texts])
            assert [r.choices[0].message.content for r in results] == texts
            if run == 0:
                stats = server.emulator.stats()
                assert stats.duplicate_executions == 0
                rejected = stats.batches_by_status.get("failed", 0)
                assert rejected >= 1
                server.emulator.reset_stats()
        assert server.emulator.stats().api_calls == 0  # the second run: all from the journal
    data = status(capsys, journal)["resubmissions"]
    assert data["by_reason"] == {quota: 10 * rejected}
    completed = {b.id for b in server.emulator.batches.values() if b.status == "completed"}
    # each move went into a batch that completed, or that was rejected in turn and moved
    # on (a chain: which happens depends on how the waiting batches line up)
    moved_on = {move["from_batch"] for move in data["moves"]}
    assert all(
        move["into_batch"] in completed or move["into_batch"] in moved_on for move in data["moves"]
    )


def _as_schema_2(journal: Path) -> None:
    """Rewrite a journal as schema 2 stored it: a ``requests`` row per request and a
    ``results`` row per answer, no ``ids``/``ends`` columns."""
    db = sqlite3.connect(journal)
    try:
        for key, ids in db.execute("SELECT key, ids FROM jobs WHERE ids IS NOT NULL").fetchall():
            for position, custom_id in enumerate(json.loads(ids)):
                db.execute(
                    "INSERT INTO requests (custom_id, job_key, position) VALUES (?, ?, ?)",
                    (custom_id, key, position),
                )
        rows = db.execute("SELECT id, ids, ends, done_at FROM chunks").fetchall()
        for chunk, ids, ends_blob, done_at in rows:
            ends = [
                int.from_bytes(ends_blob[i : i + 8], sys.byteorder)
                for i in range(0, len(ends_blob), 8)
            ]
            for at, custom_id in enumerate(json.loads(ids)):
                start = ends[at - 1] if at else 0
                db.execute(
                    "INSERT INTO results (custom_id, chunk, start, length, done_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (custom_id, chunk, start, ends[at] - start, done_at),
                )
        for column in ("ids", "ends", "job_key", "done_at"):
            db.execute(f"ALTER TABLE chunks DROP COLUMN {column}")
        db.execute("ALTER TABLE jobs DROP COLUMN ids")
        db.execute("PRAGMA user_version=2")
        db.commit()
    finally:
        db.close()


async def test_a_journal_of_schema_2_is_read_as_before_and_goes_on_in_schema_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "v2.journal"
    async with in_process() as server:
        async with BatchOpenAI(**server.options(journal=journal)) as client:
            first = await gather(
                *(client.chat.completions.create(**chat(f"old {i}")) for i in range(3))
            )
        _as_schema_2(journal)
        # read-only inspection of the old file (its columns are not added) …
        data = status(capsys, journal)
        assert (data["requests"], data["answered"], data["waiting"]) == (3, 3, 0)
        assert main(["journal", str(journal), "export", "-o", "-"]) == 0
        exported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert sorted(
            line["response"]["body"]["choices"][0]["message"]["content"] for line in exported
        ) == [
            "old 0",
            "old 1",
            "old 2",
        ]
        # … and a client answers from its rows, then adds new answers in schema 3
        async with BatchOpenAI(**server.options(journal=journal)) as client:
            again = await gather(
                *(client.chat.completions.create(**chat(f"old {i}")) for i in range(3))
            )
            new = await client.chat.completions.create(**chat("new"))
        assert [reply.to_dict() for reply in again] == [reply.to_dict() for reply in first]
        assert new.choices[0].message.content == "new"
        assert server.emulator.stats().batches_created == 2  # the old three were not sent again
    db = sqlite3.connect(journal)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT count(*) FROM results").fetchone()[0] == 3
        assert db.execute("SELECT count(*) FROM chunks WHERE ids IS NOT NULL").fetchone()[0] == 1
    finally:
        db.close()
    data = status(capsys, journal)
    assert (data["requests"], data["answered"], data["waiting"]) == (4, 4, 0)
    # and pruning forgets the answers of both kinds
    assert main(["journal", "--json", str(journal), "prune", "--older-than-days", "0"]) == 0
    assert json.loads(capsys.readouterr().out) == {"pruned": 4}
    assert status(capsys, journal)["requests"] == 0
