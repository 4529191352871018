"""Rewrite attacks: a chain rewritten consistently (every hash and the tree recomputed), a
forged or re-signed checkpoint, a tampered tree node, and a stolen producer key used after
its revocation. Each must fail `ledger verify` with a precise check.

Each test edits its own copy (``ledger``) of the ``witnessed`` ledger of conftest.py.
"""

from __future__ import annotations

import base64
import shutil
from datetime import UTC
from pathlib import Path

import pytest
from attack_helpers import (
    LEDGER_KEY,
    Witnessed,
    entry,
    execute,
    failure,
    re_sign_checkpoints,
    rewrite_chain,
    verify_cli,
    with_witness,
)
from consumer_helpers import cli_json, entries, ledger_cli

from ledger.errors import ChainBrokenError, InconsistentCheckpointError
from ledger.log.checkpoint import Checkpoint, sign_checkpoint
from ledger.wire.keyring import Keyring, Signer


def _without_entry_4(db: Path) -> bytes:
    """Entry 4 removed and everything after it renumbered, rehashed and re-treed."""
    return rewrite_chain(db, [r for r in entries(db) if r["seq"] != 4])


# --- a consistently rewritten chain --------------------------------------------------------------


def test_rewritten_chain_against_its_stored_checkpoints(witnessed: Witnessed, ledger: Path) -> None:
    """Every entry, link and tree node checks out; the stored checkpoint of size 6 signs
    the tree the ledger had before."""
    new_root = _without_entry_4(ledger)
    code, report = verify_cli(witnessed, ledger)
    assert code == 1
    assert (report["check"], report["first_bad_seq"]) == ("checkpoint", None)
    assert "stored checkpoint 2 (size 6)" in report["reason"]
    assert "entries up to 6 were rewritten" in report["reason"]
    error = failure(ledger, witnessed.ring)
    assert isinstance(error, InconsistentCheckpointError)
    assert error.size == 6 and error.ledger_root not in (None, error.checkpoint_root)
    assert new_root != error.checkpoint_root


def test_rewritten_chain_with_checkpoints_re_signed_by_another_key(
    witnessed: Witnessed, ledger: Path
) -> None:
    """The attacker re-signs every stored checkpoint with a key of their own, named like
    the ledger's: the key pinned in the ledger tells them apart, and once the attacker
    rewrites the pin too (they hold the file), only the trusted key does."""
    _without_entry_4(ledger)
    impostor = Signer.generate(LEDGER_KEY)
    re_sign_checkpoints(ledger, impostor, pin=False)
    code, pinned = verify_cli(witnessed, ledger)
    assert (code, pinned["check"]) == (1, "checkpoint")
    assert "not by the ledger's pinned key" in pinned["reason"]
    re_sign_checkpoints(ledger, impostor)
    code, untrusted = verify_cli(witnessed, ledger)
    assert (code, untrusted["ok"], untrusted["checkpoints"]["trusted_key"]) == (0, True, False)
    human = ledger_cli("verify", "--db", str(ledger), "--keyring", str(witnessed.keyring))
    assert (
        "a rewrite by whoever holds the ledger file and a checkpoint key is not excluded"
        in " ".join(human.stderr.split())
    )
    code, report = verify_cli(witnessed, ledger, "--trusted-key", str(witnessed.pub))
    assert (code, report["check"]) == (1, "checkpoint")
    assert "the trusted key 'ledger' (sha256:" in report["reason"]
    assert "is none of the keys this ledger was signed with" in report["reason"]


def test_rewritten_chain_with_stored_checkpoints_deleted(
    witnessed: Witnessed, ledger: Path
) -> None:
    _without_entry_4(ledger)
    execute(ledger, "DELETE FROM checkpoints")
    code, report = verify_cli(witnessed, ledger, *with_witness(witnessed))
    assert (code, report["check"], report["first_bad_seq"]) == (1, "consistency", None)
    assert f"checkpoint {witnessed.witness}#2 signs root" in report["reason"]
    assert "entries up to 6 were rewritten" in report["reason"]


# --- forged checkpoints --------------------------------------------------------------------------


def test_forged_checkpoint_in_the_witness(
    witnessed: Witnessed, ledger: Path, tmp_path: Path
) -> None:
    """A note signed by another key under the ledger key's name, claiming another root."""
    forger = Signer.generate(LEDGER_KEY)
    origin = witnessed.note(12).splitlines()[0]
    forged = sign_checkpoint(Checkpoint(origin, 12, bytes(32)), forger)
    kept = tmp_path / "kept.witness"
    kept.write_text(witnessed.witness.read_text() + forged)
    code, report = verify_cli(witnessed, ledger, *with_witness(witnessed, kept))
    assert (code, report["check"]) == (1, "checkpoint")
    assert f"checkpoint {kept}#5: note carries no signature by key 'ledger'" in report["reason"]


