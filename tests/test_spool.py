"""Never lose an event: a producer that cannot reach Kafka keeps the signed events in a
spool (`--spool DIR`, `LEDGER_SPOOL`) and exits 5; `ledger spool flush` sends them later,
the exact signed bytes, and the ledger records each once; `ledger spool status` says what
is pending. Through real brokers (the bundled one), the real command line, real files."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from consumer_helpers import REPO, cli_env, consume, event_entries
from helpers import make_event
from typer.testing import CliRunner, Result

from ledger.cli import app
from ledger.errors import PartialDeliveryError
from ledger.transport import spool
from ledger.transport.broker import LocalBroker, free_port
from ledger.transport.producer import Delivery, LedgerProducer, seal
from ledger.transport.settings import KafkaSettings
from ledger.transport.topics import ensure_topics
from ledger.wire.events import Event
from ledger.wire.keyring import Keyring, Signer, generate_key_files, load_public_key
from ledger.wire.verify import verify_message

pytestmark = pytest.mark.kafka

_CLEAN = {"LEDGER_SPOOL": None, "LEDGER_BOOTSTRAP": None, "LEDGER_TOPIC": None,
          "LEDGER_KEY": None, "LEDGER_EMIT_TIMEOUT": None}  # fmt: skip


# --- set-up ----------------------------------------------------------------------------------


def _producer(tmp_path: Path) -> tuple[Path, Keyring]:
    """A producer's key files, and the keyring a consumer trusts it under."""
    key, pub = generate_key_files("ci", tmp_path / "keys")
    ring = Keyring()
    ring.trust("ci", load_public_key(pub), types=["deployment.*", "service.*"], sources=["ci/*"])
    return key, ring


def _events_file(tmp_path: Path, count: int, name: str = "events.jsonl") -> Path:
    """``count`` deployments, each with its time (so its id is derived from its content)."""
    lines = [
        json.dumps({"type": "deployment.succeeded", "time": f"2026-11-20T14:{i:02d}:00Z",
                    "service": f"svc-{name.split('.')[0]}-{i}", "environment": "prod",
                    "data": {"image": "registry.example/app@sha256:" + f"{i:02x}" * 32}})
        for i in range(count)
    ]  # fmt: skip
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _emit_args(key: Path, bootstrap: str, topic: str, events: Path) -> list[str]:
    return ["emit", "file", str(events), "--key", str(key), "--bootstrap", bootstrap,
            "--topic", topic, "--source", "ci/spool-test", "--actor", "alice"]  # fmt: skip


def _run(*args: str, **env: str | None) -> Result:
    """The real command, in this process."""
    return CliRunner().invoke(app, list(args), env={**_CLEAN, **env})


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _envelopes(path: Path) -> dict[str, bytes]:
    """Each spooled event's exact bytes, by event id."""
    return {line["event_id"]: base64.b64decode(line["envelope"]) for line in _lines(path)}


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("spool-*.jsonl"))


def _status(directory: Path) -> dict[str, Any]:
    result = _run("spool", "status", str(directory), "--json")
    assert result.exit_code == 0, result.output
    status: dict[str, Any] = json.loads(result.stdout)
    return status


def _topics(settings: KafkaSettings) -> None:
    ensure_topics(settings, {settings.topic: 3, settings.dlq_topic: 1})


# --- the whole path: down, spooled, up, flushed, chained once ------------------------------------


def test_a_producer_that_cannot_reach_kafka_spools_and_a_flush_chains_each_event_once(
    tmp_path: Path,
) -> None:
    key, ring = _producer(tmp_path)
    broker = LocalBroker(port=free_port(), log_path=tmp_path / "broker.log")  # not started yet
    settings = KafkaSettings(bootstrap=broker.bootstrap, topic="spooled.events")
    directory = tmp_path / "spool"
    emitted = _run(*_emit_args(key, broker.bootstrap, settings.topic, _events_file(tmp_path, 3)),
                   "--spool", str(directory), "--json")  # fmt: skip

    assert emitted.exit_code == 5, emitted.output  # spooled, not lost and not silent
    (path,) = _files(directory)
    report = json.loads(emitted.stdout)
    assert report["spooled"] == {"file": str(path), "events": 3}
    assert report["delivered"] == [] and len(report["not_delivered"]) == 3
    assert f"cannot reach Kafka at {broker.bootstrap}" in emitted.stderr
    assert f"spooled: 3 signed event(s) written to {path}" in emitted.stderr
    assert f"ledger spool flush {directory}" in emitted.stderr
    spooled = _envelopes(path)
    assert list(spooled) == report["not_delivered"]
    for line in _lines(path):
        assert set(line) == {"v", "event_id", "type", "topic", "key", "envelope", "spooled_at"}
        assert line["topic"] == settings.topic
        verified = verify_message(base64.b64decode(line["envelope"]), ring, datetime.now(UTC))
        assert verified.event.id == line["event_id"]  # signed, whole, the producer's
        assert base64.b64decode(line["key"]) == verified.event.partition_key
    status = _status(directory)
    assert (status["files"], status["events"]) == (1, 3)
    assert status["oldest"] and status["newest"] and status["age_seconds"] >= 0
    assert status["unreadable"] == [] and status["in_use"] == []

    still_down = _run("spool", "flush", str(directory), "--bootstrap", broker.bootstrap)
    assert still_down.exit_code == 3, still_down.output
    assert "3 event(s) stay spooled" in still_down.stderr
    assert _envelopes(path) == spooled  # nothing lost, nothing changed

    kept = tmp_path / "kept.jsonl"
    shutil.copy(path, kept)  # as a flush that crashed after sending would leave it
    with broker:
        _topics(settings)
        flushed = _run("spool", "flush", str(directory), "--bootstrap", broker.bootstrap)
        assert flushed.exit_code == 0, flushed.output
        assert "3 event(s) sent from 1 file(s) and acknowledged" in flushed.stderr
        assert _files(directory) == []
        assert _status(directory)["events"] == 0
        db = tmp_path / "ledger.duckdb"
        consume(settings, db, ring)
        rows = event_entries(db)
        assert {row["event_id"]: bytes(row["envelope"]) for row in rows} == spooled

        shutil.copy(kept, directory / path.name)  # the same file, flushed again
        again = _run("spool", "flush", str(directory), "--bootstrap", broker.bootstrap, "--json")
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout)["sent"] == 3
        stats = consume(settings, db, ring)
    assert stats.duplicates == 3
    assert event_entries(db) == rows  # nothing chained twice


