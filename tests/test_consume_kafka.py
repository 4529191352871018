"""End to end against the real local broker: emit -> consume -> verified, hash-chained ledger.

Covers the library consumer and the `ledger consume / verify / quarantine` commands,
duplicates (retries, replays, re-runs), every rejection reason (quarantine table with the
exact bytes and Kafka coordinates, and the dead-letter topic), and resuming after a stop.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from consumer_helpers import (
    REPO,
    Produced,
    assert_gap_free,
    cli_env,
    cli_json,
    consume,
    dead_letters,
    emit,
    entries,
    event_entries,
    event_record,
    flip_payload_byte,
    headers,
    ledger_cli,
    produce_raw,
    quarantine,
    sealed_record,
    verify,
)
from helpers import IMAGE_B, make_event, wait_for
from kafka import KafkaAdminClient

from consumers.ledger_consumer import ConsumerStats, LedgerConsumer
from ledger.errors import (
    AuthorizationError,
    ConflictingDuplicateError,
    RejectedMessage,
    SignatureError,
)
from ledger.log.chain import NO_KEYRING
from ledger.store.batch import KEPT_BYTES
from ledger.store.index import QueryIndex
from ledger.store.reader import LedgerReader
from ledger.store.reports import status_report
from ledger.transport.producer import seal
from ledger.transport.settings import KafkaSettings
from ledger.transport.topics import ensure_topics
from ledger.wire.avro import default_schemas
from ledger.wire.envelope import PAYLOAD_TYPE, Envelope
from ledger.wire.events import Event, event_from_mapping
from ledger.wire.keyring import Keyring, Signer

pytestmark = pytest.mark.kafka


def _mixed_events(count: int, services: int = 12) -> list[Event]:
    kinds = [
        "deployment.started",
        "deployment.succeeded",
        "deployment.failed",
        "deployment.rolled_back",
        "mutation.applied",
        "service.classified",
        "approval.granted",
        "approval.revoked",
    ]
    return [
        make_event(kinds[i % len(kinds)], service=f"svc-{i % services:02d}", actor=f"user-{i}")
        for i in range(count)
    ]


def _emit_mixed(settings: KafkaSettings, ci: Signer, approver: Signer, events: list[Event]) -> None:
    emit(settings, ci, [e for e in events if not e.type.startswith("approval.")])
    emit(settings, approver, [e for e in events if e.type.startswith("approval.")])


# --- emit -> consume -> verify ---------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_emitted_events_are_verified_and_chained(
    kafka: KafkaSettings,
    ci_signer: Signer,
    approver_signer: Signer,
    keyring: Keyring,
    tmp_path: Path,
    workers: int,
) -> None:
    events = _mixed_events(160)  # over 64 a batch, so two workers verify in processes
    _emit_mixed(kafka, ci_signer, approver_signer, events)
    db = tmp_path / "ledger.duckdb"

    stats = consume(kafka, db, keyring, workers=workers)

    assert (stats.accepted, stats.duplicates, stats.quarantined) == (160, 0, 0)
    assert_gap_free(entries(db))
    rows = event_entries(db)
    by_id = {e.id: e for e in events}
    assert {r["event_id"] for r in rows} == set(by_id)
    for row in rows:
        event = by_id[row["event_id"]]
        approval = event.type.startswith("approval.")
        signer = approver_signer if approval else ci_signer
        assert bytes(row["envelope"]) == seal(event, signer)  # the exact signed bytes
        assert (
            row["type"],
            row["service"],
            row["environment"],
            row["actor"],
            row["source"],
            row["key_id"],
            row["time"],
        ) == (
            event.type,
            event.service,
            event.environment,
            event.actor,
            event.source,
            signer.key_id,
            event.time,
        )
        assert row["image"] == getattr(event.data, "image", None)
        assert row["kafka_topic"] == kafka.topic
    # one service keeps its order: Kafka orders a key's events, the ledger keeps that order
    for service in {e.service for e in events}:
        emitted = [e.id for e in events if e.service == service]
        chained = [r["event_id"] for r in rows if r["service"] == service]
        approvals = {e.id for e in events if e.type.startswith("approval.")}
        # the two producers ran one after the other: compare each producer's events
        assert [i for i in chained if i not in approvals] == [
            i for i in emitted if i not in approvals
        ]
        assert [i for i in chained if i in approvals] == [i for i in emitted if i in approvals]
    assert verify(db).size == 1 + 160


def test_cli_consume_prints_the_summary_and_verify_passes(
    kafka: KafkaSettings, ci_signer: Signer, keyring_file: Path, tmp_path: Path
) -> None:
    ids = emit(kafka, ci_signer, [make_event(service=f"svc-{i % 5}") for i in range(40)])
    produce_raw(kafka, [b"garbage"])
    db = tmp_path / "ledger.duckdb"

    result = ledger_cli(
        "consume",
        "--bootstrap",
        kafka.bootstrap,
        "--topic",
        kafka.topic,
        "--db",
        str(db),
        "--keyring",
        str(keyring_file),
        "--until-idle",
        "2",
        "--json",
    )

    assert result.returncode == 0, result.stderr
    summary = cli_json(result)
    assert {k: summary[k] for k in ("accepted", "duplicates", "quarantined")} == {
        "accepted": 40,
        "duplicates": 0,
        "quarantined": 1,
    }
    assert summary["quarantine_reasons"] == {"malformed_envelope": 1}
    # Not a terminal (a service under docker or systemd): one log line per record.
    records = result.stderr.splitlines()
    assert any(": quarantined " in line and "malformed_envelope" in line for line in records)
    assert all(
        re.match(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DEBUG|INFO|WARNING|ERROR) "
            r"ledger\.\S+: \S",
            line,
        )
        for line in records
    ), result.stderr
    assert sorted(r["event_id"] for r in event_entries(db)) == sorted(ids)
    checked = ledger_cli("verify", "--db", str(db), "--json")
    assert checked.returncode == 0, checked.stderr
    report = cli_json(checked)
    assert (report["ok"], report["size"], report["algorithm"]) == (
        True,
        1 + 40,
        "deploy-ledger-chain-sha256-v2",
    )
    human = ledger_cli("verify", "--db", str(db), "--keyring", str(keyring_file))
    assert human.returncode == 0
    assert "OK" in human.stderr + human.stdout
    # Off a terminal (a CI job) progress is a line per stage, and per tenth of the long one.
    assert "progress: hashes and links checked" in human.stderr
    assert "progress: signatures 41 of 41" in human.stderr


def test_a_keyring_that_trusts_no_key_is_pointed_out(
    kafka: KafkaSettings, ci_signer: Signer, tmp_path: Path
) -> None:
    """Everything would be quarantined as unknown_key: say why before it happens."""
    empty = tmp_path / "keyring.json"
    Keyring().save(empty)
    emit(kafka, ci_signer, [make_event()])
    result = ledger_cli("consume", "--bootstrap", kafka.bootstrap, "--topic", kafka.topic,
                        "--db", str(tmp_path / "l.duckdb"), "--keyring", str(empty),
                        "--until-idle", "1", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"keyring {empty} trusts no key" in result.stderr
    assert cli_json(result)["quarantine_reasons"] == {"unknown_key": 1}


def test_cli_consume_takes_its_settings_from_the_environment(
    kafka: KafkaSettings, ci_signer: Signer, keyring_file: Path, tmp_path: Path
) -> None:
    ids = emit(kafka, ci_signer, [make_event() for _ in range(10)])
    db = tmp_path / "env.duckdb"
    result = ledger_cli(
        "consume",
        "--until-idle",
        "2",
        "--json",
        LEDGER_BOOTSTRAP=kafka.bootstrap,
        LEDGER_TOPIC=kafka.topic,
        LEDGER_DB=str(db),
        LEDGER_KEYRING=str(keyring_file),
    )
    assert result.returncode == 0, result.stderr
    assert cli_json(result)["accepted"] == 10
    assert sorted(r["event_id"] for r in event_entries(db)) == sorted(ids)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cli_consume_without_until_idle_stops_cleanly_on_a_signal(
    kafka: KafkaSettings,
    ci_signer: Signer,
    keyring_file: Path,
    tmp_path: Path,
    stop: signal.Signals,
) -> None:
    ids = emit(kafka, ci_signer, [make_event(service=f"svc-{i % 3}") for i in range(30)])
    db = tmp_path / "ledger.duckdb"
    log = tmp_path / "consume.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ledger",
                "consume",
                "--bootstrap",
                kafka.bootstrap,
                "--topic",
                kafka.topic,
                "--db",
                str(db),
                "--keyring",
                str(keyring_file),
                "--workers",
                "1",
                "--verbose",
                "--json",
            ],
            cwd=REPO,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        wait_for(
            lambda: "head 31" in log.read_text() or proc.poll() is not None,  # keyring + 30
            "the first 30 events",
        )
        # Idle, it keeps running until told to stop: an event sent now is chained too.
        ids += emit(kafka, ci_signer, [make_event(service="svc-late")])
        wait_for(
            lambda: "head 32" in log.read_text() or proc.poll() is not None,
            "the event sent while it was idle",
        )
        assert proc.poll() is None, log.read_text()
        proc.send_signal(stop)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert cli_json(subprocess.CompletedProcess([], 0, out.decode(), ""))["accepted"] == 31
    assert sorted(r["event_id"] for r in event_entries(db)) == sorted(ids)
    assert verify(db).size == 1 + 31


# --- duplicates ------------------------------------------------------------------------------


def test_same_signed_bytes_produced_twice_are_chained_once(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    """A producer retry (same event emitted again) and a replay of the raw bytes to another
    partition are duplicates: counted, not chained."""
    events = [make_event(service=f"svc-{i % 4}") for i in range(20)]
    with_retries = events + events[:8]  # the first 8 emitted twice
    emit(kafka, ci_signer, with_retries)
    replayed = produce_raw(kafka, [seal(e, ci_signer) for e in events[10:15]], partition=0)
    replayed += produce_raw(kafka, [seal(e, ci_signer) for e in events[10:15]], partition=2)
    db = tmp_path / "ledger.duckdb"

    stats = consume(kafka, db, keyring)

    assert (stats.accepted, stats.duplicates, stats.quarantined) == (20, 8 + 10, 0)
    assert_gap_free(entries(db))
    assert sorted(r["event_id"] for r in event_entries(db)) == sorted(e.id for e in events)
    assert verify(db).size == 1 + 20  # the keyring's record, then the events
    assert quarantine(db) == []


@pytest.mark.slow
def test_rerunning_the_consumer_over_the_same_topic_records_nothing_twice(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    events = [make_event(service=f"svc-{i % 6}") for i in range(30)]
    emit(kafka, ci_signer, events)
    db = tmp_path / "ledger.duckdb"
    assert consume(kafka, db, keyring).accepted == 30
    head = verify(db).head_hash

    again = consume(kafka, db, keyring)  # resumes at the stored offsets: nothing new
    assert (again.accepted, again.duplicates, again.quarantined) == (0, 0, 0)

    produce_raw(
        kafka,
        [seal(e, ci_signer) for e in events],  # an operator replays them all
        keys=[e.partition_key for e in events],
    )
    replay = consume(kafka, db, keyring)
    assert (replay.accepted, replay.duplicates, replay.quarantined) == (0, 30, 0)

    fresh_db = tmp_path / "rebuilt.duckdb"  # a new ledger reads the whole topic from 0
    rebuilt = consume(kafka, fresh_db, keyring)
    assert (rebuilt.accepted, rebuilt.duplicates) == (30, 30)
    assert verify(db).head_hash == head
    assert_gap_free(entries(db))
    assert len(event_entries(db)) == 30


def test_the_consumer_records_the_keyring_before_judging_anything_under_it(
    kafka: KafkaSettings,
    ci_signer: Signer,
    approver_signer: Signer,
    keyring: Keyring,
    tmp_path: Path,
) -> None:
    """Entry 1 is the keyring; a restart with the same file records nothing; a changed
    file (the CI key retired) is recorded before anything is judged under it, and what the
    CI key signed before still verifies, with no file at all."""
    db = tmp_path / "ledger.duckdb"
    emit(kafka, ci_signer, [make_event() for _ in range(2)])
    consume(kafka, db, keyring)
    emit(kafka, ci_signer, [make_event()])
    consume(kafka, db, keyring)  # the same keyring: not recorded again
    retired = keyring.model_copy(deep=True)
    del retired.keys[ci_signer.key_id]
    emit(kafka, approver_signer, [make_event("approval.granted")])
    emit(kafka, ci_signer, [make_event()])  # signed by the retired key
    stats = consume(kafka, db, retired)

    assert (stats.accepted, stats.reasons) == (1, {"unknown_key": 1})
    rows = entries(db)
    assert [r["type"] for r in rows] == [
        "ledger.keyring", "deployment.succeeded", "deployment.succeeded",
        "deployment.succeeded", "ledger.keyring", "approval.granted",
    ]  # fmt: skip
    before, after = keyring.digest(), retired.digest()
    assert [bytes(r["keyring"]) for r in rows] == [NO_KEYRING, *[before] * 4, after]
    report = verify(db)
    assert (report.signatures_checked, report.signatures_verified) == (True, 4)
    assert report.keyrings_recorded == 2


def test_retry_signed_again_by_another_trusted_key_is_a_duplicate(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    """Same signed payload, different envelope (e.g. a retry after a key rotation)."""
    rotated = Signer.generate("ci-rotated")
    keyring.trust(rotated.key_id, rotated.public_raw, types=["deployment.*"], sources=["ci/*"])
    event = make_event()
    first, second = seal(event, ci_signer), seal(event, rotated)
    assert first != second
    produce_raw(kafka, [first, second], keys=[event.partition_key] * 2)
    db = tmp_path / "ledger.duckdb"
    stats = consume(kafka, db, keyring)
    assert (stats.accepted, stats.duplicates, stats.quarantined) == (1, 1, 0)
    (row,) = event_entries(db)
    assert (row["event_id"], bytes(row["envelope"])) == (event.id, first)


def _changed(event: Event, data: dict[str, Any] | None = None, **fields: Any) -> Event:
    """The same event id with other content."""
    raw = event.to_json_dict()
    return event_from_mapping(raw | fields | {"data": raw["data"] | (data or {})})


def test_replayed_event_id_with_different_content_is_quarantined(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    original = make_event(service="checkout")
    emit(kafka, ci_signer, [original])
    db = tmp_path / "ledger.duckdb"
    assert consume(kafka, db, keyring).accepted == 1

    # the same id, validly signed, now claiming another image (a later replay)
    forged = _changed(original, data={"image": IMAGE_B})
    (later,) = produce_raw(kafka, [seal(forged, ci_signer)], keys=[forged.partition_key])
    # and within one batch: the first of the two in partition order wins
    twin_a = make_event(service="billing", actor="alice")
    twin_b = _changed(twin_a, actor="mallory")
    _, same_batch = produce_raw(
        kafka, [seal(twin_a, ci_signer), seal(twin_b, ci_signer)], keys=[twin_a.partition_key] * 2
    )
    stats = consume(kafka, db, keyring)

    assert (stats.accepted, stats.duplicates, stats.quarantined) == (1, 0, 2)
    assert stats.reasons == {"conflicting_duplicate": 2}
    rows = event_entries(db)
    assert [(r["event_id"], r["actor"]) for r in rows] == [
        (original.id, "alice"),
        (twin_a.id, "alice"),
    ]
    assert bytes(rows[0]["envelope"]) == seal(original, ci_signer)
    quarantined = quarantine(db)
    assert [
        (q["reason"], q["event_id"], bytes(q["value"]), q["kafka_partition"], q["kafka_offset"])
        for q in quarantined
    ] == [
        ("conflicting_duplicate", original.id, later.value, later.partition, later.offset),
        (
            "conflicting_duplicate",
            twin_a.id,
            same_batch.value,
            same_batch.partition,
            same_batch.offset,
        ),
    ]
    letters = dead_letters(kafka, 2)
    assert len(letters) == 2
    assert {r.value for r in letters} == {later.value, same_batch.value}
    assert {headers(r)["ledger_reason"] for r in letters} == {b"conflicting_duplicate"}
    assert verify(db).size == 1 + 2


# --- rejections ------------------------------------------------------------------------------

REASONS = [
    "malformed_envelope", "oversize", "unknown_key", "bad_signature", "key_not_allowed_type",
    "key_not_allowed_source", "key_revoked", "key_expired", "key_not_yet_valid",
    "unpinned_image", "invalid_event", "unsigned", "wrong_payload_type", "unknown_schema",
    "malformed_payload", "future_event", "null_value", "key_retired",
]  # fmt: skip

REVOKED_AT = datetime(2026, 11, 1, tzinfo=UTC)  # make_event's events are dated 2026-11-20


@dataclass
class Rejections:
    settings: KafkaSettings
    db: Path
    stats: ConsumerStats
    sent: dict[str, Produced]  # reason -> the message as the broker stored it
    good: list[str]
    letters: list[Any]


def _bad_messages(ci: Signer, ring: Keyring) -> dict[str, bytes | None]:
    stranger = Signer.generate("stranger")
    revoked, expired, future, retired = (
        Signer.generate(n) for n in ("ci-old", "ci-expired", "ci-next", "ci-retired")
    )
    for signer in (revoked, expired, future, retired):
        ring.trust(
            signer.key_id,
            signer.public_raw,
            types=["deployment.*"],
            sources=["ci/*"],
            not_before=datetime(2027, 1, 1, tzinfo=UTC) if signer is future else None,
            not_after=datetime(2026, 6, 1, tzinfo=UTC) if signer is expired else None,
        )
    ring.revoke(revoked.key_id, REVOKED_AT)
    ring.retire(retired.key_id, REVOKED_AT)  # past its grace, whatever the event claims

    tag_only = event_record(make_event())
    tag_only["data"][1]["image"] = "nginx:1.25"
    broken = event_record(make_event())
    broken["environment"] = "prod/eu"
    huge = event_record(make_event())
    huge["actor"] = "x" * 70_000
    unknown_schema = b"\xc3\x01" + bytes(8) + b"\x00" * 20
    return {
        "malformed_envelope": b"\x00this is not an envelope",
        "oversize": sealed_record(ci, huge),
        "unknown_key": seal(make_event(), stranger),
        "bad_signature": flip_payload_byte(seal(make_event(), ci)),
        "key_not_allowed_type": seal(make_event("approval.granted"), ci),
        "key_not_allowed_source": seal(make_event(source="laptop/alice"), ci),
        "key_revoked": seal(make_event(), revoked),
        "key_expired": seal(make_event(), expired),
        "key_retired": seal(make_event(time=REVOKED_AT - timedelta(days=1)), retired),
        "key_not_yet_valid": seal(make_event(), future),
        "unpinned_image": sealed_record(ci, tag_only),
        "invalid_event": sealed_record(ci, broken),
        "unsigned": Envelope(PAYLOAD_TYPE, seal_payload(make_event()), ()).to_bytes(),
        "wrong_payload_type": Envelope.sign(
            seal_payload(make_event()), ci, "application/json"
        ).to_bytes(),
        "unknown_schema": Envelope.sign(unknown_schema, ci).to_bytes(),
        "malformed_payload": Envelope.sign(b"not avro at all", ci).to_bytes(),
        "future_event": seal(make_event(time=datetime(2099, 1, 1, tzinfo=UTC)), ci),
        "null_value": None,  # a tombstone
    }


def seal_payload(event: Event) -> bytes:
    return default_schemas().encode("Event", event_record(event))


@pytest.fixture(scope="module")
def rejections(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Rejections:
    """Every kind of bad message among good ones, consumed once by two verification workers."""
    settings = KafkaSettings(bootstrap=bootstrap, topic=f"test.reject.{uuid.uuid4().hex[:8]}")
    ensure_topics(settings, {settings.topic: 3, settings.dlq_topic: 1})
    ci, approver = Signer.generate("ci-main"), Signer.generate("change-board")
    ring = Keyring()
    ring.trust(
        ci.key_id,
        ci.public_raw,
        types=["deployment.*", "mutation.*", "service.*"],
        sources=["ci/*"],
    )
    ring.trust(approver.key_id, approver.public_raw, types=["approval.*"], sources=["cab/*"])
    bad = _bad_messages(ci, ring)
    good = [make_event(service=f"svc-{i % 7}") for i in range(100)]
    values = (
        [seal(e, ci) for e in good[:50]] + list(bad.values()) + [seal(e, ci) for e in good[50:]]
    )
    keys = (
        [e.partition_key for e in good[:50]]
        + [f"bad/{reason}".encode() for reason in bad]
        + [e.partition_key for e in good[50:]]
    )
    produced = produce_raw(settings, values, keys=keys)
    sent = dict(zip(bad, produced[50 : 50 + len(bad)], strict=True))
    db = tmp_path_factory.mktemp("rejections") / "ledger.duckdb"
    stats = consume(settings, db, ring, workers=2)
    return Rejections(
        settings, db, stats, sent, [e.id for e in good], dead_letters(settings, len(bad))
    )


def _kept(value: bytes | None) -> bytes | None:
    """What the quarantine and the dead letter keep of a value."""
    return None if value is None else bytes(value[:KEPT_BYTES])


def _reasons(cls: type[RejectedMessage]) -> set[str]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub.reason} | _reasons(sub)
    return found


def test_every_rejection_reason_is_covered(rejections: Rejections) -> None:
    """A refusal added to ledger.errors needs a message here that triggers it."""
    roots = {SignatureError.reason, AuthorizationError.reason}  # never raised themselves
    separately = {ConflictingDuplicateError.reason}  # test_replayed_event_id_with_different…
    assert set(rejections.sent) == set(REASONS)
    assert _reasons(RejectedMessage) - roots - separately == set(REASONS)


@pytest.mark.parametrize("reason", REASONS)
def test_rejected_message_is_quarantined_with_its_exact_bytes(
    rejections: Rejections, reason: str
) -> None:
    sent = rejections.sent[reason]
    rows = [q for q in quarantine(rejections.db) if q["reason"] == reason]
    assert len(rows) == 1, f"{reason}: {len(rows)} quarantine rows"
    (row,) = rows
    assert _kept(row["value"]) == _kept(sent.value)  # whole, but for an oversize one
    assert row["value_sha256"] == (sent.value and hashlib.sha256(sent.value).hexdigest())
    assert bytes(row["kafka_key"]) == sent.key
    assert (row["kafka_topic"], row["kafka_partition"], row["kafka_offset"]) == (
        rejections.settings.topic,
        sent.partition,
        sent.offset,
    )
    assert row["detail"]
    assert rejections.stats.reasons.get(reason) == 1


@pytest.mark.parametrize("reason", REASONS)
def test_rejected_message_goes_to_the_dead_letter_topic(
    rejections: Rejections, reason: str
) -> None:
    sent = rejections.sent[reason]
    letters = [r for r in rejections.letters if headers(r).get("ledger_reason") == reason.encode()]
    assert len(letters) == 1
    (letter,) = letters
    assert (letter.value, letter.key) == (_kept(sent.value), sent.key)
    origin = f"{rejections.settings.topic}[{sent.partition}]@{sent.offset}".encode()
    assert headers(letter)["ledger_origin"] == origin
    assert headers(letter)["ledger_detail"]


def test_rejected_messages_never_enter_the_chain(rejections: Rejections) -> None:
    assert_gap_free(entries(rejections.db))
    rows = event_entries(rejections.db)
    assert sorted(r["event_id"] for r in rows) == sorted(rejections.good)
    stored = {(r["kafka_partition"], r["kafka_offset"]) for r in rows}
    assert not stored & {(s.partition, s.offset) for s in rejections.sent.values()}
    assert (rejections.stats.accepted, rejections.stats.quarantined) == (100, len(REASONS))
    assert len(rejections.letters) == len(REASONS)
    assert verify(rejections.db).size == 1 + 100


def test_quarantine_cli_lists_every_rejection_with_its_raw_bytes(
    rejections: Rejections,
) -> None:
    result = ledger_cli("quarantine", "--db", str(rejections.db), "--json")
    assert result.returncode == 0, result.stderr
    listed = {row["reason"]: row for row in cli_json(result)}
    assert set(listed) == set(REASONS)
    for reason, sent in rejections.sent.items():
        row = listed[reason]
        value = None if row["value"] is None else base64.b64decode(row["value"])
        assert value == _kept(sent.value)
        assert base64.b64decode(row["kafka_key"]) == sent.key
        assert (row["kafka_partition"], row["kafka_offset"]) == (sent.partition, sent.offset)
    human = ledger_cli("quarantine", "--db", str(rejections.db))
    assert human.returncode == 0
    for reason in REASONS:
        assert reason in human.stdout


# --- resume ----------------------------------------------------------------------------------


def _signed_batch(signer: Signer, count: int) -> tuple[list[str], list[bytes], list[bytes]]:
    events = [make_event(service=f"svc-{i % 50:02d}") for i in range(count)]
    return (
        [e.id for e in events],
        [seal(e, signer) for e in events],
        [e.partition_key for e in events],
    )


def test_a_failing_query_index_does_not_stop_the_ledger_recording(
    kafka: KafkaSettings,
    ci_signer: Signer,
    approver_signer: Signer,
    keyring: Keyring,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The index is derived data: when a run cannot be written (here DuckDB is out of
    memory), every event is chained all the same, the attempt is not repeated after every
    batch, and a later one brings the index up to date."""
    monkeypatch.setattr("ledger.store.index.run_due", lambda pending: pending >= 10)
    attempts: list[int] = []  # the head at each attempt to write a run
    write_run = QueryIndex._write_run

    def out_of_memory_twice(
        index: QueryIndex, source: str, last: int, replacing: Sequence[str] = ()
    ) -> None:
        attempts.append(last)  # a run up to the head
        if len(attempts) <= 2:
            raise duckdb.OutOfMemoryException("could not allocate block (test)")
        write_run(index, source, last, replacing)

    monkeypatch.setattr(QueryIndex, "_write_run", out_of_memory_twice)
    _emit_mixed(kafka, ci_signer, approver_signer, _mixed_events(60))
    db = tmp_path / "ledger.duckdb"
    with caplog.at_level(logging.ERROR, logger="ledger.consumer"):
        stats = consume(kafka, db, keyring, batch_size=5)

    assert (stats.accepted, stats.quarantined) == (60, 0)
    assert caplog.text.count("query index not extended") == 2
    first, second = attempts[:2]
    assert second >= first + 10  # another run's worth later, not at the next batch
    assert verify(db).size == 1 + 60  # checks 1-9: the index holds each entry once
    with LedgerReader(db) as reader:
        status = status_report(reader)
    assert status["indexed_size"] >= second + 10


