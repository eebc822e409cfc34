"""At most one provider call per dispatch key (DOMAIN.md, "Live sending: at most once per
dispatch key"), on a real PostgreSQL and the fake Graph API on a real socket.

Racing workers (threads and processes), crashes between claim and send (a BaseException in the
sender, a SIGKILLed process), replays, the master flag, overlapping runs, retries, slow answers,
and a property over generated histories. Calls are counted where they land: the fake's
requests, by the body's ``biz_opaque_callback_data`` (the dispatch key).

The tenants have cooldown 0 unless said otherwise, so that only the key stands between a lead
and a second send on the same local day.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from devtools.fake_graph import FakeGraph, running_fake_graph
from devtools.lambda_context import LocalLambdaContext
from dry_run import bootstrap, handler
from dry_run.live import LiveRuntime
from dry_run.policy import MAX_ATTEMPTS, RETRY_BACKOFF
from dry_run.responses import RunResult
from dry_run.service import run_invocation
from dry_run.sweeper import sweep
from tests.live_support import (
    TOKEN,
    SimulatedCrash,
    callback_keys,
    crashing_runtime,
    graph_runtime,
    insert_phone_leads,
    phone,
    run_live_until_killed,
    run_live_with_own_clock,
    seed_live_tenant,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# Wednesday 25 Nov 2026, 12:00 in São Paulo: inside WhatsApp's allowed window.
NOON = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
# The sweeper's age in the stack (CLAIM_EXPIRY_S's default).
CLAIM_EXPIRY = timedelta(seconds=960)


# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_graph() -> Iterator[FakeGraph]:
    with running_fake_graph(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def graph(module_graph: FakeGraph) -> FakeGraph:
    """The module's fake Graph API, accepting everything and with no request recorded yet."""
    module_graph.clear_scripts()
    module_graph.clear_requests()
    return module_graph


@pytest.fixture
def runtime(graph: FakeGraph) -> Iterator[LiveRuntime]:
    live = graph_runtime(graph.url)
    yield live
    live.close()


