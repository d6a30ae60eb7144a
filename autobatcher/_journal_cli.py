"""``autobatcher journal PATH status|list|collect|export|cancel|prune``.

Plain text for people; ``--json`` for scripts. ``collect`` and ``cancel`` talk to the server
the journal was written for, with the key from ``OPENAI_API_KEY`` (never a command-line
argument, which ``ps`` would show).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio

from ._config import BatcherConfig
from ._errors import APIError, AutobatcherError
from ._job import Phase
from ._journal import REALTIME, JournalError, SqliteStore
from ._wire import Wire

__all__ = ["add_journal_parser", "run_journal_command"]


def add_journal_parser(commands: Any) -> None:
    journal = commands.add_parser(
        "journal",
        help="inspect, collect, export or cancel what a journal holds",
        description="Work with a journal written by BatchOpenAI(journal=PATH).",
    )
    journal.add_argument("path", metavar="PATH", help="the journal file (required)")
    journal.add_argument(
        "--json", action="store_true", help="print JSON instead of text (default: text)"
    )
    actions = journal.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    actions.add_parser("status", help="requests by state, batches by phase, tokens used so far")
    actions.add_parser("list", help="one line per batch job")
    actions.add_parser(
        "collect",
        help="poll and download every open batch until it ends (needs OPENAI_API_KEY)",
    )
    export = actions.add_parser("export", help="write every stored result line as JSONL")
    export.add_argument(
        "-o", "--output", required=True, help="the JSONL file to write, '-' for stdout (required)"
    )
    actions.add_parser("cancel", help="cancel the journal's open upstream batches")
    prune = actions.add_parser("prune", help="forget answered requests collected long ago")
    prune.add_argument(
        "--older-than-days",
        type=float,
        required=True,
        metavar="DAYS",
        help="drop answers collected more than DAYS days ago (required)",
    )


@contextmanager
def _store(path: str) -> Iterator[SqliteStore]:
    store = SqliteStore(path)
    store.open_readonly()
    try:
        yield store
    finally:
        store.close()


def _usage(line: bytes) -> tuple[int, int]:
    try:
        body = json.loads(line)["response"]["body"]
        usage = body.get("usage") or {}
        prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0
        completion = usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0
        return int(prompt), int(completion)
    except (ValueError, KeyError, TypeError, AttributeError):
        return 0, 0


def _status(store: SqliteStore) -> dict[str, Any]:
    counts = store.counts()
    phases: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for record, _total, _done in store.jobs():
        name = Phase(record.phase).name.lower()
        phases[name] = phases.get(name, 0) + 1
        if record.status is not None:  # the upstream status last seen (``finalizing`` …)
            statuses[record.status] = statuses.get(record.status, 0) + 1
    prompt = completion = 0
    for _custom_id, line in store.results():
        used = _usage(line)
        prompt += used[0]
        completion += used[1]
    moves: list[dict[str, Any]] = [
        {
            "requests": count,
            "reason": reason,
            "from_batch": from_batch,
            "into": "realtime" if into_job == REALTIME else "batch",
            "into_job": None if into_job == REALTIME else into_job,
            "into_batch": into_batch,
        }
        for reason, from_batch, into_job, into_batch, count in store.resubmissions()
    ]
    by_reason: dict[str, int] = {}
    for reason, _from, _into, _batch, count in store.resubmissions():
        by_reason[reason] = by_reason.get(reason, 0) + count
    return {
        **counts,
        "jobs_by_phase": phases,
        "batches_by_status": statuses,
        "tokens": {"prompt": prompt, "completion": completion, "total": prompt + completion},
        "resubmissions": {
            "requests": sum(by_reason.values()),
            "by_reason": by_reason,
            "moves": moves,
        },
    }


def _move_text(move: dict[str, Any]) -> str:
    if move["into"] == "realtime":
        where = "to the real-time endpoint"
    elif move["into_job"] is None:
        where = "not in a batch yet"
    else:
        where = f"into {move['into_batch'] or 'job ' + move['into_job']}"
    return f"  {move['requests']} from {move['from_batch'] or '-'} {where}: {move['reason']}"


def _jobs(store: SqliteStore) -> list[dict[str, Any]]:
    return [
        {
            "key": record.key,
            "phase": Phase(record.phase).name.lower(),
            "status": record.status,
            "batch_id": record.batch_id,
            "file_id": record.file_id,
            "endpoint": record.endpoint,
            "model": record.model,
            "requests": total,
            "answered": done,
        }
        for record, total, done in store.jobs()
    ]


def run_journal_command(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (AutobatcherError, OSError) as exc:
        print(f"autobatcher journal: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    action = args.action
    if action in ("status", "list"):
        with _store(args.path) as store:
            data: Any = _status(store) if action == "status" else _jobs(store)
        if args.json:
            print(json.dumps(data, indent=1))
        elif action == "status":
            print(
                f"requests: {data['requests']} ({data['answered']} answered, "
                f"{data['waiting']} waiting)"
            )
            phases = ", ".join(f"{n} {p}" for p, n in sorted(data["jobs_by_phase"].items()))
            print(f"batch jobs: {phases or 'none'}")
            statuses = ", ".join(f"{n} {s}" for s, n in sorted(data["batches_by_status"].items()))
            print(f"upstream batches: {statuses or 'none'}")
            tokens = data["tokens"]
            print(
                f"tokens: {tokens['prompt']} prompt + {tokens['completion']} completion = "
                f"{tokens['total']}"
            )
            resubmissions = data["resubmissions"]
            print(f"resubmitted: {resubmissions['requests']} requests")
            for move in resubmissions["moves"]:
                print(_move_text(move))
        else:
            for job in data:
                print(
                    f"{job['key']}  {job['phase']:<9} {job['status'] or '-':<11} "
                    f"{job['batch_id'] or '-':<40} "
                    f"{job['answered']}/{job['requests']} answered  {job['model']}"
                )
        return 0
    if action == "export":
        with _store(args.path) as store:
            out = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")  # noqa: SIM115
            try:
                count = 0
                for _custom_id, line in store.results():
                    out.write(line.rstrip(b"\n") + b"\n")
                    count += 1
            finally:
                if out is not sys.stdout.buffer:
                    out.close()
        if args.output != "-":
            print(f"wrote {count} result lines to {args.output}", file=sys.stderr)
        return 0
    if action == "prune":
        store = SqliteStore(args.path)
        meta = store.open_readonly()
        store.close()
        store = SqliteStore(args.path)
        store.open(meta)
        try:
            dropped = store.prune(args.older_than_days * 86400.0)
        finally:
            store.close()
        print(json.dumps({"pruned": dropped}) if args.json else f"pruned {dropped} answers")
        return 0
    return anyio.run(_remote, args)


async def _remote(args: argparse.Namespace) -> int:
    """``collect`` and ``cancel``: they need the server, and so the key."""
    from ._facade import BatchOpenAI

    probe = SqliteStore(args.path)
    meta = probe.open_readonly()
    probe.close()
    if not os.environ.get("OPENAI_API_KEY"):
        raise JournalError("set OPENAI_API_KEY to the key this journal was written with")
    if args.action == "collect":
        client = BatchOpenAI(base_url=meta.base_url, journal=args.path)
        async with client:
            await client.collect()
        with _store(args.path) as store:
            counts = store.counts()
        print(
            json.dumps(counts)
            if args.json
            else f"collected: {counts['answered']} answered, {counts['waiting']} without an answer"
        )
        return 0
    # cancel: every batch the journal still follows
    with _store(args.path) as store:
        open_batches = [
            record.batch_id
            for record, _total, _done in store.jobs()
            if record.phase < Phase.DONE and record.batch_id
        ]
    wire = Wire(BatcherConfig(base_url=meta.base_url))
    cancelled: list[str] = []
    failed: dict[str, str] = {}
    try:
        for batch_id in open_batches:
            try:
                await wire.cancel_batch(batch_id)
                cancelled.append(batch_id)
            except APIError as exc:
                failed[batch_id] = str(exc)
    finally:
        await wire.aclose()
    if args.json:
        print(json.dumps({"cancelled": cancelled, "failed": failed}))
    else:
        for batch_id in cancelled:
            print(f"cancelled {batch_id} (collect it to keep what finished)")
        for batch_id, why in failed.items():
            print(f"could not cancel {batch_id}: {why}", file=sys.stderr)
    return 0 if not failed else 1
