"""Escalation: requests a batch did not run, sent to the real-time endpoint instead.

With ``on_expired="realtime"`` the requests an expired batch did not run (and those of a
batch the watchdog cancelled) are not put into a new batch: each is sent at once to the
real-time endpoint of the same server (``POST {base_url}/chat/completions`` …), over the same
raw httpx client and retry policy, at full price. The answer becomes a result line of the
same shape as a batch's (``{"custom_id", "response": {"status_code", "body"}}``), so the
caller gets the same ``ChatCompletion``, or the same typed error, as from a batch; with a
journal it is kept like any other answer, and never asked for again.

A few calls run at a time, in tasks of the job's own task group (nothing outlives the job).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from ._config import BatcherConfig
from ._errors import APIError, APIStatusError
from ._job import JobRecord, Slot
from ._journal import Journal
from ._signals import fire
from ._wire import Wire, decode_body

if TYPE_CHECKING:
    from ._runner import JobHost

__all__ = ["Escalation"]

#: real-time calls in flight at once, per escalating batch
_CONCURRENCY = 8


class Escalation:
    def __init__(self, config: BatcherConfig, wire: Wire, journal: Journal | None) -> None:
        self._config = config
        self._wire = wire
        self._journal = journal

    async def run(self, record: JobRecord, slots: list[Slot], host: JobHost) -> None:
        """Answer every slot in ``slots`` (whose caller still waits) by a real-time call."""
        pending = iter(slots)

        async def worker() -> None:
            for slot in pending:  # (one iterator shared: each slot goes to one worker)
                if slot.outcome is not None or slot.line is None:
                    continue
                outcome = await self._call(slot)
                if isinstance(outcome, bytes) and self._journal is not None:
                    with anyio.CancelScope(shield=True):  # paid for: kept whatever happens
                        await self._journal.save_results(record, [(slot.custom_id, outcome)])
                if slot.outcome is None:
                    slot.outcome = outcome
                    slot.line = None
                    fire(slot.signal)
                    host.settled(slot)

        async with anyio.create_task_group() as tg:
            for _ in range(min(_CONCURRENCY, len(slots))):
                tg.start_soon(worker)

    async def _call(self, slot: Slot) -> bytes | BaseException:
        assert slot.line is not None
        request = json.loads(slot.line)
        url: str = request["url"]
        # the line's url is versioned (``/v1/chat/completions``), as base_url is
        path = url.removeprefix("/v1")
        status = 200
        payload: Any
        try:
            payload = await self._wire.call(
                "POST", path, parse=_json, json_body=request["body"], what="real-time request"
            )
        except APIStatusError as exc:
            status = exc.status_code
            payload = decode_body(exc.response) if exc.response is not None else exc.body
        except APIError as exc:
            return exc.for_request(slot.custom_id, None)
        line = {
            "id": f"realtime_{slot.custom_id}",
            "custom_id": slot.custom_id,
            "response": {"status_code": status, "request_id": None, "body": payload},
            "error": None,
        }
        return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def _json(response: httpx.Response) -> Any:
    return decode_body(response)
