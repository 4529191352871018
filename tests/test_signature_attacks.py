"""Attacks on the signed envelope: each one fails verification with its own error class and
reason; nothing forged or tampered is ever returned as a verified event."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from helpers import make_event

from ledger.errors import (
    BadSignatureError,
    FutureEventError,
    KeyExpiredError,
    KeyNotAllowedForSourceError,
    KeyNotAllowedForTypeError,
    KeyNotYetValidError,
    KeyRevokedError,
    MalformedEnvelopeError,
    OversizeError,
    RejectedMessage,
    UnknownKeyError,
    UnsignedError,
    WrongPayloadTypeError,
)
from ledger.transport.producer import seal
from ledger.wire.codec import encode_event
from ledger.wire.envelope import PAYLOAD_TYPE, Envelope, Signature
from ledger.wire.events import Event
from ledger.wire.keyring import Keyring, Signer
from ledger.wire.verify import FUTURE_TOLERANCE, MAX_ENVELOPE_BYTES, verify_message

EVENT_TIME = datetime(2026, 11, 20, 14, 3, tzinfo=UTC)
WITNESSED = EVENT_TIME + timedelta(minutes=1)
"""When the ledger witnesses an event of EVENT_TIME: a minute after it was made."""


def refused(
    data: bytes,
    keyring: Keyring,
    error: type[RejectedMessage],
    reason: str,
    witnessed: datetime = WITNESSED,
) -> str:
    """Verification fails with exactly this class and reason; returns the message."""
    with pytest.raises(RejectedMessage) as caught:
        verify_message(data, keyring, witnessed)
    assert type(caught.value) is error, caught.value
    assert caught.value.reason == reason
    assert caught.value.message
    return caught.value.message


def deployment() -> Event:
    return make_event("deployment.succeeded")


# --- the genuine article -----------------------------------------------------------------------


def test_genuine_event_verifies_and_keeps_the_exact_received_bytes(
    ci_signer: Signer, keyring: Keyring
) -> None:
    event = deployment()
    payload = encode_event(event)
    data = Envelope.sign(payload, ci_signer).to_bytes()

    verified = verify_message(data, keyring, WITNESSED)

    assert verified.envelope == data
    assert verified.payload == payload
    assert verified.event == event
    assert verified.key_id == "ci-main"


def test_approver_key_verifies_approvals(approver_signer: Signer, keyring: Keyring) -> None:
    event = make_event("approval.granted")
    verified = verify_message(seal(event, approver_signer), keyring, WITNESSED)
    assert verified.event == event
    assert verified.key_id == "change-board"


def test_dsse_json_form_verifies_with_plain_ed25519_over_independent_pae(
    ci_signer: Signer,
) -> None:
    payload = encode_event(deployment())
    dsse = Envelope.sign(payload, ci_signer).to_dsse_json()

    assert dsse["payloadType"] == PAYLOAD_TYPE
    body = base64.b64decode(dsse["payload"])
    assert body == payload
    [signature] = dsse["signatures"]
    assert signature["keyid"] == "ci-main"
    kind = dsse["payloadType"].encode()
    pae = b"DSSEv1 " + str(len(kind)).encode() + b" " + kind + b" "
    pae += str(len(body)).encode() + b" " + body
    public = Ed25519PublicKey.from_public_bytes(ci_signer.public_raw)
    public.verify(base64.b64decode(signature["sig"]), pae)  # raises if it does not verify
    with pytest.raises(InvalidSignature):
        public.verify(base64.b64decode(signature["sig"]), pae + b"x")


# --- tampering ---------------------------------------------------------------------------------


def test_attack_tampered_payload_byte(ci_signer: Signer, keyring: Keyring) -> None:
    data = seal(deployment(), ci_signer)
    assert data.count(b"alice") == 1
    tampered = data.replace(b"alice", b"mally")  # same length: the framing stays valid
    message = refused(tampered, keyring, BadSignatureError, "bad_signature")
    assert "ci-main" in message


def test_attack_payload_swapped_under_another_events_signature(
    ci_signer: Signer, keyring: Keyring
) -> None:
    genuine = Envelope.sign(encode_event(deployment()), ci_signer)
    other = encode_event(make_event("deployment.failed"))
    forged = Envelope(PAYLOAD_TYPE, other, genuine.signatures).to_bytes()
    refused(forged, keyring, BadSignatureError, "bad_signature")


def test_attack_tampered_signature_byte(ci_signer: Signer, keyring: Keyring) -> None:
    envelope = Envelope.sign(encode_event(deployment()), ci_signer)
    sig = bytearray(envelope.signatures[0].sig)
    sig[0] ^= 0x01
    forged = Envelope(PAYLOAD_TYPE, envelope.payload, (Signature("ci-main", bytes(sig)),))
    refused(forged.to_bytes(), keyring, BadSignatureError, "bad_signature")


def test_attack_signature_made_for_another_payload_type(
    ci_signer: Signer, keyring: Keyring
) -> None:
    """PAE binds the payload type: a signature over the same bytes as another type of
    document does not transfer to a ledger event."""
    payload = encode_event(deployment())
    other = Envelope.sign(payload, ci_signer, payload_type="application/vnd.in-toto+json")
    forged = Envelope(PAYLOAD_TYPE, payload, other.signatures).to_bytes()
    refused(forged, keyring, BadSignatureError, "bad_signature")


# --- keys --------------------------------------------------------------------------------------


def test_attack_signed_by_unknown_key(keyring: Keyring) -> None:
    stranger = Signer.generate("stranger")
    message = refused(seal(deployment(), stranger), keyring, UnknownKeyError, "unknown_key")
    assert "stranger" in message


def test_attack_wrong_key_under_a_trusted_key_id(keyring: Keyring) -> None:
    impostor = Signer.generate("ci-main")  # claims the trusted id, holds another private key
    message = refused(seal(deployment(), impostor), keyring, BadSignatureError, "bad_signature")
    assert "ci-main" in message


def test_attack_ci_key_claims_the_approver_key_id(ci_signer: Signer, keyring: Keyring) -> None:
    ci_private = serialization.load_pem_private_key(ci_signer.private_pem(), password=None)
    assert isinstance(ci_private, Ed25519PrivateKey)
    forged = Signer("change-board", ci_private)
    refused(
        seal(make_event("approval.granted"), forged), keyring, BadSignatureError, "bad_signature"
    )


def test_attack_untrusted_extra_signature_does_not_help_a_bad_one(keyring: Keyring) -> None:
    payload = encode_event(deployment())
    impostor = Envelope.sign(payload, Signer.generate("ci-main")).signatures[0]
    stranger = Envelope.sign(payload, Signer.generate("stranger")).signatures[0]
    forged = Envelope(PAYLOAD_TYPE, payload, (stranger, impostor)).to_bytes()
    refused(forged, keyring, BadSignatureError, "bad_signature")


def test_one_trusted_signature_among_unknown_ones_verifies(
    ci_signer: Signer, keyring: Keyring
) -> None:
    payload = encode_event(deployment())
    stranger = Envelope.sign(payload, Signer.generate("stranger")).signatures[0]
    genuine = Envelope.sign(payload, ci_signer).signatures[0]
    data = Envelope(PAYLOAD_TYPE, payload, (stranger, genuine)).to_bytes()
    assert verify_message(data, keyring, WITNESSED).key_id == "ci-main"


# --- authorization -----------------------------------------------------------------------------


def test_attack_ci_key_signs_an_approval(ci_signer: Signer, keyring: Keyring) -> None:
    approval = make_event("approval.granted", source="ci/github/acme/checkout")
    message = refused(
        seal(approval, ci_signer), keyring, KeyNotAllowedForTypeError, "key_not_allowed_type"
    )
    assert "approval.granted" in message


def test_attack_ci_key_revokes_an_approval(ci_signer: Signer, keyring: Keyring) -> None:
    revocation = make_event("approval.revoked", source="ci/github/acme/checkout")
    refused(seal(revocation, ci_signer), keyring, KeyNotAllowedForTypeError, "key_not_allowed_type")


def test_attack_approver_key_signs_a_deployment(approver_signer: Signer, keyring: Keyring) -> None:
    event = make_event("deployment.succeeded", source="cab/servicenow")
    refused(
        seal(event, approver_signer), keyring, KeyNotAllowedForTypeError, "key_not_allowed_type"
    )


def test_attack_source_outside_the_keys_sources(ci_signer: Signer, keyring: Keyring) -> None:
    event = make_event("deployment.succeeded", source="cab/servicenow")
    message = refused(
        seal(event, ci_signer), keyring, KeyNotAllowedForSourceError, "key_not_allowed_source"
    )
    assert "cab/servicenow" in message


def test_source_pattern_does_not_match_a_mere_prefix(ci_signer: Signer, keyring: Keyring) -> None:
    # The key may claim ci/* ; "cix/..." only shares a prefix.
    event = make_event("deployment.succeeded", source="cix/github/acme")
    refused(seal(event, ci_signer), keyring, KeyNotAllowedForSourceError, "key_not_allowed_source")


def test_attack_event_witnessed_after_revocation(ci_signer: Signer, keyring: Keyring) -> None:
    revoked_at = EVENT_TIME + timedelta(hours=1)
    keyring.revoke("ci-main", revoked_at)
    event = make_event(time=revoked_at - timedelta(minutes=5))
    before = revoked_at - timedelta(seconds=1)
    assert verify_message(seal(event, ci_signer), keyring, before).event == event
    refused(seal(event, ci_signer), keyring, KeyRevokedError, "key_revoked", revoked_at)
    later = revoked_at + timedelta(days=1)
    message = refused(seal(event, ci_signer), keyring, KeyRevokedError, "key_revoked", later)
    assert "2026-11-21T15:03:00Z" in message  # the time it was judged at: witnessed


def test_attack_back_dated_event_signed_by_a_revoked_key(
    ci_signer: Signer, keyring: Keyring
) -> None:
    """A key revoked at 2026-06-01, used months later with a time the day before: the
    producer chose that time, so it grants nothing; the event is judged when witnessed."""
    keyring.revoke("ci-main", datetime(2026, 6, 1, tzinfo=UTC))
    back_dated = make_event(time=datetime(2026, 5, 31, 23, 59, 59, tzinfo=UTC))
    months_later = datetime(2026, 11, 20, 14, 3, tzinfo=UTC)
    message = refused(
        seal(back_dated, ci_signer), keyring, KeyRevokedError, "key_revoked", months_later
    )
    assert "2026-06-01" in message and "2026-11-20T14:03:00Z" in message


def test_attack_back_dated_event_signed_by_an_expired_key(
    ci_signer: Signer, keyring: Keyring
) -> None:
    keyring.trust("ci-main", ci_signer.public_raw, types=["deployment.*"], sources=["ci/*"],
                  not_after=EVENT_TIME - timedelta(days=30))  # fmt: skip
    back_dated = make_event(time=EVENT_TIME - timedelta(days=31))
    refused(seal(back_dated, ci_signer), keyring, KeyExpiredError, "key_expired")


def test_attack_expired_key(ci_signer: Signer, keyring: Keyring) -> None:
    keyring.trust(
        "ci-main",
        ci_signer.public_raw,
        types=["deployment.*"],
        sources=["ci/*"],
        not_after=WITNESSED - timedelta(minutes=1),
    )
    message = refused(seal(deployment(), ci_signer), keyring, KeyExpiredError, "key_expired")
    assert "expired" in message
    in_time = WITNESSED - timedelta(minutes=2)
    assert verify_message(seal(deployment(), ci_signer), keyring, in_time).event.type


def test_attack_key_used_before_not_before(ci_signer: Signer, keyring: Keyring) -> None:
    keyring.trust(
        "ci-main",
        ci_signer.public_raw,
        types=["deployment.*"],
        sources=["ci/*"],
        not_before=WITNESSED + timedelta(minutes=1),
    )
    refused(seal(deployment(), ci_signer), keyring, KeyNotYetValidError, "key_not_yet_valid")
    later = WITNESSED + timedelta(minutes=1)
    assert verify_message(seal(deployment(), ci_signer), keyring, later).key_id == "ci-main"


def test_attack_event_dated_in_the_ledgers_future(ci_signer: Signer, keyring: Keyring) -> None:
    """A claimed time ahead of the witnessed one beyond clock skew is refused; within it, and
    any time before (a backfill, a spool flushed late), is accepted."""
    ahead = make_event(time=WITNESSED + FUTURE_TOLERANCE + timedelta(seconds=1))
    message = refused(seal(ahead, ci_signer), keyring, FutureEventError, "future_event")
    assert "after the ledger witnessed it" in message
    skewed = make_event(time=WITNESSED + FUTURE_TOLERANCE)
    assert verify_message(seal(skewed, ci_signer), keyring, WITNESSED).event == skewed
    backfill = make_event(time=WITNESSED - timedelta(days=400))
    assert verify_message(seal(backfill, ci_signer), keyring, WITNESSED).event == backfill


# --- envelope shape ----------------------------------------------------------------------------


def test_attack_signatures_stripped(ci_signer: Signer, keyring: Keyring) -> None:
    stripped = Envelope(PAYLOAD_TYPE, encode_event(deployment()), ()).to_bytes()
    refused(stripped, keyring, UnsignedError, "unsigned")


def test_attack_wrong_payload_type(ci_signer: Signer, keyring: Keyring) -> None:
    payload = encode_event(deployment())
    other = Envelope.sign(payload, ci_signer, payload_type="application/vnd.in-toto+json")
    message = refused(other.to_bytes(), keyring, WrongPayloadTypeError, "wrong_payload_type")
    assert "application/vnd.in-toto+json" in message


def test_attack_oversize_message(ci_signer: Signer, keyring: Keyring) -> None:
    big = Envelope.sign(b"\xc3\x01" + b"x" * MAX_ENVELOPE_BYTES, ci_signer).to_bytes()
    assert len(big) > MAX_ENVELOPE_BYTES
    message = refused(big, keyring, OversizeError, "oversize")
    assert f"{MAX_ENVELOPE_BYTES:,}" in message


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"not an envelope at all",
        b'{"payloadType": "application/vnd.deploy-ledger.event+avro"}',
        b"\xc3\x01",
    ],
)
def test_attack_garbage_bytes(garbage: bytes, keyring: Keyring) -> None:
    refused(garbage, keyring, MalformedEnvelopeError, "malformed_envelope")


def test_attack_truncated_envelope(ci_signer: Signer, keyring: Keyring) -> None:
    data = seal(deployment(), ci_signer)
    refused(data[:-10], keyring, MalformedEnvelopeError, "malformed_envelope")


def test_every_attack_has_a_distinct_reason() -> None:
    classes: list[type[RejectedMessage]] = [
        BadSignatureError,
        UnknownKeyError,
        KeyNotAllowedForTypeError,
        KeyNotAllowedForSourceError,
        KeyRevokedError,
        KeyExpiredError,
        KeyNotYetValidError,
        UnsignedError,
        WrongPayloadTypeError,
        OversizeError,
        MalformedEnvelopeError,
        FutureEventError,
    ]
    assert len({c.reason for c in classes}) == len(classes)
