"""Attacks on the keyring: what the ledger accepted is judged under the keyring it recorded
before, not under the file someone hands `ledger verify` today.

Before keyring records, `ledger verify` judged every entry under the keyring file it was
given, and nothing recorded which keys were trusted when: a file narrowed after the fact
(a key retired) failed entries the ledger had rightly accepted, and a file widened after
the fact (an insider's key added) vouched for whatever that key re-signed in a rewritten
chain. Now the consumer records the keyring in the chain before judging anything under it,
each entry commits to the digest of the keyring it was judged under, and verification,
evidence bundles included, judges each entry under that record. A revocation of an earlier
time (a compromise found out late), recorded or in the file given, rewrites no verdict: it
marks what the key signed since, in verify's report and in answers.

The ledger here: keyring A (CI and approver keys) recorded at entry 1, three events judged
under it (2-4), keyring B (the CI key retired) recorded at entry 5, an approval under it (6).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from attack_helpers import (
    Statement,
    entry,
    execute,
    failure,
    resigned,
    rewrite_chain,
    statement_of,
)
from consumer_helpers import cli_json, entries, ledger_cli
from helpers import IMAGE_B, make_event
from ledger_builders import append, signers

from ledger.errors import ChainBrokenError, CheckpointError, EvidenceError
from ledger.evidence.build import build_bundle
from ledger.evidence.bundle import AsOfQuery, verify_bundle
from ledger.log.chain import NO_KEYRING, Origin
from ledger.log.checkpoint import TrustedKey
from ledger.store.integrity import verify_ledger
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.transport.producer import seal
from ledger.wire.columns import DecodedColumns, decoded_columns
from ledger.wire.envelope import Envelope
from ledger.wire.keyring import Keyring, Signer
from ledger.wire.records import (
    KEYRING_RECORD,
    keyring_record,
    open_keyring_record,
    record_columns,
)

QUESTION = AsOfQuery(
    kind="asof", service="billing", environment="prod", at=datetime(2026, 11, 21, tzinfo=UTC)
)


@dataclass(frozen=True)
class TwoKeyrings:
    db: Path
    first: Keyring  # CI and approver keys: entries 2-4 judged under it
    second: Keyring  # the CI key retired: entry 6 judged under it
    ci: Signer
    approver: Signer
    ledger_key: Signer


def _write(db: Path) -> TwoKeyrings:
    ci, approver, first = signers()
    second = first.model_copy(deep=True)
    del second.keys[ci.key_id]
    ledger_key = Signer.generate("ledger")
    writer = LedgerWriter(db, checkpoint_signer=ledger_key)
    try:
        assert writer.record_keyring(first, "keyring.json") == 1
        values = [
            seal(make_event("deployment.succeeded", service="billing", change_ref="CHG-1"), ci),
            seal(make_event("mutation.applied", service="billing"), ci),
            seal(make_event("approval.granted", service="search"), approver),
        ]
        append(writer, first, values, 0, checkpoint=True)
        assert writer.record_keyring(first, "keyring.json") is None  # unchanged: no record
        assert writer.record_keyring(second, "keyring.json") == 5
        approval = make_event("approval.granted", service="billing", change_ref="CHG-1")
        append(writer, second, [seal(approval, approver)], 3, checkpoint=True)
    finally:
        writer.close()
    return TwoKeyrings(db, first, second, ci, approver, ledger_key)


def _store(row: dict[str, Any], envelope: bytes, columns: DecodedColumns) -> None:
    """Put other bytes in a stored row, with the columns they decode to (its time kept)."""
    row.update({name: value for name, value in columns._asdict().items() if name != "time_us"})
    row["envelope"] = envelope


@pytest.fixture
def ledger(tmp_path: Path) -> TwoKeyrings:
    return _write(tmp_path / "ledger.duckdb")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> TwoKeyrings:
    """The same ledger, shared by the bundle tests (which only read it)."""
    return _write(tmp_path_factory.mktemp("keyrings") / "ledger.duckdb")


@pytest.fixture(scope="module")
def bundle(built: TwoKeyrings) -> bytes:
    """What was live for billing: the deployment (entry 2, under keyring A) and its
    approval (entry 6, under keyring B)."""
    with LedgerReader(built.db) as reader:
        return build_bundle(reader, QUESTION, Keyring(), built.ledger_key)[0]


@pytest.fixture
def trusted(built: TwoKeyrings) -> TrustedKey:
    return TrustedKey("ledger", built.ledger_key.public_raw)


# --- the record itself ---------------------------------------------------------------------------


def test_each_entry_commits_to_the_keyring_recorded_last_before_it(ledger: TwoKeyrings) -> None:
    rows = entries(ledger.db)
    records = [r for r in rows if r["origin"] == Origin.LEDGER]
    assert [(r["seq"], r["type"], r["environment"]) for r in records] == [
        (1, KEYRING_RECORD, "_ledger"), (5, KEYRING_RECORD, "_ledger"),
    ]  # fmt: skip
    recorded = [open_keyring_record(Envelope.from_bytes(bytes(r["envelope"]))) for r in records]
    assert [r.keyring for r in recorded] == [ledger.first, ledger.second]
    assert [r.source for r in recorded] == ["keyring.json", "keyring.json"]
    first, second = ledger.first.digest(), ledger.second.digest()
    assert [bytes(r["keyring"]) for r in rows] == [NO_KEYRING, first, first, first, first, second]
    with LedgerReader(ledger.db) as reader:
        report = verify_ledger(reader, None, workers=1).check()
    # Judged under the records alone: no keyring file needed, every event checked.
    assert (report.signatures_checked, report.signatures_verified) == (True, 4)
    assert (report.keyrings_recorded, report.keyring_file_matches) == (2, None)


def test_the_ledgers_own_records_are_no_answer_to_a_question(ledger: TwoKeyrings) -> None:
    result = ledger_cli("snapshot", "--db", str(ledger.db), "--env", "prod", "--at",
                        "2026-11-21T00:00:00Z", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "_keyring" not in result.stdout
    asked = ledger_cli("asof", "--db", str(ledger.db), "--service", "_keyring", "--env",
                       "_ledger", "--at", "2026-11-21T00:00:00Z")  # fmt: skip
    assert "no entry names environment '_ledger'; the ledger has prod" in asked.stderr


# --- the file handed to verify ------------------------------------------------------------------


def test_attack_keyring_file_narrowed_after_the_fact_changes_no_verdict(
    ledger: TwoKeyrings, tmp_path: Path
) -> None:
    """The CI key retired from the file: its earlier deployments were rightly accepted and
    still verify (judged under keyring A, which the ledger recorded)."""
    with LedgerReader(ledger.db) as reader:
        report = verify_ledger(reader, ledger.second, workers=1).check()
    assert (report.signatures_verified, report.keyring_file_matches) == (4, True)

    stale = tmp_path / "old-keyring.json"
    ledger.first.save(stale)
    result = ledger_cli("verify", "--db", str(ledger.db), "--keyring", str(stale))
    assert result.returncode == 0, result.stderr
    assert "the keyring given is not the one the ledger recorded last" in result.stderr
    printed = cli_json(ledger_cli("verify", "--db", str(ledger.db), "--keyring", str(stale),
                                  "--json"))  # fmt: skip
    assert printed["keyrings"] == {"recorded": 2, "given_matches_latest": False}


def test_attack_keyring_file_widened_after_the_fact_vouches_for_nothing(
    ledger: TwoKeyrings,
) -> None:
    """An insider re-signs a deployment with their own key, rewrites the chain around it
    and adds their key to the file with every right: the entry is still judged under
    keyring A, which never trusted that key."""
    insider = Signer.generate("insider")
    widened = ledger.first.model_copy(deep=True)
    widened.trust(insider.key_id, insider.public_raw, types=["*"], sources=["*"])
    rows = entries(ledger.db)
    forged = make_event("deployment.succeeded", service="billing", change_ref="CHG-1",
                        image=IMAGE_B, actor="mallory")  # fmt: skip
    _store(rows[1], seal(forged, insider), decoded_columns(forged, insider.key_id))
    rewrite_chain(ledger.db, rows)
    execute(ledger.db, "DELETE FROM checkpoints")  # not what this attack is caught by

    error = failure(ledger.db, widened)
    assert isinstance(error, ChainBrokenError)
    assert (error.check, error.seq) == ("signature", 2)
    assert "'insider'" in error.message and "unknown_key" in error.message


def test_attack_recorded_keyring_widened_with_the_chain_rewritten(ledger: TwoKeyrings) -> None:
    """The insider also rewrites keyring A's record to trust their key, and every entry
    after it: the chain is consistent, but the checkpoints signed before no longer are."""
    insider = Signer.generate("insider")
    widened = ledger.first.model_copy(deep=True)
    widened.trust(insider.key_id, insider.public_raw, types=["*"], sources=["*"])
    rows = entries(ledger.db)
    envelope = keyring_record(widened, rows[0]["time"], "keyring.json")
    _store(rows[0], envelope, record_columns(open_keyring_record(Envelope.from_bytes(envelope))))
    for row in rows[1:5]:
        row["keyring"] = widened.digest()
    rewrite_chain(ledger.db, rows)

    error = failure(ledger.db, None)
    assert isinstance(error, CheckpointError) and error.check == "checkpoint"


def test_attack_entry_repointed_at_another_recorded_keyring(ledger: TwoKeyrings) -> None:
    """Entry 6 made to claim it was judged under keyring A (which trusts the CI key), the
    chain rewritten around it: no keyring recorded before it says so."""
    rows = entries(ledger.db)
    rows[5]["keyring"] = ledger.first.digest()
    rewrite_chain(ledger.db, rows)
    execute(ledger.db, "DELETE FROM checkpoints")

    error = failure(ledger.db, None)
    assert isinstance(error, ChainBrokenError)
    assert (error.check, error.seq) == ("keyring", 6)
    assert "recorded last before it" in error.message


def test_attack_keyring_records_column_edited(ledger: TwoKeyrings) -> None:
    """The digest stored beside record 5 edited to keyring A's: check 6 re-reads the record."""
    execute(ledger.db, "UPDATE entries SET data = replace(data, ?, ?) WHERE seq = 5",
            ledger.second.digest().hex(), ledger.first.digest().hex())  # fmt: skip
    error = failure(ledger.db, None)
    assert isinstance(error, ChainBrokenError)
    assert error.seq == 5 and error.check in ("keyring", "decoded_columns")


