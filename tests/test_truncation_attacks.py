"""Truncation and rollback attacks: the entries that remain are intact, so only signed
checkpoints reveal what is gone, and only checkpoints kept outside the ledger (a witness
file, checked under the ledger's public key) survive an attacker who tidies up.

Each test edits its own copy (``ledger``) of the ``witnessed`` ledger of conftest.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from attack_helpers import (
    Witnessed,
    execute,
    failure,
    truncate,
    verify_cli,
    with_witness,
)
from consumer_helpers import consume, event_entries, ledger_cli, produce_raw
from helpers import make_event

from ledger.errors import InconsistentCheckpointError
from ledger.transport.producer import seal
from ledger.transport.settings import KafkaSettings
from ledger.wire.keyring import Keyring, Signer


def test_intact_ledger_extends_every_witnessed_checkpoint(
    witnessed: Witnessed, ledger: Path
) -> None:
    code, report = verify_cli(witnessed, ledger, *with_witness(witnessed))
    assert code == 0, report
    assert report["checkpoints"] == {
        "stored": 4, "external": 4, "trusted_key": True, "latest_size": 12, "skipped": [],
        "superseded": [],
    }  # fmt: skip
    assert (report["size"], report["signatures_verified"]) == (12, 12)
    human = ledger_cli("verify", "--db", str(ledger), "--keyring", str(witnessed.keyring),
                       *with_witness(witnessed))  # fmt: skip
    assert human.returncode == 0, human.stderr
    assert "OK 12 entries" in human.stderr
    assert "4 external consistent with the ledger" in human.stderr


def test_truncated_tail_against_the_kept_witness(witnessed: Witnessed, ledger: Path) -> None:
    """Entries 7-12 deleted, with their tree nodes and checkpoints: what remains checks out
    by itself; the witness file still holds the checkpoints of sizes 9 and 12."""
    truncate(ledger, 6)
    code, alone = verify_cli(witnessed, ledger, "--trusted-key", str(witnessed.pub))
    assert (code, alone["ok"], alone["size"]) == (0, True, 6)
    code, report = verify_cli(witnessed, ledger, *with_witness(witnessed))
    assert code == 1
    assert (report["ok"], report["check"], report["first_bad_seq"]) == (False, "truncated", 7)
    assert "ledger has 6 entries but a checkpoint signed at size 9 exists" in report["reason"]
    assert "truncated or rolled back" in report["reason"]
    error = failure(ledger, witnessed.ring, witnessed.ledger_key, witnessed.notes)
    assert isinstance(error, InconsistentCheckpointError)
    assert (error.check, error.size, error.ledger_root) == ("truncated", 9, None)


def test_truncated_tail_with_its_stored_checkpoints_left_behind(
    witnessed: Witnessed, ledger: Path
) -> None:
    truncate(ledger, 6, checkpoints=False)
    error = failure(ledger, witnessed.ring)
    assert error.check == "checkpoint"
    assert "ledger has 6 entries but a checkpoint signed at size 9 exists" in error.message


def test_truncated_entries_with_the_tree_left_behind(witnessed: Witnessed, ledger: Path) -> None:
    truncate(ledger, 6, tree=False)
    code, report = verify_cli(witnessed, ledger)
    assert (code, report["check"], report["first_bad_seq"]) == (1, "tree", 7)
    assert "cannot exist in a tree of 6 entries" in report["reason"]


def test_rolled_back_to_an_older_copy_of_the_file(witnessed: Witnessed, ledger: Path) -> None:
    """The whole file replaced by a consistent copy taken after batch 2 (size 6): its own
    checkpoints are all genuine, but the witness has seen the ledger at 9 and 12."""
    shutil.copy(witnessed.early, ledger)
    code, alone = verify_cli(witnessed, ledger, "--trusted-key", str(witnessed.pub))
    assert (code, alone["checkpoints"]["latest_size"]) == (0, 6)
    code, report = verify_cli(witnessed, ledger, *with_witness(witnessed))
    assert (code, report["check"], report["first_bad_seq"]) == (1, "truncated", 7)


def test_replayed_old_checkpoint_after_truncation(witnessed: Witnessed, ledger: Path) -> None:
    """After cutting back to 6, the attacker signs nothing new but replays the genuine
    size-6 checkpoint as the latest stored one; the witness's newer one catches it."""
    truncate(ledger, 6)
    replay = witnessed.note(6)
    execute(ledger, "INSERT INTO checkpoints SELECT size, root, note, vkey, now() "
            "FROM checkpoints WHERE note = ?", replay)  # fmt: skip
    code, alone = verify_cli(witnessed, ledger, "--trusted-key", str(witnessed.pub))
    assert (code, alone["checkpoints"]["stored"]) == (0, 3)
    code, report = verify_cli(witnessed, ledger, *with_witness(witnessed))
    assert (code, report["check"]) == (1, "truncated")
    assert "checkpoint signed at size 9" in report["reason"]


