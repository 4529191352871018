"""The ledger's own records: entries it writes itself, beside the events it receives (pure).

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
from datetime import datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from ledger.errors import MalformedPayloadError
from ledger.log.chain import micros
from ledger.wire.columns import DecodedColumns
from ledger.wire.envelope import Envelope
from ledger.wire.events import UtcTime, new_event_id
from ledger.wire.keyring import Keyring

__all__ = [
    "KEYRING_PAYLOAD_TYPE",
    "KEYRING_RECORD",
    "LEDGER_ENVIRONMENT",
    "KeyringRecord",
    "keyring_record",
    "open_keyring_record",
    "record_columns",
]

KEYRING_PAYLOAD_TYPE = "application/vnd.deploy-ledger.keyring+json"
KEYRING_RECORD = "ledger.keyring"
"""The ``type`` column of a keyring record."""
LEDGER_ENVIRONMENT = "_ledger"
"""The ``environment`` of the ledger's own records: no event can name it (an event's
environment starts with a letter or digit), so no question about events meets them."""


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


def open_keyring_record(envelope: Envelope) -> KeyringRecord:
    """The record an envelope of :data:`KEYRING_PAYLOAD_TYPE` carries, strictly parsed."""
    try:
        record = KeyringRecord.model_validate_json(envelope.payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise MalformedPayloadError(f"keyring record: {where}: {first['msg']}") from None
    if record.type != KEYRING_RECORD:
        raise MalformedPayloadError(f"keyring record of type {record.type!r}")
    return record


def record_columns(record: KeyringRecord) -> DecodedColumns:
    """The columns stored beside a keyring record: its digest in ``data``, so that the
    entries judged under it can be matched to it in SQL."""
    digest = record.keyring.digest()
    data = {"digest": digest.hex(), "keys": sorted(record.keyring.keys)}
    return DecodedColumns(
        event_id=record.id,
        type=KEYRING_RECORD,
        time_us=micros(record.time),
        service="_keyring",
        environment=LEDGER_ENVIRONMENT,
        actor="ledger",
        source=record.source,
        key_id="",
        change_ref=None,
        image=None,
        target_kind=None,
        target=None,
        instance=None,
        content_hash=None,
        data=json.dumps(data, sort_keys=True, separators=(",", ":")),
    )
