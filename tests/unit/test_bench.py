"""The benchmark session's pure helpers: alternation, ratios, the history's instants, the pipe,
and the live benchmarks' checks and summaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from devtools.bench import (
    NOW,
    LiveCheck,
    LiveRun,
    Stats,
    TimedSender,
    alternate,
    drained_pipe,
    history_instants,
    live_line,
    mixed_actions,
    ratio,
    summarize_live_runs,
    transactions,
)
from dry_run.quiet_hours import next_allowed_start
from dry_run.senders import Content, Dispatch, SendResult

SAO_PAULO = ZoneInfo("America/Sao_Paulo")


def test_contenders_take_turns_within_each_round() -> None:
    # GIVEN two contenders that note when they run
    calls: list[str] = []

    def contender(name: str, value: float) -> float:
        calls.append(name)
        return value

    # WHEN they are alternated over three rounds
    stats = alternate({"a": lambda: contender("a", 1.0), "b": lambda: contender("b", 4.0)}, 3)

    # THEN they ran in turn, and the ratio is of their medians
    assert calls == ["a", "b"] * 3
    assert stats["a"] == Stats((1.0, 1.0, 1.0))
    assert ratio(stats["b"], stats["a"]) == 4.0


def test_history_runs_are_spread_over_the_send_windows_within_the_cooldown() -> None:
    # WHEN 250 runs are placed in the 72 hours before a Wednesday noon in São Paulo
    instants = history_instants(NOW, timedelta(hours=72), 250, SAO_PAULO)

    # THEN they are distinct whole minutes, oldest first, inside the cooldown and a send window
    assert len(instants) == 250
    assert instants == sorted(set(instants))
    assert all(NOW - timedelta(hours=72) < moment < NOW for moment in instants)
    assert all(moment.second == 0 for moment in instants)
    assert all(next_allowed_start(moment, SAO_PAULO) is None for moment in instants)
    # Sunday is quiet: the first run is on Monday at 09:00, the window's first minute
    assert instants[0] == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_more_runs_than_open_minutes_is_refused() -> None:
    # WHEN an hour of a Sunday must hold a run THEN there is no open minute for it
    sunday_noon = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="only 0 open minutes"):
        history_instants(sunday_noon, timedelta(hours=1), 1, SAO_PAULO)


def test_the_pipe_is_drained_while_written_and_counted_once_closed() -> None:
    # GIVEN far more than a pipe holds (64 KiB on Linux), written in one call
    text = "x" * 99 + "\n"

    # WHEN it is written to the stream (a writer would block if nothing drained the pipe)
    with drained_pipe() as (stream, drained):
        stream.write(text * 5_000)

    # THEN every byte and line was read by the other end
    assert drained == [500_000, 5_000]


# --- (g) live dispatch ----------------------------------------------------------------------


def test_a_live_run_that_sent_each_lead_once_and_recorded_it_has_no_problem() -> None:
    # GIVEN 1,000 sends counted alike in the decisions, the fake, dispatches and live_log
    check = LiveCheck(1000, 1000, 1000, 1000, 1000, 1000)

    # THEN nothing is wrong
    assert check.problems(1000) == []


@pytest.mark.parametrize(
    ("check", "problem"),
    [
        (LiveCheck(999, 999, 999, 999, 1000, 999), "999 decisions sent, expected 1000"),
        (LiveCheck(1000, 999, 999, 1000, 1000, 1000), "the fake received 999 requests"),
        (LiveCheck(1000, 1000, 999, 1000, 1000, 1000), "1000 requests for 999 recipients"),
        (LiveCheck(1000, 1000, 1000, 998, 1000, 1000), "dispatches: 998 sent of 1000 rows"),
        (LiveCheck(1000, 1000, 1000, 1000, 1001, 1000), "dispatches: 1000 sent of 1001 rows"),
        (LiveCheck(1000, 1000, 1000, 1000, 1000, 0), "live_log: 0 sent, expected 1000"),
    ],
)
def test_a_lost_doubled_or_unrecorded_send_is_a_problem(check: LiveCheck, problem: str) -> None:
    # WHEN one count differs from the sends expected THEN the check names it
    assert any(found.startswith(problem) for found in check.problems(1000))


def test_a_live_runs_rates_and_phases_are_summarized_over_its_rounds() -> None:
    # GIVEN two runs of 1,000 sends: 0.1 s before the first call, 0.1 s after the last one
    runs = [LiveRun(1000, 20.0, 0.1, 19.8, 0.1), LiveRun(1000, 12.5, 0.1, 12.3, 0.1)]

    # WHEN they are summarized
    summary = summarize_live_runs(runs)

    # THEN the rate is sends over the whole invocation, and each phase is in its own unit
    assert runs[1].sends_per_s == 80.0
    assert summary["sent_per_run"] == [1000]
    assert summary["sends_per_s"]["samples"] == [50.0, 80.0]
    assert summary["sends_per_s"]["unit"] == "sends/s"
    assert summary["send_phase_sends_per_s"]["samples"] == [50.505, 81.301]
    assert summary["wall"] == {"unit": "s", "median": 16.25, "min": 12.5, "samples": [20.0, 12.5]}
    assert summary["before_sends"]["samples"] == [100.0, 100.0]
    assert summary["after_sends"]["unit"] == "ms"
    with pytest.raises(ValueError, match="no live run"):
        summarize_live_runs([])


def test_statements_are_grouped_by_transaction_and_autocommit_ones_stand_alone() -> None:
    # GIVEN the events of a live invocation: a mode check, then two transactions
    events = ["mode", "BEGIN", "claim", "COMMIT", "BEGIN", "record", "ROLLBACK", "after"]

    # WHEN they are grouped THEN each transaction runs from BEGIN to its end
    assert transactions(events) == [
        ["mode"],
        ["BEGIN", "claim", "COMMIT"],
        ["BEGIN", "record", "ROLLBACK"],
        ["after"],
    ]


def test_a_mixed_batch_ends_with_one_skip_three_failures_and_one_unknown() -> None:
    assert mixed_actions(10) == {"sent": 5, "failed": 3, "unknown": 1, "skipped": 1}
    assert sum(mixed_actions(1000).values()) == 1000
    with pytest.raises(ValueError, match="at least 6 leads"):
        mixed_actions(5)


def test_the_timed_sender_spans_the_calls_and_passes_answers_through() -> None:
    # GIVEN a sender that answers each dispatch at once
    class Answering:
        def send(self, dispatch: Dispatch) -> SendResult:
            return SendResult("sent", provider_message_id=dispatch.dispatch_key)

    timed = TimedSender(Answering())
    dispatch = Dispatch(
        dispatch_key="k-1",
        tenant_id="t",
        lead_id="l",
        channel="whatsapp",
        template=None,
        recipient="+5511987654321",
        sender="1",
        content=Content(body="oi"),
    )

    # WHEN it sends twice
    first = timed.send(dispatch)
    timed.send(dispatch)

    # THEN the answers pass through, and the span runs from the first start to the last end
    assert first.provider_message_id == "k-1"
    started, ended = timed.span()
    assert started <= ended
    assert len(timed.calls) == 2
    timed.reset()
    with pytest.raises(AssertionError, match="no provider call"):
        timed.span()


def test_the_live_summary_lines_name_rate_ratio_target_and_statements() -> None:
    # GIVEN the figures the live benchmarks report
    rate = {"median": 78.0, "min": 77.0}
    throughput = {
        "leads": 1000,
        "ceiling_sends_per_s": 80.0,
        "speedup_median": 8.2,
        "target_sends_per_s": 50.0,
        "meets_target": True,
        "concurrent": {"sends_per_s": rate, "send_phase_sends_per_s": rate},
        "sequential": {"sends_per_s": {"median": 9.5, "min": 9.4}},
        "lambda_budget": {"timeout_s": 60.0, "sent": 660, "leads": 1000},
    }
    statements = {
        "by_batch_size": {"10": 20, "1000": 20},
        "mixed_by_batch_size": {"10": 25, "1000": 26},
        "constant": True,
        "mixed_constant": False,
        "same_statements_every_size": False,
        "transactions_at_1000": {"all_sent": [["a"], ["BEGIN", "COMMIT"]], "mixed": [["a"]]},
    }

    # WHEN they are summarized in a line each
    lines = live_line("live_throughput", throughput), live_line("live_statements", statements)

    # THEN the line says the rate, the ratio, the target and the statement counts
    assert "1000 sends at 78.0/s" in lines[0]
    assert "= 8.2x" in lines[0]
    assert "target >= 50/s met" in lines[0]
    assert "660 of 1000 sent" in lines[0]
    assert "all sent 10: 20, 1000: 20 (1 + 2)" in lines[1]
    assert lines[1].endswith("NOT constant")
