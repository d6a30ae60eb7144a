"""Cutting a downloaded result file into lines: ``LineSplitter`` alone and through the client."""

from __future__ import annotations

import random

import pytest

from autobatcher._jsonl import LineSplitter
from tests._support import chat, emulated, gather, virtual_time

from ._support import volume


def split_in_chunks(data: bytes, sizes: list[int]) -> tuple[list[bytes], bytes]:
    """Feed ``data`` cut at the given chunk sizes (cycled); return (lines, tail)."""
    splitter = LineSplitter()
    lines: list[bytes] = []
    at = 0
    step = 0
    while at < len(data):
        size = sizes[step % len(sizes)]
        lines += splitter.feed(data[at : at + size])
        at += size
        step += 1
        # the bytes not yet in a line are what comes after the last newline fed
        fed = data[: min(at, len(data))]
        assert splitter.pending == len(fed) - (fed.rfind(b"\n") + 1)
    assert splitter.pending == len(splitter.tail())
    return lines, splitter.tail()


def expected(data: bytes) -> tuple[list[bytes], bytes]:
    *lines, tail = data.split(b"\n")
    return lines, tail


def test_one_line_split_across_many_chunks() -> None:
    line = b'{"x":"' + b"a" * 10_000 + b'"}'
    lines, tail = split_in_chunks(line + b"\n" + b"next\n", [7])
    assert lines == [line, b"next"]
    assert tail == b""


def test_one_byte_chunks() -> None:
    data = b"ab\n\ncd\r\nef"
    assert split_in_chunks(data, [1]) == ([b"ab", b"", b"cd\r"], b"ef")


def test_newline_as_first_and_last_byte_of_a_chunk() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"abc") == []
    assert splitter.feed(b"\ndef") == [b"abc"]
    assert splitter.feed(b"ghi\n") == [b"defghi"]
    assert splitter.feed(b"\n") == [b""]
    assert splitter.feed(b"\njkl\n") == [b"", b"jkl"]
    assert splitter.tail() == b""


def test_empty_chunks_change_nothing() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"") == []
    assert splitter.feed(b"ab") == []
    assert splitter.feed(b"") == []
    assert splitter.feed(b"c\n") == [b"abc"]
    assert splitter.feed(b"") == []
    assert splitter.tail() == b""


def test_crlf_keeps_the_carriage_return_like_split() -> None:
    # The caller decides what a line with a trailing ``\r`` means (JSON ignores it).
    data = b'{"a":1}\r\n{"b":2}\r\n'
    assert split_in_chunks(data, [3]) == ([b'{"a":1}\r', b'{"b":2}\r'], b"")
    # A chunk boundary between the \r and the \n changes nothing.
    assert split_in_chunks(data, [8, 100]) == ([b'{"a":1}\r', b'{"b":2}\r'], b"")


def test_tail_is_the_unterminated_rest_and_reading_it_twice_is_stable() -> None:
    splitter = LineSplitter()
    splitter.feed(b"done\npart")
    splitter.feed(b"ial")
    assert splitter.tail() == b"partial"
    assert splitter.tail() == b"partial"
    assert splitter.feed(b" line\n") == [b"partial line"]
    assert splitter.tail() == b""


@pytest.mark.parametrize("seed", range(20))
def test_random_chunking_matches_split(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = [b"a", b"b", b"\n", b"\r", b" ", b"{", b"}"]
    data = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 400)))
    sizes = [rng.randrange(1, 40) for _ in range(rng.randrange(1, 6))]
    assert split_in_chunks(data, sizes) == expected(data)


# -- through the client: one result line far bigger than a download chunk ------------------

#: ~5 MB of JSON floats in one result line: dozens of the 64 KiB chunks httpx reads.
BIG_DIMENSIONS = 250_000


@volume
@pytest.mark.anyio
@virtual_time()  # one batch for the three, whatever the machine's load
@pytest.mark.parametrize("flavour", ["openai", "doubleword"])  # doubleword: partial downloads
async def test_a_huge_embedding_line_comes_back_whole(flavour: str) -> None:
    async with emulated({"flavour": flavour}) as (server, client):
        big, small_a, small_b = await gather(
            client.embeddings.create(model="e", input="big", dimensions=BIG_DIMENSIONS),
            client.embeddings.create(model="e", input="a"),
            client.embeddings.create(model="e", input="b"),
        )
        assert server.emulator.stats().batches_created == 1
        status, payload = server.emulator.realtime(
            "/v1/embeddings", {"model": "e", "input": "big", "dimensions": BIG_DIMENSIONS}
        )
    assert status == 200
    assert len(big.data[0].embedding) == BIG_DIMENSIONS
    assert big.data[0].embedding == payload["data"][0]["embedding"]
    assert len(small_a.data[0].embedding) == len(small_b.data[0].embedding) == 8
    assert small_a.data[0].embedding != small_b.data[0].embedding


@pytest.mark.anyio
async def test_a_huge_chat_answer_among_small_ones() -> None:
    text = "word " * 600_000  # a 3 MB echo
    async with emulated() as (_server, client):
        results = await gather(
            client.chat.completions.create(**chat("short one")),
            client.chat.completions.create(**chat(text)),
            client.chat.completions.create(**chat("short two")),
        )
    answers = [r.choices[0].message.content for r in results]
    assert answers == ["short one", text, "short two"]