@pytest.fixture(scope="module")
def process_pool() -> Iterator[ProcessPoolExecutor]:
    """Four worker processes, spawned: each imports the function like a new container."""
    with ProcessPoolExecutor(
        max_workers=4, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        yield pool


@pytest.fixture(scope="module")
def manager() -> Iterator[Any]:
    with multiprocessing.get_context("spawn").Manager() as shared:
        yield shared


def live_run(
    url: str,
    tenant_id: str,
    run_id: str,
    now: datetime,
    runtime: LiveRuntime,
    *,
    batch_size: int = 10,
) -> RunResult:
    """One live invocation on its own autocommit connection, with a fixed clock."""
    with psycopg.connect(url, autocommit=True) as conn:
        return run_invocation(
            conn,
            tenant_id=tenant_id,
            batch_size=batch_size,
            run_id=run_id,
            clock=lambda: now,
            dispatch_enabled=True,
            live_runtime=lambda: runtime,
        )


def live_run_at_barrier(
    url: str,
    tenant_id: str,
    run_id: str,
    runtime: LiveRuntime,
    barrier: threading.Barrier,
    *,
    go: threading.Event | None = None,
    delay_s: float = 0.0,
    now: datetime = NOON,
) -> RunResult:
    """A worker's live run at ``now`` on its own connection: it passes ``barrier`` with the
    others, then starts (once ``go`` is set, when given, or ``delay_s`` later)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT 1")  # connected before the start, like a warm container
        barrier.wait(timeout=30)
        if go is not None:
            go.wait(60)
        time.sleep(delay_s)
        return run_invocation(
            conn,
            tenant_id=tenant_id,
            batch_size=5,
            run_id=run_id,
            clock=lambda: now,
            dispatch_enabled=True,
            live_runtime=lambda: runtime,
        )


def fetch(url: str, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query.encode(), params).fetchall()


def dispatches(url: str, tenant_id: str) -> list[tuple[Any, ...]]:
    """The tenant's ledger: (dispatch_key, status, attempt, retryable, retry_at, error_code)."""
    return fetch(
        url,
        "SELECT dispatch_key, status, attempt, retryable, retry_at, error_code "
        "FROM dispatches WHERE tenant_id = %s ORDER BY created_at, dispatch_key",
        (tenant_id,),
    )


def touch(url: str, lead_id: str) -> None:
    """Another service edits the lead's contact data: the lead is ready to be examined again."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE leads SET email = 'edited-' || gen_random_uuid() || '@example.com' "
            "WHERE id = %s",
            (lead_id,),
        )


def wait_until(condition: Callable[[], bool], *, what: str, alive: Callable[[], bool]) -> None:
    """Poll until ``condition`` holds; fail when ``alive`` stops holding or after 60 s."""
    deadline = time.monotonic() + 60
    while not condition():
        assert alive(), f"gave up waiting for {what}: the process ended first"
        assert time.monotonic() < deadline, f"gave up waiting for {what} after 60 s"
        time.sleep(0.05)


def seed(url: str, tenant_id: str, count: int = 1, **tenant: Any) -> list[str]:
    with psycopg.connect(url) as conn:
        seed_live_tenant(conn, tenant_id, **tenant)
        return insert_phone_leads(conn, tenant_id, [phone(i) for i in range(count)])


# --- 1. two workers racing one key make one provider call -------------------------------------


# Each round holds the winner's provider call for a while, and starts the second worker either
# at once (a few milliseconds of jitter: it meets the first in its claim transaction, or right
# after it) or once the first call is in flight (it meets a committed, unanswered claim).
HELD_CALL_S = 0.3


def second_start(round_: int) -> tuple[str, float]:
    """How the second worker starts in a round: ("race", jitter_s) or ("in_flight", 0)."""
    if round_ % 2:
        return "in_flight", 0.0
    return "race", random.Random(round_).uniform(0.0, 0.05)


def assert_one_send(round_: int, decisions: list[tuple[str, str, str | None]]) -> str:
    """Exactly one send among the round's decisions, the rest duplicate intents; its key."""
    sent = [key for action, _, key in decisions if action == "sent"]
    assert len(sent) == 1, (round_, decisions)
    assert sorted(d[:2] for d in decisions if d[0] != "sent") in (
        [],
        [("skipped", "duplicate_intent")],
    ), (round_, decisions)
    assert sent[0] is not None
    return sent[0]


def await_first_call(graph: FakeGraph, seen: int, first: Future[Any], go: Any) -> None:
    """Set ``go`` once the round's first provider call is in flight (or the first worker ended)."""
    try:
        wait_until(
            lambda: len(graph.requests) > seen,
            what="the first call",
            alive=lambda: not first.done(),
        )
    finally:
        go.set()


def thread_round(
    url: str, graph: FakeGraph, tenant: str, round_: int, now: datetime = NOON
) -> list[RunResult]:
    """Two threads' live runs on the tenant at ``now``, the second started as ``second_start``
    says."""
    runtimes = [graph_runtime(graph.url), graph_runtime(graph.url)]
    barrier = threading.Barrier(2)
    go = threading.Event()
    how, jitter_s = second_start(round_)
    seen = len(graph.requests)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(
                live_run_at_barrier, url, tenant, f"{tenant}-0", runtimes[0], barrier, now=now
            )
            second = pool.submit(
                live_run_at_barrier,
                url,
                tenant,
                f"{tenant}-1",
                runtimes[1],
                barrier,
                go=go if how == "in_flight" else None,
                delay_s=jitter_s,
                now=now,
            )
            if how == "in_flight":
                await_first_call(graph, seen, first, go)
            return [first.result(timeout=60), second.result(timeout=60)]
    finally:
        go.set()
        for live in runtimes:
            live.close()


def test_two_threads_racing_one_key_make_one_provider_call(
    migrated_db: str, graph: FakeGraph
) -> None:
    graph.script(phone(0), delay_s=HELD_CALL_S)
    rounds = 24
    for round_ in range(rounds):
        # GIVEN a fresh live tenant with one lead
        tenant = f"race-thread-{round_}"
        seed(migrated_db, tenant)
        # WHEN two workers, each with its own connection, run live on it at once
        results = thread_round(migrated_db, graph, tenant, round_)
        # THEN exactly one of them sent, and the ledger holds one row for the key
        key = assert_one_send(
            round_,
            [(d.action, d.reason, d.dispatch_key) for r in results for d in r.decisions],
        )
        assert [row[:2] for row in dispatches(migrated_db, tenant)] == [(key, "sent")]
    # AND the provider received exactly one call per key, one key per round
    calls = callback_keys(graph.requests)
    assert len(calls) == rounds
    assert set(calls.values()) == {1}


def test_two_threads_racing_to_retry_one_key_make_one_provider_call(
    migrated_db: str, graph: FakeGraph, runtime: LiveRuntime
) -> None:
    rounds = 12
    for round_ in range(rounds):
        # GIVEN a fresh live tenant with one lead, whose first send failed retryably
        tenant = f"race-retry-{round_}"
        seed(migrated_db, tenant)
        graph.script(phone(0), times=1, error_code=131000)
        [failed] = live_run(migrated_db, tenant, f"{tenant}-first", NOON, runtime).decisions
        assert failed.action == "failed", (round_, failed)
        # WHEN two workers run live on it at once when the backoff ends (the retry is held)
        graph.script(phone(0), delay_s=HELD_CALL_S)
        results = thread_round(migrated_db, graph, tenant, round_, NOON + RETRY_BACKOFF[0])
        # THEN exactly one of them retried it: attempt 2, the key's second call
        key = assert_one_send(
            round_,
            [(d.action, d.reason, d.dispatch_key) for r in results for d in r.decisions],
        )
        assert key == failed.dispatch_key
        assert [row[:3] for row in dispatches(migrated_db, tenant)] == [(key, "sent", 2)]
        assert callback_keys(graph.requests)[key] == 2, round_


def process_round(  # noqa: PLR0917 - the fixtures and the round
    url: str,
    graph: FakeGraph,
    pool: ProcessPoolExecutor,
    manager: Any,
    tenant: str,
    round_: int,
) -> list[dict[str, Any]]:
    """Two processes' live runs on the tenant, with clocks up to 3 s apart, the second started
    as ``second_start`` says."""
    offsets = random.Random(round_).sample([-2.0, -0.5, 0.0, 1.0, 3.0], 2)
    barrier = manager.Barrier(2)
    go = manager.Event()
    how, jitter_s = second_start(round_)
    seen = len(graph.requests)
    common = (url, graph.url, tenant)
    first = pool.submit(
        run_live_with_own_clock, *common, f"{tenant}-0", 5, NOON, offsets[0], barrier
    )
    second = pool.submit(
        run_live_with_own_clock,
        *common,
        f"{tenant}-1",
        5,
        NOON,
        offsets[1],
        barrier,
        go if how == "in_flight" else None,
        jitter_s,
    )
    if how == "in_flight":
        await_first_call(graph, seen, first, go)
    return [first.result(timeout=120), second.result(timeout=120)]


def test_two_processes_with_their_own_clocks_racing_one_key_make_one_provider_call(
    migrated_db: str, graph: FakeGraph, process_pool: ProcessPoolExecutor, manager: Any
) -> None:
    graph.script(phone(0), delay_s=HELD_CALL_S)
    rounds = 20
    for round_ in range(rounds):
        # GIVEN a fresh live tenant with one lead
        tenant = f"race-process-{round_}"
        seed(migrated_db, tenant)
        # WHEN two processes, whose clocks disagree by up to 3 s, run live on it at once
        responses = process_round(migrated_db, graph, process_pool, manager, tenant, round_)
        # THEN exactly one of them sent, and the ledger holds one row for the key
        key = assert_one_send(
            round_,
            [
                (d["action"], d["reason"], d["dispatchKey"])
                for response in responses
                for d in response["decisions"]
            ],
        )
        assert [row[:2] for row in dispatches(migrated_db, tenant)] == [(key, "sent")]
    # AND the provider received exactly one call per key
    calls = callback_keys(graph.requests)
    assert len(calls) == rounds
    assert set(calls.values()) == {1}


# --- 2. a crash between claim and send leaves `claimed`; the sweeper makes it `unknown` -------


def test_a_crash_between_claim_and_send_is_swept_to_unknown_and_never_sent(
    migrated_db: str, graph: FakeGraph, runtime: LiveRuntime
) -> None:
    # GIVEN a live tenant with one lead
    [lead] = seed(migrated_db, "crash")
    # WHEN its run dies after the claim committed, before the provider call
    crashing = crashing_runtime()
    try:
        with pytest.raises(SimulatedCrash):
            live_run(migrated_db, "crash", "r-crash", NOON, crashing)
    finally:
        crashing.close()
    # THEN the key is left claimed, and no call was made
    [(key, status, attempt, *_)] = dispatches(migrated_db, "crash")
    assert (status, attempt) == ("claimed", 1)
    assert graph.requests == []

    # WHEN the sweeper runs once the claim is older than the function's timeout
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        report = sweep(conn, expiry=CLAIM_EXPIRY, now=NOON + timedelta(minutes=17))
    # THEN the claim is unknown, with its live_log row
    assert report.swept == 1
    assert [row[1] for row in dispatches(migrated_db, "crash")] == ["unknown"]
    assert fetch(
        migrated_db,
        "SELECT run_id, lead_id::text, action, reason, dispatch_key FROM live_log",
    ) == [("r-crash", lead, "unknown", "claim_expired", key)]

    # WHEN another run takes the lead later on the same local day
    again = live_run(migrated_db, "crash", "r-later", NOON + timedelta(minutes=30), runtime)
    # THEN the intent is a duplicate, and still no call was made
    assert [(d.action, d.reason) for d in again.decisions] == [("skipped", "duplicate_intent")]
    assert graph.requests == []


def test_a_process_killed_during_its_provider_call_is_swept_to_unknown_and_never_resent(
    migrated_db: str, graph: FakeGraph, runtime: LiveRuntime
) -> None:
    # GIVEN a live tenant with one lead, whose provider holds the answer
    seed(migrated_db, "killed")
    graph.script(phone(0), times=1, delay_s=30)
    # WHEN the process running it is killed while the call is in flight
    child = multiprocessing.get_context("spawn").Process(
        target=run_live_until_killed,
        args=(migrated_db, graph.url, "killed", "r-killed", NOON),
    )
    child.start()
    try:
        wait_until(lambda: len(graph.requests) == 1, what="the provider call", alive=child.is_alive)
    finally:
        child.kill()
        child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL
    # THEN its claim stays claimed
    [(key, status, *_)] = dispatches(migrated_db, "killed")
    assert status == "claimed"

    # WHEN the sweeper runs, and later another run takes the lead on the same local day
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        assert sweep(conn, expiry=CLAIM_EXPIRY, now=NOON + timedelta(minutes=20)).swept == 1
    again = live_run(migrated_db, "killed", "r-after", NOON + timedelta(minutes=30), runtime)
    # THEN the key is unknown, the intent a duplicate, and the provider saw one call in all
    assert [row[1] for row in dispatches(migrated_db, "killed")] == ["unknown"]
    assert [(d.action, d.reason) for d in again.decisions] == [("skipped", "duplicate_intent")]
    assert callback_keys(graph.requests) == {key: 1}


# --- 3. a replayed runId calls no provider ----------------------------------------------------


def test_a_replayed_run_calls_no_provider_and_answers_what_was_sent(
    migrated_db: str, graph: FakeGraph, runtime: LiveRuntime
) -> None:
    # GIVEN a live run that sent to two leads
    seed(migrated_db, "replay", 2)
    first = live_run(migrated_db, "replay", "r-1", NOON, runtime)
    assert [d.action for d in first.decisions] == ["sent", "sent"]
    # WHEN the same runId is invoked again later, with the provider now refusing everything
    graph.script(error_code=131000)
    again = live_run(migrated_db, "replay", "r-1", NOON + timedelta(hours=1), runtime)
    # THEN it replays the recorded sends and calls no provider
    assert again.replayed
    assert [(d.action, d.provider_message_id) for d in again.decisions] == [
        ("sent", d.provider_message_id) for d in first.decisions
    ]
    assert len(graph.requests) == 2
    assert [row[1] for row in dispatches(migrated_db, "replay")] == ["sent", "sent"]


def test_a_replay_after_a_crash_between_claim_and_record_reports_unknown_and_calls_no_provider(
    migrated_db: str, graph: FakeGraph, runtime: LiveRuntime
) -> None:
    # GIVEN a live run that died after its provider call, before recording the answer
    [lead] = seed(migrated_db, "unrecorded")
    crashing = crashing_runtime(runtime)
    try:
        with pytest.raises(SimulatedCrash):
            live_run(migrated_db, "unrecorded", "r-1", NOON, crashing)
    finally:
        crashing.close()
    assert len(graph.requests) == 1
    # WHEN its runId is invoked again (Lambda's retry of the event)
    again = live_run(migrated_db, "unrecorded", "r-1", NOON + timedelta(minutes=1), runtime)
    # THEN it answers the send as unknown, unrecorded, and calls no provider
    assert again.replayed
    assert [(d.lead_id, d.action, d.reason) for d in again.decisions] == [
        (lead, "unknown", "outcome_unrecorded")
    ]
    assert len(graph.requests) == 1
    assert [row[1] for row in dispatches(migrated_db, "unrecorded")] == ["claimed"]


def test_a_replay_while_the_run_is_still_sending_reports_unknown_and_calls_no_provider(
    migrated_db: str, graph: FakeGraph, runtime: LiveRuntime
) -> None:
    # GIVEN a live run whose provider call is held
    [lead] = seed(migrated_db, "early-replay")
    graph.script(phone(0), times=1, delay_s=1.0)
    with ThreadPoolExecutor(max_workers=1) as pool:
        original = pool.submit(live_run, migrated_db, "early-replay", "r-1", NOON, runtime)
        wait_until(
            lambda: len(graph.requests) == 1,
            what="the provider call",
            alive=lambda: not original.done(),
        )
        # WHEN its runId is invoked again meanwhile (an impatient retry), on another connection
        replay_runtime = graph_runtime(graph.url)
        try:
            again = live_run(migrated_db, "early-replay", "r-1", NOON, replay_runtime)
        finally:
            replay_runtime.close()
        sent = original.result(timeout=60)
    # THEN the replay reports the send as unknown, unrecorded, and makes no call of its own
    assert again.replayed
    assert [(d.lead_id, d.action, d.reason) for d in again.decisions] == [
        (lead, "unknown", "outcome_unrecorded")
    ]
    assert [d.action for d in sent.decisions] == ["sent"]
    assert len(graph.requests) == 1


def test_a_replay_of_a_run_whose_retry_ran_out_of_time_reports_only_the_deferral(
    migrated_db: str, graph: FakeGraph, runtime: LiveRuntime
) -> None:
    # GIVEN a lead whose first send failed retryably
    seed(migrated_db, "released")
    graph.script(phone(0), times=1, error_code=131000)
    [failed] = live_run(migrated_db, "released", "r-1", NOON, runtime).decisions
    assert failed.action == "failed"
    # and a run, after the backoff, that claims the retry and then has no time left to send it
    readings = iter([300.0])
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        retry = run_invocation(
            conn,
            tenant_id="released",
            batch_size=10,
            run_id="r-2",
            clock=lambda: NOON + RETRY_BACKOFF[0],
            dispatch_enabled=True,
            live_runtime=lambda: runtime,
            remaining_s=lambda: next(readings, 1.0),
        )
    assert [(d.action, d.reason) for d in retry.decisions] == [("deferred", "time_budget")]
    assert dispatches(migrated_db, "released")[0][1:3] == ("failed", 1)
    # WHEN that run's runId is invoked again
    again = live_run(migrated_db, "released", "r-2", NOON + timedelta(minutes=6), runtime)
    # THEN the replay answers what the run recorded, the deferral, and calls no provider
    assert again.replayed
    assert [(d.action, d.reason) for d in again.decisions] == [("deferred", "time_budget")]
    assert len(graph.requests) == 1


# --- 4. only exactly "true" with a live tenant is live ----------------------------------------


def invoke(url: str, flag: str | None, runtime: LiveRuntime, tenant_id: str) -> dict[str, Any]:
    """The handler, built by bootstrap from an environment, with the runtime as live senders."""
    environ = {"DATABASE_URL": url}
    if flag is not None:
        environ["MICRO_AGENT_DISPARO_ENABLED"] = flag
    deps = bootstrap.build(environ)
    deps.live_factory = lambda settings: runtime
    try:
        return handler.handle(
            {"tenantId": tenant_id, "batchSize": 10, "runId": "r-flag"},
            LocalLambdaContext(),
            deps=deps,
            clock=lambda: NOON,
        )
    finally:
        deps.close()
        handler.metrics.clear_metrics()
        handler.reset()


@pytest.mark.parametrize("flag", ["TRUE", "True", "1", "yes", "", "true ", " true", None])
def test_a_flag_other_than_exactly_true_dry_runs_a_live_tenant(
    migrated_db: str, graph: FakeGraph, runtime: LiveRuntime, flag: str | None
) -> None:
    # GIVEN a live tenant with a lead
    seed(migrated_db, "flag")
    # WHEN the function runs with the flag anything but exactly "true"
    response = invoke(migrated_db, flag, runtime, "flag")
    # THEN it is a dry run: no provider call, no dispatches, no live history
    assert response["dryRun"] is True
    assert [d["action"] for d in response["decisions"]] == ["would_send"]
    assert graph.requests == []
    assert fetch(migrated_db, "SELECT count(*) FROM dispatches") == [(0,)]
    assert fetch(migrated_db, "SELECT count(*) FROM live_log") == [(0,)]
    assert fetch(migrated_db, "SELECT action, flag_enabled FROM dry_run_log") == [
        ("would_send", False)
    ]


def test_the_flag_on_with_a_dry_run_tenant_is_a_shadow_dry_run(
    migrated_db: str, graph: FakeGraph, runtime: LiveRuntime
) -> None:
    # GIVEN a tenant whose mode is dry_run
    seed(migrated_db, "shadow", mode="dry_run")
    # WHEN the function runs with the flag exactly "true"
    response = invoke(migrated_db, "true", runtime, "shadow")
    # THEN it rehearses: a dry run recorded with the flag on, and nothing sent
    assert response["dryRun"] is True
    assert graph.requests == []
    assert fetch(migrated_db, "SELECT count(*) FROM dispatches") == [(0,)]
    assert fetch(migrated_db, "SELECT action, flag_enabled FROM dry_run_log") == [
        ("would_send", True)
    ]


def test_the_flag_exactly_true_with_a_live_tenant_sends(
    migrated_db: str, graph: FakeGraph, runtime: LiveRuntime
) -> None:
    # GIVEN a live tenant with a lead
    seed(migrated_db, "live")
    # WHEN the function runs with the flag exactly "true"
    response = invoke(migrated_db, "true", runtime, "live")
    # THEN it sends (the control of the two tests above)
    assert response["dryRun"] is False
    assert [d["action"] for d in response["decisions"]] == ["sent"]
    assert len(graph.requests) == 1
    assert fetch(migrated_db, "SELECT count(*) FROM dry_run_log") == [(0,)]


# --- 5. overlapping live runs send each recipient once and lose no lead -----------------------


@pytest.mark.parametrize("trial", range(2))
def test_four_overlapping_live_runs_send_each_recipient_once_and_lose_no_lead(
    migrated_db: str,
    graph: FakeGraph,
    process_pool: ProcessPoolExecutor,
    manager: Any,
    trial: int,
) -> None:
    # GIVEN a live tenant with 40 leads, each with its own phone
    tenant = f"overlap-{trial}"
    lead_ids = seed(migrated_db, tenant, 40)
    # (each answer a little slow, so that the runs' sends overlap too)
    graph.script(delay_s=0.1)
    # WHEN 4 processes, whose clocks disagree by a few seconds, run batches covering them all
    offsets = [-3.0, -1.0, 0.0, 2.0]
    random.Random(trial).shuffle(offsets)
    barrier = manager.Barrier(4)
    futures = [
        process_pool.submit(
            run_live_with_own_clock,
            migrated_db,
            graph.url,
            tenant,
            f"{tenant}-{index}",
            40,
            NOON,
            offset,
            barrier,
        )
        for index, offset in enumerate(offsets)
    ]
    responses = [future.result(timeout=120) for future in futures]

    # THEN no recipient got two calls, and every lead got exactly one send across the runs
    recipients = [request.recipient for request in graph.requests]
    assert len(recipients) == len(set(recipients)) == 40
    sent = sorted(
        d["leadId"]
        for response in responses
        for d in response["decisions"]
        if d["action"] == "sent"
    )
    assert sent == sorted(lead_ids)
    assert all(
        (d["action"], d["reason"]) == ("skipped", "duplicate_intent")
        for response in responses
        for d in response["decisions"]
        if d["action"] != "sent"
    )
    assert fetch(
        migrated_db,
        "SELECT status, count(*) FROM dispatches WHERE tenant_id = %s GROUP BY status",
        (tenant,),
    ) == [("sent", 40)]


# --- 6. retries: a retryable failure is retried after its backoff, at most 3 attempts ---------


@pytest.mark.parametrize("code", [131000, 130429])
def test_a_retryable_failure_is_retried_after_its_backoff_and_never_a_fourth_time(
    migrated_db: str, graph: FakeGraph, runtime: LiveRuntime, code: int
) -> None:
    # GIVEN a live tenant with one lead, whose every send the provider refuses for a while
    [lead] = seed(migrated_db, "retry")
    graph.script(phone(0), error_code=code)

    # WHEN a run sends to it
    first = live_run(migrated_db, "retry", "r-1", NOON, runtime)
    # THEN the send failed, retryable, due again after the first backoff
    [decision] = first.decisions
    assert (decision.action, decision.error_code) == ("failed", str(code))
    key = decision.dispatch_key
    assert dispatches(migrated_db, "retry") == [
        (key, "failed", 1, True, NOON + RETRY_BACKOFF[0], str(code))
    ]

    # WHEN the lead is edited and a run takes it before the backoff ends
    early = NOON + RETRY_BACKOFF[0] - timedelta(minutes=2)
    touch(migrated_db, lead)
    held = live_run(migrated_db, "retry", "r-2", early, runtime)
    # THEN it is deferred until the backoff's end, with no call
    assert [(d.action, d.reason, d.not_before) for d in held.decisions] == [
        ("deferred", "retry_backoff", NOON + RETRY_BACKOFF[0])
    ]
    assert callback_keys(graph.requests) == {key: 1}

    # WHEN runs come as each backoff ends
    second_at = NOON + RETRY_BACKOFF[0]
    second = live_run(migrated_db, "retry", "r-3", second_at, runtime)
    third_at = second_at + RETRY_BACKOFF[1]
    third = live_run(migrated_db, "retry", "r-4", third_at, runtime)
    # THEN the key is claimed again each time: attempts 2 and 3, one call each
    assert [d.action for d in second.decisions + third.decisions] == ["failed", "failed"]
    assert callback_keys(graph.requests) == {key: 3}
    [(_, status, attempt, _, retry, _)] = dispatches(migrated_db, "retry")
    assert (status, attempt, retry) == ("failed", 3, None)

    # WHEN the provider would now accept, and a run takes the lead later the same day
    graph.clear_scripts()
    touch(migrated_db, lead)
    fourth = live_run(migrated_db, "retry", "r-5", third_at + timedelta(hours=2), runtime)
    # THEN the attempts are used up: a duplicate intent, and no 4th call
    assert [(d.action, d.reason) for d in fourth.decisions] == [("skipped", "duplicate_intent")]
    assert callback_keys(graph.requests) == {key: MAX_ATTEMPTS}


def test_a_permanent_failure_is_never_retried_for_its_key(
    migrated_db: str, graph: FakeGraph, runtime: LiveRuntime
) -> None:
    # GIVEN a live tenant with one lead, and a provider refusing it for good (re-engagement)
    [lead] = seed(migrated_db, "permanent")
    graph.script(phone(0), error_code=131047)
    [decision] = live_run(migrated_db, "permanent", "r-1", NOON, runtime).decisions
    assert (decision.action, decision.error_code) == ("failed", "131047")
    # WHEN the provider would now accept, and runs take the edited lead later the same day
    graph.clear_scripts()
    later = []
    for index, minutes in enumerate((6, 31, 240)):
        touch(migrated_db, lead)
        result = live_run(
            migrated_db, "permanent", f"r-{index + 2}", NOON + timedelta(minutes=minutes), runtime
        )
        later += [(d.action, d.reason) for d in result.decisions]
    # THEN the key is never claimed again: one call in all
    assert later == [("skipped", "duplicate_intent")] * 3
    assert callback_keys(graph.requests) == {decision.dispatch_key: 1}
    assert dispatches(migrated_db, "permanent") == [
        (decision.dispatch_key, "failed", 1, False, None, "131047")
    ]


def test_an_unreachable_number_opts_the_lead_out_of_whatsapp_for_good(
    migrated_db: str, graph: FakeGraph, runtime: LiveRuntime
) -> None:
    # GIVEN a live tenant with one lead whose number WhatsApp cannot reach
    [lead] = seed(migrated_db, "unreachable")
    graph.script(phone(0), error_code=131026)
    # WHEN a run sends to it
    [decision] = live_run(migrated_db, "unreachable", "r-1", NOON, runtime).decisions
    # THEN the send failed for good, and the lead is opted out of WhatsApp by the provider
    assert (decision.action, decision.error_code) == ("failed", "131026")
    assert fetch(migrated_db, "SELECT lead_id::text, channel, source FROM opt_outs") == [
        (lead, "whatsapp", "provider_error")
    ]
    # WHEN runs take the lead later that day (edited) and on the next day
    graph.clear_scripts()
    touch(migrated_db, lead)
    later = live_run(migrated_db, "unreachable", "r-2", NOON + timedelta(minutes=10), runtime)
    next_day = live_run(migrated_db, "unreachable", "r-3", NOON + timedelta(days=1), runtime)
    # THEN WhatsApp is never called for it again
    assert [(d.action, d.reason) for d in later.decisions + next_day.decisions] == [
        ("skipped", "no_eligible_channel")
    ] * 2
    assert len(graph.requests) == 1


# --- 7. an answer slower than the read timeout is unknown, never resent -----------------------


def test_an_answer_slower_than_the_read_timeout_is_unknown_and_never_resent(
    migrated_db: str, graph: FakeGraph
) -> None:
    # GIVEN a live tenant with one lead, and a provider answering it after the read timeout
    seed(migrated_db, "slow")
    graph.script(phone(0), times=1, delay_s=2.0)
    impatient = graph_runtime(graph.url, read_timeout_s=0.3)
    try:
        # WHEN a run sends to it
        [decision] = live_run(migrated_db, "slow", "r-1", NOON, impatient).decisions
        # THEN the outcome is unknown
        assert decision.action == "unknown"
        assert [row[1] for row in dispatches(migrated_db, "slow")] == ["unknown"]
        # WHEN a later run takes the lead on the same local day, the provider answering at once
        later = live_run(migrated_db, "slow", "r-2", NOON + timedelta(minutes=10), impatient)
    finally:
        impatient.close()
    # THEN the key is not sent again
    assert [(d.action, d.reason) for d in later.decisions] == [("skipped", "duplicate_intent")]
    assert callback_keys(graph.requests) == {decision.dispatch_key: 1}


# --- 8. a property over generated histories ---------------------------------------------------

# What the fake answers a lead's call in a run step.
ANSWERS: dict[str, dict[str, Any]] = {
    "accept": {},
    "retryable": {"error_code": 131000},
    "throttled": {"error_code": 130429},
    "permanent": {"error_code": 131047},
    "unreachable": {"error_code": 131026},
    "timeout": {"delay_s": 0.8},
    "dropped": {"drop": "reset"},
    "bad_gateway": {"raw_body": b"<html>502 Bad Gateway</html>", "http_status": 502},
}
RETRYABLE = frozenset({"retryable", "throttled"})
PROPERTY_LEADS = 3
PROPERTY_READ_TIMEOUT_S = 0.3

# Retryable answers weigh more: a key reaches its 2nd and 3rd attempts only through them.
answer_names = st.sampled_from([*ANSWERS, "retryable", "retryable"])
# The clock moves before each step by: nothing, inside and across both backoffs (5 and 30
# minutes), past the sweeper's age, and across local midnight (a day later, same hour).
minutes = st.sampled_from([0, 0, 1, 4, 5, 6, 17, 29, 31, 1440])
run_steps = st.tuples(
    st.just("run"),
    minutes,
    st.lists(answer_names, min_size=PROPERTY_LEADS, max_size=PROPERTY_LEADS).map(tuple),
)
# Runs are the steps that matter most: they weigh more.
steps = st.one_of(
    run_steps,
    run_steps,
    st.tuples(st.just("crash"), minutes, st.sampled_from(["before_call", "after_call"])),
    st.tuples(st.sampled_from(["sweep", "replay"]), minutes, st.just(None)),
    st.tuples(st.just("touch"), minutes, st.integers(0, PROPERTY_LEADS - 1)),
)
# A history starts with a run (else nothing is claimed, and nothing is checked).
histories = st.builds(
    lambda first, rest: [first, *rest], run_steps, st.lists(steps, min_size=5, max_size=18)
)


@dataclass
class Call:
    """One provider call the fake received: when (the model's clock) and how it ended."""

    at: datetime
    # An ANSWERS name when the run recorded the answer; "unrecorded" when the run died.
    answer: str


@dataclass
class History:
    """What the test knows: the model's clock, the runs made, and each key's calls."""

    url: str
    tenant_id: str
    lead_ids: list[str]
    now: datetime = NOON
    run_ids: list[str] = field(default_factory=list)
    calls: dict[str, list[Call]] = field(default_factory=dict)

    def new_run_id(self) -> str:
        self.run_ids.append(f"{self.tenant_id}-r{len(self.run_ids)}")
        return self.run_ids[-1]

    def heard(self, requests: list[Any], answers: dict[str, str] | None) -> None:
        """Attribute a step's requests to their keys (answers by recipient; None: unrecorded)."""
        for request in requests:
            key = str(request.json["biz_opaque_callback_data"])
            answer = "unrecorded" if answers is None else answers[str(request.recipient)]
            self.calls.setdefault(key, []).append(Call(self.now, answer))

    def check(self, step: tuple[str, int, Any]) -> None:
        """The protocol's invariants over every key so far."""
        ledger = {
            key: (status, attempt)
            for key, status, attempt, *_ in dispatches(self.url, self.tenant_id)
        }
        for key, calls in self.calls.items():
            # At most 3 calls; a repeated call only after retryable failures the run recorded,
            # and never before the backoff ended.
            assert len(calls) <= MAX_ATTEMPTS, (step, key, calls)
            for index in range(1, len(calls)):
                earlier = calls[:index]
                assert all(call.answer in RETRYABLE for call in earlier), (step, key, calls)
                assert calls[index].at >= earlier[-1].at + RETRY_BACKOFF[index - 1], (
                    step,
                    key,
                    calls,
                )
            # Every call was claimed first: its key is in the ledger, one attempt per call.
            assert key in ledger, (step, key)
            assert len(calls) <= ledger[key][1], (step, key, calls, ledger[key])


@pytest.mark.timeout(300)
@settings(
    max_examples=40,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(  # a key through its 3 attempts, with a crash and a sweep in between
    history=[
        ("run", 0, ("retryable", "accept", "timeout")),
        ("crash", 1, "after_call"),
        ("run", 5, ("retryable", "retryable", "accept")),
        ("sweep", 17, None),
        ("run", 14, ("retryable", "accept", "accept")),
        ("touch", 0, 0),
        ("run", 1, ("accept", "accept", "accept")),
        ("run", 1440, ("accept", "accept", "accept")),
    ]
)
@example(  # a retry's claim dies before its call: swept to unknown, never called again
    history=[
        ("run", 0, ("retryable", "retryable", "accept")),
        ("crash", 5, "before_call"),
        ("replay", 0, None),
        ("run", 1, ("accept", "accept", "accept")),
        ("sweep", 17, None),
        ("touch", 31, 0),
        ("run", 0, ("accept", "accept", "accept")),
    ]
)
@example(  # a run dies after its calls: swept to unknown, never called again
    history=[
        ("crash", 0, "after_call"),
        ("replay", 1, None),
        ("sweep", 17, None),
        ("touch", 0, 0),
        ("run", 0, ("accept", "accept", "accept")),
        ("run", 6, ("accept", "accept", "accept")),
    ]
)
@given(history=histories)
def test_no_key_is_called_again_unless_every_earlier_call_failed_retryably(
    migrated_db: str, module_graph: FakeGraph, history: list[tuple[str, int, Any]]
) -> None:
    graph = module_graph
    graph.clear_scripts()
    graph.clear_requests()
    # GIVEN a fresh live tenant (cooldown 0) with three leads, each with its own phone
    tenant = f"prop-{uuid.uuid4().hex[:10]}"
    model = History(migrated_db, tenant, seed(migrated_db, tenant, PROPERTY_LEADS))
    phones = [phone(i) for i in range(PROPERTY_LEADS)]
    live = graph_runtime(graph.url, read_timeout_s=PROPERTY_READ_TIMEOUT_S)
    try:
        # WHEN the steps happen in order, THEN the invariants hold after each one
        for step in history:
            kind, advance, arg = step
            model.now += timedelta(minutes=advance)
            seen = len(graph.requests)
            if kind == "run":
                answers = dict(zip(phones, arg, strict=True))
                graph.clear_scripts()
                for number, answer in answers.items():
                    if ANSWERS[answer]:
                        graph.script(number, **ANSWERS[answer])
                run_id = model.new_run_id()
                live_run(migrated_db, tenant, run_id, model.now, live)
                # Every claim of a run that did not die is answered or released.
                assert fetch(
                    migrated_db,
                    "SELECT count(*) FROM dispatches WHERE run_id = %s AND status = 'claimed'",
                    (run_id,),
                ) == [(0,)], step
                model.heard(graph.requests[seen:], answers)
            elif kind == "crash":
                graph.clear_scripts()
                crashing = crashing_runtime(live if arg == "after_call" else None)
                try:
                    live_run(migrated_db, tenant, model.new_run_id(), model.now, crashing)
                except SimulatedCrash:
                    pass
                finally:
                    crashing.close()  # waits for the sends still in flight
                model.heard(graph.requests[seen:], None)
            else:
                if kind == "touch":
                    touch(migrated_db, model.lead_ids[arg])
                elif kind == "sweep":
                    with psycopg.connect(migrated_db, autocommit=True) as conn:
                        sweep(conn, expiry=CLAIM_EXPIRY, now=model.now)
                elif model.run_ids:  # replay the latest run
                    replayed = live_run(migrated_db, tenant, model.run_ids[-1], model.now, live)
                    assert replayed.replayed, step
                    # One decision per lead, as the run made them.
                    replayed_leads = [d.lead_id for d in replayed.decisions]
                    assert len(replayed_leads) == len(set(replayed_leads)), (step, replayed)
                assert len(graph.requests) == seen, step  # only runs call a provider
            model.check(step)
        event(f"most calls for one key: {max(map(len, model.calls.values()), default=0)}")
    finally:
        live.close()
