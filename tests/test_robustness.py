"""Faults, cancellation, shutdown, backpressure and partial results, on asyncio and trio.

Every test runs the client against the emulator over loopback, and proves "nothing lost,
nothing paid twice" with the emulator's execution counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from autobatcher import (
    APIConnectionError,
    BatchEvent,
    BatchLostError,
    BatchOpenAI,
    ClientClosedError,
    InternalServerError,
    RateLimitError,
    open_batcher,
)
from autobatcher.testing import serve_emulator
from autobatcher.types import ChatCompletion

from ._support import API_KEY, FAST, Recorder, chat, gather

pytestmark = pytest.mark.anyio


async def ask(client: BatchOpenAI, text: str) -> None:
    await client.chat.completions.create(**chat(text))


async def run_many(client: BatchOpenAI, n: int, prefix: str = "q") -> list[Any]:
    return await gather(*[client.chat.completions.create(**chat(f"{prefix}{i}")) for i in range(n)])


def assert_all_echoed(results: list[Any], prefix: str = "q") -> None:
    bad = [(i, r) for i, r in enumerate(results) if not isinstance(r, ChatCompletion)]
    assert not bad, bad[:5]
    assert [r.choices[0].message.content for r in results] == [
        f"{prefix}{i}" for i in range(len(results))
    ]


# -- retries and never paying twice ---------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
async def test_twenty_percent_faults_everywhere_lose_nothing_and_pay_once(seed: int) -> None:
    faults: dict[str, Any] = {
        "error_rate": 0.1,
        "rate_limit_rate": 0.05,
        "drop_rate": 0.05,
        "retry_after_seconds": 0.01,
        "fault_seed": seed,
    }
    recorder = Recorder()
    async with serve_emulator(api_key=API_KEY, **faults) as server:
        async with open_batcher(
            api_key=API_KEY,
            base_url=server.base_url,
            batch_size=50,
            event_hook=recorder,
            **FAST,
        ) as client:
            with anyio.fail_after(120):
                results = await run_many(client, 400)
        stats = server.emulator.stats()
    assert_all_echoed(results)
    assert stats.faults_injected > 0
    assert recorder.kinds("retry")
    assert stats.total_executions == 400
    assert stats.duplicate_executions == 0
    # adopted, not duplicated: one upstream batch per flushed lane
    assert stats.batches_created == len(recorder.kinds("batch_submitted")) == 8


async def test_ambiguous_create_is_adopted_not_duplicated() -> None:
    recorder = Recorder()
    async with serve_emulator(api_key=API_KEY) as server:
        emulator = server.emulator
        # The create takes effect, then the connection drops: the client cannot know.
        emulator.configure(drop_rate=1.0, drop_after_processing=True, fault_paths=("/v1/batches",))

        def heal(event: BatchEvent) -> None:
            recorder(event)
            if event.kind == "retry":
                emulator.configure(drop_rate=0.0)

        async with open_batcher(
            api_key=API_KEY, base_url=server.base_url, event_hook=heal, **FAST
        ) as client:
            with anyio.fail_after(30):
                results = await run_many(client, 5)
        stats = emulator.stats()
    assert_all_echoed(results)
    assert recorder.kinds("retry")
    assert stats.batches_created == 1
    assert stats.duplicate_executions == 0


async def test_ambiguous_upload_is_found_not_repeated() -> None:
    async with serve_emulator(api_key=API_KEY) as server:
        emulator = server.emulator
        emulator.configure(drop_rate=1.0, drop_after_processing=True, fault_paths=("/v1/files",))

        def heal(event: BatchEvent) -> None:
            if event.kind == "retry":
                emulator.configure(drop_rate=0.0)

        async with open_batcher(
            api_key=API_KEY, base_url=server.base_url, event_hook=heal, **FAST
        ) as client:
            with anyio.fail_after(30):
                results = await run_many(client, 5)
        stats = emulator.stats()
    assert_all_echoed(results)
    assert stats.uploads == 1


async def test_retry_after_is_honoured() -> None:
    delays: list[str] = []
    async with serve_emulator(
        api_key=API_KEY, rate_limit_rate=1.0, retry_after_seconds=0.3, fault_paths=("/v1/files",)
    ) as server:
        emulator = server.emulator

        def heal(event: BatchEvent) -> None:
            if event.kind == "retry":
                delays.append(event.detail or "")
                emulator.configure(rate_limit_rate=0.0)

        async with open_batcher(
            api_key=API_KEY, base_url=server.base_url, event_hook=heal, **FAST
        ) as client:
            started = anyio.current_time()
            results = await run_many(client, 2)
            elapsed = anyio.current_time() - started
    assert_all_echoed(results)
    assert len(delays) == 1
    assert "in 0.30s" in delays[0]
    assert elapsed >= 0.3


async def test_a_rate_limited_lane_does_not_block_other_lanes() -> None:
    """429 with a long retry-after on one model's uploads; another model's lane still flows."""
    recorder = Recorder()
    async with serve_emulator(api_key=API_KEY, retry_after_seconds=2.0) as server:
        emulator = server.emulator
        emulator.configure(rate_limit_rate=1.0, fault_paths=("/v1/files",))
        async with open_batcher(
            api_key=API_KEY, base_url=server.base_url, event_hook=recorder, **FAST
        ) as client:
            slow_done: list[float] = []
            fast_done: list[float] = []
            started = anyio.current_time()

            async def slow() -> None:
                await client.chat.completions.create(**chat("slow", model="model-slow"))
                slow_done.append(anyio.current_time() - started)

            async def fast() -> None:
                await recorder.wait_for("retry")  # the slow lane is now waiting out its 429
                emulator.configure(rate_limit_rate=0.0)
                await client.chat.completions.create(**chat("fast", model="model-fast"))
                fast_done.append(anyio.current_time() - started)

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow)
                tg.start_soon(fast)
    assert fast_done[0] < 1.5 < slow_done[0]


async def test_non_retryable_error_fails_at_once_with_its_type() -> None:
    async with serve_emulator(
        api_key=API_KEY, error_rate=1.0, error_statuses=(400,), fault_paths=("/v1/files",)
    ) as server:
        recorder = Recorder()
        async with open_batcher(
            api_key=API_KEY, base_url=server.base_url, event_hook=recorder, **FAST
        ) as client:
            results = await run_many(client, 3)
    assert all(type(r).__name__ == "BadRequestError" for r in results)
    assert {r.custom_id for r in results} == {r.custom_id for r in results if r.custom_id}
    assert len({r.custom_id for r in results}) == 3
    assert not recorder.kinds("retry")


async def test_retries_are_bounded_and_end_in_a_typed_error() -> None:
    async with serve_emulator(
        api_key=API_KEY, error_rate=1.0, error_statuses=(503,), fault_paths=("/v1/files",)
    ) as server:
        async with open_batcher(
            api_key=API_KEY,
            base_url=server.base_url,
            max_retries=1,
            job_error_budget_seconds=0.3,
            **FAST,
        ) as client:
            with anyio.fail_after(30):
                results = await run_many(client, 2)
    assert all(isinstance(r, InternalServerError) for r in results)


async def test_polling_survives_transient_errors_then_gives_up_within_budget() -> None:
    async with serve_emulator(api_key=API_KEY, lines_per_second=5.0) as server:
        emulator = server.emulator
        recorder = Recorder()

        async def break_polls_after_submit() -> None:
            await recorder.wait_for("batch_submitted")
            emulator.configure(error_rate=1.0, error_statuses=(502,), fault_paths=("/v1/batches/",))

        async with open_batcher(
            api_key=API_KEY,
            base_url=server.base_url,
            event_hook=recorder,
            max_retries=0,
            job_error_budget_seconds=0.5,
            cancel_batches_on_exit=False,
            **FAST,
        ) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(break_polls_after_submit)
                with anyio.fail_after(30):
                    results = await run_many(client, 3)
    assert all(isinstance(r, BatchLostError) for r in results)
    assert "gave up polling" in str(results[0])


async def test_a_batch_that_vanishes_fails_its_requests_clearly() -> None:
    async with serve_emulator(api_key=API_KEY, lines_per_second=2.0) as server:
        recorder = Recorder()

        async def vanish() -> None:
            await recorder.wait_for("batch_submitted")
            server.emulator._batches.clear()  # the server loses it (no public way, on purpose)

        async with open_batcher(
            api_key=API_KEY, base_url=server.base_url, event_hook=recorder, **FAST
        ) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(vanish)
                results = await run_many(client, 2)
    assert all(isinstance(r, BatchLostError) for r in results)
    assert "disappeared" in str(results[0])


# -- cancellation -----------------------------------------------------------------------------


async def test_caller_cancelled_before_flush_is_never_uploaded() -> None:
    async with serve_emulator(api_key=API_KEY) as server:
        async with open_batcher(
            api_key=API_KEY,
            base_url=server.base_url,
            batch_window_seconds=0.3,
            poll_interval_seconds=0.02,
        ) as client:
            results: list[Any] = []

            async def keep() -> None:
                results.append(await client.chat.completions.create(**chat("kept")))

            async with anyio.create_task_group() as tg:
                tg.start_soon(keep)
                with anyio.move_on_after(0.05):
                    await client.chat.completions.create(**chat("withdrawn"))
        stats = server.emulator.stats()
    assert results[0].choices[0].message.content == "kept"
    assert stats.total_executions == 1
    assert not any("withdrawn" in body for body in stats.executions)


#: Where to cancel the victim: on the HTTP request that starts this step of the lifecycle.
STEPS: dict[str, Callable[[httpx.Request], bool]] = {
    "upload": lambda r: r.method == "POST" and r.url.path.endswith("/files"),
    "create": lambda r: r.method == "POST" and r.url.path.endswith("/batches"),
    "poll": lambda r: r.method == "GET" and "/batches/" in r.url.path,
    "download": lambda r: r.method == "GET" and r.url.path.endswith("/content"),
}


@pytest.mark.parametrize("mode", ["run", "standalone"])
@pytest.mark.parametrize("step", list(STEPS))
async def test_cancelling_the_caller_that_filled_the_batch_at_each_step(
    mode: str, step: str
) -> None:
    """The victim's request filled the batch (and, standalone, it drives the engine)."""
    victim_scope = anyio.CancelScope()
    fired: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        if not fired and STEPS[step](request):
            fired.append(str(request.url))
            victim_scope.cancel()

    async with serve_emulator(api_key=API_KEY, lines_per_second=200.0) as server:
        http = httpx.AsyncClient(event_hooks={"request": [on_request]})
        options: dict[str, Any] = {
            "api_key": API_KEY,
            "base_url": server.base_url,
            "batch_size": 3,
            "http_client": http,
            **FAST,
        }
        results: list[Any] = [None, None]
        victim_outcome: list[str] = []

        async def neighbour(client: BatchOpenAI, index: int) -> None:
            results[index] = await client.chat.completions.create(**chat(f"n{index}"))

        async def victim(client: BatchOpenAI) -> None:
            await anyio.sleep(0.01)  # the neighbours are queued first: the victim fills the batch
            with victim_scope:
                await client.chat.completions.create(**chat("victim"))
                victim_outcome.append("answered")
            if victim_scope.cancelled_caught:
                victim_outcome.append("cancelled")

        async def scenario(client: BatchOpenAI) -> None:
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(neighbour, client, 0)
                    tg.start_soon(neighbour, client, 1)
                    tg.start_soon(victim, client)

        if mode == "run":
            async with open_batcher(**options) as client:
                await scenario(client)
        else:
            client = BatchOpenAI(**options)
            await scenario(client)
            await client.close()
        await http.aclose()
        stats = server.emulator.stats()
    assert fired, f"the {step} step never happened"
    assert victim_outcome == ["cancelled"]
    assert [r.choices[0].message.content for r in results] == ["n0", "n1"]
    assert stats.duplicate_executions == 0
    assert stats.batches_created == 1


