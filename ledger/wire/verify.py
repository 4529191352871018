"""Verification of one signed event: a pure checklist over bytes, no I/O.

Each step either passes or raises its own domain error, so a quarantined message always
says precisely which check it failed. Signatures are checked over the exact received
payload bytes before the payload is parsed; nothing is ever re-serialised to be checked.

The consumer runs the checklist on every message it receives (:func:`verify_message`);
``ledger verify`` runs the same steps on every stored entry (:func:`verify_entry`), so
"verify re-checks exactly what the consumer checked" holds by construction.

Authority is judged at the time the ledger witnessed the message, never at the time the
event claims: a producer chooses its claimed time, so a back-dated event signed by a key
revoked since is refused. An event that claims a time ahead of the witnessed one by more
than :data:`FUTURE_TOLERANCE` is refused too (``future_event``); one that claims a time
long before it arrived (a backfill, a spool flushed after an outage) is accepted, and the
gap is kept (the entry stores both times).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ledger.errors import (
    AuthorizationError,
    BadSignatureError,
    FutureEventError,
    LedgerError,
    NullValueError,
    OversizeError,
    SignatureError,
    UnknownKeyError,
    UnsignedError,
    WrongPayloadTypeError,
)
from ledger.wire.avro import SchemaSet
from ledger.wire.codec import decode_event
from ledger.wire.columns import DecodedColumns, decoded_columns
from ledger.wire.envelope import PAYLOAD_TYPE, Envelope, pae
from ledger.wire.events import Event
from ledger.wire.keyring import Keyring
from ledger.wire.records import open_record, record_columns

__all__ = [
    "FUTURE_TOLERANCE",
    "MAX_ENVELOPE_BYTES",
    "EntryFailure",
    "VerifiedEvent",
    "authorized_signer",
    "check_not_future",
    "verified_signers",
    "verify_entry",
    "verify_message",
    "verify_record_entry",
]

MAX_ENVELOPE_BYTES = 64 * 1024
FUTURE_TOLERANCE = timedelta(minutes=5)
"""How far an event's claimed time may be ahead of the time the ledger witnessed it: clock
skew between a producer and the ledger, not a way to date an event in the future."""


@dataclass(frozen=True)
class VerifiedEvent:
    """An event whose origin and authorization are proven, with the bytes that prove it."""

    envelope: bytes
    payload: bytes
    event: Event
    key_id: str


def verify_message(
    data: bytes | None, keyring: Keyring, witnessed_at: datetime, schemas: SchemaSet | None = None
) -> VerifiedEvent:
    """Verify one Kafka message value (None for a record without one), witnessed by the
    ledger at ``witnessed_at``; raises a :class:`RejectedMessage` subclass on failure."""
    # 1. A value, of bounded size, before any parsing.
    if data is None:
        raise NullValueError("the record has no value (a Kafka tombstone): nothing to verify")
    if len(data) > MAX_ENVELOPE_BYTES:
        raise OversizeError(
            f"message is {len(data):,} bytes, over the {MAX_ENVELOPE_BYTES:,}-byte limit"
        )
    # 2. The envelope decodes.
    envelope = Envelope.from_bytes(data, schemas)
    # 3-5. It carries a ledger event, signed by a key the keyring knows.
    signers = verified_signers(envelope, keyring)
    # 6. The signed payload decodes and 7. is a valid event.
    event = decode_event(envelope.payload, schemas)
    # 8. It does not claim a time in the ledger's future.
    check_not_future(event, witnessed_at)
    # 9. A verified key is authorized for this type and source when the ledger witnessed it.
    key_id = authorized_signer(event, signers, keyring, witnessed_at)
    return VerifiedEvent(data, envelope.payload, event, key_id)


def verified_signers(envelope: Envelope, keyring: Keyring, only: str | None = None) -> list[str]:
    """Steps 3-5: the ids of the keys whose signature verifies (of key ``only``, if given)."""
    # 3. It carries a ledger event.
    if envelope.payload_type != PAYLOAD_TYPE:
        raise WrongPayloadTypeError(
            f"payloadType is {envelope.payload_type!r}, expected {PAYLOAD_TYPE!r}"
        )
    # 4. At least one signature is by a key the keyring knows.
    if not envelope.signatures:
        raise UnsignedError("the envelope carries no signature")
    signatures = [s for s in envelope.signatures if only is None or s.keyid == only]
    known = [s for s in signatures if s.keyid in keyring.keys]
    if not known:
        ids = ", ".join(repr(s.keyid) for s in signatures or envelope.signatures)
        raise UnknownKeyError(f"no signature by a trusted key (signed by {ids})")
    # 5. A signature verifies over PAE(payloadType, exact payload bytes).
    message = pae(envelope.payload_type, envelope.payload)
    verified: list[str] = []
    failures: list[BadSignatureError] = []
    for signature in known:
        try:
            keyring.check_signature(signature.keyid, message, signature.sig)
        except BadSignatureError as exc:
            failures.append(exc)
        else:
            if signature.keyid not in verified:
                verified.append(signature.keyid)
    if not verified:
        raise failures[0]
    return verified


def check_not_future(event: Event, witnessed_at: datetime) -> None:
    """Step 8: the claimed time is not ahead of the witnessed one beyond clock skew."""
    if event.time > witnessed_at + FUTURE_TOLERANCE:
        raise FutureEventError(
            f"the event claims {event.time.isoformat()}, "
            f"{(event.time - witnessed_at).total_seconds():,.0f} s after the ledger witnessed "
            f"it ({witnessed_at.isoformat()}); more than {FUTURE_TOLERANCE} ahead"
        )


def authorized_signer(event: Event, key_ids: list[str], keyring: Keyring, at: datetime) -> str:
    """Step 9: the first of ``key_ids`` that may vouch for this event at ``at``."""
    denials: list[AuthorizationError] = []
    for key_id in key_ids:
        try:
            keyring.authorize(key_id, event.type, event.source, at, event.time)
        except AuthorizationError as exc:
            denials.append(exc)
        else:
            return key_id
    raise denials[0]


EntryFailure = tuple[str, str]
"""(check, message) of a stored entry that fails checks 6-8 of docs/formats.md §10."""


def verify_record_entry(
    seq: int, envelope_bytes: bytes, stored: DecodedColumns
) -> EntryFailure | None:
    """Check 6 for a record the ledger wrote itself (ledger.wire.records): it decodes (a key
    rotation: signed by the key it rotates from), and the stored columns are what it says.
    A keyring record carries no signature: the chain, and the signed checkpoints over it,
    are its authority."""
    try:
        fresh = record_columns(open_record(Envelope.from_bytes(envelope_bytes)))
    except LedgerError as exc:
        return (
            "decoded_columns",
            f"entry {seq}: the ledger's record no longer decodes: {exc.message}",
        )
    for name, want, got in zip(DecodedColumns._fields, fresh, stored, strict=True):
        if want != got:
            return "decoded_columns", (
                f"entry {seq}: column {name} is {got!r} but the ledger's record says {want!r}"
            )
    return None


def verify_entry(
    seq: int,
    envelope_bytes: bytes,
    stored: DecodedColumns,
    keyring: Keyring,
    witnessed_at: datetime | None,
) -> EntryFailure | None:
    """The checklist over one stored entry: ``ledger verify``'s checks 6-8.

    6 (``decoded_columns``): the envelope and its payload decode (steps 2, 6, 7), the key
    the entry is attributed to signed it, and the stored columns are a fresh decode's;
    7 (``signature``): steps 3-5 for that key; 8 (``authorization``): steps 8-9 for it at
    its witnessed time. An entry of format 1 (``witnessed_at`` None) was judged before
    witnessed times existed: at the time the event claims, with no future check.
    """
    try:
        envelope = Envelope.from_bytes(envelope_bytes)
        event = decode_event(envelope.payload)
    except LedgerError as exc:
        return "decoded_columns", f"entry {seq}: stored envelope no longer decodes: {exc.message}"
    if stored.key_id not in {s.keyid for s in envelope.signatures}:
        return "decoded_columns", f"entry {seq}: key_id {stored.key_id!r} did not sign it"
    fresh = decoded_columns(event, stored.key_id)
    for name, want, got in zip(DecodedColumns._fields, fresh, stored, strict=True):
        if want != got:
            return "decoded_columns", (
                f"entry {seq}: column {name} is {got!r} but the signed event says {want!r}"
            )
    try:
        verified_signers(envelope, keyring, only=stored.key_id)
    except SignatureError as exc:
        return "signature", f"entry {seq}: {exc.message} ({exc.reason})"
    try:
        if witnessed_at is not None:
            check_not_future(event, witnessed_at)
        authorized_signer(event, [stored.key_id], keyring, witnessed_at or event.time)
    except (AuthorizationError, FutureEventError) as exc:
        return "authorization", f"entry {seq}: {exc.message} ({exc.reason})"
    return None
