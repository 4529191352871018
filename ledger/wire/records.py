"""The ledger's own records: entries it writes itself, beside the events it receives (pure).

Two kinds: keyring records (below) and key rotation records. A **key rotation record** is a
statement by the ledger key in force that another key signs as the ledger from that record
on (checkpoints of a size that covers it, bundles made after it). It is signed by the key it
rotates from, over its exact payload bytes (DSSE), so nobody without that key can hand the
ledger to a key of their own; ``ledger verify`` follows the rotations from the first key
(ledger.store.identity).

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
    "KeyRotationRecord",
    "KeyringRecord",
    "key_rotation_record",
    "keyring_record",
    "open_key_rotation",
    "open_keyring_record",
    "open_record",
    "record_columns",
]

KEYRING_PAYLOAD_TYPE = "application/vnd.deploy-ledger.keyring+json"
KEYRING_RECORD = "ledger.keyring"
"""The ``type`` column of a keyring record."""
KEY_ROTATION_PAYLOAD_TYPE = "application/vnd.deploy-ledger.key-rotation+json"
KEY_ROTATION_RECORD = "ledger.key_rotation"
"""The ``type`` column of a key rotation record."""
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


def key_rotation_record(origin: str, old: Signer, new_key: str, at: datetime) -> bytes:
    """The envelope bytes of a rotation from ``old`` to ``new_key``, signed by ``old``."""
    record = KeyRotationRecord(
        type=KEY_ROTATION_RECORD, id=new_event_id(), time=at, origin=origin,
        old_key=verifier_key(old.key_id, old.public_raw), new_key=new_key,
    )  # fmt: skip
    payload = json.dumps(
        record.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
    ).encode()
    return Envelope.sign(payload, old, KEY_ROTATION_PAYLOAD_TYPE).to_bytes()


def open_key_rotation(envelope: Envelope) -> KeyRotationRecord:
    """The rotation an envelope of :data:`KEY_ROTATION_PAYLOAD_TYPE` carries, strictly
    parsed and signed by the key it rotates from (whether that key was the one in force is
    the chain's question: ledger.store.identity)."""
    record = _parsed(KeyRotationRecord, envelope, "key rotation record")
    if record.type != KEY_ROTATION_RECORD:
        raise MalformedPayloadError(f"key rotation record of type {record.type!r}")
    try:
        name, raw = parse_verifier_key(record.old_key)
        parse_verifier_key(record.new_key)
    except CheckpointError as exc:
        raise MalformedPayloadError(f"key rotation record: {exc.message}") from None
    message = pae(envelope.payload_type, envelope.payload)
    signatures = envelope.signatures
    if not any(s.keyid == name and ed25519_verify(raw, message, s.sig) for s in signatures):
        raise BadSignatureError(
            f"key rotation record: not signed by the key it rotates from ({name!r})", key_id=name
        )
    return record


def open_record(envelope: Envelope) -> KeyringRecord | KeyRotationRecord:
    """Whichever of the ledger's own records ``envelope`` carries, by its payload type."""
    if envelope.payload_type == KEYRING_PAYLOAD_TYPE:
        return open_keyring_record(envelope)
    if envelope.payload_type == KEY_ROTATION_PAYLOAD_TYPE:
        return open_key_rotation(envelope)
    raise MalformedPayloadError(f"payloadType {envelope.payload_type!r} is no ledger record")


def record_columns(record: KeyringRecord | KeyRotationRecord) -> DecodedColumns:
    """The columns stored beside a ledger record. A keyring record's digest is in ``data``,
    so that the entries judged under it can be matched to it in SQL; a rotation's keys."""
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