async def test_cancelling_any_caller_at_any_moment_never_hangs_the_others() -> None:
    """Sweep the cancel moment across the whole lifecycle, standalone (callers drive)."""
    async with serve_emulator(
        api_key=API_KEY, validation_seconds=0.02, lines_per_second=400.0
    ) as server:
        delays = [0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2]
        for round_, delay in enumerate(delays):
            client = BatchOpenAI(api_key=API_KEY, base_url=server.base_url, batch_size=9, **FAST)
            answered: dict[int, str | None] = {}

            async def ask(
                i: int, client: BatchOpenAI = client, into: Any = answered, tag: int = round_
            ) -> None:
                response = await client.chat.completions.create(**chat(f"s{tag}-{i}"))
                into[i] = response.choices[0].message.content

            victim = anyio.CancelScope()

            async def cancellable(scope: anyio.CancelScope = victim) -> None:
                with scope:
                    await ask(99)

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    # the victim asks first, so it is the one driving the engine
                    tg.start_soon(cancellable)
                    await anyio.lowlevel.checkpoint()
                    for i in range(8):
                        tg.start_soon(ask, i)
                    await anyio.sleep(delay)
                    victim.cancel()
                await client.close()
            expected = {i: f"s{round_}-{i}" for i in range(8)}
            assert {i: answered[i] for i in range(8)} == expected
            assert answered.get(99) in (None, f"s{round_}-99")
        stats = server.emulator.stats()
    assert stats.duplicate_executions == 0