def _compromised_from_entry_3(ledger: TwoKeyrings) -> Keyring:
    """Keyring A with the CI key revoked from when the ledger witnessed entry 3 (reported
    after the fact: the compromise began before anyone knew)."""
    revoked = ledger.first.model_copy(deep=True)
    revoked.revoke(ledger.ci.key_id, entry(ledger.db, 3)["witnessed_at"])
    return revoked


def _record(ledger: TwoKeyrings, keyring: Keyring) -> int | None:
    writer = LedgerWriter(ledger.db, checkpoint_signer=ledger.ledger_key)
    try:
        return writer.record_keyring(keyring, "keyring.json")
    finally:
        writer.close()


def test_a_key_revoked_in_the_file_marks_what_it_signed_after(ledger: TwoKeyrings) -> None:
    """The file given revokes the CI key from when entry 3 was witnessed: no verdict changes
    (keyring A trusted the key then), and verify names what the key signed since."""
    with LedgerReader(ledger.db) as reader:
        report = verify_ledger(reader, _compromised_from_entry_3(ledger), workers=1)
    assert report.ok and report.signatures_verified == 4
    [(revocation, count, first)] = report.compromised
    assert (revocation.key_id, revocation.recorded_seq, count, first) == ("ci-main", None, 1, 3)