def test_without_a_spool_it_stays_exit_3_and_ledger_spool_works_as_the_option(
    tmp_path: Path,
) -> None:
    key, _ = _producer(tmp_path)
    down = f"127.0.0.1:{free_port()}"
    args = _emit_args(key, down, "t", _events_file(tmp_path, 2))
    directory = tmp_path / "spool"

    unspooled = _run(*args)
    assert unspooled.exit_code == 3, unspooled.output
    assert f"cannot reach Kafka at {down}" in unspooled.stderr
    assert "spool" not in unspooled.stderr
    assert not directory.exists()

    from_env = _run(*args, LEDGER_SPOOL=str(directory))
    assert from_env.exit_code == 5, from_env.output
    (path,) = _files(directory)
    assert len(_lines(path)) == 2
    assert f"spooled: 2 signed event(s) written to {path}" in from_env.stderr


def test_a_spool_that_cannot_be_written_is_said_and_exits_3(tmp_path: Path) -> None:
    key, _ = _producer(tmp_path)
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    down = f"127.0.0.1:{free_port()}"
    result = _run(*_emit_args(key, down, "t", _events_file(tmp_path, 1)),
                  "--spool", str(not_a_directory))  # fmt: skip
    assert result.exit_code == 3, result.output
    assert f"the spool {not_a_directory} could not keep them" in result.stderr
    assert "nothing was spooled" in result.stderr


# --- a partial delivery spools only what was not acknowledged -----------------------------------


