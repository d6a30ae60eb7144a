"""Client CPU per MB to download one huge result line, through the real download path.

    .venv/bin/python benchmarks/line_split.py [--sizes 1 10 50 100] [--old-code DIR]

The emulator (its own process, 127.0.0.1) runs one embeddings batch per size whose single
request asks for enough ``dimensions`` that its result line is about that many MB. Each
download then runs in a fresh worker process: ``Wire.stream_lines`` on the batch's output file
(httpx hands it over in 64 KiB chunks), with a sink that only keeps the line's length. The
figure is the worker's CPU (user+sys, ``time.process_time``) over the download alone, divided
by the line's size: flat when cutting lines is linear in the bytes.

``--old-code DIR`` also runs each download against the ``autobatcher`` package found in DIR (for
example ``git archive <commit> autobatcher | tar -x -C DIR``), to compare with older code.
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

#: JSON bytes per embedding dimension in the emulator's output (a float of ~20 digits + ",").
BYTES_PER_DIMENSION = 22.5
API_KEY = "sk-bench"


async def worker(args: argparse.Namespace) -> dict[str, Any]:
    from autobatcher._config import BatcherConfig
    from autobatcher._wire import Wire

    sizes: list[int] = []
    wire = Wire(BatcherConfig(api_key=API_KEY, base_url=args.base_url, max_retries=0))
    try:
        started_wall = time.perf_counter()
        started_cpu = time.process_time()
        await wire.stream_lines(args.file_id, lambda line: sizes.append(len(line)))
        cpu = time.process_time() - started_cpu
        wall = time.perf_counter() - started_wall
    finally:
        await wire.aclose()
    return {"cpu": cpu, "wall": wall, "lines": len(sizes), "line_bytes": max(sizes, default=0)}


def make_batches(base_url: str, sizes_mb: Sequence[float]) -> dict[float, tuple[str, int]]:
    """One completed batch per size: {size: (output file id, its bytes)}."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    out: dict[float, tuple[str, int]] = {}
    with httpx.Client(base_url=base_url, headers=headers, timeout=600) as http:
        for size in sizes_mb:
            dimensions = int(size * 1e6 / BYTES_PER_DIMENSION)
            line = {
                "custom_id": "big",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "e", "input": "big", "dimensions": dimensions},
            }
            upload = http.post(
                "/files",
                files={"file": ("in.jsonl", json.dumps(line).encode() + b"\n")},
                data={"purpose": "batch"},
            )
            upload.raise_for_status()
            batch = http.post(
                "/batches",
                json={
                    "input_file_id": upload.json()["id"],
                    "endpoint": "/v1/embeddings",
                    "completion_window": "24h",
                },
            ).json()
            while batch["status"] != "completed":
                if batch["status"] in ("failed", "expired", "cancelled"):
                    raise RuntimeError(f"batch for {size} MB ended {batch['status']}: {batch}")
                time.sleep(0.1)
                batch = http.get(f"/batches/{batch['id']}").json()
            file_id = batch["output_file_id"]
            nbytes = int(http.get(f"/files/{file_id}").json()["bytes"])
            out[size] = (file_id, nbytes)
    return out


def run_download(code: Path | None, base_url: str, file_id: str, backend: str) -> dict[str, Any]:
    args = ["--worker", "--base-url", base_url, "--file-id", file_id, "--backend", backend]
    return run_worker(OUR_PYTHON, "line_split.py", args, code=code, timeout=1800)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=float,
        nargs="+",
        default=[1, 10, 50, 100],
        help="result-line sizes to download, in MB (default: 1 10 50 100)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=("asyncio", "trio"),
        default=["asyncio"],
        help="backends to download on (default: asyncio)",
    )
    parser.add_argument(
        "--old-code",
        type=Path,
        default=None,
        help="also measure the autobatcher package in this directory (default: none)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--file-id", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="asyncio", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(anyio.run(worker, args, backend=args.backend)), flush=True)
        return

    codes: list[tuple[str, Path | None]] = [("this checkout", None)]
    if args.old_code is not None:
        codes.append((f"{args.old_code}", args.old_code.resolve()))
    rows: list[list[str]] = []
    with emulator_process(api_key=API_KEY) as emulator:
        batches = make_batches(emulator.base_url, args.sizes)
        for label, code in codes:
            for backend in args.backends:
                for size in args.sizes:
                    file_id, nbytes = batches[size]
                    result = run_download(code, emulator.base_url, file_id, backend)
                    if result["lines"] != 1 or result["line_bytes"] + 1 != nbytes:
                        raise RuntimeError(f"wrong download for {size} MB: {result}")
                    mb = nbytes / 1e6
                    rows.append(
                        [
                            label,
                            backend,
                            f"{mb:.1f}",
                            f"{result['cpu']:.3f}",
                            f"{result['cpu'] / mb * 1000:.1f}",
                            f"{result['wall']:.2f}",
                        ]
                    )
                    print(f"  {label} {backend} {mb:.1f} MB: {result['cpu']:.3f} s CPU", flush=True)
    print()
    print(machine_line())
    print(
        table(
            ["code", "backend", "line MB", "client CPU s", "CPU ms/MB", "wall s"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
