"""Answers that would look normal but are not: each gets a note on stderr and in the JSON."""

from __future__ import annotations

from pathlib import Path

from consumer_helpers import cli_json, ledger_cli


def test_a_future_instant_is_noted(ledger: Path) -> None:
    args = ["asof", "--service", "checkout", "--env", "prod", "--db", str(ledger),
            "--at", "2099-01-01T00:00:00Z"]  # fmt: skip
    human = ledger_cli(*args)
    assert human.returncode == 0
    assert "note: --at 2099-01-01T00:00:00+00:00 is in the future" in human.stderr
    (note,) = cli_json(ledger_cli(*args, "--json"))["notes"]
    assert "is in the future" in note


def test_a_known_at_before_anything_was_recorded_is_noted(ledger: Path) -> None:
    result = ledger_cli("asof", "--service", "checkout", "--env", "prod", "--db", str(ledger),
                        "--known-at", "2001-01-01T00:00:00Z", "--json")  # fmt: skip
    assert result.returncode == 0
    answer = cli_json(result)
    assert answer["deployment"] is None
    assert answer["notes"] == [
        "the ledger had recorded nothing by --known-at 2001-01-01T00:00:00+00:00"
    ]


def test_an_ordinary_answer_has_no_notes(ledger: Path) -> None:
    result = ledger_cli("asof", "--service", "checkout", "--env", "prod", "--db", str(ledger),
                        "--json")  # fmt: skip
    assert "notes" not in cli_json(result) and "note:" not in result.stderr


def test_a_proof_of_an_entry_that_does_not_exist_says_so(ledger: Path) -> None:
    result = ledger_cli("proof", "inclusion", "--db", str(ledger), "--seq", "99")
    assert result.returncode == 2
    assert "there is no entry 99: the ledger holds entries 1 to 12" in result.stderr