def test_a_recorded_revocation_of_an_earlier_time_marks_not_rewrites(
    ledger: TwoKeyrings,
) -> None:
    """The consumer restarted on a keyring revoking the CI key from entry 3's witnessed
    time: the record (entry 7) marks entry 3 for every reader, with no file given, and
    judges nothing before it differently."""
    assert _record(ledger, _compromised_from_entry_3(ledger)) == 7
    result = ledger_cli("verify", "--db", str(ledger.db), "--json")
    assert result.returncode == 0, result.stderr
    report = cli_json(result)
    assert report["compromised"] == [{
        "key_id": "ci-main", "revoked_at": report["compromised"][0]["revoked_at"],
        "recorded_seq": 7, "entries": 1, "first_seq": 3,
    }]  # fmt: skip
    text = ledger_cli("verify", "--db", str(ledger.db))
    assert "compromised: key ci-main is revoked from" in text.stdout + text.stderr
    assert "the keyring record at entry 7" in text.stdout + text.stderr


def test_answers_mark_evidence_signed_by_a_key_reported_compromised_since(
    ledger: TwoKeyrings,
) -> None:
    """What was live for billing rests on entries 2 (the deployment), 3 (the mutation) and
    6 (the approval): only entry 3 was witnessed after the revocation's time. The answer is
    the same; it says which of its entries rest on the compromised key. Asked as the ledger
    stood before the revocation was recorded (--known-at), it marks nothing."""
    before = ledger_cli("asof", "--db", str(ledger.db), "--service", "billing", "--env", "prod",
                        "--at", "2026-11-21T00:00:00Z", "--json")  # fmt: skip
    assert before.returncode == 0, before.stderr
    assert "compromised" not in cli_json(before)
    recorded_at = datetime.now(UTC)
    assert _record(ledger, _compromised_from_entry_3(ledger)) == 7
    after = ledger_cli("asof", "--db", str(ledger.db), "--service", "billing", "--env", "prod",
                       "--at", "2026-11-21T00:00:00Z", "--json")  # fmt: skip
    answer = cli_json(after)
    assert [(c["seq"], c["key_id"], c["recorded_seq"]) for c in answer["compromised"]] == [
        (3, "ci-main", 7)
    ]
    unchanged = {k for k in answer if k not in {"compromised", "evidence"}}
    assert {k: answer[k] for k in unchanged} == {k: cli_json(before)[k] for k in unchanged}
    then = ledger_cli("asof", "--db", str(ledger.db), "--service", "billing", "--env", "prod",
                      "--at", "2026-11-21T00:00:00Z", "--known-at", recorded_at.isoformat(),
                      "--json")  # fmt: skip
    assert "compromised" not in cli_json(then)
    text = ledger_cli("asof", "--db", str(ledger.db), "--service", "billing", "--env", "prod",
                      "--at", "2026-11-21T00:00:00Z")  # fmt: skip
    assert "entry 3 was signed by key ci-main, revoked from" in text.stdout + text.stderr
    history = cli_json(ledger_cli("timeline", "--db", str(ledger.db), "--service", "billing",
                                  "--env", "prod", "--json"))  # fmt: skip
    marked = {e["seq"]: e.get("compromised_since") for e in history}
    assert marked[2] is None and marked[6] is None and marked[3] is not None