def test_replayed_old_checkpoint_into_the_ledger(witnessed: Witnessed, ledger: Path) -> None:
    """A genuine old checkpoint (size 3) stored again after the one of size 12: sizes must
    never decrease in signing order."""
    execute(ledger, "INSERT INTO checkpoints SELECT size, root, note, vkey, now() "
            "FROM checkpoints WHERE size = 3")  # fmt: skip
    error = failure(ledger, witnessed.ring, witnessed.ledger_key)
    assert error.check == "checkpoint"
    assert "stored checkpoint 5 (size 3) was signed after one of size 12" in error.message


# --- the command line ---------------------------------------------------------------------------


def test_checkpoint_files_need_the_trusted_key(witnessed: Witnessed, ledger: Path) -> None:
    result = ledger_cli("verify", "--db", str(ledger), "--checkpoint", str(witnessed.witness))
    assert result.returncode == 4  # nothing was verified: no trust root
    assert "--checkpoint needs --trusted-key" in result.stderr


def test_checkpoint_files_are_checked_against_the_file_not_the_api(witnessed: Witnessed) -> None:
    result = ledger_cli("verify", "--api", "http://127.0.0.1:9", *with_witness(witnessed),
                        LEDGER_API_TOKEN="t")  # fmt: skip
    assert result.returncode == 2
    assert "use --db" in result.stderr


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read checkpoint file"),
    ("", "holds no signed checkpoint"),
    ("deploy-ledger/x\n3\nAAAA\n", "ends with an unsigned note"),
])  # fmt: skip
def test_unusable_witness_file_is_a_usage_error(
    witnessed: Witnessed, ledger: Path, tmp_path: Path, content: str | None, message: str
) -> None:
    witness = tmp_path / "kept.witness"
    if content is not None:
        witness.write_text(content)
    result = ledger_cli("verify", "--db", str(ledger), *with_witness(witnessed, witness))
    assert result.returncode == 2
    assert message in result.stderr


def test_the_consumer_refuses_to_resume_past_a_cut_tail(witnessed: Witnessed, ledger: Path) -> None:
    """Entries 7-12 cut off, the stored Kafka offsets left as they were: resuming from them
    would never read those events again. The consumer refuses before reading anything."""
    truncate(ledger, 6)
    result = ledger_cli("consume", "--db", str(ledger), "--keyring", str(witnessed.keyring),
                        "--bootstrap", "127.0.0.1:9", "--until-idle", "1")  # fmt: skip
    assert result.returncode == 2
    assert "is damaged: it holds 6 entries, but its Kafka offsets were stored when it held 12" in (
        result.stderr
    )
    assert "entries 7 to 12 were cut off" in result.stderr


def test_duplicates_at_the_tail_are_no_cut_tail(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    """A spool flushed twice: the offsets move past the last entry, the ledger does not
    grow, and the consumer resumes as before."""
    values = [seal(make_event(service=f"svc-{i}"), ci_signer) for i in range(5)]
    db = tmp_path / "ledger.duckdb"
    produce_raw(kafka, values)
    consume(kafka, db, keyring)
    produce_raw(kafka, values)  # the same events again
    stats = consume(kafka, db, keyring)
    assert (stats.accepted, stats.duplicates) == (0, 5)
    produce_raw(kafka, [seal(make_event(service="later"), ci_signer)])
    assert consume(kafka, db, keyring).accepted == 1
    assert len(event_entries(db)) == 6
