"""Verification of one received message: a pure checklist over bytes, no I/O.

Each step either passes or raises its own domain error, so a quarantined message always
says precisely which check it failed. Signatures are checked over the exact received
payload bytes before the payload is parsed; nothing is ever re-serialised to be checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.errors import (
    AuthorizationError,
    BadSignatureError,
    OversizeError,
    UnknownKeyError,
    UnsignedError,
    WrongPayloadTypeError,
)
from ledger.wire.avro import SchemaSet
from ledger.wire.codec import decode_event
from ledger.wire.envelope import PAYLOAD_TYPE, Envelope, pae
from ledger.wire.events import Event
from ledger.wire.keyring import Keyring

__all__ = ["MAX_ENVELOPE_BYTES", "VerifiedEvent", "verify_message"]

MAX_ENVELOPE_BYTES = 64 * 1024


@dataclass(frozen=True)
class VerifiedEvent:
    """An event whose origin and authorization are proven, with the bytes that prove it."""

    envelope: bytes
    payload: bytes
    event: Event
    key_id: str


def verify_message(
    data: bytes, keyring: Keyring, schemas: SchemaSet | None = None
) -> VerifiedEvent:
    """Verify one Kafka message value; raises a :class:`RejectedMessage` subclass on failure."""
    # 1. Bounded size, before any parsing.
    if len(data) > MAX_ENVELOPE_BYTES:
        raise OversizeError(
            f"message is {len(data):,} bytes, over the {MAX_ENVELOPE_BYTES:,}-byte limit"
        )
    # 2. The envelope decodes.
    envelope = Envelope.from_bytes(data, schemas)
    # 3. It carries a ledger event.
    if envelope.payload_type != PAYLOAD_TYPE:
        raise WrongPayloadTypeError(
            f"payloadType is {envelope.payload_type!r}, expected {PAYLOAD_TYPE!r}"
        )
    # 4. At least one signature is by a key the keyring knows.
    if not envelope.signatures:
        raise UnsignedError("the envelope carries no signature")
    known = [s for s in envelope.signatures if s.keyid in keyring.keys]
    if not known:
        ids = ", ".join(repr(s.keyid) for s in envelope.signatures)
        raise UnknownKeyError(f"no signature by a trusted key (signed by {ids})")
    # 5. A signature verifies over PAE(payloadType, exact payload bytes).
    message = pae(envelope.payload_type, envelope.payload)
    verified: list[str] = []
    failures: list[BadSignatureError] = []
    for signature in known:
        try:
            keyring.check_signature(signature.keyid, message, signature.sig)
            verified.append(signature.keyid)
        except BadSignatureError as exc:
            failures.append(exc)
    if not verified:
        raise failures[0]
    # 6. The signed payload decodes and 7. is a valid event.
    event = decode_event(envelope.payload, schemas)
    # 8. A verified key is authorized for this type and source at the event's time.
    denials: list[AuthorizationError] = []
    for key_id in verified:
        try:
            keyring.authorize(key_id, event.type, event.source, event.time)
        except AuthorizationError as exc:
            denials.append(exc)
        else:
            return VerifiedEvent(data, envelope.payload, event, key_id)
    raise denials[0]