# --- evidence bundles ----------------------------------------------------------------------------


def test_a_bundle_carries_the_keyrings_its_entries_were_judged_under(
    bundle: bytes, built: TwoKeyrings, trusted: TrustedKey
) -> None:
    report = verify_bundle(bundle, trusted)
    assert (report.entries, report.keyring_records) == ([2, 3, 6], [1, 5])
    assert report.answer["deployment"]["seq"] == 2
    assert statement_of(bundle)["predicate"]["keyring"]["keys"] == {}  # none judged by it
    # The auditor's own keyring prevails: one without the retired CI key refuses entry 2.
    with pytest.raises(EvidenceError) as caught:
        verify_bundle(bundle, trusted, built.second)
    assert (caught.value.check, caught.value.seq) == ("producer_signature", 2)
    assert verify_bundle(bundle, trusted, built.first).own_keyring


def _drop(statement: Statement, seq: int) -> None:
    predicate = statement["predicate"]
    index = next(i for i, e in enumerate(predicate["entries"]) if e["seq"] == seq)
    del predicate["entries"][index], predicate["proofs"][index]


def test_attack_keyring_record_dropped_from_the_bundle(
    bundle: bytes, built: TwoKeyrings, trusted: TrustedKey
) -> None:
    edited = resigned(bundle, lambda s: _drop(s, 1), built.ledger_key)
    with pytest.raises(EvidenceError) as caught:
        verify_bundle(edited, trusted)
    assert (caught.value.check, caught.value.seq) == ("keyring", 2)


def test_attack_keyring_record_widened_in_the_bundle(
    bundle: bytes, built: TwoKeyrings, trusted: TrustedKey
) -> None:
    """The insider swaps record 5 for one trusting their key: it is not the logged entry."""
    insider = Signer.generate("insider")
    widened = built.second.model_copy(deep=True)
    widened.trust(insider.key_id, insider.public_raw, types=["*"], sources=["*"])

    def edit(statement: Statement) -> None:
        record = next(e for e in statement["predicate"]["entries"] if e["seq"] == 5)
        record["envelope"] = base64.b64encode(
            keyring_record(widened, datetime.now(UTC), "keyring.json")
        ).decode()

    with pytest.raises(EvidenceError) as caught:
        verify_bundle(resigned(bundle, edit, built.ledger_key), trusted)
    assert (caught.value.check, caught.value.seq) == ("inclusion", 5)


def test_attack_entry_moved_under_the_carried_keyring(
    bundle: bytes, built: TwoKeyrings, trusted: TrustedKey
) -> None:
    """Entry 6 made to name no record, so that the carried keyring, which the insider
    writes, judges it: the keyring it names is under its hash."""

    def edit(statement: Statement) -> None:
        approval = next(e for e in statement["predicate"]["entries"] if e["seq"] == 6)
        approval["witnessed"]["keyring"] = base64.b64encode(NO_KEYRING).decode()
        statement["predicate"]["keyring"] = json.loads(built.first.model_dump_json())

    with pytest.raises(EvidenceError) as caught:
        verify_bundle(resigned(bundle, edit, built.ledger_key), trusted)
    assert (caught.value.check, caught.value.seq) == ("inclusion", 6)
