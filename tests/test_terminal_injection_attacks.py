"""Terminal injection: strings a producer chose (an actor, a change ref, the key id of an
unauthenticated message) reach the terminal as the text they are.

Rich markup in an actor once broke ``timeline`` and ``search`` for that stream for good,
a key id of ``[/red]`` made ``ledger quarantine`` exit 1, and ``[conceal]`` hid a name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from consumer_helpers import ledger_cli
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers import IMAGE_A, make_event
from ledger_builders import append, signers
from rich.text import Text

from ledger.cli._terminal import TerminalConsole, plain, styled
from ledger.errors import RejectedMessage
from ledger.log.chain import Witness
from ledger.store.batch import Plan, Received, Rejected
from ledger.store.writer import LedgerWriter
from ledger.transport.producer import seal
from ledger.wire.keyring import Signer
from ledger.wire.verify import verify_message

HOSTILE = "[/red][conceal]mallory[/conceal]alice\x1b[2J\x1b]0;owned\x07\u202eevil"
"""Closing markup, concealed text, a clear-screen and a window-title sequence, a bell and
a right-to-left override."""
SHOWN = "[/red][conceal]mallory[/conceal]alice\\x1b[2J\\x1b]0;owned\\x07\\u202eevil"


def test_plain_shows_every_control_character_as_an_escape() -> None:
    assert plain(HOSTILE) == SHOWN
    assert plain("two\nlines\tand a tab") == "two\nlines\tand a tab"


@pytest.mark.parametrize("printed", [HOSTILE, Text(HOSTILE), styled((HOSTILE, "red"), HOSTILE)])
def test_the_console_prints_no_markup_and_no_control_sequence(printed: str | Text) -> None:
    console = TerminalConsole(force_terminal=True, width=400, color_system=None)
    with console.capture() as captured:
        console.print(printed)
    text = captured.get()
    assert "mallory" in text and "[conceal]" in text
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text


@pytest.fixture
def hostile_ledger(tmp_path: Path) -> Path:
    """Events whose actor and change ref carry markup and escape sequences, and a refused
    message signed under a key id that does."""
    ci, _, ring = signers()
    db = tmp_path / "ledger.duckdb"
    events = [
        make_event(service="checkout", actor=HOSTILE, change_ref=f"CHG-{HOSTILE}", image=IMAGE_A),
        make_event("mutation.applied", service="checkout", actor=HOSTILE),
    ]
    stranger = Signer("[/red]", Ed25519PrivateKey.generate())
    refused = seal(make_event(service="checkout"), stranger)
    writer = LedgerWriter(db)
    try:
        append(writer, ring, [seal(e, ci) for e in events], 0)
        try:
            verify_message(refused, ring, events[0].time)
        except RejectedMessage as exc:
            received = Received("ledger.events", 0, 2, None, refused, 0, Witness.CONSUMER)
            writer.commit(Plan(quarantined=[Rejected(received, exc.reason, exc.message)]))
    finally:
        writer.close()
    return db


@pytest.mark.parametrize(
    "command",
    [
        ["quarantine"],
        ["timeline", "--service", "checkout", "--env", "prod"],
        ["search", "--image", IMAGE_A],
        ["asof", "--service", "checkout", "--env", "prod"],
    ],
)
def test_stored_markup_and_escapes_are_printed_as_text(
    hostile_ledger: Path, command: list[str]
) -> None:
    result = ledger_cli(*command, "--db", str(hostile_ledger), COLUMNS="400")
    assert result.returncode == 0, result.stderr
    printed = result.stdout + result.stderr
    assert "[/red]" in printed
    assert "\x1b" not in printed and "\x07" not in printed and "\u202e" not in printed
    if command[0] != "quarantine":
        assert "mallory" in printed and "\\x1b[2J" in printed
