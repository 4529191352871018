"""The way out of the quarantine: an event refused because its key was not trusted yet is
judged again after the key is trusted (`ledger replay`, on a stopped ledger), and chained as
replayed, recorded now, with its original Kafka coordinates. Nothing else gets out."""

from __future__ import annotations

from pathlib import Path

import pytest
from consumer_helpers import (
    cli_json,
    consume,
    emit,
    entries,
    ledger_cli,
    produce_raw,
    quarantine,
)
from helpers import IMAGE_A, make_event

from ledger.log.chain import Origin
from ledger.transport.settings import KafkaSettings
from ledger.wire.keyring import Keyring, Signer

pytestmark = pytest.mark.kafka


def test_a_key_trusted_late_brings_its_events_out_of_the_quarantine_recorded_now(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    """The change board's new key signed an approval before anyone trusted it; the
    deployment it approves is chained. Trusted and replayed, the approval is chained after
    the deployment, so it is `recorded_late`, not `approved`: a replay grants nothing a
    producer could not have had on time. A malformed message stays where it is."""
    board = Signer.generate("cab-2027")
    emit(kafka, board, [make_event("approval.granted", change_ref="CHG-9", image=IMAGE_A)])
    emit(kafka, ci_signer, [make_event(change_ref="CHG-9", image=IMAGE_A, actor="alice")])
    produce_raw(kafka, [b"\x00 no envelope at all"])
    db, ring_file = tmp_path / "ledger.duckdb", tmp_path / "keyring.json"
    stats = consume(kafka, db, keyring)
    assert (stats.accepted, stats.quarantined) == (1, 2)

    keyring.trust(board.key_id, board.public_raw, types=["approval.*"], sources=["cab/*"])
    keyring.save(ring_file)
    result = ledger_cli("replay", "--db", str(db), "--keyring", str(ring_file), "--json")
    assert result.returncode == 0, result.stderr
    report = cli_json(result)
    assert report["still_refused"] == {"malformed_envelope": 1}
    [(replayed)] = report["chained"]

    rows = {r["seq"]: r for r in entries(db)}
    assert [rows[s]["type"] for s in sorted(rows)] == [
        "ledger.keyring", "deployment.succeeded", "ledger.keyring", "approval.granted",
    ]  # fmt: skip
    entry = rows[replayed["seq"]]
    assert entry["origin"] == Origin.REPLAYED
    listed = {q["id"]: q for q in cli_json(ledger_cli("quarantine", "--db", str(db), "--json"))}
    row = listed[replayed["quarantine_id"]]
    assert row["replayed_seq"] == replayed["seq"] and row["reason"] == "unknown_key"
    assert (entry["kafka_partition"], entry["kafka_offset"]) == (
        row["kafka_partition"], row["kafka_offset"],
    )  # fmt: skip
    assert len(quarantine(db)) == 2  # the rows stay: the record of the refusal

    answer = cli_json(ledger_cli("asof", "--db", str(db), "--service", "checkout", "--env",
                                 "prod", "--json"))  # fmt: skip
    assert answer["deployment"]["unapproved_reason"] == "recorded_late"
    checked = ledger_cli("verify", "--db", str(db), "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = cli_json(ledger_cli("replay", "--db", str(db), "--keyring", str(ring_file), "--json"))
    assert again["chained"] == [] and again["still_refused"] == {"malformed_envelope": 1}