async def test_when_every_caller_leaves_the_upstream_batch_is_cancelled() -> None:
    recorder = Recorder()
    async with serve_emulator(api_key=API_KEY, lines_per_second=2.0) as server:
        async with open_batcher(
            api_key=API_KEY, base_url=server.base_url, event_hook=recorder, **FAST
        ) as client:
            with anyio.move_on_after(10):
                async with anyio.create_task_group() as tg:
                    for i in range(3):
                        tg.start_soon(ask, client, f"a{i}")
                    await recorder.wait_for("batch_submitted")
                    tg.cancel_scope.cancel()
            with anyio.fail_after(10):
                await recorder.wait_for("batch_cancelled")
        statuses = server.emulator.stats().batches_by_status
    assert set(statuses) <= {"cancelling", "cancelled"}


# -- shutdown ---------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["exception", "cancellation"])
async def test_exit_by_exception_or_cancellation_cancels_upstream_and_fails_waiters(
    how: str,
) -> None:
    recorder = Recorder()
    outcomes: list[BaseException | None] = []
    escaped: list[BaseException] = []
    async with serve_emulator(api_key=API_KEY, lines_per_second=2.0) as server:

        async def waiter(client: BatchOpenAI, i: int) -> None:
            try:
                await client.chat.completions.create(**chat(f"w{i}"))
                outcomes.append(None)
            except ClientClosedError as exc:
                outcomes.append(exc)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as outer:
                with anyio.CancelScope() as scope:
                    try:
                        async with open_batcher(
                            api_key=API_KEY,
                            base_url=server.base_url,
                            event_hook=recorder,
                            **FAST,
                        ) as client:
                            for i in range(3):
                                outer.start_soon(waiter, client, i)
                            await recorder.wait_for("batch_submitted")
                            if how == "exception":
                                raise LookupError("user code failed")
                            scope.cancel()
                            await anyio.sleep(5)
                    except LookupError as exc:
                        escaped.append(exc)
        statuses = server.emulator.stats().batches_by_status
    assert len(outcomes) == 3
    assert all(isinstance(o, ClientClosedError) for o in outcomes)
    if how == "exception":
        assert [type(e) for e in escaped] == [LookupError]  # unwrapped, not a group
    assert set(statuses) <= {"cancelling", "cancelled"}
    assert recorder.kinds("batch_cancelled")


