"""The ledger's own records: entries it writes itself, beside the events it receives (pure).

Three kinds: keyring records (below), key rotation records and restore records. A **key
rotation record** is a statement by the ledger key in force that another key signs as the
ledger from that record on (checkpoints of a size that covers it, bundles made after it).
It is signed by the key it rotates from, over its exact payload bytes (DSSE), so nobody
without that key can hand the ledger to a key of their own; ``ledger verify`` follows the
rotations from the first key (ledger.store.identity). A **restore record** is the ledger
key's statement, right after the entries of a backup put back in place, that the ledger was
restored at that size: checkpoints of larger sizes signed before it (by the lost copy) are
superseded, which verification then reports instead of failing on.

A keyring record holds the whole keyring the consumer judges events under, recorded
before any event is judged under it and again whenever it changes, so that the keyring's
history is in the chain (who was trusted for what, and when the ledger learned of it) and
each entry's ``keyring`` digest names one recorded keyring. It travels in the same
envelope as an event (Avro, DSSE) with a payload type of its own and no signature: its
authority is its place in the chain, which the ledger's signed checkpoints cover.

It is read from the file the consumer is given: re-consuming the topic into a new ledger
records the keyring of that day, not the one each event was first judged under (docs/
formats.md §12 says so).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ledger.errors import BadSignatureError, CheckpointError, MalformedPayloadError
from ledger.log.chain import micros
from ledger.log.checkpoint import parse_verifier_key, verifier_key
from ledger.wire.columns import DecodedColumns
from ledger.wire.envelope import Envelope, pae
from ledger.wire.events import UtcTime, new_event_id
from ledger.wire.keyring import Keyring, Signer, ed25519_verify

__all__ = [
    "KEYRING_PAYLOAD_TYPE",
    "KEYRING_RECORD",
    "KEY_ROTATION_PAYLOAD_TYPE",
    "KEY_ROTATION_RECORD",
    "LEDGER_ENVIRONMENT",
    "RESTORE_PAYLOAD_TYPE",
    "RESTORE_RECORD",
    "KeyRotationRecord",
    "KeyringRecord",
    "LedgerRecord",
    "RestoreRecord",
    "key_rotation_record",
    "keyring_record",
    "open_key_rotation",
    "open_keyring_record",
    "open_record",
    "open_restore",
    "record_columns",
    "restore_record",
]

KEYRING_PAYLOAD_TYPE = "application/vnd.deploy-ledger.keyring+json"
KEYRING_RECORD = "ledger.keyring"
"""The ``type`` column of a keyring record."""
KEY_ROTATION_PAYLOAD_TYPE = "application/vnd.deploy-ledger.key-rotation+json"
KEY_ROTATION_RECORD = "ledger.key_rotation"
"""The ``type`` column of a key rotation record."""
RESTORE_PAYLOAD_TYPE = "application/vnd.deploy-ledger.restore+json"
RESTORE_RECORD = "ledger.restore"
"""The ``type`` column of a restore record."""
LEDGER_ENVIRONMENT = "_ledger"
"""The ``environment`` of the ledger's own records: no event can name it (an event's
environment starts with a letter or digit), so no question about events meets them."""


_R = TypeVar("_R", bound=BaseModel)


class KeyringRecord(BaseModel):
    """What a keyring record's payload says: the keyring, when the ledger recorded it and
    where it read it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    type: str
    id: str
    time: UtcTime
    source: str
    keyring: Keyring


def keyring_record(keyring: Keyring, at: datetime, source: str) -> bytes:
    """The envelope bytes of a record of ``keyring``, read from ``source`` at ``at``."""
    record = KeyringRecord(
        type=KEYRING_RECORD, id=new_event_id(), time=at, source=source, keyring=keyring
    )
    payload = json.dumps(
        record.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
    ).encode()
    return Envelope(KEYRING_PAYLOAD_TYPE, payload, ()).to_bytes()


