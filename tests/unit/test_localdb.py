"""Choosing the embedded PostgreSQL: MICRO_AGENT_EMBEDDED_PG is unset, 16 or 18, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.localdb import (
    PGDATA,
    PGDATA_16,
    EmbeddedServerError,
    embedded_pgdata,
    embedded_server,
    embedded_version,
    main,
)


@pytest.mark.parametrize(
    ("value", "version", "pgdata"),
    [(None, "18", PGDATA), ("", "18", PGDATA), ("18", "18", PGDATA), ("16", "16", PGDATA_16)],
)
def test_the_variable_selects_the_version_and_its_own_data_folder(
    monkeypatch: pytest.MonkeyPatch, value: str | None, version: str, pgdata: Path
) -> None:
    # GIVEN MICRO_AGENT_EMBEDDED_PG unset, empty, 18 or 16
    if value is None:
        monkeypatch.delenv("MICRO_AGENT_EMBEDDED_PG", raising=False)
    else:
        monkeypatch.setenv("MICRO_AGENT_EMBEDDED_PG", value)

    # WHEN the choice is resolved THEN it is that version, with that version's own data folder
    assert (embedded_version(), embedded_pgdata()) == (version, pgdata)


@pytest.mark.parametrize("value", ["17", "pg16", " 16", "16.2"])
def test_any_other_value_is_refused_in_one_line_naming_the_variable_and_the_choices(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # GIVEN a value that names no embedded server
    monkeypatch.setenv("MICRO_AGENT_EMBEDDED_PG", value)

    # WHEN the embedded server is asked for THEN it refuses before starting anything
    with pytest.raises(EmbeddedServerError) as caught, embedded_server():
        pass

    message = str(caught.value)
    assert message.startswith(f"MICRO_AGENT_EMBEDDED_PG={value!r} is not a choice")
    assert "use 16 (Aurora's major version) or 18 (the default when unset)" in message
    assert "\n" not in message


def test_the_command_line_says_so_on_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a bad MICRO_AGENT_EMBEDDED_PG and no DATABASE_URL
    monkeypatch.setenv("MICRO_AGENT_EMBEDDED_PG", "17")
    monkeypatch.delenv("DATABASE_URL", raising=False)

    # WHEN a command is to run against the embedded server
    code = main(["run", "--", "true"])

    # THEN nothing runs: one line on stderr names the variable, and the exit code is 2
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("localdb: MICRO_AGENT_EMBEDDED_PG='17' is not a choice")
    assert err.count("\n") == 1