def test_a_partial_delivery_spools_only_the_events_not_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker acknowledges the first event, then stops answering (SIGSTOP) before the
    second: only the second is spooled."""
    key, _ = _producer(tmp_path)
    directory = tmp_path / "spool"
    with LocalBroker(log_path=tmp_path / "broker.log") as broker:
        settings = KafkaSettings(bootstrap=broker.bootstrap, topic="partial.events")
        _topics(settings)
        send = LedgerProducer.send_sealed
        paused: list[int] = []

        def send_then_pause(
            self: LedgerProducer, event: Event, envelope: bytes, topic: str | None = None
        ) -> None:
            send(self, event, envelope, topic)
            if not paused:
                self._pending[-1][1].get(timeout=30)  # acknowledged
                os.kill(broker.pid, signal.SIGSTOP)
                paused.append(broker.pid)

        monkeypatch.setattr(LedgerProducer, "send_sealed", send_then_pause)
        try:
            result = _run(*_emit_args(key, broker.bootstrap, settings.topic,
                                      _events_file(tmp_path, 2)),
                          "--spool", str(directory), "--timeout", "1", "--json")  # fmt: skip
        finally:
            for pid in paused:
                os.kill(pid, signal.SIGCONT)
    assert result.exit_code == 5, result.output
    report = json.loads(result.stdout)
    (delivered,) = report["delivered"]
    (not_delivered,) = report["not_delivered"]
    (path,) = _files(directory)
    assert list(_envelopes(path)) == [not_delivered]  # the acknowledged one is not spooled
    assert delivered["event_id"] != not_delivered
    assert "1 of 2 event(s) not acknowledged" in result.stderr


class _FakeSender:
    """Takes every event; acknowledges only the first ``acknowledge`` of them."""

    def __init__(self, acknowledge: int) -> None:
        self.acknowledge = acknowledge
        self.queued: list[tuple[Event, bytes, str | None]] = []

    def send_sealed(self, event: Event, envelope: bytes, topic: str | None = None) -> None:
        self.queued.append((event, envelope, topic))

    def flush(self, timeout: float = 120.0) -> list[Delivery]:
        done = [Delivery(e.id, e.type, t or "", 0, i) for i, (e, _, t) in enumerate(self.queued)]
        failed = [e.id for e, _, _ in self.queued[self.acknowledge :]]
        self.queued = []
        if failed:
            raise PartialDeliveryError("not all acknowledged", done[: self.acknowledge], failed)
        return done


def test_a_flush_the_broker_takes_in_part_keeps_the_whole_file(tmp_path: Path) -> None:
    """No event of a file is dropped until the broker acknowledged all of them; the files
    after it are not touched (a fake sender: the broker's part is the test above)."""
    signer = Signer.generate("ci")
    first = spool.append(tmp_path, "t", [(e, seal(e, signer)) for e in _some_events(3)])
    second = spool.append(tmp_path, "t", [(e, seal(e, signer)) for e in _some_events(2)])
    before = {p: p.read_bytes() for p in (first, second)}
    result = spool.flush(tmp_path, lambda: _FakeSender(acknowledge=1), timeout=1)
    assert result.failure == "not all acknowledged"
    assert len(result.delivered) == 1 and result.sent_files == []
    assert result.still_spooled == 5
    assert {p: p.read_bytes() for p in _files(tmp_path)} == before


# --- a crash mid-line loses that line only, and says so -------------------------------------------


def _some_events(count: int) -> list[Event]:
    return [make_event(service=f"svc-{i}") for i in range(count)]


def test_a_line_cut_by_a_crash_is_named_and_every_other_event_is_sent(
    tmp_path: Path, kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring
) -> None:
    directory = tmp_path / "spool"
    events = _some_events(3)
    path = spool.append(directory, kafka.topic, [(e, seal(e, ci_signer)) for e in events])
    data = path.read_bytes()
    cut = data.rindex(b'"envelope"') + 40  # the process died while writing the third line
    path.write_bytes(data[:cut])

    status = _run("spool", "status", str(directory))
    assert status.exit_code == 0, status.output
    assert f"{directory}: 2 event(s) pending in 1 file(s)" in status.stdout
    assert f"unreadable: {path}:3: event lost: cut short by a crash" in status.stderr
    as_json = _status(directory)
    assert as_json["events"] == 2
    assert [(u["file"], u["line"]) for u in as_json["unreadable"]] == [(str(path), 3)]

    flushed = _run("spool", "flush", str(directory), "--bootstrap", kafka.bootstrap)
    assert flushed.exit_code == 1, flushed.output  # sent, but a line was lost: a finding
    assert f"unreadable: {path}:3: event lost" in flushed.stderr
    damaged = path.with_name(path.name + ".damaged")
    assert f"{damaged} kept" in flushed.stderr
    assert _files(directory) == [] and damaged.read_bytes() == data[:cut]
    db = tmp_path / "ledger.duckdb"
    consume(kafka, db, keyring)
    assert sorted(r["event_id"] for r in event_entries(db)) == sorted(e.id for e in events[:2])
    after = _status(directory)
    assert after["events"] == 0 and after["damaged"] == [str(damaged)]


def test_a_damaged_line_in_the_middle_costs_that_line_only(tmp_path: Path) -> None:
    signer = Signer.generate("ci")
    events = _some_events(3)
    path = spool.append(tmp_path, "t", [(e, seal(e, signer)) for e in events])
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"envelope":"', b'"envelope":"!!')
    path.write_bytes(b"\n".join(lines))
    (read,) = spool.pending(tmp_path)
    assert [s.event.id for s in read.events] == [events[0].id, events[2].id]
    assert [(u.line, u.reason) for u in read.unreadable] == [
        (2, "event lost: key or envelope is not base64")
    ]


# --- two producers spooling into one directory at once ------------------------------------------


def _spooling(key: Path, down: str, directory: Path, events: Path) -> subprocess.Popen[str]:
    """`ledger emit file` to a broker that is down, spooling, in a process of its own."""
    args = [*_emit_args(key, down, "t", events), "--spool", str(directory), "--json"]
    return subprocess.Popen([sys.executable, "-m", "ledger", *args], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_two_processes_spooling_at_once_write_readable_files(tmp_path: Path) -> None:
    key, ring = _producer(tmp_path)
    down = f"127.0.0.1:{free_port()}"
    directory = tmp_path / "spool"
    runs = [_spooling(key, down, directory, _events_file(tmp_path, 40, f"{name}.jsonl"))
            for name in ("one", "two")]  # fmt: skip
    reports = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=120)
        assert run.returncode == 5, stderr
        reports.append(json.loads(stdout))
    files = _files(directory)
    assert sorted(str(f) for f in files) == sorted(r["spooled"]["file"] for r in reports)
    read = spool.pending(directory)
    assert [f.unreadable for f in read] == [(), ()]
    assert sorted(s.event.id for f in read for s in f.events) == sorted(
        i for r in reports for i in r["not_delivered"]
    )
    for f in read:
        for s in f.events:
            assert verify_message(s.envelope, ring, datetime.now(UTC)).event.id == s.event.id
    assert _status(directory)["events"] == 80
