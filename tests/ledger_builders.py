"""Real ledger files with signed checkpoints, written without Kafka: the consumer's own
verify-then-commit path (verify_message, LedgerWriter.prepare/commit) over sealed events.
The command line is run with consumer_helpers.ledger_cli."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from helpers import make_event

from ledger.demo import KEY_POLICIES, build_history
from ledger.log.chain import Witness
from ledger.store.batch import Accepted, Received
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.transport.producer import seal
from ledger.wire.columns import decoded_columns
from ledger.wire.keyring import Keyring, Signer
from ledger.wire.verify import verify_message

DEMO_END = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def signers() -> tuple[Signer, Signer, Keyring]:
    """A CI key and an approver key, each trusted for its own remit only."""
    ci, approver = Signer.generate("ci-main"), Signer.generate("change-board")
    ring = Keyring()
    ring.trust(ci.key_id, ci.public_raw, types=["deployment.*", "mutation.*", "service.*"],
               sources=["ci/*"])  # fmt: skip
    ring.trust(approver.key_id, approver.public_raw, types=["approval.*"], sources=["cab/*"])
    return ci, approver, ring


SERVICES = ("billing", "checkout", "search")
_KINDS = ("deployment.succeeded", "mutation.applied", "approval.granted")


def sealed_values(ci: Signer, approver: Signer, count: int, first: int = 0) -> list[bytes]:
    """``count`` signed envelopes numbered from ``first``: a deployment, a mutation and an
    approval (signed by ``approver``) in turn, over SERVICES in turn."""
    return [
        seal(make_event(_KINDS[i % 3], service=SERVICES[i % 3], actor=f"u{i}"),
             approver if i % 3 == 2 else ci)
        for i in range(first, first + count)
    ]  # fmt: skip


def append(
    writer: LedgerWriter, ring: Keyring, values: Sequence[bytes], first_offset: int,
    checkpoint: bool = False,
) -> str | None:  # fmt: skip
    """One batch, exactly as the consumer writes it; the signed checkpoint note, if any."""
    messages = [
        accepted(writer, ring, value, Received("ledger.events", 0, first_offset + i, b"key",
                                               value, 0, Witness.CONSUMER))
        for i, value in enumerate(values)
    ]  # fmt: skip
    offsets = {("ledger.events", 0): first_offset + len(values)}
    return writer.commit(writer.prepare(messages, offsets), checkpoint=checkpoint)


def accepted(writer: LedgerWriter, ring: Keyring, value: bytes, received: Received) -> Accepted:
    """A message verified as the consumer verifies it: witnessed now by the writer's clock
    (``received``'s own witnessed time is replaced), under ``ring``. Its entry commits to
    the keyring the writer recorded last: ``ring`` if recorded (as the consumer does), else
    none, and verification checks it under the keyring it is given."""
    witnessed_us = writer.clock.now_us()
    witnessed = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=witnessed_us)
    verified = verify_message(value, ring, witnessed)
    received = replace(received, witnessed_us=witnessed_us, witness=Witness.CONSUMER)
    columns = decoded_columns(verified.event, verified.key_id)
    return Accepted(received, columns, writer.keyring_digest)


def write_ledger(
    path: Path,
    values: Sequence[bytes],
    keyring: Keyring,
    ledger_key: Signer | None,
    batches: Sequence[int],
    checkpoint: bool = True,
    record_keyring: bool = False,
) -> None:
    """Append ``values`` in batches of the given sizes (the rest in one last batch), signing
    a checkpoint after each batch when ``checkpoint`` (and ``ledger_key``); first record
    the keyring in the chain, as the consumer does, when ``record_keyring``."""
    writer = LedgerWriter(path, checkpoint_signer=ledger_key)
    try:
        if record_keyring:
            writer.record_keyring(keyring, "tests")
        start = 0
        for size in [*batches, len(values) - sum(batches)]:
            if size <= 0:
                continue
            append(writer, keyring, values[start : start + size], start, checkpoint=checkpoint)
            start += size
    finally:
        writer.close()


def demo_keys() -> tuple[dict[str, Signer], Keyring]:
    """The demo's producer identities, in memory, with the demo's narrow keyring."""
    keys = {key_id: Signer.generate(key_id) for key_id in KEY_POLICIES}
    ring = Keyring()
    for key_id, (types, sources) in KEY_POLICIES.items():
        ring.trust(key_id, keys[key_id].public_raw, types=types, sources=sources)
    return keys, ring


def write_demo_ledger(
    path: Path, ledger_key: Signer, batch: int = 20, record_keyring: bool = False
) -> Keyring:
    """The demo's three weeks of history (ending at DEMO_END), checkpointed every batch;
    after the record of its keyring (entry 1) when ``record_keyring``, as the consumer
    writes it."""
    keys, ring = demo_keys()
    history = build_history(DEMO_END)
    values = [seal(event, keys[key_id]) for key_id, event in history.events]
    batches = [batch] * (len(values) // batch)
    write_ledger(path, values, ring, ledger_key, batches, record_keyring=record_keyring)
    return ring


def entry_hashes(path: Path) -> list[bytes]:
    """Every stored entry hash, in seq order (the leaves' data)."""
    with LedgerReader(path) as reader:
        rows = reader.con.execute("SELECT hash FROM entries ORDER BY seq").fetchall()
        return [bytes(row[0]) for row in rows]
