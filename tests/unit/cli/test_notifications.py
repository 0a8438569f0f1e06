"""`keyrotor notifications apply`'s input, checked before any server is called (--dry-run calls none)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from keyrotor.cli.main import app

HOOK = ("notifications", "apply", "--webhook", "http://hooks.example/keyrotor", "--dry-run", "--json")


def test_the_extra_kinds_may_be_repeated_or_comma_separated() -> None:
    done = CliRunner().invoke(app, [*HOOK, "--also", "published,completed", "--also", "rolled-back"])
    assert done.exit_code == 0, done.output
    planned = json.loads(done.stdout)["automations"]
    assert len(planned) == 3 and "completed, published, rolled-back" in planned[1], planned


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--also", "published,nope"], "--also: nope is not one of"),
        (["--remind-after", "5s"], "at least 10s"),
        (["--remind-after", "soon"], "--remind-after:"),
        (["--owner-tag", " "], "--owner-tag"),
        (["--slack-webhook", "http://other"], "exactly one of"),
    ],
)
def test_bad_input_is_refused_with_exit_2(args: list[str], said: str) -> None:
    done = CliRunner().invoke(app, [*HOOK, *args])
    assert done.exit_code == 2 and said in json.loads(done.stdout)["message"], done.output
