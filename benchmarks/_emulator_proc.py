"""Serve the Batch API emulator in this process until terminated (benchmark helper).

Usage: ``python benchmarks/_emulator_proc.py '{"validation_seconds": 0}'`` — prints
``{"port": N}`` once listening on 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio

from autobatcher.testing import serve_emulator


async def main(config: dict[str, Any]) -> None:
    async with serve_emulator(port=0, **config) as server:
        print(json.dumps({"port": server.port}), flush=True)
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
