"""The event contract: every type validates and survives its Avro encoding; refusals name the
field a producer has to fix."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import pytest
from helpers import DIGEST_A, DIGEST_B, IMAGE_A, IMAGE_B, data_of, make_event
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InvalidEventError, OversizeError, UnpinnedImageError
from ledger.rules import catalogue
from ledger.wire.codec import MAX_PAYLOAD_BYTES, decode_event, encode_event
from ledger.wire.columns import decoded_columns
from ledger.wire.events import (
    EVENT_TYPES,
    ApprovalGrantedData,
    ClassificationData,
    DeploymentData,
    MutationData,
    PolicyData,
    ThresholdName,
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
    "service.classified": {
        "state": "stateful",
        "criticality": "medium",
        "model": "mutable",
        "why": "holds sessions; patched in place under change control",
    },
    "policy.recorded": {
        "digest": DIGEST_B,
        "preprod": ["staging", "qa"],
        "services": [{"match": "payments-*", "preprod": ["staging-eu"]}],
        "severity": {"rollback": "low", "no_canary": "high"},
        "thresholds": {
            "partial_after": 1800,
            "late_after": 7200,
            "canary_window": 86_400,
            "config_window": 900,
        },
    },
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
        ("policy.recorded", "digest"),
    ],
)
def test_missing_data_field_is_refused(kind: str, field: str) -> None:
    data = {k: v for k, v in FULL_DATA[kind].items() if k != field}
    error = refusal(raw_event(kind, data=data))
    assert error.field == f"data.{field}"
    assert error.message.startswith(f"data.{field}: is required")


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


# --- schema v2: a classification's why, and the policy record ---------------------------------


def test_the_threshold_names_of_the_contract_are_the_catalogue_s() -> None:
    """The wire layer does not import the rules: the two lists are kept in step here."""
    assert set(get_args(ThresholdName)) == set(catalogue.THRESHOLDS)
    severities = get_args(PolicyData.model_fields["severity"].annotation)[1]
    assert set(get_args(severities)) == set(catalogue.SEVERITIES)


def test_every_rule_id_of_the_catalogue_is_a_valid_severity_key() -> None:
    policy = FULL_DATA["policy.recorded"] | {"severity": dict.fromkeys(catalogue.RULES, "info")}
    event = event_from_mapping(raw_event("policy.recorded", data=policy))
    assert set(data_of(event, PolicyData).severity) == set(catalogue.RULES)


def test_a_policy_record_from_json_keeps_its_lists_and_maps() -> None:
    """`ledger emit file` reads JSON lines: arrays and objects, as Avro decodes them too."""
    raw = raw_event("policy.recorded")
    event = event_from_json(json.dumps(raw))
    policy = data_of(event, PolicyData)
    assert policy.model_dump(mode="json") == FULL_DATA["policy.recorded"]
    assert policy.services[0].match == "payments-*"
    assert decode_event(encode_event(event)) == event


def test_a_policy_record_needs_its_digest_only() -> None:
    data = {"digest": DIGEST_A}
    policy = data_of(event_from_mapping(raw_event("policy.recorded", data=data)), PolicyData)
    assert (policy.preprod, policy.services, policy.severity, policy.thresholds) == ([], [], {}, {})
    event = event_from_mapping(raw_event("policy.recorded", data=data))
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"severity": {"rollback": "critical"}}, "data.severity.rollback", "'info'"),
        ({"severity": {"rollback": 3}}, "data.severity.rollback", "'info'"),
        ({"severity": {"no such/rule": "low"}}, "data.severity.no such/rule", "accepted key"),
        ({"thresholds": {"soon_after": 60}}, "data.thresholds.soon_after", "late_after"),
        ({"thresholds": {"late_after": 0}}, "data.thresholds.late_after", "greater than"),
        ({"thresholds": {"late_after": -5}}, "data.thresholds.late_after", "greater than"),
        ({"thresholds": {"late_after": 31_622_401}}, "data.thresholds.late_after", "less than"),
        ({"thresholds": {"late_after": "60"}}, "data.thresholds.late_after", "integer"),
        ({"thresholds": {"late_after": True}}, "data.thresholds.late_after", "integer"),
        ({"thresholds": {"late_after": 60.0}}, "data.thresholds.late_after", "integer"),
        ({"colour": "red"}, "data.colour", "not a field"),
        ({"digest": "sha256:abc"}, "data.digest", "sha256:<64 hex>"),
        ({"preprod": "staging"}, "data.preprod", "list"),
        ({"preprod": ["stag ing"]}, "data.preprod.0", "pattern"),
        ({"preprod": ["staging"] * 33}, "data.preprod", "at most 32"),
        ({"services": [{"match": "x", "preprod": [], "env": "y"}]}, "data.services.0.env",
         "not a field"),
        ({"services": [{"match": "x"}]}, "data.services.0.preprod", "required"),
        ({"services": [{"match": "", "preprod": []}]}, "data.services.0.match", "at least 1"),
        ({"services": [{"match": "x", "preprod": []}] * 1001}, "data.services", "at most 1000"),
        ({"severity": {f"rule{i}": "low" for i in range(65)}}, "data.severity", "at most 64"),
    ],
)  # fmt: skip
def test_invalid_policy_data_is_refused_naming_the_field(
    change: dict[str, Any], field: str, says: str
) -> None:
    error = refusal(raw_event("policy.recorded", data=FULL_DATA["policy.recorded"] | change))
    assert error.field == field
    assert error.message.startswith(f"{field}: ")
    assert says in error.message


@pytest.mark.parametrize("why", ["", "x" * 4097, 42, ["a reason"]])
def test_a_why_is_text_of_1_to_4096_characters(why: Any) -> None:
    data = FULL_DATA["service.classified"] | {"why": why}
    assert refusal(raw_event("service.classified", data=data)).field == "data.why"


def test_a_classification_without_why_keeps_the_form_it_had_before_the_field() -> None:
    """A null why is left out of every dump: the ledger's data column of a classification
    recorded before schema v2, and its derived id, come out the same (pinned from v1)."""
    event = make_event("service.classified")
    assert data_of(event, ClassificationData).why is None
    assert "why" not in event.to_json_dict()["data"]
    columns = decoded_columns(event, "ci-main")
    assert columns.data == '{"criticality":"high","model":"immutable","state":"stateless"}'
    assert with_derived_id(event).id == "01a1f944-8620-7762-87a8-bd76819990b8"
    bare = {k: v for k, v in FULL_DATA["service.classified"].items() if k != "why"}
    absent, explicit_null = (
        event_from_mapping(raw_event("service.classified", data=data))
        for data in (bare, bare | {"why": None})
    )
    assert explicit_null == absent
    assert encode_event(explicit_null) == encode_event(absent)


def test_a_why_given_is_kept_in_every_form() -> None:
    event = event_from_mapping(raw_event("service.classified"))
    why = FULL_DATA["service.classified"]["why"]
    assert event.to_json_dict()["data"]["why"] == why
    assert json.loads(decoded_columns(event, "ci-main").data)["why"] == why
    assert data_of(decode_event(encode_event(event)), ClassificationData).why == why


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
