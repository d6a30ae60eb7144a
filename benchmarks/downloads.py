"""Bytes paid for a big result file whose download drops: resumed by Range, or not.

    .venv/bin/python benchmarks/downloads.py [--mb 200] [--drops 2] [--drop-at 0.4]

The emulator (its own process, 127.0.0.1) holds one result-shaped file of ``--mb`` MB (lines of
about 1 KB, each ``{"custom_id":"r0000042",...}``). Each run sets the emulator to cut the next
``--drops`` downloads off after ``--drop-at`` times the file's size in body bytes each (the
connection drops mid-file, as in openai-python #2959), then downloads the file in a fresh worker
process through the real download path (``Wire.stream_lines``, which retries the breaks), with a
sink that checks every line arrives once, in order. Rows:

* ``range``: the emulator honours ``Range: bytes=N-`` (``206``): the client asks for the rest
  from the end of the last whole line;
* ``no range``: the emulator ignores Range and answers the whole file (``200``) every time: the
  client skips the bytes it already read (what any client without ranges pays).

``--old-code DIR`` adds a row per backend for the ``autobatcher`` package found in DIR (for
example ``git archive <commit> autobatcher | tar -x -C DIR``) against the server that honours
Range, to compare with code that resumed by skipping lines.

Figures: body bytes the emulator sent (its ``content_bytes`` counter) ÷ the file's size (the
issue's target: under 1.5 with two drops), the worker's wall time and CPU over the download, and
its peak RSS (``VmHWM``) next to its RSS before the download (the file is never held whole).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx
from _harness import OUR_PYTHON, emulator_process, machine_line, run_worker, table

API_KEY = "sk-bench"
LINE_BYTES = 1000


def status_mb(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` (peak) of this process in MB. Not ``ru_maxrss``: that one keeps
    the peak of the parent at fork time across the exec (the parent holds the whole file)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


async def worker(args: argparse.Namespace) -> dict[str, Any]:
    from autobatcher._config import BatcherConfig
    from autobatcher._wire import Wire

    expected = 0
    nbytes = 0
    retries: list[str] = []

    def sink(line: bytes) -> None:
        nonlocal expected, nbytes
        index = int(line[15:22])
        if index != expected:
            raise AssertionError(f"line {index} arrived where line {expected} was due")
        expected += 1
        nbytes += len(line) + 1

    config = BatcherConfig(
        api_key=API_KEY,
        base_url=args.base_url,
        max_retries=args.drops + 3,
        event_hook=lambda event: retries.append(event.detail or ""),
        timeout=httpx.Timeout(60.0),
    )
    wire = Wire(config)
    before = status_mb("VmRSS")
    try:
        started_wall = time.perf_counter()
        started_cpu = time.process_time()
        await wire.stream_lines(args.file_id, sink)
        cpu = time.process_time() - started_cpu
        wall = time.perf_counter() - started_wall
    finally:
        await wire.aclose()
    peak = status_mb("VmHWM")
    return {
        "lines": expected,
        "bytes": nbytes,
        "cpu": cpu,
        "wall": wall,
        "rss_before": before,
        "peak_rss": peak,
        "retries": len(retries),
    }


def make_file(http: httpx.Client, megabytes: float) -> tuple[str, int, int]:
    """Upload the result-shaped file: (file id, bytes, lines)."""
    count = int(megabytes * 1e6 / LINE_BYTES)
    lines = []
    for index in range(count):
        head = b'{"custom_id":"r%07d","response":{"status_code":200,"body":{"pad":"' % index
        lines.append(head + b"x" * (LINE_BYTES - len(head) - 5) + b'"}}}\n')
    data = b"".join(lines)
    del lines
    assert data[15:22] == b"0000000"
    upload = http.post("/files", files={"file": ("results.jsonl", data)}, data={"purpose": "batch"})
    upload.raise_for_status()
    return upload.json()["id"], len(data), count


def run_download(
    base_url: str, file_id: str, backend: str, drops: int, code: Path | None = None
) -> dict[str, Any]:
    args = ["--worker", "--base-url", base_url, "--file-id", file_id, "--backend", backend]
    return run_worker(
        OUR_PYTHON, "downloads.py", [*args, "--drops", str(drops)], code=code, timeout=1800
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=200, help="file size in MB (default 200)")
    parser.add_argument("--drops", type=int, default=2, help="downloads cut off (default 2)")
    parser.add_argument(
        "--drop-at",
        type=float,
        default=0.4,
        help="body bytes each cut-off download gets, as a fraction of the file (default 0.4)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=("asyncio", "trio"),
        default=["asyncio", "trio"],
        help="backends to download on (default: both)",
    )
    parser.add_argument(
        "--old-code",
        type=Path,
        default=None,
        help="also download with the autobatcher package in this directory (default: none)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--file-id", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="asyncio", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(anyio.run(worker, args, backend=args.backend)), flush=True)
        return

    rows: list[list[str]] = []
    with emulator_process(api_key=API_KEY) as emulator:
        root = emulator.base_url.removesuffix("/v1")
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=emulator.base_url, headers=headers, timeout=600) as http:
            file_id, size, count = make_file(http, args.mb)
            print(f"file {file_id}: {size / 1e6:.1f} MB, {count} lines", flush=True)
            variants: list[tuple[str, bool, Path | None]] = [
                ("range", True, None),
                ("no range", False, None),
            ]
            if args.old_code is not None:
                variants.append(("range, old code", True, args.old_code.resolve()))
            for backend in args.backends:
                for label, ranges, code in variants:
                    http.post(
                        f"{root}/_emulator/config",
                        json={
                            "content_ranges": ranges,
                            "content_drop_after_bytes": int(size * args.drop_at),
                            "content_drops": args.drops,
                        },
                    ).raise_for_status()
                    before = http.get(f"{root}/_emulator/stats").json()
                    result = run_download(emulator.base_url, file_id, backend, args.drops, code)
                    after = http.get(f"{root}/_emulator/stats").json()
                    if result["lines"] != count or result["bytes"] != size:
                        raise RuntimeError(f"wrong download: {result}")
                    sent = after["content_bytes"] - before["content_bytes"]
                    cut = after["faults_by_kind"].get("content_drop", 0) - before[
                        "faults_by_kind"
                    ].get("content_drop", 0)
                    rows.append(
                        [
                            label,
                            backend,
                            f"{size / 1e6:.0f}",
                            str(cut),
                            f"{sent / 1e6:.1f}",
                            f"{sent / size:.3f}",
                            f"{result['wall']:.2f}",
                            f"{result['cpu']:.2f}",
                            f"{result['rss_before']:.0f}",
                            f"{result['peak_rss']:.0f}",
                        ]
                    )
                    print(f"  {label} {backend}: {sent / size:.3f} x the file", flush=True)
    print()
    print(machine_line())
    print(
        table(
            [
                "server",
                "backend",
                "file MB",
                "drops",
                "MB sent",
                "sent ÷ file",
                "wall s",
                "client CPU s",
                "RSS before MB",
                "peak RSS MB",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