async def test_exit_without_upstream_cancel_when_configured() -> None:
    async with serve_emulator(api_key=API_KEY, lines_per_second=2.0) as server:
        recorder = Recorder()
        outcome: list[BaseException] = []

        async def ask(client: BatchOpenAI) -> None:
            try:
                await client.chat.completions.create(**chat("x"))
            except ClientClosedError as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            with pytest.raises(LookupError):
                async with open_batcher(
                    api_key=API_KEY,
                    base_url=server.base_url,
                    event_hook=recorder,
                    cancel_batches_on_exit=False,
                    **FAST,
                ) as client:
                    tg.start_soon(ask, client)
                    await recorder.wait_for("batch_submitted")
                    raise LookupError
        assert len(outcome) == 1
        statuses = server.emulator.stats().batches_by_status
    assert "cancelling" not in statuses
    assert "cancelled" not in statuses


async def test_close_is_idempotent_and_safe_from_many_tasks() -> None:
    async with serve_emulator(api_key=API_KEY) as server:
        client = BatchOpenAI(api_key=API_KEY, base_url=server.base_url, **FAST)
        results: list[Any] = []

        async def ask() -> None:
            results.append(await client.chat.completions.create(**chat("c")))

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            await anyio.sleep(0.01)
            for _ in range(3):
                tg.start_soon(client.close)
        await client.close()
    assert results[0].choices[0].message.content == "c"