def _parsed(model: type[_R], envelope: Envelope, what: str) -> _R:
    try:
        return model.model_validate_json(envelope.payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise MalformedPayloadError(f"{what}: {where}: {first['msg']}") from None


def open_keyring_record(envelope: Envelope) -> KeyringRecord:
    """The record an envelope of :data:`KEYRING_PAYLOAD_TYPE` carries, strictly parsed."""
    record = _parsed(KeyringRecord, envelope, "keyring record")
    if record.type != KEYRING_RECORD:
        raise MalformedPayloadError(f"keyring record of type {record.type!r}")
    return record


class KeyRotationRecord(BaseModel):
    """What a key rotation record's payload says: from this record on, ``new_key`` signs as
    the ledger ``origin`` instead of ``old_key`` (both signed-note verifier keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    type: str
    id: str
    time: UtcTime
    origin: str
    old_key: str
    new_key: str


class RestoreRecord(BaseModel):
    """What a restore record's payload says: the ledger ``origin`` was restored from a
    backup of ``size`` entries whose last entry hashes to ``head``; checkpoints of larger
    sizes signed before this record are superseded. Signed by ``key``, the ledger key."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    type: str
    id: str
    time: UtcTime
    origin: str
    size: int
    head: str
    key: str


def key_rotation_record(origin: str, old: Signer, new_key: str, at: datetime) -> bytes:
    """The envelope bytes of a rotation from ``old`` to ``new_key``, signed by ``old``."""
    record = KeyRotationRecord(
        type=KEY_ROTATION_RECORD, id=new_event_id(), time=at, origin=origin,
        old_key=verifier_key(old.key_id, old.public_raw), new_key=new_key,
    )  # fmt: skip
    return _signed(record, old, KEY_ROTATION_PAYLOAD_TYPE)


def restore_record(origin: str, size: int, head: bytes, signer: Signer, at: datetime) -> bytes:
    """The envelope bytes of a restore at ``size`` entries (last hash ``head``), signed by
    the ledger key ``signer``."""
    record = RestoreRecord(
        type=RESTORE_RECORD, id=new_event_id(), time=at, origin=origin, size=size,
        head=head.hex(), key=verifier_key(signer.key_id, signer.public_raw),
    )  # fmt: skip
    return _signed(record, signer, RESTORE_PAYLOAD_TYPE)


def _signed(record: BaseModel, signer: Signer, payload_type: str) -> bytes:
    payload = json.dumps(
        record.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
    ).encode()
    return Envelope.sign(payload, signer, payload_type).to_bytes()


def open_key_rotation(envelope: Envelope) -> KeyRotationRecord:
    """The rotation an envelope of :data:`KEY_ROTATION_PAYLOAD_TYPE` carries, strictly
    parsed and signed by the key it rotates from (whether that key was the one in force is
    the chain's question: ledger.store.identity)."""
    record = _parsed(KeyRotationRecord, envelope, "key rotation record")
    if record.type != KEY_ROTATION_RECORD:
        raise MalformedPayloadError(f"key rotation record of type {record.type!r}")
    _check_signed(envelope, record.old_key, "key rotation record", record.new_key)
    return record


def open_restore(envelope: Envelope) -> RestoreRecord:
    """The restore an envelope of :data:`RESTORE_PAYLOAD_TYPE` carries, strictly parsed and
    signed by the key it names (whether that was the ledger key in force, and whether the
    size and head are the chain's: ledger.store.identity)."""
    record = _parsed(RestoreRecord, envelope, "restore record")
    if record.type != RESTORE_RECORD:
        raise MalformedPayloadError(f"restore record of type {record.type!r}")
    _check_signed(envelope, record.key, "restore record")
    return record


def _check_signed(envelope: Envelope, key: str, what: str, *also: str) -> None:
    """The verifier keys named parse (``key`` and ``also``), and ``key`` signed the exact
    payload bytes."""
    try:
        name, raw = parse_verifier_key(key)
        for other in also:
            parse_verifier_key(other)
    except CheckpointError as exc:
        raise MalformedPayloadError(f"{what}: {exc.message}") from None
    message = pae(envelope.payload_type, envelope.payload)
    signatures = envelope.signatures
    if not any(s.keyid == name and ed25519_verify(raw, message, s.sig) for s in signatures):
        raise BadSignatureError(f"{what}: not signed by the key it names ({name!r})", key_id=name)


LedgerRecord = KeyringRecord | KeyRotationRecord | RestoreRecord


def open_record(envelope: Envelope) -> LedgerRecord:
    """Whichever of the ledger's own records ``envelope`` carries, by its payload type."""
    if envelope.payload_type == KEYRING_PAYLOAD_TYPE:
        return open_keyring_record(envelope)
    if envelope.payload_type == KEY_ROTATION_PAYLOAD_TYPE:
        return open_key_rotation(envelope)
    if envelope.payload_type == RESTORE_PAYLOAD_TYPE:
        return open_restore(envelope)
    raise MalformedPayloadError(f"payloadType {envelope.payload_type!r} is no ledger record")


def record_columns(record: LedgerRecord) -> DecodedColumns:
    """The columns stored beside a ledger record. A keyring record's digest is in ``data``,
    so that the entries judged under it can be matched to it in SQL; a rotation's keys; a
    restore's size and head."""
    if isinstance(record, RestoreRecord):
        restored = {"size": record.size, "head": record.head}
        return _columns(record.id, RESTORE_RECORD, record.time, "_ledger_restore",
                        record.origin, record.key.split("+")[0], restored)  # fmt: skip
    if isinstance(record, KeyRotationRecord):
        rotation = {"old_key": record.old_key, "new_key": record.new_key}
        return _columns(record.id, KEY_ROTATION_RECORD, record.time, "_ledger_key",
                        record.origin, record.old_key.split("+")[0], rotation)  # fmt: skip
    digest = record.keyring.digest()
    data = {"digest": digest.hex(), "keys": sorted(record.keyring.keys)}
    return _columns(record.id, KEYRING_RECORD, record.time, "_keyring", record.source, "", data)


def _columns(
    event_id: str, kind: str, at: datetime, service: str, source: str, key_id: str,
    data: Mapping[str, object],
) -> DecodedColumns:  # fmt: skip
    return DecodedColumns(
        event_id=event_id,
        type=kind,
        time_us=micros(at),
        service=service,
        environment=LEDGER_ENVIRONMENT,
        actor="ledger",
        source=source,
        key_id=key_id,
        change_ref=None,
        image=None,
        target_kind=None,
        target=None,
        instance=None,
        content_hash=None,
        data=json.dumps(data, sort_keys=True, separators=(",", ":")),
    )
