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
from helpers import data_of, make_event

from ledger.errors import InvalidEventError, MalformedPayloadError, UnknownSchemaError
from ledger.wire.avro import MAGIC, Schema, SchemaSet, default_schemas
from ledger.wire.codec import decode_event, encode_event
from ledger.wire.envelope import Envelope
from ledger.wire.events import EVENT_TYPES, ClassificationData, DeploymentData, Event, PolicyData
from ledger.wire.keyring import Keyring, Signer
from ledger.wire.verify import verify_message

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
EVENT_V1 = (SCHEMAS / "Event.v1.avsc").read_text(encoding="utf-8")
EVENT_V2 = (SCHEMAS / "Event.v2.avsc").read_text(encoding="utf-8")
EVENT_V3 = (SCHEMAS / "Event.v3.avsc").read_text(encoding="utf-8")
NEWEST = EVENT_V3
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


def event_next_text() -> str:
    """A future Event.v4 on top of the newest shipped version: DeploymentData gains an
    optional field (the one compatible change)."""
    schema = json.loads(EVENT_V3)
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
def shipped_and_next() -> SchemaSet:
    """Every shipped version, and the future v4 a newer build would ship."""
    return SchemaSet(
        [
            Schema.from_json("Event", 1, EVENT_V1),
            Schema.from_json("Event", 2, EVENT_V2),
            Schema.from_json("Event", 3, EVENT_V3),
            Schema.from_json("Event", 4, event_next_text()),
            Schema.from_json("Envelope", 1, ENVELOPE_V1),
        ]
    )


POLICY = {
    "digest": "sha256:" + "c" * 64,
    "preprod": ["staging", "qa"],
    "services": [
        {"match": "payments", "preprod": ["staging-eu"]},
        {"match": "search-*", "preprod": []},
    ],
    "severity": {"rollback": "low", "manual_change": "medium"},
    "thresholds": {"late_after": 7200, "canary_window": 86_400},
}


def v2_events() -> list[Event]:
    """What only v2 can carry: a policy record, a classification that says why, and a
    deployment that says when its commit was made."""
    return [
        make_event("policy.recorded", **POLICY),
        make_event("service.classified", why="stateless; rebuilt from the image each release"),
        make_event(commit="4f1c2b3", commit_time="2026-11-20T09:12:00Z"),
    ]


# --- framing -----------------------------------------------------------------------------------


def test_event_is_single_object_encoded_with_the_newest_event_schema_fingerprint() -> None:
    payload = encode_event(make_event())
    assert payload[:2] == b"\xc3\x01" == MAGIC
    assert payload[2:10] == fingerprint_of(NEWEST)
    assert default_schemas().latest("Event").fingerprint == fingerprint_of(NEWEST)


def test_envelope_is_single_object_encoded_with_the_envelope_schema_fingerprint() -> None:
    data = Envelope.sign(encode_event(make_event()), Signer.generate("k")).to_bytes()
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == fingerprint_of(ENVELOPE_V1)


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_body_is_plain_avro_readable_by_any_avro_library(kind: str) -> None:
    """A third party needs only the .avsc files and the 10-byte header to read an event:
    the fingerprint names the file."""
    event = make_event(kind)
    payload = encode_event(event)
    by_fingerprint = {fingerprint_of(text): text for text in (EVENT_V1, EVENT_V2, EVENT_V3)}
    writer = parse_schema(json.loads(by_fingerprint[payload[2:10]]))
    body = BytesIO(payload[10:])
    record: Any = schemaless_reader(body, writer)
    assert body.tell() == len(payload) - 10
    assert record["id"] == event.id
    assert record["type"] == kind
    assert record["time"] == event.time
    assert record["service"] == "checkout"


def test_shipped_schemas_are_the_repository_files() -> None:
    shipped = default_schemas()
    assert shipped.latest("Event").version == 3
    assert shipped.latest("Event").fingerprint == fingerprint_of(NEWEST)
    assert shipped.latest("Envelope").fingerprint == fingerprint_of(ENVELOPE_V1)