async def test_unreachable_server_gives_connection_errors_not_hangs() -> None:
    with anyio.fail_after(30):
        async with open_batcher(
            api_key=API_KEY,
            base_url="http://127.0.0.1:9/v1",
            max_retries=1,
            job_error_budget_seconds=0.2,
            **FAST,
        ) as client:
            results = await run_many(client, 2)
    assert all(isinstance(r, APIConnectionError) for r in results)


# -- backpressure -----------------------------------------------------------------------------


async def test_intake_is_bounded() -> None:
    recorder = Recorder()
    async with serve_emulator(api_key=API_KEY) as server:
        async with open_batcher(
            api_key=API_KEY,
            base_url=server.base_url,
            max_queued_requests=5,
            batch_size=100,
            event_hook=recorder,
            **FAST,
        ) as client:
            with anyio.fail_after(30):
                results = await run_many(client, 23)
    assert_all_echoed(results)
    sizes = [e.requests for e in recorder.kinds("batch_submitted")]
    assert sum(sizes) == 23
    assert max(sizes) <= 5


# -- partial results (Doubleword) -----------------------------------------------------------


async def test_doubleword_partial_results_wake_callers_early() -> None:
    recorder = Recorder()
    answered_at: list[float] = []
    async with serve_emulator(
        api_key=API_KEY, flavour="doubleword", lines_per_second=20.0
    ) as server:
        async with open_batcher(
            api_key=API_KEY,
            base_url=server.base_url,
            completion_window="1h",
            event_hook=recorder,
            batch_size=20,
            **FAST,
        ) as client:

            async def ask(i: int) -> None:
                response = await client.chat.completions.create(**chat(f"d{i}"))
                assert response.choices[0].message.content == f"d{i}"
                answered_at.append(anyio.current_time())

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(ask, i)
            completed_at = anyio.current_time()
        stats = server.emulator.stats()
    assert len(answered_at) == 20
    # the first answers came long before the last (the batch takes ~1 s at 20 lines/s)
    assert min(answered_at) < completed_at - 0.4
    assert stats.duplicate_executions == 0


# -- events, logging, secrets -----------------------------------------------------------------


async def test_events_and_logs_never_show_the_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="autobatcher")
    recorder = Recorder()

    def hook(event: BatchEvent) -> None:
        recorder(event)
        raise RuntimeError("a broken hook is logged and ignored")

    async with serve_emulator(api_key=API_KEY, error_rate=0.3, fault_seed=3) as server:
        async with open_batcher(
            api_key=API_KEY, base_url=server.base_url, event_hook=hook, **FAST
        ) as client:
            results = await run_many(client, 5)
        async with open_batcher(api_key="sk-wrong-secret", base_url=server.base_url, **FAST) as bad:
            denied = await run_many(bad, 1)
    assert_all_echoed(results)
    kinds = {e.kind for e in recorder.events}
    assert {"batch_submitted", "batch_completed", "client_closing"} <= kinds
    completed = recorder.kinds("batch_completed")[0]
    assert completed.batch_id and completed.requests == 5 and completed.elapsed > 0
    assert "event_hook raised" in caplog.text
    everything = caplog.text + repr(recorder.events) + repr(denied) + str(denied[0])
    assert API_KEY not in everything
    assert "sk-wrong-secret" not in everything
    assert isinstance(denied[0], Exception)
    assert not isinstance(denied[0], RateLimitError)


# -- soak -------------------------------------------------------------------------------------


async def test_soak_fifty_thousand_requests_under_faults() -> None:
    n = 50_000
    answers: list[str | None] = [None] * n
    recorder = Recorder()
    faults: dict[str, Any] = {
        "error_rate": 0.1,
        "rate_limit_rate": 0.05,
        "drop_rate": 0.05,
        "retry_after_seconds": 0.01,
        "fault_seed": 7,
    }
    async with serve_emulator(api_key=API_KEY, **faults) as server:
        async with open_batcher(
            api_key=API_KEY,
            base_url=server.base_url,
            batch_size=10_000,
            batch_window_seconds=0.2,
            poll_interval_seconds=0.05,
            max_retries=4,
            event_hook=recorder,
        ) as client:

            async def ask(i: int) -> None:
                response = await client.chat.completions.create(**chat(f"soak {i}"))
                answers[i] = response.choices[0].message.content

            with anyio.fail_after(240):
                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        tg.start_soon(ask, i)
        stats = server.emulator.stats()
    assert answers == [f"soak {i}" for i in range(n)]
    assert stats.total_executions == n
    assert stats.duplicate_executions == 0
    assert stats.faults_injected > 0
    assert stats.batches_created == len(recorder.kinds("batch_submitted")) == 5


