"""The journal: what a crashed or restarted program needs to lose nothing and pay nothing twice.

Write-ahead, then act. Before a job's file is uploaded, the journal holds the job and the
custom_ids of its lines; before the batch is created, its file id and the fact that a create is
about to happen (``create_unsure``); after the create, the batch id. Results are committed
before the callers waiting for them are woken, together with the download offset, in one
transaction per downloaded chunk.

A request's identity survives a restart: its ``custom_id`` is derived from the hash of its
canonical form (base URL, endpoint, body with sorted keys) and its occurrence number among
identical requests of this run, so asking the same question three times gives three answers,
and the next run asking the same three times finds the same three.

When a program runs again with the same journal:

* a request already answered is answered from the journal, with no network call;
* a request whose batch is still running upstream is attached to that batch, which the new
  run polls and collects (a create that may have happened is looked up by its metadata key);
* a request that never reached a batch is batched as usual.

Batches of an earlier run are collected whether or not their callers come back; their
answers wait in the journal. The journal holds prompts and answers (never the API key):
keep the file private (it is created with mode 0600).

Storage goes through the small :class:`Store` protocol; :class:`SqliteStore` (stdlib
``sqlite3``, WAL, versioned schema) is the default. Its methods are synchronous and are called
from one worker thread at a time (``anyio.to_thread``), never on the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anyio
import attrs

from ._errors import AutobatcherError
from ._job import JobRecord, Phase
from ._wire import ResumeMark

__all__ = [
    "JournalBusyError",
    "JournalError",
    "JournalMeta",
    "JournalState",
    "ResubmissionLog",
    "ResubmissionNote",
    "SqliteStore",
    "Store",
    "key_fingerprint",
    "request_key",
]

logger = logging.getLogger("autobatcher")

#: 2: the ``resubmissions`` table (a journal of version 1 gains it when opened for writing)
#: 3: a job's custom_ids are one text in its row, and a chunk of results carries its own
#: custom_ids and line ends: no row per request (see "Storage" in SqliteStore). A journal
#: of an earlier version gains the columns when opened for writing; its rows still count.
SCHEMA_VERSION = 3
#: ``into_job`` of a resubmission row whose request went to the real-time endpoint
REALTIME = "realtime"
#: custom_ids per query of SqliteStore.results_for (SQLite's default limit is 999 variables)
_IDS_PER_QUERY = 500


class JournalError(AutobatcherError):
    """The journal cannot be used: unreadable, of a newer schema, written for another server
    or key, or not writable. Raised at construction, before anything is sent."""


class JournalBusyError(JournalError):
    """Another process (named in the message) is using this journal right now."""


@attrs.frozen
class JournalMeta:
    """What a journal is for: one server, one key (by fingerprint, never the key)."""

    base_url: str
    key_fingerprint: str


@attrs.frozen
class ResubmissionNote:
    """Requests of batch ``from_batch`` that went on, and why: into a new batch (``into``
    None until its job maps them) or to the real-time endpoint (``into`` = ``"realtime"``)."""

    custom_ids: list[str]
    reason: str
    from_batch: str | None
    into: str | None = None


@runtime_checkable
class ResubmissionLog(Protocol):
    """What a :class:`Store` may add to record resubmissions (``SqliteStore`` does); a store
    without it keeps everything else."""

    def save_resubmissions(self, notes: Sequence[ResubmissionNote]) -> None: ...


@attrs.frozen
class JournalState:
    """What a new run needs at start: answered requests and the jobs still open upstream."""

    done: frozenset[str]
    open_jobs: tuple[JobRecord, ...]


@runtime_checkable
class Store(Protocol):
    """Durable storage for one journal. Every method is synchronous and runs in a worker thread.

    A store must make each call atomic (all or nothing) and durable when it returns.
    Recording resubmissions is optional: a store with a ``save_resubmissions(notes)`` method
    (see :class:`ResubmissionLog`; :class:`SqliteStore` has one) gets them.
    """

    def open(self, meta: JournalMeta) -> None:
        """Claim the store for this process and check it was written for ``meta``.

        Called at construction of the client (so a bad journal fails there): keep it quick.
        """
        ...

    def load(self) -> JournalState:
        """What a new run needs: answered requests and open jobs (in a worker thread)."""
        ...

    def save_job(self, record: JobRecord, custom_ids: Sequence[str] | None = None) -> None:
        """Upsert the job's record; with ``custom_ids``, also map those requests (in line
        order) to this job."""
        ...

    def save_results(self, record: JobRecord, results: Sequence[tuple[str, bytes]]) -> None:
        """Store result lines by custom_id and the job's record (its offsets), atomically."""
        ...

    def result(self, custom_id: str) -> bytes | None:
        """The stored result line of one request, if any."""
        ...

    def close(self) -> None:
        """Release the store (and this process's claim on it)."""
        ...


