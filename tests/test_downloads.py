"""Big result files: a download that breaks resumes where it stopped, on both backends.

A result file is read by ``Wire.stream_lines``; when its connection drops half-way (the
emulator's ``content_drop_after_bytes``), the rest comes by ``Range`` from the end of the last
whole line, or, from a server that ignores ranges, by skipping the bytes already read in a new
whole answer (or by the server's line ``offset``, where it has one). Every test checks that
each line reached the sink exactly once, in order, and counts the bytes the emulator sent.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from autobatcher import APIConnectionError, BatchEvent, BatchOpenAI, ClientClosedError, open_batcher
from autobatcher._config import BatcherConfig
from autobatcher._job import JobRecord
from autobatcher._journal import _record_from, _record_json
from autobatcher._jsonl import encode_line
from autobatcher._retry import RetryPolicy
from autobatcher._wire import ResumeMark, Wire
from autobatcher.testing import IN_PROCESS_BASE_URL, Emulator, emulator_client, serve_emulator

from ._support import API_KEY, FAST, chat, in_process, virtual_time

pytestmark = pytest.mark.anyio


def result_lines(count: int, width: int = 100, *, big: dict[int, int] | None = None) -> list[bytes]:
    """``count`` result-like lines of about ``width`` bytes (line i of ``big[i]`` bytes)."""
    lines = []
    for index in range(count):
        size = (big or {}).get(index, width)
        head = b'{"custom_id":"r%06d","pad":"' % index
        lines.append(head + b"x" * max(size - len(head) - 3, 0) + b'"}\n')
    return lines


def line_start_before(lines: list[bytes], position: int) -> int:
    """The byte where the line holding byte ``position - 1`` starts (the end of the last
    line wholly inside the first ``position`` bytes)."""
    start = 0
    for line in lines:
        if start + len(line) > position:
            return start
        start += len(line)
    return start


class Download:
    """A wire on one emulator, and what one download sank."""

    def __init__(self, emulator: Emulator, http: httpx.AsyncClient, base_url: str) -> None:
        self.emulator = emulator
        self.requests: list[httpx.Request] = []
        self.statuses: list[int] = []
        http.event_hooks["request"].append(self._request)
        http.event_hooks["response"].append(self._response)
        config = BatcherConfig(api_key=API_KEY, base_url=base_url, max_retries=5)
        self.wire = Wire(config, http, policy=RetryPolicy(max_retries=5, sleep_scale=0))

    async def _request(self, request: httpx.Request) -> None:
        self.requests.append(request)

    async def _response(self, response: httpx.Response) -> None:
        self.statuses.append(response.status_code)

    def upload(self, lines: list[bytes]) -> str:
        return self.emulator.upload("results.jsonl", "batch", b"".join(lines)).id

    async def read(self, file_id: str, **options: Any) -> list[bytes]:
        got: list[bytes] = []
        seen, more = await self.wire.stream_lines(file_id, got.append, **options)
        assert seen == len(got) + options.get("offset", 0)
        assert not more
        return got

    def ranges(self) -> list[str | None]:
        return [request.headers.get("range") for request in self.requests]


@asynccontextmanager
async def in_memory(**config: Any) -> AsyncIterator[Download]:
    async with emulator_client(api_key=API_KEY, **config) as (emulator, http):
        yield Download(emulator, http, IN_PROCESS_BASE_URL)


@asynccontextmanager
async def on_loopback(**config: Any) -> AsyncIterator[Download]:
    async with (
        serve_emulator(api_key=API_KEY, **config) as server,
        httpx.AsyncClient(timeout=30) as http,
    ):
        yield Download(server.emulator, http, server.base_url)


both_ways = pytest.mark.parametrize(
    "connect",
    [
        pytest.param(in_memory, id="in-process"),
        pytest.param(on_loopback, id="loopback", marks=pytest.mark.loopback),
    ],
)


def stripped(lines: list[bytes]) -> list[bytes]:
    return [line.rstrip(b"\n") for line in lines]


# -- the emulator's side ------------------------------------------------------------------------


@both_ways
async def test_the_emulator_serves_ranges_and_cuts_downloads(connect: Any) -> None:
    async with connect() as download:
        data = b"".join(result_lines(50))
        file_id = download.upload(result_lines(50))
        http = download.wire.http_client
        url = download.wire.url(f"files/{file_id}/content")
        auth = {"Authorization": f"Bearer {API_KEY}"}
        whole = await http.get(url, headers=auth)
        assert whole.headers["accept-ranges"] == "bytes" and whole.content == data
        part = await http.get(url, headers={**auth, "Range": "bytes=1000-"})
        assert part.status_code == 206 and part.content == data[1000:]
        assert part.headers["content-range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
        tail = await http.get(url, headers={**auth, "Range": "bytes=-7"})
        assert tail.status_code == 206 and tail.content == data[-7:]
        past = await http.get(url, headers={**auth, "Range": f"bytes={len(data)}-"})
        assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
        stale = await http.get(url, headers={**auth, "Range": "bytes=5-", "If-Range": '"old"'})
        assert stale.status_code == 200 and stale.content == data
        several = await http.get(url, headers={**auth, "Range": "bytes=0-1,5-6"})
        assert several.status_code == 200 and several.content == data

        download.emulator.configure(content_ranges=False)
        ignored = await http.get(url, headers={**auth, "Range": "bytes=1000-"})
        assert ignored.status_code == 200 and "accept-ranges" not in ignored.headers

        download.emulator.reset_stats()
        download.emulator.configure(content_drop_after_bytes=777, content_drops=2)
        for _ in range(2):
            received = b""
            with pytest.raises(httpx.RemoteProtocolError):
                async with http.stream("GET", url, headers=auth) as response:
                    async for chunk in response.aiter_bytes():
                        received += chunk
            assert received == data[:777]
        assert (await http.get(url, headers=auth)).content == data  # two drops, then whole
        stats = download.emulator.stats()
    assert stats.faults_by_kind == {"content_drop": 2}
    assert stats.content_bytes == 2 * 777 + len(data)


# -- resuming by Range --------------------------------------------------------------------------


@both_ways
async def test_a_drop_mid_line_resumes_from_the_last_whole_line(connect: Any) -> None:
    lines = result_lines(400)
    size = sum(map(len, lines))
    drop_at = 10_050  # inside line 100
    assert line_start_before(lines, drop_at) == 10_000
    async with connect(content_drop_after_bytes=drop_at, content_drops=1) as download:
        got = await download.read(download.upload(lines))
        stats = download.emulator.stats()
    assert got == stripped(lines)
    assert download.ranges() == [None, "bytes=9999-"]  # from the newline ending line 99
    assert download.statuses == [200, 206]
    # the 50 bytes of the cut line and one newline are all that came twice
    assert stats.content_bytes == drop_at + (size - 9_999)


@both_ways
async def test_a_drop_at_a_line_boundary_repeats_one_byte(connect: Any) -> None:
    lines = result_lines(400)
    size = sum(map(len, lines))
    async with connect(content_drop_after_bytes=20_000, content_drops=1) as download:
        got = await download.read(download.upload(lines))
        stats = download.emulator.stats()
    assert got == stripped(lines)
    assert download.ranges() == [None, "bytes=19999-"]
    assert stats.content_bytes == size + 1


async def test_a_drop_just_before_a_newline_reads_that_line_again() -> None:
    lines = result_lines(400)
    size = sum(map(len, lines))
    async with in_memory(content_drop_after_bytes=19_999, content_drops=1) as download:
        got = await download.read(download.upload(lines))
        stats = download.emulator.stats()
    assert got == stripped(lines)
    assert download.ranges() == [None, "bytes=19899-"]
    assert stats.content_bytes == 19_999 + size - 19_899


@both_ways
async def test_several_drops_cost_little_more_than_the_file(connect: Any) -> None:
    lines = result_lines(2_000, width=250)
    size = sum(map(len, lines))
    async with connect(content_drop_after_bytes=size // 5 + 33, content_drops=4) as download:
        got = await download.read(download.upload(lines))
        stats = download.emulator.stats()
    assert got == stripped(lines)
    assert stats.faults_by_kind == {"content_drop": 4}
    assert download.statuses == [200, 206, 206, 206, 206]
    # each drop repeats at most one line and a newline
    assert size < stats.content_bytes <= size + 4 * 251


async def test_a_line_of_megabytes_cut_in_the_middle() -> None:
    big = 6 * 1024 * 1024
    lines = result_lines(30, big={12: big})
    size = sum(map(len, lines))
    big_start = 12 * 100
    drop_at = big_start + big // 2
    async with in_memory(content_drop_after_bytes=drop_at, content_drops=1) as download:
        got = await download.read(download.upload(lines))
        stats = download.emulator.stats()
    assert got == stripped(lines)
    assert len(got[12]) == big - 1
    assert download.ranges() == [None, f"bytes={big_start - 1}-"]
    assert stats.content_bytes == drop_at + size - (big_start - 1)


async def test_lines_already_had_are_skipped_on_a_resumed_download() -> None:
    # a journal that committed 150 lines asks for the rest; the server has no line offset
    lines = result_lines(400)
    async with in_memory(content_drop_after_bytes=5_050, content_drops=2) as download:
        got = await download.read(download.upload(lines), offset=150)
    assert got == stripped(lines)[150:]
    assert download.ranges() == [None, "bytes=4999-", "bytes=9999-"]


# -- servers that ignore Range ------------------------------------------------------------------


@both_ways
async def test_a_server_that_ignores_ranges_is_read_again_without_sinking_twice(
    connect: Any,
) -> None:
    lines = result_lines(400)
    size = sum(map(len, lines))
    async with connect(
        content_ranges=False, content_drop_after_bytes=10_050, content_drops=2
    ) as download:
        got = await download.read(download.upload(lines))
        stats = download.emulator.stats()
    assert got == stripped(lines)
    # asked each time (it costs nothing), answered whole each time
    assert download.ranges() == [None, "bytes=9999-", "bytes=9999-"]
    assert download.statuses == [200, 200, 200]
    assert stats.content_bytes == 2 * 10_050 + size


async def test_a_line_offset_server_that_ignores_ranges_is_asked_by_line_offset() -> None:
    lines = result_lines(400)
    async with in_memory(
        flavour="doubleword", content_ranges=False, content_drop_after_bytes=10_050, content_drops=3
    ) as download:
        got = await download.read(download.upload(lines), server_offset=True)
    assert got == stripped(lines)
    offsets = [request.url.params.get("offset") for request in download.requests]
    # the first Range came back whole: left at once for the line offset (that answer, cut too,
    # is the second drop), which the third drop then uses straight away (the wire remembers
    # that ranges are ignored)
    assert download.ranges() == [None, "bytes=9999-", None, None]
    assert offsets == [None, None, "100", "200"]


async def test_a_line_offset_server_that_honours_ranges_is_asked_by_range() -> None:
    lines = result_lines(400)
    async with in_memory(
        flavour="doubleword", content_drop_after_bytes=10_050, content_drops=1
    ) as download:
        got = await download.read(download.upload(lines), offset=100, server_offset=True)
    assert got == stripped(lines)[100:]
    offsets = [request.url.params.get("offset") for request in download.requests]
    assert offsets == ["100", "100"]  # the range counts in the answer to offset=100
    assert download.ranges() == [None, "bytes=9999-"]


# -- content that changed, and answers that do not fit ------------------------------------------


async def test_a_file_that_changed_between_attempts_is_read_by_lines() -> None:
    lines = result_lines(400)
    async with in_memory(content_drop_after_bytes=10_050, content_drops=1) as download:
        file_id = download.upload(lines)
        record = download.emulator.files[file_id]

        async def rewrite(response: httpx.Response) -> None:
            # another 20 lines at the top: the ETag changes, If-Range answers whole
            if response.status_code == 200 and record.content is not None:
                record.content = b"".join(result_lines(20, width=60) + lines)

        download.wire.http_client.event_hooks["response"].append(rewrite)
        got = await download.read(file_id)
    # the 100 lines read before the change count; the rest is read after as many lines
    assert got == stripped(lines[:100]) + stripped(result_lines(20, width=60) + lines)[100:]
    assert download.statuses == [200, 200]


def scripted(answers: list[httpx.Response]) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), seen


class _Cut(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def scripted_wire(http: httpx.AsyncClient) -> Wire:
    config = BatcherConfig(api_key=API_KEY, base_url="http://files.test/v1", max_retries=3)
    return Wire(config, http, policy=RetryPolicy(max_retries=3, sleep_scale=0))


DATA = b"".join(result_lines(10, width=40))  # 400 bytes, a newline every 40


def cut_at(position: int, **headers: str) -> httpx.Response:
    return httpx.Response(200, headers=headers, stream=_Cut(DATA[:position]))


def ranged(start: int, body: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(
        206,
        headers={"content-range": f"bytes {start}-{start + len(body) - 1}/{len(DATA)}", **headers},
        content=body,
    )


@pytest.mark.parametrize(
    "bad_answer",
    [
        pytest.param(ranged(39, b"X" + DATA[40:]), id="no-newline-where-the-line-ended"),
        pytest.param(ranged(38, DATA[38:]), id="content-range-starts-elsewhere"),
        pytest.param(httpx.Response(206, content=DATA[39:]), id="no-content-range"),
        pytest.param(ranged(39, DATA[39:], etag='"v2"'), id="etag-changed"),
        pytest.param(httpx.Response(416), id="range-not-satisfiable"),
        pytest.param(
            httpx.Response(206, headers={"content-range": "bytes 39-399/999"}, content=DATA[39:]),
            id="length-changed",
        ),
        pytest.param(
            httpx.Response(
                206,
                headers={"content-range": "bytes 39-399/400", "content-encoding": "gzip"},
                stream=httpx.ByteStream(gzip.compress(DATA[39:])),
            ),
            id="compressed-this-time",
        ),
    ],
)
async def test_a_range_answer_that_does_not_fit_falls_back_to_lines(
    bad_answer: httpx.Response,
) -> None:
    http, seen = scripted(
        [
            cut_at(70, etag='"v1"', **{"content-length": str(len(DATA))}),
            bad_answer,
            httpx.Response(200, content=DATA, headers={"etag": '"v1"'}),
        ]
    )
    got: list[bytes] = []
    async with http:
        count, _ = await scripted_wire(http).stream_lines("file-x", got.append)
    assert got == stripped(result_lines(10, width=40)) and count == 10
    assert [request.headers.get("range") for request in seen] == [None, "bytes=39-", None]


async def test_a_whole_answer_that_is_shorter_than_what_was_read_falls_back_to_lines() -> None:
    http, seen = scripted(
        [
            cut_at(70),
            httpx.Response(200, content=DATA[:30]),  # ignores the Range, and is short
            httpx.Response(200, content=DATA),
        ]
    )
    got: list[bytes] = []
    async with http:
        await scripted_wire(http).stream_lines("file-x", got.append)
    assert got == stripped(result_lines(10, width=40))
    assert len(seen) == 3


async def test_accept_ranges_none_is_respected() -> None:
    http, seen = scripted(
        [cut_at(70, **{"accept-ranges": "none"}), httpx.Response(200, content=DATA)]
    )
    got: list[bytes] = []
    async with http:
        await scripted_wire(http).stream_lines("file-x", got.append)
    assert got == stripped(result_lines(10, width=40))
    assert [request.headers.get("range") for request in seen] == [None, None]


async def test_compressed_content_resumes_with_the_plain_bytes() -> None:
    # our offsets count decoded bytes: the rest is asked for uncompressed, and without
    # If-Range (an ETag of the compressed form says nothing of the plain one)
    packed = gzip.compress(DATA)
    seen: list[httpx.Request] = []

    class _CutPacked(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield packed[: len(packed) - 10]
            raise httpx.RemoteProtocolError("peer closed connection")

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return httpx.Response(
                200, headers={"content-encoding": "gzip", "etag": '"z"'}, stream=_CutPacked()
            )
        start = int(request.headers["range"].removeprefix("bytes=").removesuffix("-"))
        return ranged(start, DATA[start:])

    got: list[bytes] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        await scripted_wire(http).stream_lines("file-x", got.append)
    assert got == stripped(result_lines(10, width=40))
    assert len(seen) == 2
    assert seen[1].headers["accept-encoding"] == "identity"
    assert "if-range" not in seen[1].headers


# -- partial results ----------------------------------------------------------------------------


@pytest.mark.parametrize("grows", [False, True], ids=["still", "growing"])
async def test_a_partial_file_is_resumed_by_line_offset_never_by_bytes(grows: bool) -> None:
    now = [0.0]
    requests = b"".join(
        encode_line(f"q{i}", "/v1/chat/completions", chat("x" * 300)) for i in range(300)
    )
    async with in_memory(
        flavour="doubleword", clock=lambda: now[0], lines_per_second=100, shuffle_output=False
    ) as download:
        emulator = download.emulator
        input_id = emulator.upload("in.jsonl", "batch", requests).id
        batch = emulator.create_batch(
            input_file_id=input_id,
            endpoint="/v1/chat/completions",
            completion_window="1h",
            metadata=None,
            output_expires_after=None,
        )
        now[0] = 1.5  # 150 of 300 lines done
        assert batch.output_file is not None
        output_id = batch.output_file.id
        emulator.configure(content_drop_after_bytes=20_000, content_drops=1)

        async def more_lines(response: httpx.Response) -> None:
            if grows:
                now[0] += 0.5  # 50 more lines by the next request

        download.wire.http_client.event_hooks["response"].append(more_lines)
        got: list[bytes] = []
        seen, more = await download.wire.stream_lines(output_id, got.append, server_offset=True)
        everything = list(batch.output_lines)
    assert more
    assert got == stripped(everything) and seen == len(everything)
    assert len(everything) == (200 if grows else 150)
    assert download.ranges() == [None, None]  # X-Incomplete: its bytes may move
    offsets = [request.url.params.get("offset") for request in download.requests]
    assert offsets[0] is None and offsets[1] is not None and 0 < int(offsets[1]) < 150


@virtual_time()
@pytest.mark.parametrize("ranges", [True, False])
async def test_partial_results_and_a_dropping_download_answer_every_caller_once(
    ranges: bool,
) -> None:
    recorder: list[BatchEvent] = []
    async with in_process(
        flavour="doubleword",
        lines_per_second=5.0,
        content_ranges=ranges,
        content_drop_after_bytes=700,
        content_drops=6,
    ) as server:
        async with open_batcher(
            **server.options(
                completion_window="1h",
                batch_size=40,
                batch_window_seconds=0.05,
                poll_interval_seconds=1.0,
                max_retries=8,
                event_hook=recorder.append,
            )
        ) as client:
            answers: dict[int, str] = {}

            async def ask(i: int) -> None:
                response = await client.chat.completions.create(**chat(f"q{i}"))
                answers[i] = response.choices[0].message.content or ""

            async with anyio.create_task_group() as tg:
                for i in range(40):
                    tg.start_soon(ask, i)
        stats = server.emulator.stats()
    assert answers == {i: f"q{i}" for i in range(40)}
    assert stats.faults_by_kind.get("content_drop", 0) >= 1
    assert stats.duplicate_executions == 0
    assert any(event.kind == "retry" and "download" in (event.detail or "") for event in recorder)


# -- a later process goes on by bytes (the journal keeps the mark) -------------------------------


async def test_a_mark_lets_another_wire_go_on_by_range() -> None:
    lines = result_lines(400)
    size = sum(map(len, lines))
    marks: list[ResumeMark | None] = []
    got: list[bytes] = []

    async def keep(seen: int, final: bool, mark: ResumeMark | None) -> None:
        assert mark is None or mark.seen == seen
        marks.append(mark)

    async with in_memory(content_drop_after_bytes=25_050, content_drops=1) as download:
        file_id = download.upload(lines)
        dying = Wire(
            BatcherConfig(api_key=API_KEY, base_url=IN_PROCESS_BASE_URL, max_retries=0),
            download.wire.http_client,
        )
        with pytest.raises(APIConnectionError):
            await dying.stream_lines(file_id, got.append, checkpoint=keep)
        mark = ResumeMark.from_json(json.loads(json.dumps(marks[-1].to_json())))  # type: ignore[union-attr]
        assert mark is not None and mark.seen == len(got) == 250
        download.emulator.reset_stats()
        seen, _ = await download.wire.stream_lines(
            file_id, got.append, offset=mark.seen, resume=mark
        )
        stats = download.emulator.stats()
    assert seen == 400 and got == stripped(lines)
    assert download.ranges()[-1] == "bytes=24999-"
    assert stats.content_bytes == size - 24_999


def test_a_mark_that_is_not_one_is_ignored() -> None:
    good = {
        "file_id": "file-1",
        "seen": 3,
        "skip": 0,
        "position": 300,
        "offset": 0,
        "etag": None,
        "length": 900,
        "encoded": False,
        "ranges": True,
    }
    assert ResumeMark.from_json(good) is not None
    for bad in (
        None,
        "x",
        {**good, "position": 0},
        {**good, "seen": -1},
        {**good, "seen": True},
        {**good, "etag": 5},
        {**good, "unknown": 1},
        {k: v for k, v in good.items() if k != "skip"},
    ):
        assert ResumeMark.from_json(bad) is None, bad


def test_a_journal_record_keeps_its_marks_and_an_older_one_opens_without() -> None:
    mark = ResumeMark(
        file_id="file-1",
        seen=7,
        skip=0,
        position=700,
        offset=0,
        etag='"e"',
        length=None,
        encoded=False,
        ranges=True,
    )
    record = JobRecord(
        key="k", endpoint="/v1/chat/completions", model="m", output_seen=7, output_mark=mark
    )
    data = json.loads(_record_json(record))
    assert _record_from(json.dumps(data), []).output_mark == mark
    assert data["error_mark"] is None
    del data["output_mark"], data["error_mark"]  # as an older version wrote it
    old = _record_from(json.dumps(data), [])
    assert old.output_seen == 7 and old.output_mark is None and old.error_mark is None
    data["output_mark"] = {"file_id": 3}  # not a mark: read from the line offset instead
    assert _record_from(json.dumps(data), []).output_mark is None


@virtual_time()
async def test_a_download_tried_again_later_goes_on_by_range_without_a_journal() -> None:
    contents: list[httpx.Request] = []

    async def on_request(request: httpx.Request) -> None:
        if request.url.path.endswith("/content"):
            contents.append(request)

    async with in_process(content_drop_after_bytes=10_000, content_drops=1) as server:
        async with (
            server.http(event_hooks={"request": [on_request]}) as http,
            open_batcher(**server.options(http_client=http, max_retries=0)) as client,
        ):
            answers: dict[int, str] = {}

            async def ask(i: int) -> None:
                response = await client.chat.completions.create(**chat(f"q{i}"))
                answers[i] = response.choices[0].message.content or ""

            async with anyio.create_task_group() as tg:
                for i in range(60):
                    tg.start_soon(ask, i)
        stats = server.emulator.stats()
        (output,) = [f for f in server.emulator.files.values() if f.batch_id is not None]
    assert answers == {i: f"q{i}" for i in range(60)}
    # the wire gave up at once (max_retries=0); the job tried the step again, from the
    # last whole line of the first try
    assert len(contents) == 2 and "range" not in contents[0].headers
    header = contents[1].headers.get("range")
    assert header is not None
    start = int(header.removeprefix("bytes=").removesuffix("-"))
    assert 9_000 < start < 10_000
    assert stats.content_bytes == 10_000 + output.size - start


async def test_a_program_stopped_mid_download_is_resumed_by_range_in_the_next(
    tmp_path: Path,
) -> None:
    # about 200 KB a result: the journal commits (with its mark) every 4 MB, the download
    # drops at 6 MB, and the program is stopped there
    emulator = Emulator(api_key=API_KEY, content_drop_after_bytes=6_000_000, content_drops=1)
    path = tmp_path / "run.journal"
    texts = [f"e{i}" for i in range(40)]
    dimensions = 9_000
    stopped = anyio.Event()

    def on_event(event: BatchEvent) -> None:
        if event.kind == "retry" and "download" in (event.detail or ""):
            stopped.set()

    def journaled(http: httpx.AsyncClient, **options: Any) -> BatchOpenAI:
        return BatchOpenAI(
            api_key=API_KEY,
            base_url=IN_PROCESS_BASE_URL,
            http_client=http,
            journal=path,
            **FAST,
            **options,
        )

    async def embed(client: BatchOpenAI, text: str, out: dict[str, int]) -> None:
        try:
            reply = await client.embeddings.create(model="e", input=text, dimensions=dimensions)
        except ClientClosedError:
            return
        out[text] = len(reply.data[0].embedding)

    first: dict[str, int] = {}
    async with httpx.AsyncClient(transport=emulator.transport()) as http:
        async with anyio.create_task_group() as tg:
            async with journaled(http, event_hook=on_event) as client:
                for text in texts:
                    tg.start_soon(embed, client, text, first)
                await stopped.wait()
                tg.cancel_scope.cancel()  # the program stops between two attempts
    assert emulator.stats().faults_by_kind == {"content_drop": 1}
    (output,) = [f for f in emulator.files.values() if f.batch_id is not None]
    size = output.size
    answered_before = len(first)

    emulator.reset_stats()
    contents: list[httpx.Request] = []

    async def on_request(request: httpx.Request) -> None:
        if request.url.path.endswith("/content"):
            contents.append(request)

    second: dict[str, int] = {}
    async with httpx.AsyncClient(
        transport=emulator.transport(), event_hooks={"request": [on_request]}
    ) as http:
        async with journaled(http) as client, anyio.create_task_group() as tg:
            for text in texts:
                tg.start_soon(embed, client, text, second)
    stats = emulator.stats()
    assert second == {text: dimensions for text in texts}
    assert answered_before < 40
    assert stats.duplicate_executions == 0 and stats.batches_created == 0
    header = contents[0].headers.get("range")
    assert header is not None, "the next run downloaded from the top"
    start = int(header.removeprefix("bytes=").removesuffix("-"))
    assert start >= 4_000_000
    assert stats.content_bytes == size - start


async def test_breaks_that_make_progress_do_not_use_up_the_retries() -> None:
    lines = result_lines(400)
    async with in_memory(content_drop_after_bytes=5_000, content_drops=7) as download:
        download.wire.policy = RetryPolicy(max_retries=1, sleep_scale=0)
        got = await download.read(download.upload(lines))
    assert got == stripped(lines)
    assert len(download.requests) == 8


async def test_breaks_that_make_no_progress_give_up_after_max_retries() -> None:
    # every answer breaks inside the first line: nothing is ever delivered
    lines = result_lines(40, width=500)
    async with in_memory(content_drop_after_bytes=300, content_drops=10) as download:
        download.wire.policy = RetryPolicy(max_retries=2, sleep_scale=0)
        with pytest.raises(APIConnectionError, match="download of"):
            await download.read(download.upload(lines))
    assert len(download.requests) == 3


class _Stalled(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._data
        yield b""  # an empty read changes nothing
        raise httpx.ReadTimeout("the server stopped sending")


async def test_a_download_that_stalls_resumes_like_one_that_broke() -> None:
    http, seen = scripted(
        [
            httpx.Response(200, stream=_Stalled(DATA[:70])),
            ranged(39, DATA[39:]),
        ]
    )
    got: list[bytes] = []
    async with http:
        count, _ = await scripted_wire(http).stream_lines("file-x", got.append)
    assert got == stripped(result_lines(10, width=40)) and count == 10
    assert [request.headers.get("range") for request in seen] == [None, "bytes=39-"]


async def test_a_last_line_without_newline_counts_once_when_skipped_or_read() -> None:
    data = b"".join(result_lines(5, width=40)).rstrip(b"\n")
    for offset, expected in ((5, []), (4, stripped(result_lines(5, width=40))[4:])):
        http, _ = scripted([httpx.Response(200, content=data)])
        got: list[bytes] = []
        async with http:
            count, _ = await scripted_wire(http).stream_lines("file-x", got.append, offset=offset)
        assert count == 5 and got == expected


@pytest.mark.parametrize(
    ("header", "size", "wanted"),
    [
        (None, 10, None),
        ("bytes=2-", 10, (2, 10)),
        ("bytes=2-4", 10, (2, 5)),
        ("bytes=2-400", 10, (2, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=-30", 10, (0, 10)),
        ("bytes=-0", 10, "unsatisfiable"),
        ("bytes=10-", 10, "unsatisfiable"),
        ("bytes=0-", 0, "unsatisfiable"),
        ("bytes=4-2", 10, None),
        ("bytes=a-", 10, None),
        ("bytes=2", 10, None),
        ("items=2-", 10, None),
        ("bytes=0-1,4-5", 10, None),
    ],
)
def test_the_emulator_reads_range_headers_as_servers_do(
    header: str | None, size: int, wanted: object
) -> None:
    from autobatcher.testing._app import _byte_range

    assert _byte_range(header, size) == wanted
