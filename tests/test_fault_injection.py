"""Faults around a running consumer that are neither a kill nor a crash: the ledger's file
cannot grow (a full disk), and the broker stops answering in the middle of a batch (a
paused process). Neither may lose an event, chain one twice or stop the ledger for good.

A full disk is made with ``RLIMIT_FSIZE`` on the consumer's process (no file it writes may
pass a size; DuckDB then fails the commit with "File too large", as it fails one with
"No space left on device"), which needs no privileges; a paused broker with ``SIGSTOP``.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from consumer_helpers import (
    REPO,
    assert_gap_free,
    cli_env,
    cli_json,
    entries,
    event_entries,
    ledger_cli,
    produce_raw,
    quarantine,
)
from helpers import make_event, wait_for

from ledger.transport.broker import LocalBroker
from ledger.transport.producer import seal
from ledger.transport.settings import KafkaSettings
from ledger.transport.topics import ensure_topics
from ledger.wire.keyring import Signer

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

_FILE_LIMIT = 6 * 1024 * 1024
"""The largest file the consumer may write in the full-disk test: the new ledger reaches it
after a few thousand events."""


def _produce(settings: KafkaSettings, signer: Signer, count: int, tag: str) -> list[str]:
    events = [make_event(service=f"{tag}-{i % 40:02d}") for i in range(count)]
    produce_raw(settings, [seal(e, signer) for e in events], keys=[e.partition_key for e in events])
    return [e.id for e in events]


def _consume_to_the_end(settings: KafkaSettings, db: Path, keyring_file: Path) -> dict[str, int]:
    result = ledger_cli("consume", "--bootstrap", settings.bootstrap, "--topic", settings.topic,
                        "--db", str(db), "--keyring", str(keyring_file), "--until-idle", "3",
                        "--json", timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return dict(cli_json(result))


def _limit_file_size() -> None:
    """In the consumer's process, before it starts: files may not grow past the limit, and a
    write past it fails (EFBIG) instead of killing the process (SIGXFSZ)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (_FILE_LIMIT, resource.RLIM_INFINITY))


def test_a_full_disk_stops_the_ledger_only_until_there_is_room(
    kafka: KafkaSettings, ci_signer: Signer, keyring_file: Path, tmp_path: Path
) -> None:
    """The consumer cannot commit: it says why, keeps the batch unacknowledged, and tries
    again; it stops cleanly when asked. Given room, the next run chains every event once."""
    produced = _produce(kafka, ci_signer, 12_000, "disk")
    db, log = tmp_path / "ledger.duckdb", tmp_path / "consume.log"
    env = cli_env(LEDGER_BOOTSTRAP=kafka.bootstrap, LEDGER_TOPIC=kafka.topic, LEDGER_DB=str(db),
                  LEDGER_KEYRING=str(keyring_file))  # fmt: skip
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ledger", "consume", "--batch-size", "500"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err,
            preexec_fn=_limit_file_size,
        )  # fmt: skip
    try:
        wait_for(lambda: "File too large" in log.read_text() or proc.poll() is not None,
                 "the consumer to run out of room", timeout=240)  # fmt: skip
        assert proc.poll() is None, f"the consumer exited:\n{log.read_text()}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "batch not committed" in text and "retrying from stored offsets" in text
    assert "Traceback" not in text
    stuck = len(event_entries(db))
    assert 0 < stuck < len(produced)

    summary = _consume_to_the_end(kafka, db, keyring_file)
    assert summary["duplicates"] == 0
    rows = event_entries(db)
    assert sorted(r["event_id"] for r in rows) == sorted(produced)
    assert_gap_free(entries(db))
    assert quarantine(db) == []
    checked = ledger_cli("verify", "--db", str(db), "--keyring", str(keyring_file), "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.fixture
def pausable(tmp_path: Path) -> Iterator[LocalBroker]:
    """A broker of the test's own, to pause; resumed before it is stopped."""
    broker = LocalBroker(log_path=tmp_path / "broker.log").start()
    try:
        yield broker
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        broker.stop()


def test_a_broker_paused_mid_batch_loses_and_duplicates_nothing(
    pausable: LocalBroker, ci_signer: Signer, keyring_file: Path, tmp_path: Path
) -> None:
    """SIGSTOP the broker once the consumer has chained a batch, until a request to it has
    timed out (the client says so with --verbose); on SIGCONT the consumer goes on where it
    was. Then every event is chained once."""
    settings = KafkaSettings(bootstrap=pausable.bootstrap, topic="paused.events")
    ensure_topics(settings, {settings.topic: 3, settings.dlq_topic: 1})
    produced = _produce(settings, ci_signer, 3000, "pause")
    db, log = tmp_path / "ledger.duckdb", tmp_path / "consume.log"
    env = cli_env(LEDGER_BOOTSTRAP=settings.bootstrap, LEDGER_TOPIC=settings.topic,
                  LEDGER_DB=str(db), LEDGER_KEYRING=str(keyring_file))  # fmt: skip
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ledger", "consume", "--batch-size", "100", "--verbose",
             "--until-idle", "20"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        wait_for(lambda: "chained" in log.read_text() or proc.poll() is not None,
                 "a batch chained", timeout=120)  # fmt: skip
        os.kill(pausable.pid, signal.SIGSTOP)
        wait_for(lambda: "timed out" in log.read_text() or proc.poll() is not None,
                 "a request to the paused broker to time out", timeout=120)  # fmt: skip
        assert proc.poll() is None, f"the consumer exited:\n{log.read_text()}"
        os.kill(pausable.pid, signal.SIGCONT)
        produced += _produce(settings, ci_signer, 500, "after")
        assert proc.wait(timeout=300) == 0, log.read_text()
    finally:
        os.kill(pausable.pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rows = event_entries(db)
    assert sorted(r["event_id"] for r in rows) == sorted(produced)
    assert_gap_free(entries(db))
    assert "Traceback" not in log.read_text()
