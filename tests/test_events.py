"""The event contract: every type validates and survives its Avro encoding; refusals name the
field a producer has to fix."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from helpers import DIGEST_A, DIGEST_B, IMAGE_A, IMAGE_B, data_of, make_event
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InvalidEventError, OversizeError, UnpinnedImageError
from ledger.wire.codec import MAX_PAYLOAD_BYTES, decode_event, encode_event
from ledger.wire.events import (
    EVENT_TYPES,
    ApprovalGrantedData,
    DeploymentData,
    MutationData,
    event_from_json,
    event_from_mapping,
    with_derived_id,
)

WHEN = datetime(2026, 11, 20, 14, 3, tzinfo=UTC)

# Every optional field of every type filled in, so each Avro branch and union is exercised.
FULL_DATA: dict[str, dict[str, Any]] = {
    "deployment.started": {
        "image": IMAGE_A,
        "change_ref": "CHG-1042",
        "commit": "0123456789abcdef" * 2 + "01234567",
        "run_url": "https://github.com/acme/checkout/actions/runs/42",
        "strategy": "canary",
        "instances": {"total": 10, "updated": 0},
    },
    "deployment.succeeded": {
        "image": IMAGE_A,
        "change_ref": "CHG-1042",
        "commit": "abc1234",
        "run_url": "https://ci.example/run/7",
        "strategy": "blue_green",
        "instances": {"total": 10, "updated": 10},
    },
    "deployment.failed": {
        "image": IMAGE_B,
        "change_ref": "CHG-1042",
        "reason": "readiness probe failed",
        "instances": {"total": 10, "updated": 3},
    },
    "deployment.rolled_back": {
        "image": IMAGE_A,
        "from_image": IMAGE_B,
        "change_ref": "CHG-1042",
        "reason": "errors",
    },
    "mutation.applied": {
        "target_kind": "secret",
        "target": "db-password",
        "hash": DIGEST_B,
        "previous_hash": DIGEST_A,
        "tool": "vault",
        "method": "manual",
        "instance": "web-3",
        "change_ref": "CHG-7",
    },
    "approval.granted": {
        "change_ref": "CHG-1042",
        "approver": "carol",
        "image": IMAGE_A,
        "hash": DIGEST_A,
        "valid_until": "2026-11-21T00:00:00+02:00",
    },
    "approval.revoked": {"change_ref": "CHG-1042", "reason": "risk reassessed"},
    "service.classified": {"state": "stateful", "criticality": "medium", "model": "mutable"},
}


def raw_event(kind: str = "deployment.succeeded", **top: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": "evt-1",
        "type": kind,
        "time": "2026-11-20T14:03:00Z",
        "source": "ci/github/acme/checkout",
        "actor": "alice",
        "service": "checkout",
        "environment": "prod",
        "data": dict(FULL_DATA[kind]),
    }
    raw.update(top)
    return raw


def refusal(raw: dict[str, Any]) -> InvalidEventError:
    with pytest.raises(InvalidEventError) as caught:
        event_from_mapping(raw)
    return caught.value


# --- every type validates and round-trips -----------------------------------------------------


def test_every_event_type_is_covered() -> None:
    assert set(FULL_DATA) == set(EVENT_TYPES)


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_minimal_event_round_trips_through_avro(kind: str) -> None:
    event = make_event(kind)
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert type(decoded) is type(event)
    assert decoded.type == kind


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_fully_populated_event_round_trips_through_avro(kind: str) -> None:
    event = event_from_mapping(raw_event(kind))
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert decoded.to_json_dict() == event.to_json_dict()
    # Every optional field given survives (none silently dropped to null).
    for name, value in FULL_DATA[kind].items():
        assert getattr(decoded.data, name) is not None, name
        if isinstance(value, str) and name != "valid_until":
            assert getattr(decoded.data, name) == value


def test_encoding_is_deterministic() -> None:
    event = event_from_mapping(raw_event("mutation.applied"))
    assert encode_event(event) == encode_event(event_from_mapping(raw_event("mutation.applied")))


def test_removed_target_has_null_hash_and_round_trips() -> None:
    data = FULL_DATA["mutation.applied"] | {"hash": None}
    event = event_from_mapping(raw_event("mutation.applied", data=data))
    assert data_of(event, MutationData).hash is None
    assert decode_event(encode_event(event)) == event


def test_mutation_hash_may_be_null_but_not_absent() -> None:
    data = {k: v for k, v in FULL_DATA["mutation.applied"].items() if k != "hash"}
    error = refusal(raw_event("mutation.applied", data=data))
    assert error.field == "data.hash"
    assert "required" in error.message


def test_json_form_uses_contract_field_names() -> None:
    event = event_from_json(
        '{"id": "e-1", "type": "deployment.succeeded", "time": "2026-11-20T14:03:00Z",'
        ' "source": "ci/github/acme/checkout", "actor": "alice", "service": "checkout",'
        f' "environment": "prod", "data": {{"image": "{IMAGE_A}"}}}}'
    )
    out = event.to_json_dict()
    assert set(out) == {"id", "type", "time", "source", "actor", "service", "environment", "data"}
    assert out["time"] == "2026-11-20T14:03:00Z"
    assert out["data"]["image"] == IMAGE_A
    assert event.partition_key == b"checkout/prod"


def test_generated_id_is_a_uuid7_and_time_is_now() -> None:
    raw = raw_event()
    del raw["id"], raw["time"]
    before = datetime.now(UTC)
    first, second = event_from_mapping(raw), event_from_mapping(raw)
    assert uuid.UUID(first.id).version == 7
    assert first.id != second.id
    assert before <= first.time <= datetime.now(UTC)


def test_given_id_and_time_are_kept() -> None:
    event = event_from_mapping(raw_event(id="my-id-7"))
    assert event.id == "my-id-7"
    assert event.time == WHEN


@settings(max_examples=40, deadline=None)
@given(
    actor=st.text(min_size=1, max_size=200),
    reason=st.text(min_size=1, max_size=400),
    updated=st.integers(min_value=0, max_value=50),
    micros=st.integers(min_value=0, max_value=10**15),
)
def test_round_trip_keeps_arbitrary_text_and_microseconds(
    actor: str, reason: str, updated: int, micros: int
) -> None:
    when = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    event = make_event(
        "deployment.failed",
        actor=actor,
        reason=reason,
        time=when,
        instances={"total": 50, "updated": updated},
    )
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert decoded.time == when


# --- time --------------------------------------------------------------------------------------


def test_time_with_offset_is_stored_in_utc() -> None:
    event = event_from_mapping(raw_event(time="2026-11-20T15:03:00+01:00"))
    assert event.time == WHEN
    assert event.time.utcoffset() == timedelta(0)
    assert event.to_json_dict()["time"] == "2026-11-20T14:03:00Z"
    decoded = decode_event(encode_event(event))
    assert decoded.time == WHEN
    assert decoded.time.utcoffset() == timedelta(0)


def test_aware_datetime_with_offset_is_normalised() -> None:
    plus_five = timezone(timedelta(hours=5, minutes=30))
    event = make_event(time=datetime(2026, 11, 20, 19, 33, tzinfo=plus_five))
    assert event.time == WHEN
    assert event.time.tzinfo is not None
    assert event.time.utcoffset() == timedelta(0)


def test_approval_valid_until_is_stored_in_utc() -> None:
    event = event_from_mapping(raw_event("approval.granted"))
    valid_until = data_of(event, ApprovalGrantedData).valid_until
    assert valid_until == datetime(2026, 11, 20, 22, 0, tzinfo=UTC)
    assert valid_until.utcoffset() == timedelta(0)


@pytest.mark.parametrize("naive", ["2026-11-20T14:03:00", datetime(2026, 11, 20, 14, 3)])
def test_naive_time_is_refused(naive: Any) -> None:
    error = refusal(raw_event(time=naive))
    assert error.field == "time"
    assert error.message.startswith("time: ")
    assert "offset" in error.message


def test_naive_valid_until_is_refused() -> None:
    data = FULL_DATA["approval.granted"] | {"valid_until": "2026-11-21T00:00:00"}
    error = refusal(raw_event("approval.granted", data=data))
    assert error.field == "data.valid_until"


# --- refusals name the field -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "field", "tagged"),
    [
        ("deployment.succeeded", "image", "registry.example/checkout:1.4.2"),
        ("deployment.started", "image", "registry.example/checkout"),
        ("deployment.failed", "image", "checkout:latest"),
        ("deployment.rolled_back", "image", "checkout:1.4.1"),
        ("deployment.rolled_back", "from_image", "checkout:1.4.2"),
        ("approval.granted", "image", "registry.example/checkout:1.4.2"),
        # A digest that is not 64 hex characters is not a pin either.
        ("deployment.succeeded", "image", "registry.example/checkout@sha256:abc123"),
    ],
)
def test_tag_only_image_is_refused(kind: str, field: str, tagged: str) -> None:
    data = FULL_DATA[kind] | {field: tagged}
    with pytest.raises(UnpinnedImageError) as caught:
        event_from_mapping(raw_event(kind, data=data))
    error = caught.value
    assert error.field == f"data.{field}"
    assert error.reason == "unpinned_image"
    assert error.message.startswith(f"data.{field}: ")
    assert tagged in error.message
    assert "digest" in error.message


def test_image_with_tag_and_digest_is_accepted() -> None:
    image = "registry.example:5000/acme/checkout:1.4.2@" + DIGEST_A
    assert data_of(make_event(image=image), DeploymentData).image == image


def test_unknown_type_is_refused_naming_type() -> None:
    error = refusal(raw_event() | {"type": "deployment.exploded"})
    assert type(error) is InvalidEventError
    assert error.field == "type"
    assert error.message.startswith("type: ")
    assert "deployment.succeeded" in error.message  # it lists what is accepted


def test_missing_type_is_refused_naming_type() -> None:
    raw = raw_event()
    del raw["type"]
    error = refusal(raw)
    assert error.field == "type"
    assert error.message.startswith("type: ")


@pytest.mark.parametrize("field", ["source", "actor", "service", "environment", "data"])
def test_missing_top_level_field_is_refused(field: str) -> None:
    raw = raw_event()
    del raw[field]
    error = refusal(raw)
    assert error.field == field
    assert error.message == f"{field}: is required"


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("deployment.succeeded", "image"),
        ("deployment.rolled_back", "image"),
        ("mutation.applied", "target_kind"),
        ("mutation.applied", "tool"),
        ("approval.granted", "approver"),
        ("approval.revoked", "change_ref"),
        ("service.classified", "model"),
    ],
)
def test_missing_data_field_is_refused(kind: str, field: str) -> None:
    data = {k: v for k, v in FULL_DATA[kind].items() if k != field}
    error = refusal(raw_event(kind, data=data))
    assert error.field == f"data.{field}"
    assert error.message == f"data.{field}: is required"


def test_extra_data_field_is_refused() -> None:
    data = FULL_DATA["deployment.succeeded"] | {"colour": "red"}
    error = refusal(raw_event(data=data))
    assert error.field == "data.colour"
    assert "not a field" in error.message


def test_extra_top_level_field_is_refused() -> None:
    error = refusal(raw_event(priority="high"))
    assert error.field == "priority"


def test_field_of_another_type_is_refused() -> None:
    # A mutation's fields under a deployment type: the data must match the type.
    error = refusal(raw_event("deployment.succeeded", data=FULL_DATA["mutation.applied"]))
    assert error.field is not None
    assert error.field.startswith("data.")


# --- strict: a signed event means exactly what its bytes say ----------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [("3", "a string"), (True, "a boolean"), (3.0, "a float"), (None, "null")],
)
def test_a_count_is_an_integer_not_anything_that_converts_to_one(value: Any, kind: str) -> None:
    """``{"total": "3"}`` was read as 3 and ``true`` as 1: a count must be a JSON integer."""
    data = FULL_DATA["deployment.succeeded"] | {"instances": {"total": value, "updated": 1}}
    error = refusal(raw_event(data=data))
    assert error.field == "data.instances.total", kind


@pytest.mark.parametrize("value", [3, 2.5, True, b"alice", ["alice"]])
def test_a_text_field_is_a_string_not_anything_that_converts_to_one(value: Any) -> None:
    assert refusal(raw_event(actor=value)).field == "actor"


@pytest.mark.parametrize("value", [1, True, ["stateful"]])
def test_a_choice_is_one_of_its_strings(value: Any) -> None:
    data = FULL_DATA["service.classified"] | {"state": value}
    assert refusal(raw_event("service.classified", data=data)).field == "data.state"


@pytest.mark.parametrize(
    "value",
    [
        1_763_647_380,
        1_763_647_380.5,
        "1763647380",
        "2026-11-20",
        "20 Nov 2026 14:03",
        True,
        b"2026-11-20T14:03:00Z",
    ],
)
def test_a_time_is_an_rfc3339_string_or_a_datetime_not_a_number(value: Any) -> None:
    """A number would be read as seconds since 1970: a guess no signed event rests on."""
    assert refusal(raw_event(time=value)).field == "time"
    data = FULL_DATA["approval.granted"] | {"valid_until": value}
    assert refusal(raw_event("approval.granted", data=data)).field == "data.valid_until"


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-20T14:03:00Z",
        "2026-11-20t14:03:00z",
        "2026-11-20 14:03:00+00:00",
        "2026-11-20T15:03:00.5+01:00",
    ],
)
def test_rfc3339_times_in_every_spelling_are_accepted(value: Any) -> None:
    assert event_from_mapping(raw_event(time=value)).time.replace(microsecond=0) == WHEN


@pytest.mark.parametrize("value", [["a"], "instances", 3])
def test_a_nested_record_is_an_object(value: Any) -> None:
    data = FULL_DATA["deployment.succeeded"] | {"instances": value}
    assert refusal(raw_event(data=data)).field == "data.instances"


def test_updated_above_total_is_refused() -> None:
    data = FULL_DATA["deployment.succeeded"] | {"instances": {"total": 3, "updated": 4}}
    error = refusal(raw_event(data=data))
    assert error.field == "data.instances"
    assert "updated (4) exceeds total (3)" in error.message


def test_updated_equal_to_total_and_zero_are_accepted() -> None:
    every = data_of(make_event(instances={"total": 3, "updated": 3}), DeploymentData).instances
    no_one = data_of(make_event(instances={"total": 3, "updated": 0}), DeploymentData).instances
    assert every is not None and every.updated == 3
    assert no_one is not None and no_one.updated == 0


@pytest.mark.parametrize(
    ("field", "digest"),
    [
        ("hash", "md5:" + "a" * 32),
        ("hash", "sha256:" + "A" * 64),
        ("hash", "sha256:" + "a" * 63),
        ("hash", "a" * 64),
        ("previous_hash", "sha256:xyz"),
    ],
)
def test_bad_digest_is_refused(field: str, digest: str) -> None:
    data = FULL_DATA["mutation.applied"] | {field: digest}
    error = refusal(raw_event("mutation.applied", data=data))
    assert error.field == f"data.{field}"
    assert digest in error.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("strategy", "yolo"),
        ("commit", "not-a-sha"),
    ],
)
def test_bad_deployment_values_are_refused(field: str, value: str) -> None:
    error = refusal(raw_event(data=FULL_DATA["deployment.succeeded"] | {field: value}))
    assert error.field == f"data.{field}"


def test_bad_service_name_is_refused() -> None:
    error = refusal(raw_event(service="check out/../x"))
    assert error.field == "service"


def test_several_problems_are_counted() -> None:
    raw = raw_event()
    del raw["actor"], raw["source"]
    error = refusal(raw)
    assert "(and 1 more problem)" in error.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("{not json", "not valid JSON"), ("[1, 2]", "JSON object")],
)
def test_bad_json_line_is_refused(text: str, expected: str) -> None:
    with pytest.raises(InvalidEventError, match=expected):
        event_from_json(text)


# --- size --------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["image", "from_image"])
def test_oversize_event_is_refused_naming_the_largest_field(field: str) -> None:
    huge = "registry.example/" + "a" * MAX_PAYLOAD_BYTES + "@" + DIGEST_A
    event = make_event("deployment.rolled_back", **{field: huge})
    with pytest.raises(OversizeError) as caught:
        encode_event(event)
    assert caught.value.reason == "oversize"
    assert f"largest field: data.{field}" in caught.value.message
    assert f"{MAX_PAYLOAD_BYTES:,}-byte limit" in caught.value.message


def test_event_just_under_the_limit_is_encoded() -> None:
    image = "registry.example/" + "a" * (MAX_PAYLOAD_BYTES - 1000) + "@" + DIGEST_A
    payload = encode_event(make_event(image=image))
    assert len(payload) <= MAX_PAYLOAD_BYTES
    assert data_of(decode_event(payload), DeploymentData).image == image


def test_a_derived_id_is_the_same_for_the_same_event_and_grows_with_its_time() -> None:
    """What makes `emit file` (and, later, `ledger ingest`) safe to run twice."""
    early, late = (make_event(time=datetime(2026, 11, 20, 14, m, tzinfo=UTC)) for m in (1, 2))
    assert with_derived_id(early).id == with_derived_id(early.model_copy(update={"id": "x"})).id
    assert with_derived_id(early).id < with_derived_id(late).id  # ordered as UUIDv7s are
    other = make_event(time=early.time, actor="mallory")
    assert with_derived_id(other).id != with_derived_id(early).id
    assert uuid.UUID(with_derived_id(early).id).version == 7
