"""The wire format: Avro single-object encoding, and schema evolution that keeps old events
readable and verifiable."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import to_parsing_canonical_form
from helpers import make_event

from ledger.errors import InvalidEventError, MalformedPayloadError, UnknownSchemaError
from ledger.wire.avro import MAGIC, Schema, SchemaSet, default_schemas
from ledger.wire.codec import decode_event, encode_event
from ledger.wire.envelope import Envelope
from ledger.wire.events import EVENT_TYPES
from ledger.wire.keyring import Keyring, Signer
from ledger.wire.verify import verify_message

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
EVENT_V1 = (SCHEMAS / "Event.v1.avsc").read_text(encoding="utf-8")
ENVELOPE_V1 = (SCHEMAS / "Envelope.v1.avsc").read_text(encoding="utf-8")


def crc64_avro(data: bytes) -> bytes:
    """The Avro specification's CRC-64-AVRO (Rabin) fingerprint, little-endian, written
    out here from the spec rather than taken from the library under test."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def fingerprint_of(schema_text: str) -> bytes:
    return crc64_avro(to_parsing_canonical_form(json.loads(schema_text)).encode("utf-8"))


def event_v2_text() -> str:
    """Event.v2: DeploymentData gains an optional field (the one compatible change)."""
    schema = json.loads(EVENT_V1)
    data_field = next(f for f in schema["fields"] if f["name"] == "data")
    deployment = next(b for b in data_field["type"] if b["name"] == "DeploymentData")
    deployment["fields"].append({"name": "ticket_url", "type": ["null", "string"], "default": None})
    return json.dumps(schema)


@pytest.fixture
def v1_only() -> SchemaSet:
    return SchemaSet(
        [Schema.from_json("Event", 1, EVENT_V1), Schema.from_json("Envelope", 1, ENVELOPE_V1)]
    )


@pytest.fixture
def v1_and_v2() -> SchemaSet:
    return SchemaSet(
        [
            Schema.from_json("Event", 1, EVENT_V1),
            Schema.from_json("Event", 2, event_v2_text()),
            Schema.from_json("Envelope", 1, ENVELOPE_V1),
        ]
    )


# --- framing -----------------------------------------------------------------------------------


def test_event_is_single_object_encoded_with_the_event_schema_fingerprint() -> None:
    payload = encode_event(make_event())
    assert payload[:2] == b"\xc3\x01" == MAGIC
    assert payload[2:10] == fingerprint_of(EVENT_V1)
    assert default_schemas().latest("Event").fingerprint == fingerprint_of(EVENT_V1)


def test_envelope_is_single_object_encoded_with_the_envelope_schema_fingerprint() -> None:
    data = Envelope.sign(encode_event(make_event()), Signer.generate("k")).to_bytes()
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == fingerprint_of(ENVELOPE_V1)


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_body_is_plain_avro_readable_by_any_avro_library(kind: str) -> None:
    """A third party needs only the .avsc file and the 10-byte header to read an event."""
    event = make_event(kind)
    payload = encode_event(event)
    record: Any = schemaless_reader(BytesIO(payload[10:]), parse_schema(json.loads(EVENT_V1)))
    assert record["id"] == event.id
    assert record["type"] == kind
    assert record["time"] == event.time
    assert record["service"] == "checkout"


def test_shipped_schemas_are_the_repository_files() -> None:
    shipped = default_schemas()
    assert shipped.latest("Event").version == 1
    assert shipped.latest("Envelope").fingerprint == fingerprint_of(ENVELOPE_V1)


# --- evolution ---------------------------------------------------------------------------------