def request_key(base_url: str, url: str, body_text: str) -> str:
    """The identity of a request's content (occurrences are counted on top of it)."""
    digest = hashlib.sha256(f"{base_url}\n{url}\n".encode())
    digest.update(body_text.encode())
    return digest.hexdigest()[:24]


def key_fingerprint(api_key: str | None) -> str:
    """A one-way fingerprint telling keys apart (the key itself is never stored)."""
    if not api_key:
        return ""
    return hashlib.sha256(b"autobatcher journal\n" + api_key.encode()).hexdigest()[:16]


_RECORD_FIELDS = tuple(f.name for f in attrs.fields(JobRecord) if f.name != "order")
_MARK_FIELDS = ("output_mark", "error_mark")


def _record_json(record: JobRecord) -> str:
    data = {name: getattr(record, name) for name in _RECORD_FIELDS}
    data["phase"] = int(record.phase)
    for name in _MARK_FIELDS:
        mark = data[name]
        data[name] = None if mark is None else mark.to_json()
    return json.dumps(data)


def _record_from(text: str, order: list[str]) -> JobRecord:
    data: dict[str, Any] = json.loads(text)
    data["phase"] = Phase(data["phase"])
    for name in _MARK_FIELDS:
        # (journals of older versions have none; a mark that does not read is only a cost)
        data[name] = ResumeMark.from_json(data.get(name))
    return JobRecord(order=order, **{k: v for k, v in data.items() if k in _RECORD_FIELDS})


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    phase INTEGER NOT NULL,
    batch_id TEXT,
    record TEXT NOT NULL,
    updated_at REAL NOT NULL,
    ids TEXT
);
CREATE TABLE IF NOT EXISTS requests (
    custom_id TEXT PRIMARY KEY,
    job_key TEXT,
    position INTEGER
);
CREATE INDEX IF NOT EXISTS requests_by_job ON requests (job_key, position);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL,
    ids TEXT,
    ends BLOB,
    job_key TEXT,
    done_at REAL
);
CREATE TABLE IF NOT EXISTS results (
    custom_id TEXT PRIMARY KEY,
    chunk INTEGER NOT NULL,
    start INTEGER NOT NULL,
    length INTEGER NOT NULL,
    done_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS resubmissions (
    id INTEGER PRIMARY KEY,
    custom_id TEXT NOT NULL,
    at REAL NOT NULL,
    reason TEXT NOT NULL,
    from_batch TEXT,
    into_job TEXT
);
CREATE INDEX IF NOT EXISTS resubmissions_unplaced ON resubmissions (custom_id)
    WHERE into_job IS NULL;
"""

# Schema 3 writes no row per request: SQLite inserts into an index keyed by custom_id (the
# hash of a request) land on random pages, and at a million requests those inserts cost
# more than everything else the journal does (~25 us a request, most of it in system calls
# reading and writing index pages). A job's custom_ids are one JSON text in its row, and
# a chunk of result lines (one blob per commit) carries its custom_ids and line ends. What
# a lookup by custom_id needs is built in memory when a run first asks for a stored answer.
# Rows of earlier versions (``requests``, ``results``) are still read.
_NOTE_RESUBMISSIONS = (
    "INSERT INTO resubmissions (custom_id, at, reason, from_batch, into_job) "
    "SELECT value, ?, ?, ?, ? FROM json_each(?)"
)
_PLACE_RESUBMISSIONS = (
    "UPDATE resubmissions SET into_job = ? WHERE into_job IS NULL "
    "AND custom_id IN (SELECT value FROM json_each(?))"
)
_UPSERT_JOB = (
    "INSERT INTO jobs (key, phase, batch_id, record, updated_at, ids) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET phase = excluded.phase, batch_id = excluded.batch_id, "
    "record = excluded.record, updated_at = excluded.updated_at, "
    "ids = coalesce(excluded.ids, jobs.ids)"
)
#: columns schema 3 added to tables a journal of an earlier version already has
_ADDED_COLUMNS = {
    "jobs": ("ids TEXT",),
    "chunks": ("ids TEXT", "ends BLOB", "job_key TEXT", "done_at REAL"),
}
#: a chunk's line ends: unsigned 64-bit, native order (the file never leaves this machine's
#: kind: a journal is a local file, as its lock is)
_ENDS = "Q"


def _line_ends(blob: bytes) -> array[int]:
    ends = array(_ENDS)
    ends.frombytes(blob)
    return ends


class SqliteStore:
    """The default store: one SQLite file (WAL), created with mode 0600.

    One process at a time: a lock file beside the journal (``PATH.lock``, an advisory
    ``flock`` the kernel releases when the process dies, however it dies) names the holder;
    a second process gets :class:`JournalBusyError` naming it, instead of racing the first.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock_file: int | None = None
        self._guard = threading.Lock()
        #: resubmission rows not yet given the job their requests went into
        self._unplaced = 0
        #: schema 3's columns are there (a journal of an earlier version opened read-only
        #: has none), and rows of schema 2 (``results``/``requests``) may be
        self._columns = True
        self._old_rows = False
        #: custom_id -> the chunk holding its answer (the first one stored), built on the
        #: first lookup and kept up to date by the writes after it
        self._chunk_of: dict[str, int] | None = None
        self._last_chunk: tuple[int, tuple[memoryview, dict[str, int], array[int]]] | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # -- opening ------------------------------------------------------------------------------

    def open(self, meta: JournalMeta) -> None:
        self._claim()
        try:
            db = self._connect(create=True)
            self._check_meta(db, meta)
            (self._unplaced,) = db.execute(
                "SELECT count(*) FROM resubmissions WHERE into_job IS NULL"
            ).fetchone()
        except BaseException:
            self.close()
            raise

    def load(self) -> JournalState:
        db = self._require()
        with self._guard:
            return self._load(db)

    def open_readonly(self) -> JournalMeta:
        """For inspection (``autobatcher journal status``): no claim, nothing written."""
        if not self.path.exists():
            raise JournalError(f"no journal at {self.path}")
        db = self._connect(create=False)
        rows = dict(db.execute("SELECT name, value FROM meta").fetchall())
        return JournalMeta(rows.get("base_url", ""), rows.get("key_fingerprint", ""))

    def _claim(self) -> None:
        import fcntl

        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot use journal {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise JournalBusyError(
                f"journal {self.path} is in use by {holder}; one process at a time may use a "
                "journal (wait for it, or give this run another journal)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self._lock_file = fd

    def _connect(self, *, create: bool) -> sqlite3.Connection:
        existed = self.path.exists()
        if not existed and create:
            try:
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            except OSError as exc:
                raise JournalError(f"cannot create journal {self.path}: {exc.strerror}") from exc
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                db.close()
                raise JournalError(
                    f"journal {self.path} has schema version {version}, newer than this "
                    f"autobatcher understands ({SCHEMA_VERSION}): upgrade autobatcher"
                )
            if create:
                db.execute("PRAGMA journal_mode=WAL")
                # WAL + NORMAL: a crashed process never loses a commit (a power cut may lose
                # the last ones); checkpoints every ~64 MB, not every 4 MB, cost far less
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA wal_autocheckpoint=16384")
                db.executescript(_SCHEMA)
                self._add_columns(db)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM requests").fetchone()
            db.execute("SELECT json_array_length('[1]')").fetchone()
            self._columns = all(
                column.split()[0] in self._columns_of(db, table)
                for table, columns in _ADDED_COLUMNS.items()
                for column in columns
            )
            self._old_rows = any(
                db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                for table in ("requests", "results")
            )
        except sqlite3.DatabaseError as exc:
            raise JournalError(
                f"journal {self.path} cannot be read ({exc}); it is not an autobatcher "
                "journal, or it is damaged"
            ) from exc
        if create:
            try:
                db.execute("BEGIN IMMEDIATE")
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                db.close()
                raise JournalError(f"journal {self.path} is not writable: {exc}") from exc
        self._db = db
        return db

    @staticmethod
    def _columns_of(db: sqlite3.Connection, table: str) -> set[str]:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}

    def _add_columns(self, db: sqlite3.Connection) -> None:
        """Give a journal of an earlier version schema 3's columns (its rows stay as they
        are, and are read as before)."""
        for table, columns in _ADDED_COLUMNS.items():
            have = self._columns_of(db, table)
            for column in columns:
                if column.split()[0] not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def _check_meta(self, db: sqlite3.Connection, meta: JournalMeta) -> None:
        rows = dict(db.execute("SELECT name, value FROM meta").fetchall())
        if not rows:
            with self._transaction(db):
                db.executemany(
                    "INSERT INTO meta (name, value) VALUES (?, ?)",
                    [
                        ("base_url", meta.base_url),
                        ("key_fingerprint", meta.key_fingerprint),
                        ("created_at", str(time.time())),
                    ],
                )
            return
        if rows.get("base_url") != meta.base_url:
            raise JournalError(
                f"journal {self.path} was written for {rows.get('base_url')}, not "
                f"{meta.base_url}: its batches live on that server (use another journal)"
            )
        if rows.get("key_fingerprint") != meta.key_fingerprint:
            raise JournalError(
                f"journal {self.path} was written with another API key; its batches may not be "
                "visible to this one (use the same key, or another journal)"
            )

    def _load(self, db: sqlite3.Connection) -> JournalState:
        done = frozenset(self._answered(db))
        owners = self._owners(db)
        open_jobs = []
        for key, text, ids in db.execute(
            f"SELECT key, record, {self._ids_column} FROM jobs WHERE phase < ? ORDER BY rowid",
            (int(Phase.DONE),),
        ).fetchall():
            open_jobs.append(_record_from(text, self._order(db, key, ids, owners)))
        return JournalState(done=done, open_jobs=tuple(open_jobs))

    @property
    def _ids_column(self) -> str:
        return "ids" if self._columns else "NULL"

    def _answered(self, db: sqlite3.Connection) -> set[str]:
        """Every custom_id with a stored answer."""
        done: set[str] = set()
        if self._old_rows:
            done.update(row[0] for row in db.execute("SELECT custom_id FROM results"))
        if self._columns:
            for (ids,) in db.execute("SELECT ids FROM chunks WHERE ids IS NOT NULL"):
                done.update(json.loads(ids))
        return done

    @staticmethod
    def _owners(db: sqlite3.Connection) -> dict[str, str]:
        """The job each resubmitted request went into last: the job it belongs to now (its
        earlier jobs still list it). A request sent to the real-time endpoint stays with
        the job it came from, as it did in schema 2."""
        if not db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'resubmissions'"
        ).fetchone():
            return {}
        return dict(
            db.execute(
                "SELECT custom_id, into_job FROM resubmissions WHERE into_job IS NOT NULL "
                "AND into_job != ? ORDER BY id",
                (REALTIME,),
            ).fetchall()
        )

    def _order(
        self, db: sqlite3.Connection, key: str, ids: str | None, owners: dict[str, str]
    ) -> list[str]:
        """A job's custom_ids in line order, less those that went on into another job."""
        if ids is not None:
            order: list[str] = json.loads(ids)
        elif self._old_rows:
            order = [
                row[0]
                for row in db.execute(
                    "SELECT custom_id FROM requests WHERE job_key = ? ORDER BY position", (key,)
                )
            ]
        else:
            order = []
        if owners:
            order = [custom_id for custom_id in order if owners.get(custom_id, key) == key]
        return order

    # -- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, db: sqlite3.Connection) -> Iterator[None]:
        with self._guard:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError(f"journal {self.path} is closed")
        return self._db

    def save_job(self, record: JobRecord, custom_ids: Sequence[str] | None = None) -> None:
        db = self._require()
        ids = None if custom_ids is None else json.dumps(list(custom_ids))
        with self._transaction(db):
            self._upsert_job(db, record, ids)
            if ids is not None and self._unplaced:
                # resubmitted requests: this is the job they went into
                placed = db.execute(_PLACE_RESUBMISSIONS, (record.key, ids)).rowcount
                self._unplaced = max(0, self._unplaced - placed)

    def save_resubmissions(self, notes: Sequence[ResubmissionNote]) -> None:
        """Record that requests went into a new batch (or to the real-time endpoint), and
        why; the job they go into is filled in by the :meth:`save_job` that maps them."""
        db = self._require()
        now = time.time()
        with self._transaction(db):
            for note in notes:
                db.execute(
                    _NOTE_RESUBMISSIONS,
                    (now, note.reason, note.from_batch, note.into, json.dumps(note.custom_ids)),
                )
                if note.into is None:
                    self._unplaced += len(note.custom_ids)

    def save_results(self, record: JobRecord, results: Sequence[tuple[str, bytes]]) -> None:
        db = self._require()
        ends = array(_ENDS)
        end = 0
        for _custom_id, line in results:
            end += len(line)
            ends.append(end)
        data = b"".join([line for _, line in results])
        ids = [custom_id for custom_id, _ in results]
        with self._transaction(db):
            chunk = None
            if results:
                chunk = db.execute(
                    "INSERT INTO chunks (data, ids, ends, job_key, done_at) VALUES (?, ?, ?, ?, ?)",
                    (data, json.dumps(ids), ends.tobytes(), record.key, time.time()),
                ).lastrowid
            self._upsert_job(db, record, None)
        chunk_of = self._chunk_of
        if chunk_of is not None and chunk is not None:
            for custom_id in ids:
                chunk_of.setdefault(custom_id, chunk)

    @staticmethod
    def _upsert_job(db: sqlite3.Connection, record: JobRecord, ids: str | None) -> None:
        row = (record.key, int(record.phase), record.batch_id, _record_json(record), time.time())
        db.execute(_UPSERT_JOB, (*row, ids))

    def result(self, custom_id: str) -> bytes | None:
        return self.results_for([custom_id])[0]

    def results_for(self, custom_ids: Sequence[str]) -> list[bytes | None]:
        """The stored result lines of many requests (None where there is none), reading each
        chunk they are in once: SQLite reads a blob from its start to reach an offset, so one
        line of a multi-megabyte chunk costs about a millisecond on its own."""
        db = self._require()
        lines: dict[str, bytes] = {}
        with self._guard:
            if self._old_rows:
                lines.update(self._old_results_for(db, custom_ids))
            if self._columns:
                chunk_of = self._chunks(db)
                by_chunk: dict[int, list[str]] = {}
                for custom_id in custom_ids:
                    chunk = chunk_of.get(custom_id)
                    if chunk is not None and custom_id not in lines:
                        by_chunk.setdefault(chunk, []).append(custom_id)
                for chunk, wanted in by_chunk.items():
                    read = self._read_chunk(db, chunk)
                    if read is None:  # (pruned meanwhile by nobody: one process at a time)
                        continue
                    data, position, ends = read
                    for custom_id in wanted:
                        at = position[custom_id]
                        lines[custom_id] = bytes(data[ends[at - 1] if at else 0 : ends[at]])
        return [lines.get(custom_id) for custom_id in custom_ids]

    def _read_chunk(
        self, db: sqlite3.Connection, chunk: int
    ) -> tuple[memoryview, dict[str, int], array[int]] | None:
        """A chunk's lines, where each custom_id's is, and their ends; the last one read is
        kept, since a run recalls its answers about in the order they were stored (a
        thousand at a time, from chunks of several thousand)."""
        last = self._last_chunk
        if last is not None and last[0] == chunk:
            return last[1]
        row = db.execute("SELECT data, ids, ends FROM chunks WHERE id = ?", (chunk,)).fetchone()
        if row is None:
            return None
        position: dict[str, int] = {}
        for at, custom_id in enumerate(json.loads(row[1])):
            position.setdefault(custom_id, at)
        read = (memoryview(row[0]), position, _line_ends(row[2]))
        self._last_chunk = (chunk, read)
        return read

    def _chunks(self, db: sqlite3.Connection) -> dict[str, int]:
        """custom_id -> the chunk holding its first stored answer (built once, on demand)."""
        chunk_of = self._chunk_of
        if chunk_of is None:
            chunk_of = {}
            for chunk, ids in db.execute(
                "SELECT id, ids FROM chunks WHERE ids IS NOT NULL ORDER BY id"
            ):
                for custom_id in json.loads(ids):
                    chunk_of.setdefault(custom_id, chunk)
            self._chunk_of = chunk_of
        return chunk_of

    @staticmethod
    def _old_results_for(db: sqlite3.Connection, custom_ids: Sequence[str]) -> dict[str, bytes]:
        """Answers stored by schema 2 (a row per answer in ``results``)."""
        where: dict[str, tuple[int, int, int]] = {}
        for at in range(0, len(custom_ids), _IDS_PER_QUERY):
            part = custom_ids[at : at + _IDS_PER_QUERY]
            marks = ",".join("?" * len(part))
            for custom_id, chunk, start, length in db.execute(
                f"SELECT custom_id, chunk, start, length FROM results WHERE custom_id IN ({marks})",
                part,
            ):
                where[custom_id] = (chunk, start, length)
        by_chunk: dict[int, list[str]] = {}
        for custom_id, (chunk, _start, _length) in where.items():
            by_chunk.setdefault(chunk, []).append(custom_id)
        lines: dict[str, bytes] = {}
        for chunk, ids in by_chunk.items():
            row = db.execute("SELECT data FROM chunks WHERE id = ?", (chunk,)).fetchone()
            if row is None:
                continue
            data = memoryview(row[0])
            for custom_id in ids:
                _chunk, start, length = where[custom_id]
                lines[custom_id] = bytes(data[start : start + length])
        return lines

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._lock_file is not None:
            os.close(self._lock_file)  # releases the flock
            self._lock_file = None

    # -- inspection (the ``autobatcher journal`` commands) ------------------------------------

    def jobs(self) -> list[tuple[JobRecord, int, int]]:
        """Every job with its request count and how many of its requests have a result."""
        db = self._require()
        answered = self._answered(db)
        owners = self._owners(db)
        out = []
        for key, text, ids in db.execute(
            f"SELECT key, record, {self._ids_column} FROM jobs ORDER BY rowid"
        ).fetchall():
            order = self._order(db, key, ids, owners)
            done = sum(1 for custom_id in order if custom_id in answered)
            out.append((_record_from(text, []), len(order), done))
        return out

    def batch_count(self) -> int:
        """How many jobs reached a batch (one query; :meth:`jobs` also counts every job's
        requests, a scan of the whole journal)."""
        db = self._require()
        (count,) = db.execute("SELECT count(*) FROM jobs WHERE batch_id IS NOT NULL").fetchone()
        return int(count)

    def results(self) -> Iterator[tuple[str, bytes]]:
        """Every stored answer (the first one of a request answered twice), in the order
        they were stored."""
        db = self._require()
        seen: set[str] = set()
        if self._old_rows:
            cursor = db.execute(
                "SELECT r.custom_id, substr(c.data, r.start + 1, r.length) FROM results r "
                "JOIN chunks c ON c.id = r.chunk ORDER BY r.chunk, r.start"
            )
            for custom_id, result in cursor:
                seen.add(custom_id)
                yield custom_id, bytes(result)
        if not self._columns:
            return
        cursor = db.execute("SELECT data, ids, ends FROM chunks WHERE ids IS NOT NULL ORDER BY id")
        for data, ids, ends_blob in cursor:
            ends = _line_ends(ends_blob)
            for at, custom_id in enumerate(json.loads(ids)):
                if custom_id not in seen:
                    seen.add(custom_id)
                    yield custom_id, bytes(data[ends[at - 1] if at else 0 : ends[at]])

    def resubmissions(self) -> list[tuple[str, str | None, str | None, str | None, int]]:
        """Every resubmission, grouped: (reason, from batch, into job, into batch, requests),
        in the order they happened. (None for a journal of schema 1: it kept none.)"""
        db = self._require()
        if not db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'resubmissions'"
        ).fetchone():
            return []
        rows = db.execute(
            "SELECT r.reason, r.from_batch, r.into_job, j.batch_id, count(*) "
            "FROM resubmissions r LEFT JOIN jobs j ON j.key = r.into_job "
            "GROUP BY r.reason, r.from_batch, r.into_job ORDER BY min(r.id)"
        ).fetchall()
        return [(str(a), b, c, d, int(n)) for a, b, c, d, n in rows]

    def counts(self) -> dict[str, int]:
        db = self._require()
        answered = self._answered(db)
        requests = set(answered)
        if self._old_rows:
            requests.update(row[0] for row in db.execute("SELECT custom_id FROM requests"))
        if self._columns:
            for (ids,) in db.execute("SELECT ids FROM jobs WHERE ids IS NOT NULL"):
                requests.update(json.loads(ids))
        return {
            "requests": len(requests),
            "answered": len(answered),
            "waiting": len(requests) - len(answered),
        }

    def prune(self, older_than_seconds: float) -> int:
        """Forget answered requests collected more than ``older_than_seconds`` ago (and the
        finished jobs, and the resubmission records, older than that with nothing left)."""
        db = self._require()
        cutoff = time.time() - older_than_seconds
        done = int(Phase.DONE)
        forgotten = 0
        with self._transaction(db):
            if self._old_rows:  # schema 2's rows
                db.execute(
                    "DELETE FROM requests WHERE custom_id IN "
                    "(SELECT custom_id FROM results WHERE done_at < ?)",
                    (cutoff,),
                )
                forgotten += db.execute("DELETE FROM results WHERE done_at < ?", (cutoff,)).rowcount
                db.execute(
                    "DELETE FROM chunks WHERE ids IS NULL AND id NOT IN "
                    "(SELECT DISTINCT chunk FROM results)"
                )
                db.execute(
                    "DELETE FROM jobs WHERE phase = ? AND ids IS NULL AND key NOT IN "
                    "(SELECT DISTINCT job_key FROM requests WHERE job_key NOT NULL)",
                    (done,),
                )
            old = db.execute(
                "SELECT ends FROM chunks WHERE ids IS NOT NULL AND done_at < ?", (cutoff,)
            ).fetchall()
            forgotten += sum(len(_line_ends(ends)) for (ends,) in old)
            db.execute("DELETE FROM chunks WHERE ids IS NOT NULL AND done_at < ?", (cutoff,))
            db.execute(
                "DELETE FROM jobs WHERE phase = ? AND ids IS NOT NULL AND updated_at < ? AND key "
                "NOT IN (SELECT DISTINCT job_key FROM chunks WHERE job_key NOT NULL)",
                (done, cutoff),
            )
            db.execute(
                "DELETE FROM resubmissions WHERE at < ? AND custom_id NOT IN "
                "(SELECT custom_id FROM requests)",
                (cutoff,),
            )
            self._chunk_of = None
            self._last_chunk = None
        return forgotten