def test_the_fingerprints_in_the_formats_doc_are_the_computed_ones() -> None:
    """docs/formats.md §2 is what a third party checks the 8 header bytes against."""
    doc = (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
    for name, version, text in (
        ("Event", 1, EVENT_V1),
        ("Event", 2, EVENT_V2),
        ("Event", 3, EVENT_V3),
        ("Envelope", 1, ENVELOPE_V1),
    ):
        computed = Schema.from_json(name, version, text).fingerprint
        assert computed == fingerprint_of(text)  # the library agrees with the spec
        row = f"| `dev.ledger.{name}` v{version} | `schemas/{name}.v{version}.avsc` |"
        assert f"{row} `{computed.hex()}` |" in doc, row


def test_v2_is_v1_with_an_optional_why_and_a_policy_branch_appended() -> None:
    """Only compatible changes: v1 stays a prefix of v2, so v1 bytes resolve into v2."""
    v1, v2 = json.loads(EVENT_V1), json.loads(EVENT_V2)
    branches_v1 = next(f for f in v1["fields"] if f["name"] == "data")["type"]
    branches_v2 = next(f for f in v2["fields"] if f["name"] == "data")["type"]
    assert [b["name"] for b in branches_v2] == [b["name"] for b in branches_v1] + ["PolicyData"]
    for old, new in zip(branches_v1, branches_v2, strict=False):
        added = new["fields"][len(old["fields"]) :]
        assert new["fields"][: len(old["fields"])] == old["fields"], old["name"]
        assert all(f.get("default", "missing") is None for f in added), old["name"]
    classification = branches_v2[len(branches_v1) - 1]
    assert [f["name"] for f in classification["fields"]][-1] == "why"
    policy = branches_v2[-1]
    assert [f["name"] for f in policy["fields"]] == list(PolicyData.model_fields)


def test_v3_is_v2_with_an_optional_artifact_and_image_made_optional() -> None:
    """Only compatible changes: v2 bytes resolve into v3 (a string read into a union that
    holds it; fields appended with a null default)."""
    v2, v3 = json.loads(EVENT_V2), json.loads(EVENT_V3)
    branches_v2 = next(f for f in v2["fields"] if f["name"] == "data")["type"]
    branches_v3 = next(f for f in v3["fields"] if f["name"] == "data")["type"]
    assert [b["name"] for b in branches_v3] == [b["name"] for b in branches_v2]
    gained = {"DeploymentData", "DeploymentFailedData", "RollbackData", "ApprovalGrantedData"}
    for old, new in zip(branches_v2, branches_v3, strict=True):
        if old["name"] not in gained:
            assert new == old, old["name"]
            continue
        names = [f["name"] for f in new["fields"]]
        assert names == [f["name"] for f in old["fields"]] + ["artifact"], old["name"]
        assert new["fields"][-1]["default"] is None
        for was, now in zip(old["fields"], new["fields"], strict=False):
            if was["name"] == "image" and was["type"] == "string":
                assert (now["type"], now["default"]) == (["null", "string"], None)
            else:
                assert now == was, (old["name"], was["name"])


@pytest.mark.parametrize("event", v2_events(), ids=lambda e: e.type)
def test_every_event_written_under_v2_decodes_under_v3_to_the_same_event(event: Event) -> None:
    v2_only = SchemaSet([Schema.from_json("Event", 2, EVENT_V2)])
    old_payload = encode_event(event, v2_only)
    assert old_payload[2:10] == fingerprint_of(EVENT_V2)
    assert decode_event(old_payload) == event


# --- evolution ---------------------------------------------------------------------------------


V1_TYPES = [kind for kind in EVENT_TYPES if kind != "policy.recorded"]
"""The types v1 can carry: all but those schema v2 added."""


@pytest.mark.parametrize("kind", V1_TYPES)
def test_every_event_written_under_v1_decodes_under_the_shipped_schemas_to_the_same_event(
    kind: str, v1_only: SchemaSet
) -> None:
    event = make_event(kind)
    old_payload = encode_event(event, v1_only)
    assert old_payload[2:10] == fingerprint_of(EVENT_V1)
    decoded = decode_event(old_payload)  # the default set: v1 and v2
    assert decoded == event
    assert decoded.to_json_dict() == event.to_json_dict()


@pytest.mark.parametrize("kind", V1_TYPES)
def test_every_event_signed_under_v1_still_verifies_under_the_shipped_schemas(
    kind: str, v1_only: SchemaSet, ci_signer: Signer, approver_signer: Signer, keyring: Keyring
) -> None:
    event = make_event(kind)
    payload = encode_event(event, v1_only)
    signer = approver_signer if kind.startswith("approval.") else ci_signer
    data = Envelope.sign(payload, signer).to_bytes(v1_only)

    verified = verify_message(data, keyring, datetime.now(UTC))

    assert verified.event == event
    assert verified.key_id == signer.key_id
    assert verified.envelope == data  # the exact bytes received are kept ...
    assert verified.payload == payload  # ... and the payload is the exact bytes signed
    assert verified.payload[2:10] == fingerprint_of(EVENT_V1)


def test_a_v1_classification_reads_with_no_why_and_keeps_its_stored_form(
    v1_only: SchemaSet,
) -> None:
    """Resolution fills the new field with null; the null is left out of the JSON form
    (and so of the ledger's data column and the derived id), as it was before v2."""
    event = make_event("service.classified")
    decoded = decode_event(encode_event(event, v1_only))
    assert data_of(decoded, ClassificationData).why is None
    assert decoded.to_json_dict()["data"] == {
        "state": "stateless",
        "criticality": "high",
        "model": "immutable",
    }


def test_a_v1_deployment_reads_with_no_commit_time_and_keeps_its_stored_form(
    v1_only: SchemaSet,
) -> None:
    event = make_event(commit="4f1c2b3")
    decoded = decode_event(encode_event(event, v1_only))
    assert data_of(decoded, DeploymentData).commit_time is None
    assert "commit_time" not in decoded.to_json_dict()["data"]
    assert decoded.to_json_dict() == event.to_json_dict()


@pytest.mark.parametrize("event", v2_events(), ids=lambda e: e.type)
def test_a_v2_event_round_trips_byte_for_byte(event: Event) -> None:
    payload = encode_event(event)
    assert payload[2:10] == fingerprint_of(NEWEST)
    decoded = decode_event(payload)
    assert decoded == event
    assert decoded.to_json_dict() == event.to_json_dict()
    assert encode_event(decoded) == payload


def test_a_policy_record_keeps_every_value_through_avro() -> None:
    decoded = decode_event(encode_event(make_event("policy.recorded", **POLICY)))
    assert data_of(decoded, PolicyData).model_dump(mode="json") == POLICY


@pytest.mark.parametrize("event", v2_events(), ids=lambda e: e.type)
def test_a_v2_event_is_refused_by_a_v1_reader_never_misdecoded(
    event: Event, v1_only: SchemaSet
) -> None:
    with pytest.raises(UnknownSchemaError) as caught:
        decode_event(encode_event(event), v1_only)
    assert caught.value.reason == "unknown_schema"
    assert fingerprint_of(NEWEST).hex() in caught.value.message
    assert fingerprint_of(EVENT_V1).hex() in caught.value.message  # what it does know


def test_a_v2_event_signed_is_refused_by_a_v1_verifier_as_an_unknown_schema(
    v1_only: SchemaSet, ci_signer: Signer, keyring: Keyring
) -> None:
    data = Envelope.sign(encode_event(v2_events()[0]), ci_signer).to_bytes()
    with pytest.raises(UnknownSchemaError):
        verify_message(data, keyring, datetime.now(UTC), schemas=v1_only)


# A future version on top of the newest: what the next schema change must keep working.


def test_the_next_differs_from_v3_only_by_an_optional_field(shipped_and_next: SchemaSet) -> None:
    assert shipped_and_next.latest("Event").version == 4
    assert shipped_and_next.latest("Event").fingerprint != fingerprint_of(NEWEST)


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_a_shipped_event_decodes_with_the_next_reader(
    kind: str, v1_only: SchemaSet, shipped_and_next: SchemaSet
) -> None:
    event = make_event(kind)
    payloads = [encode_event(event)]
    if kind in V1_TYPES:
        payloads.append(encode_event(event, v1_only))
    for payload in payloads:
        assert decode_event(payload, shipped_and_next) == event


def test_the_next_reader_writes_the_next(shipped_and_next: SchemaSet) -> None:
    event = make_event()
    payload = encode_event(event, shipped_and_next)
    assert payload[2:10] == fingerprint_of(event_next_text())
    assert decode_event(payload, shipped_and_next) == event


def test_an_event_signed_under_v1_verifies_under_the_next(
    v1_only: SchemaSet, shipped_and_next: SchemaSet, ci_signer: Signer, keyring: Keyring
) -> None:
    event = make_event("deployment.succeeded")
    payload = encode_event(event, v1_only)
    data = Envelope.sign(payload, ci_signer).to_bytes(v1_only)

    verified = verify_message(data, keyring, datetime.now(UTC), schemas=shipped_and_next)

    assert verified.event == event
    assert verified.key_id == ci_signer.key_id
    assert verified.envelope == data  # the exact bytes received are kept ...
    assert verified.payload == payload  # ... and the payload is the exact bytes signed
    assert verified.payload[2:10] == fingerprint_of(EVENT_V1)


def test_a_next_event_is_refused_by_a_shipped_reader_not_guessed(
    shipped_and_next: SchemaSet,
) -> None:
    payload = encode_event(make_event(), shipped_and_next)
    with pytest.raises(UnknownSchemaError) as caught:
        decode_event(payload)
    assert caught.value.reason == "unknown_schema"
    assert fingerprint_of(event_next_text()).hex() in caught.value.message


def test_a_non_null_field_the_model_does_not_know_is_still_refused(
    shipped_and_next: SchemaSet,
) -> None:
    """Evolution tolerates absent optional fields, not unknown facts."""
    record: dict[str, Any] = make_event().model_dump(mode="python")
    record["data"] = ("dev.ledger.DeploymentData", record["data"] | {"ticket_url": "x"})
    payload = shipped_and_next.encode("Event", record)
    with pytest.raises(InvalidEventError) as caught:
        decode_event(payload, shipped_and_next)
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