def test_edited_checkpoint_in_the_witness(
    witnessed: Witnessed, ledger: Path, tmp_path: Path
) -> None:
    """The genuine signature under an edited root: it no longer verifies."""
    note = witnessed.note(6)
    root_line = note.splitlines()[2]
    edited = note.replace(root_line, base64.b64encode(bytes(32)).decode())
    kept = tmp_path / "kept.witness"
    kept.write_text(edited)
    code, report = verify_cli(witnessed, ledger, *with_witness(witnessed, kept))
    assert (code, report["check"]) == (1, "checkpoint")
    assert "does not verify over the note's text" in report["reason"]


def test_forged_stored_checkpoint_root(witnessed: Witnessed, ledger: Path) -> None:
    execute(ledger, "UPDATE checkpoints SET root = ? WHERE size = 9", bytes(32))
    error = failure(ledger, witnessed.ring, witnessed.ledger_key)
    assert error.check == "checkpoint"
    assert "stored checkpoint 3 (size 9): its note signs size 9" in error.message


def test_checkpoint_of_another_ledger(witnessed: Witnessed, ledger: Path, tmp_path: Path) -> None:
    """Genuinely signed by the ledger key, but for another log (origin)."""
    other = sign_checkpoint(Checkpoint("deploy-ledger/other", 3, bytes(32)), witnessed.ledger_key)
    kept = tmp_path / "kept.witness"
    kept.write_text(other)
    code, report = verify_cli(witnessed, ledger, *with_witness(witnessed, kept))
    assert (code, report["check"]) == (1, "checkpoint")
    assert "checkpoint is for log 'deploy-ledger/other'" in report["reason"]


# --- the stored tree -----------------------------------------------------------------------------


@pytest.mark.parametrize(("statement", "seq", "what"), [
    ("UPDATE tree_nodes SET hash = ? WHERE level = 2 AND last = 7", 8,
     "over entries 5..8 is not the hash of its two children"),
    ("UPDATE tree_nodes SET hash = ? WHERE level = 0 AND last = 10", 11,
     "is not the leaf hash of the entry's hash"),
    ("DELETE FROM tree_nodes WHERE level = 1 AND last = 5", 6,
     "is missing, duplicated or out of place"),
    ("INSERT INTO tree_nodes VALUES (1, 4, ?)", 5, "is missing, duplicated or out of place"),
    ("INSERT INTO tree_nodes VALUES (4, 15, ?)", 16, "cannot exist in a tree of 12 entries"),
    ("DELETE FROM tree_nodes WHERE level = 3", 8, "is missing"),
])  # fmt: skip
def test_tampered_tree_node(
    witnessed: Witnessed, ledger: Path, statement: str, seq: int, what: str
) -> None:
    execute(ledger, statement, *([b"\x07" * 32] if "?" in statement else []))
    error = failure(ledger, witnessed.ring)
    assert isinstance(error, ChainBrokenError)
    assert (error.seq, error.check) == (seq, "tree")
    assert what in error.message


# --- a stolen producer key -----------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_event_signed_by_a_revoked_key_after_its_revocation(
    witnessed: Witnessed, ledger: Path, tmp_path: Path, workers: int
) -> None:
    """The CI key leaked; once found out it is revoked as of the first event the thief
    signed (when the ledger witnessed entry 8), with `ledger keys revoke`. Entries 1-7 stay
    valid: they were witnessed before."""
    keyring = tmp_path / "keyring.json"
    shutil.copy(witnessed.keyring, keyring)
    revoked_at = entry(ledger, 8)["witnessed_at"]
    assert entry(ledger, 7)["witnessed_at"] < revoked_at
    result = ledger_cli("keys", "revoke", "--keyring", str(keyring), "--id", "ci-main",
                        "--at", revoked_at.isoformat())  # fmt: skip
    assert result.returncode == 0, result.stderr
    result = ledger_cli("verify", "--db", str(ledger), "--keyring", str(keyring), "--json",
                        "--workers", str(workers))  # fmt: skip
    assert result.returncode == 1, result.stderr
    report = cli_json(result)
    assert (report["first_bad_seq"], report["check"]) == (8, "authorization")
    assert report["signatures_verified"] == 7
    error = failure(ledger, Keyring.load(keyring), workers=workers, batch_rows=2)
    assert isinstance(error, ChainBrokenError)
    assert (error.seq, error.check) == (8, "authorization")
    when = revoked_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert f"key 'ci-main' was revoked at {when}" in error.message
    assert error.message.endswith("(key_revoked)")