def test_stopped_consumer_resumes_without_losing_or_duplicating(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    ids, values, keys = _signed_batch(ci_signer, 3000)
    produce_raw(kafka, values, keys=keys)
    db = tmp_path / "ledger.duckdb"
    group = f"lag-{uuid.uuid4().hex[:8]}"
    consumer = LedgerConsumer(kafka, db, keyring, workers=1, batch_size=50, group=group)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while consumer.stats.accepted < 500 and time.monotonic() < deadline:
        time.sleep(0.005)
    consumer.stop.set()
    thread.join(30)
    assert not thread.is_alive()
    first = consumer.stats.accepted
    assert 500 <= first < 3000, "the consumer was not stopped part-way through the topic"
    assert len(event_entries(db)) == first

    more_ids, more_values, more_keys = _signed_batch(ci_signer, 500)
    produce_raw(kafka, more_values, keys=more_keys)
    second = consume(kafka, db, keyring, group=group)

    assert (second.accepted, second.duplicates) == (3500 - first, 0)
    assert_gap_free(entries(db))
    rows = event_entries(db)
    assert len(rows) == 3500
    assert sorted(r["event_id"] for r in rows) == sorted(ids + more_ids)
    assert verify(db).size == 1 + 3500
    # the consumer group's offsets follow the ledger, for lag monitoring
    admin = KafkaAdminClient(**kafka.client_config())
    try:
        committed = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    ends: dict[int, int] = defaultdict(int)
    for row in rows:
        ends[row["kafka_partition"]] = max(ends[row["kafka_partition"]], row["kafka_offset"] + 1)
    assert {
        tp.partition: meta.offset for tp, meta in committed.items() if tp.topic == kafka.topic
    } == dict(ends)