def test_v2_differs_from_v1_only_by_an_optional_field(v1_and_v2: SchemaSet) -> None:
    assert v1_and_v2.latest("Event").version == 2
    assert v1_and_v2.latest("Event").fingerprint != fingerprint_of(EVENT_V1)


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_v1_event_decodes_with_a_v2_reader(
    kind: str, v1_only: SchemaSet, v1_and_v2: SchemaSet
) -> None:
    event = make_event(kind)
    old_payload = encode_event(event, v1_only)
    assert old_payload[2:10] == fingerprint_of(EVENT_V1)
    assert decode_event(old_payload, v1_and_v2) == event


def test_v2_reader_writes_v2(v1_and_v2: SchemaSet) -> None:
    event = make_event()
    payload = encode_event(event, v1_and_v2)
    assert payload[2:10] == fingerprint_of(event_v2_text())
    assert decode_event(payload, v1_and_v2) == event


def test_v1_event_signed_under_v1_verifies_under_v2(
    v1_only: SchemaSet, v1_and_v2: SchemaSet, ci_signer: Signer, keyring: Keyring
) -> None:
    event = make_event("deployment.succeeded")
    payload = encode_event(event, v1_only)
    data = Envelope.sign(payload, ci_signer).to_bytes(v1_only)

    verified = verify_message(data, keyring, datetime.now(UTC), schemas=v1_and_v2)

    assert verified.event == event
    assert verified.key_id == ci_signer.key_id
    assert verified.envelope == data  # the exact bytes received are kept ...
    assert verified.payload == payload  # ... and the payload is the exact bytes signed
    assert verified.payload[2:10] == fingerprint_of(EVENT_V1)


def test_v2_event_is_refused_by_a_v1_reader_not_guessed(
    v1_only: SchemaSet, v1_and_v2: SchemaSet
) -> None:
    payload = encode_event(make_event(), v1_and_v2)
    with pytest.raises(UnknownSchemaError) as caught:
        decode_event(payload, v1_only)
    assert caught.value.reason == "unknown_schema"
    assert fingerprint_of(event_v2_text()).hex() in caught.value.message


def test_a_non_null_field_the_model_does_not_know_is_still_refused(
    v1_and_v2: SchemaSet,
) -> None:
    """Evolution tolerates absent optional fields, not unknown facts."""
    record: dict[str, Any] = make_event().model_dump(mode="python")
    record["data"] = ("dev.ledger.DeploymentData", record["data"] | {"ticket_url": "x"})
    payload = v1_and_v2.encode("Event", record)
    with pytest.raises(InvalidEventError) as caught:
        decode_event(payload, v1_and_v2)
    assert caught.value.field == "data.ticket_url"


# --- refusals ----------------------------------------------------------------------------------


def test_unknown_fingerprint_is_refused() -> None:
    payload = bytearray(encode_event(make_event()))
    payload[2:10] = b"\x00" * 8
    with pytest.raises(UnknownSchemaError) as caught:
        decode_event(bytes(payload))
    assert caught.value.reason == "unknown_schema"
    assert "0000000000000000" in caught.value.message


def test_fingerprint_of_another_record_is_refused() -> None:
    """An Envelope fingerprint in front of an event body is not an Event schema."""
    payload = encode_event(make_event())
    forged = payload[:2] + fingerprint_of(ENVELOPE_V1) + payload[10:]
    with pytest.raises(UnknownSchemaError):
        decode_event(forged)


def test_trailing_bytes_are_refused() -> None:
    payload = encode_event(make_event())
    with pytest.raises(MalformedPayloadError) as caught:
        decode_event(payload + b"\x00")
    assert caught.value.reason == "malformed_payload"
    assert "trailing" in caught.value.message


def test_truncated_body_is_refused() -> None:
    payload = encode_event(make_event())
    with pytest.raises(MalformedPayloadError):
        decode_event(payload[:-5])


@pytest.mark.parametrize("data", [b"", b"\xc3", b"\xc3\x01\x00", b'{"id": 1}' + b"\x00" * 10])
def test_missing_marker_or_header_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedPayloadError) as caught:
        decode_event(data)
    assert "C3 01" in caught.value.message