async def test_cancelling_close_stops_at_once_instead_of_waiting_for_polls() -> None:
    outcomes: list[BaseException] = []
    async with serve_emulator(api_key=API_KEY, lines_per_second=1.0) as server:
        client = BatchOpenAI(
            api_key=API_KEY,
            base_url=server.base_url,
            batch_window_seconds=0.01,
            poll_interval_seconds=3.0,  # a slow poll: close must not wait for it
        )

        async def ask() -> None:
            try:
                await client.chat.completions.create(**chat("pending"))
            except ClientClosedError as exc:
                outcomes.append(exc)

        async with anyio.create_task_group() as tg:
            await tg.start(client.run)
            tg.start_soon(ask)
            await anyio.sleep(0.2)  # submitted, now polling every 3 s
            started = anyio.current_time()
            with anyio.move_on_after(0.1):
                await client.close()
            stopped_after = anyio.current_time() - started
        await client.close()  # already closed: returns at once
    assert len(outcomes) == 1
    assert stopped_after < 2.0


async def test_the_error_budget_is_per_spell_of_trouble_not_per_job() -> None:
    """Trouble at upload, then longer than the budget of progress, then trouble at download:
    the second spell gets a budget of its own (the batch is not given up)."""
    recorder = Recorder()
    async with serve_emulator(
        api_key=API_KEY,
        lines_per_second=5.0,
        error_rate=1.0,
        error_statuses=(503,),
        fault_paths=("/v1/files",),
    ) as server:
        emulator = server.emulator

        async def heal_after_first_failed_download(response: httpx.Response) -> None:
            if response.url.path.endswith("/content") and response.status_code == 503:
                emulator.configure(error_rate=0.0)

        async def weather() -> None:
            await anyio.sleep(0.1)
            emulator.configure(error_rate=0.0)  # the upload goes through on the next attempt
            await recorder.wait_for("batch_submitted")
            # from now on downloads fail, until the first failed one heals the server
            emulator.configure(error_rate=1.0, fault_paths=("/v1/files/",))

        http = httpx.AsyncClient(event_hooks={"response": [heal_after_first_failed_download]})
        async with open_batcher(
            api_key=API_KEY,
            base_url=server.base_url,
            event_hook=recorder,
            http_client=http,
            max_retries=0,
            job_error_budget_seconds=0.6,
            batch_window_seconds=0.01,
            poll_interval_seconds=0.02,
        ) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(weather)
                with anyio.fail_after(30):
                    results = await run_many(client, 6)
        await http.aclose()
        stats = emulator.stats()
    assert_all_echoed(results)
    assert stats.api_calls_by_route.get("POST /v1/files", 0) >= 2  # the upload failed first
    assert stats.api_calls_by_route.get("GET /v1/files/{id}/content", 0) >= 2  # and a download


async def test_intake_is_bounded_in_standalone_mode_too() -> None:
    """No engine task: callers blocked on a full intake must drive the engine themselves."""
    recorder = Recorder()
    async with serve_emulator(api_key=API_KEY) as server:
        client = BatchOpenAI(
            api_key=API_KEY,
            base_url=server.base_url,
            max_queued_requests=5,
            batch_size=100,
            event_hook=recorder,
            **FAST,
        )
        with anyio.fail_after(30):
            results = await run_many(client, 23)
            await client.close()
    assert_all_echoed(results)
    sizes = [e.requests for e in recorder.kinds("batch_submitted")]
    assert sum(sizes) == 23
    assert max(sizes) <= 5


async def test_standalone_abandoned_batch_is_cancelled_by_close() -> None:
    recorder = Recorder()
    async with serve_emulator(api_key=API_KEY, lines_per_second=2.0) as server:
        client = BatchOpenAI(api_key=API_KEY, base_url=server.base_url, event_hook=recorder, **FAST)
        with anyio.move_on_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(ask, client, f"gone{i}")
                await recorder.wait_for("batch_submitted")
                tg.cancel_scope.cancel()
        with anyio.fail_after(10):
            await client.close()
        statuses = server.emulator.stats().batches_by_status
    assert recorder.kinds("batch_cancelled")
    assert set(statuses) <= {"cancelling", "cancelled"}
