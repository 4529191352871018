"""Judging quarantined messages again: the way out of the quarantine for what was refused
only because the keyring did not yet allow it (a key trusted after its first events came).

The replay runs in the writer, on a stopped ledger (``ledger replay``), never through the
topic: a "replayed" marker on the topic would be anyone's to forge. Each quarantined
message kept whole is checked again, exactly as the consumer checks one, under the keyring
given, recorded in the chain first, and witnessed *now*: what passes is chained as replayed
(``origin`` 1) with its original Kafka coordinates, and its quarantine row names the entry
(``replayed_seq``). Being recorded now, it is judged as recorded now: an approval replayed
after its change is recorded after it (``recorded_late``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ledger.errors import RejectedMessage
from ledger.log.chain import Witness
from ledger.store.batch import Accepted, Received
from ledger.store.writer import LedgerWriter
from ledger.wire.columns import decoded_columns
from ledger.wire.keyring import Keyring
from ledger.wire.verify import verify_message

__all__ = ["ReplayReport", "replay_quarantine"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class ReplayReport:
    """What a replay did: the rows it chained (quarantine id, seq), what still fails and
    why, rows already chained under another copy, and rows it could not judge (cut)."""

    chained: list[tuple[int, int]] = field(default_factory=list)
    still_refused: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    cut: int = 0


def replay_quarantine(writer: LedgerWriter, keyring: Keyring, source: str) -> ReplayReport:
    """Judge every quarantined message not yet replayed under ``keyring`` (read from
    ``source``), and chain those that pass, in one transaction."""
    report = ReplayReport()
    writer.record_keyring(keyring, source)  # judged under it: recorded before
    rows = (
        writer.read_cursor()
        .execute(
            "SELECT id, kafka_topic, kafka_partition, kafka_offset, kafka_key, value, value_size "
            "FROM quarantine WHERE replayed_seq IS NULL AND value IS NOT NULL ORDER BY id"
        )
        .fetchall()
    )
    witnessed_us = writer.clock.now_us()
    witnessed = _EPOCH + timedelta(microseconds=witnessed_us)
    accepted = []
    for row_id, topic, partition, offset, key, value, value_size in rows:
        value = bytes(value)
        if value_size is not None and value_size != len(value):
            report.cut += 1  # only part of it was kept: nothing to judge
            continue
        try:
            verified = verify_message(value, keyring, witnessed)
        except RejectedMessage as exc:
            report.still_refused[exc.reason] += 1
            continue
        received = Received(
            topic or "", -1 if partition is None else partition, -1 if offset is None else offset,
            None if key is None else bytes(key), value, witnessed_us, Witness.CONSUMER,
        )  # fmt: skip
        columns = decoded_columns(verified.event, verified.key_id)
        accepted.append(Accepted(received, columns, writer.keyring_digest, replayed_from=row_id))
    plan = writer.prepare(accepted, {})
    # A copy of an event already chained: a duplicate, or (other bytes under its id) a
    # conflict, which stays quarantined as it is rather than quarantined a second time.
    report.duplicates = plan.duplicates
    report.still_refused.update(r.reason for r in plan.quarantined)
    plan.quarantined = []
    if plan.entries:
        writer.commit(plan)
    report.chained = [
        (item.replayed_from, seq)
        for item, seq in plan.entries
        if isinstance(item, Accepted) and item.replayed_from is not None
    ]
    return report
