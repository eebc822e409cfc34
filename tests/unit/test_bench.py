"""The benchmark session's pure helpers: alternation, ratios, the history's instants, the pipe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from devtools.bench import NOW, Stats, alternate, drained_pipe, history_instants, ratio
from dry_run.quiet_hours import next_allowed_start

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