class Journal:
    """The engine's side of a store: async, one worker thread at a time, never on the loop."""

    def __init__(self, store: Store, meta: JournalMeta) -> None:
        """Claims and checks ``store`` at once: a bad journal fails the constructor."""
        store.open(meta)
        self.store = store
        self.meta = meta
        self._limiter = anyio.CapacityLimiter(1)
        self._occurrences: dict[str, int] = {}
        #: answered requests (committed), and answers routed but not yet committed
        self.done: set[str] = set()
        self.uncommitted: dict[str, bytes] = {}
        self.state: JournalState | None = None
        self._opening: anyio.Event | None = None
        #: resubmissions noted since the last write (written with the next one)
        self._notes: list[ResubmissionNote] = []

    def note_resubmission(
        self, custom_ids: list[str], reason: str, from_batch: str | None, into: str | None = None
    ) -> None:
        """Requests went on from ``from_batch`` (see :class:`ResubmissionNote`). Kept in
        memory and written before the next write: the write-ahead of the job they go into,
        or the results of a real-time call."""
        if isinstance(self.store, ResubmissionLog):
            self._notes.append(ResubmissionNote(custom_ids, reason, from_batch, into))

    def _take_notes(self) -> list[ResubmissionNote]:
        """(on the loop) The notes to write with the next write."""
        notes, self._notes = self._notes, []
        return notes

    def _write_notes(self, notes: list[ResubmissionNote]) -> None:
        """(in the worker thread)"""
        if notes and isinstance(self.store, ResubmissionLog):
            self.store.save_resubmissions(notes)

    def custom_id(self, url: str, body_text: str) -> str:
        key = request_key(self.meta.base_url, url, body_text)
        occurrence = self._occurrences.get(key, 0) + 1
        self._occurrences[key] = occurrence
        return f"ab-{key}-{occurrence}"

    def item_custom_id(self, url: str, body_text: str, key: str) -> str:
        """The custom_id of a ``client.map()`` item: its content and the user's own key, so
        a later run over the same input finds each item's answer, and only its own."""
        digest = hashlib.sha256(f"{self.meta.base_url}\n{url}\n{len(key)}:{key}\n".encode())
        digest.update(body_text.encode())
        return f"ab-{digest.hexdigest()[:24]}-k"

    async def load(self) -> JournalState:
        """Load the store (once; concurrent callers wait for the first). The answered ids
        are then in :attr:`done` (the returned state's ``done`` is left empty)."""
        if self.state is not None:
            return self.state
        if self._opening is not None:
            await self._opening.wait()
            if self.state is None:
                raise JournalError("the journal could not be loaded (see the first error)")
            return self.state
        self._opening = anyio.Event()
        try:
            state = await anyio.to_thread.run_sync(self.store.load, limiter=self._limiter)
            self.done = set(state.done)
            # (``done`` lives on in ``self.done``: a million answered ids are ~100 MB a copy)
            self.state = state = attrs.evolve(state, done=frozenset())
            return state
        finally:
            self._opening.set()

    async def save_job(self, record: JobRecord, custom_ids: Sequence[str] | None = None) -> None:
        snapshot = attrs.evolve(record)  # the thread must see this moment's record
        store = self.store
        notes = self._take_notes()

        def write() -> None:
            self._write_notes(notes)
            store.save_job(snapshot, custom_ids)

        await anyio.to_thread.run_sync(write, limiter=self._limiter)

    async def save_results(self, record: JobRecord, results: Sequence[tuple[str, bytes]]) -> None:
        snapshot = attrs.evolve(record)
        store = self.store
        notes = self._take_notes()

        def write() -> None:
            self._write_notes(notes)
            store.save_results(snapshot, results)

        await anyio.to_thread.run_sync(write, limiter=self._limiter)
        for custom_id, _ in results:
            self.done.add(custom_id)
            self.uncommitted.pop(custom_id, None)

    async def result(self, custom_id: str) -> bytes | None:
        pending = self.uncommitted.get(custom_id)
        if pending is not None:
            return pending
        return await anyio.to_thread.run_sync(self.store.result, custom_id, limiter=self._limiter)

    async def results_for(self, custom_ids: Sequence[str]) -> list[bytes | None]:
        """Many stored answers in one trip to the worker thread (``SqliteStore`` reads each
        chunk once; another store is asked one id at a time)."""
        out: list[bytes | None] = [self.uncommitted.get(custom_id) for custom_id in custom_ids]
        missing = [cid for cid, line in zip(custom_ids, out, strict=True) if line is None]
        if not missing:
            return out
        store = self.store
        many = getattr(store, "results_for", None)

        def read() -> list[bytes | None]:
            if callable(many):
                found: list[bytes | None] = many(missing)
                return found
            return [store.result(custom_id) for custom_id in missing]

        found = iter(await anyio.to_thread.run_sync(read, limiter=self._limiter))
        return [line if line is not None else next(found) for line in out]

    async def aclose(self) -> None:
        store = self.store
        notes = self._take_notes()

        def close() -> None:
            try:
                self._write_notes(notes)
            except Exception as exc:  # (the answers are safe; only this record is lost)
                logger.warning("could not record %d resubmission(s): %s", len(notes), exc)
            finally:
                store.close()

        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(close, limiter=self._limiter)


def open_store(journal: str | os.PathLike[str] | Store) -> Store:
    if isinstance(journal, str | os.PathLike):
        return SqliteStore(journal)
    if isinstance(journal, Store):
        return journal
    raise TypeError("journal must be a path or an object implementing autobatcher.Store")
