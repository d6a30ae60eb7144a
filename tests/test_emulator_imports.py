"""``import autobatcher`` works without the emulator extras; the emulator is fast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from autobatcher.testing import Emulator

from ._support import volume

ROOT = Path(__file__).resolve().parent.parent

_BLOCK = """
import sys
for name in ("starlette", "hypercorn", "multipart", "python_multipart"):
    sys.modules[name] = None  # any import of these now raises ImportError
import autobatcher, autobatcher.types, autobatcher._cli
loaded = [m for m in sys.modules if m.split(".")[0] in ("starlette", "hypercorn")
          and sys.modules[m] is not None]
assert not loaded, loaded
assert "autobatcher.testing" not in sys.modules
print("ok")
"""


def test_import_without_emulator_extras() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@volume
def test_fifty_thousand_lines_all_processed_once() -> None:
    n = 50_000
    data = "".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": f"q {i}"}]},
            }
        )
        + "\n"
        for i in range(n)
    ).encode()
    emulator = Emulator()
    file = emulator.upload("big.jsonl", "batch", data)
    batch = emulator.create_batch(
        input_file_id=file.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=None,
    )
    emulator.advance()
    assert batch.status == "completed"
    assert batch.n_completed == n
    assert batch.output_file is not None
    lines = batch.output_file.line_list()
    assert len(lines) == n
    stats = emulator.stats()
    assert stats.total_executions == n
    assert stats.duplicate_executions == 0
