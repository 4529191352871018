"""Crash and restart: the ledger stays exactly-once whatever happens to the consumer or broker.

* ``kill -9`` of ``python -m ledger consume`` at random moments, 20 times (while it starts,
  and once it has chained a batch), then a last run to the end: every produced event is
  chained exactly once, every rejected message is quarantined exactly once, and the chain
  verifies. ``LEDGER_CRASH_KILLS=100`` (and ``LEDGER_CRASH_SEED``) make it the campaign of
  docs/reliability.md.
* The local broker (Tansu) stopped and restarted on the same port while a consumer runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from consumer_helpers import (
    REPO,
    Produced,
    assert_gap_free,
    cli_env,
    cli_json,
    entries,
    event_entries,
    ledger_cli,
    produce_raw,
    quarantine,
    verify,
)
from helpers import make_event, wait_for

from consumers.ledger_consumer import LedgerConsumer
from ledger.log.chain import Origin
from ledger.log.checkpoint import open_checkpoint, split_notes
from ledger.log.merkle import LeafHashes, leaf_hash, root_at
from ledger.store.reader import LedgerReader
from ledger.transport.broker import LocalBroker
from ledger.transport.producer import seal
from ledger.transport.settings import KafkaSettings
from ledger.transport.topics import ensure_topics
from ledger.wire.events import Event
from ledger.wire.keyring import Keyring, Signer

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

SEED = int(os.environ.get("LEDGER_CRASH_SEED", "20261120"))
KILLS = int(os.environ.get("LEDGER_CRASH_KILLS", "20"))
FIRST_BATCH = 3000
TOP_UP = 4000
"""The consumer ingests 1,500-3,000 events a second here, so 3,000 events would be gone after
two or three runs and the later kills would only hit an idle consumer: before each restart
the topic is topped up whenever fewer than TOP_UP events are still waiting."""

SERVICES = [f"svc-{i:03d}" for i in range(150)]
ENVIRONMENTS = ["prod", "staging"]  # 300 distinct partition keys
CI_KINDS = [
    "deployment.started",
    "deployment.succeeded",
    "deployment.failed",
    "deployment.rolled_back",
    "mutation.applied",
    "service.classified",
]


def _events(rng: random.Random, count: int) -> list[tuple[Event, bool]]:
    """(event, signed by the approver?) in a realistic mix, 300 service/environment keys."""
    out = []
    for _ in range(count):
        approval = rng.random() < 0.1
        kind = (
            rng.choice(["approval.granted", "approval.revoked"])
            if approval
            else rng.choice(CI_KINDS)
        )
        out.append(
            (
                make_event(
                    kind, service=rng.choice(SERVICES), environment=rng.choice(ENVIRONMENTS)
                ),
                approval,
            )
        )
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as kids:
            return [int(k) for k in kids.read().split()]
    except FileNotFoundError:
        return []


def _at_work(log: Path, proc: subprocess.Popen[bytes]) -> bool:
    """The consumer positioned its partitions and committed a batch that chained something
    (``--verbose`` logs each batch), or it is gone: a kill now lands mid-work, however
    slowly a loaded machine got it there."""
    text = log.read_text()
    return ("reading" in text and _CHAINED.search(text) is not None) or proc.poll() is not None


_CHAINED = re.compile(r"batch: [1-9]\d* chained")
_CHAINED_COUNT = re.compile(r"batch: (\d+) chained")


def _ledger_state(db: Path) -> tuple[int, int]:
    """(events chained, quarantined) after checking the invariants that must hold after any
    crash."""
    if not db.exists():
        return 0, 0
    with LedgerReader(db) as reader:
        count, max_seq, ids, records = reader.con.execute(
            "SELECT count(*), coalesce(max(seq), 0), count(DISTINCT event_id), "
            f"count(*) FILTER (WHERE origin = {int(Origin.LEDGER)}) FROM entries"
        ).fetchall()[0]
        quarantined, coordinates = reader.con.execute(
            "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM quarantine"
        ).fetchall()[0]
    assert count == max_seq, f"sequence has gaps: {count} entries, head {max_seq}"
    assert ids == count, "an event id is chained twice"
    assert coordinates == quarantined, "a rejected message is quarantined twice"
    return count - records, quarantined


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    kafka: KafkaSettings,
    ci_signer: Signer,
    approver_signer: Signer,
    keyring_file: Path,
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    stranger = Signer.generate("stranger")
    db = tmp_path / "ledger.duckdb"
    produced_ids: list[str] = []
    rejected: dict[tuple[int, int], bytes | None] = {}

    def top_up(count: int) -> None:
        events = _events(rng, count)
        values = [seal(e, approver_signer if a else ci_signer) for e, a in events]
        keys: list[bytes | None] = [e.partition_key for e, _ in events]
        # a few messages that must be quarantined, exactly once whatever the crashes
        bad = [rng.randbytes(rng.randint(1, 200)) for _ in range(3)]
        bad.append(seal(make_event(service="intruder"), stranger))
        delivered = produce_raw(kafka, values + bad, keys=keys + [None] * len(bad))
        produced_ids.extend(e.id for e, _ in events)
        rejected.update({(d.partition, d.offset): d.value for d in delivered[len(values) :]})

    ledger_key = Signer.generate("ledger")
    key_file = tmp_path / "ledger.key"
    ledger_key.save(key_file)
    witness = tmp_path / "ledger.witness"
    env = cli_env(
        LEDGER_BOOTSTRAP=kafka.bootstrap,
        LEDGER_TOPIC=kafka.topic,
        LEDGER_DB=str(db),
        LEDGER_KEYRING=str(keyring_file),
        LEDGER_LEDGER_KEY=str(key_file),
        LEDGER_CHECKPOINT_EVERY="150",
        LEDGER_WITNESS=str(witness),
    )
    command = [
        sys.executable,
        "-m",
        "ledger",
        "consume",
        "--batch-size",
        "100",
        "--workers",
        "2",
        "--verbose",
    ]
    top_up(FIRST_BATCH)
    workers: set[int] = set()
    progress: list[tuple[bool, int, int]] = []  # (positioned, chained by its log, still waiting)
    proc: subprocess.Popen[bytes] | None = None
    try:
        for cycle in range(KILLS):
            before, quarantined = _ledger_state(db)
            if len(produced_ids) + len(rejected) - before - quarantined < TOP_UP:
                top_up(TOP_UP)
            log = tmp_path / f"consume-{cycle:02d}.log"
            with open(log, "wb") as err:
                proc = subprocess.Popen(
                    command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err
                )
            if cycle % 4 == 3:  # while it starts: opening the ledger the last crash left
                time.sleep(rng.uniform(0.3, 1.0))
            else:  # while it ingests: once a batch is chained, within the next few
                wait_for(partial(_at_work, log, proc), "the consumer to chain a batch")
                time.sleep(rng.uniform(0.0, 0.5))
            workers.update(_children(proc.pid))
            assert proc.poll() is None, f"consumer exited on its own:\n{log.read_text()}"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc = None
            after, quarantined = _ledger_state(db)
            text = log.read_text()
            # What the run chained, by its own log: a reader opening the file right after the
            # kill may not see the last batch yet (the next writer's open completes it).
            chained = sum(int(n) for n in _CHAINED_COUNT.findall(text))
            progress.append(
                (
                    "reading" in text,
                    chained,
                    len(produced_ids) + len(rejected) - after - quarantined,
                )
            )
        # the last run goes to the end of the topic and exits by itself
        final = ledger_cli(
            "consume",
            "--bootstrap",
            kafka.bootstrap,
            "--topic",
            kafka.topic,
            "--db",
            str(db),
            "--keyring",
            str(keyring_file),
            "--batch-size",
            "100",
            "--until-idle",
            "3",
            "--json",
            timeout=300,
            LEDGER_LEDGER_KEY=str(key_file),
            LEDGER_WITNESS=str(witness),
        )
        assert final.returncode == 0, final.stderr
        summary = cli_json(final)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        leftover = [p for p in workers if _alive(p)]
        for pid in leftover:  # the verification workers of consumers this test killed
            os.kill(pid, signal.SIGKILL)

    # The kills really hit a consumer at work: every run not killed while starting moved the
    # ledger on and was stopped with events still waiting.
    interrupted = [p for p in progress if p[0] and p[1] > 0 and p[2] > 0]
    print(f"\n{len(progress)} kills; per run (positioned, chained, still waiting): {progress}")
    assert len(progress) == KILLS
    assert len(interrupted) >= KILLS - KILLS // 4, progress
    assert not leftover, f"verification workers outlived their killed consumer: {leftover}"

    assert_gap_free(entries(db))
    rows = event_entries(db)
    assert sorted(r["event_id"] for r in rows) == sorted(produced_ids)
    assert len(rows) == len(produced_ids)
    assert summary["duplicates"] == 0  # resumed from the stored offsets, never re-read
    stored = {(q["kafka_partition"], q["kafka_offset"]): bytes(q["value"]) for q in quarantine(db)}
    assert stored == rejected
    assert len(quarantine(db)) == len(rejected)
    assert verify(db).size == 1 + len(produced_ids)  # the keyring's record, then the events
    checked = ledger_cli("verify", "--db", str(db), "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert cli_json(checked)["size"] == 1 + len(produced_ids)
    _assert_tree_and_checkpoints_survived(db, entries(db), witness, ledger_key)


def _assert_tree_and_checkpoints_survived(
    db: Path, rows: list[dict[str, Any]], witness: Path, key: Signer
) -> None:
    """The tree nodes and checkpoints were written in the batches' transactions: whatever
    the kills, every stored and witnessed checkpoint signs the root of the entries."""
    leaves = LeafHashes([leaf_hash(bytes(r["hash"])) for r in rows])
    with LedgerReader(db) as reader:
        stored = reader.checkpoints()
        tree = reader.tree()
        assert root_at(tree, tree.size) == root_at(leaves, leaves.size)
        origin = reader.meta()["origin"]
    assert stored and stored[-1][0] == len(rows)  # the clean last run covered everything
    for size, root, _note, _vkey in stored:
        assert root == root_at(leaves, size)
    witnessed = [
        open_checkpoint(n, key.key_id, key.public_raw, origin)
        for n in split_notes(witness.read_text())
    ]
    assert [c.size for c in witnessed] == sorted({c.size for c in witnessed})
    assert {(c.size, c.root) for c in witnessed} <= {(s, r) for s, r, _, _ in stored}


# --- broker restart ------------------------------------------------------------------------


def _signed(signer: Signer, count: int, tag: str) -> list[tuple[Event, bytes]]:
    events = [make_event(service=f"{tag}-{i % 30:02d}") for i in range(count)]
    return [(e, seal(e, signer)) for e in events]


def _produce_events(settings: KafkaSettings, signed: list[tuple[Event, bytes]]) -> list[Produced]:
    return produce_raw(settings, [v for _, v in signed], keys=[e.partition_key for e, _ in signed])


@pytest.fixture
def restartable_broker(tmp_path: Path) -> Any:
    """A broker of this test's own (not the session's), so it can be stopped and restarted."""
    broker = LocalBroker(log_path=tmp_path / "broker.log").start()
    try:
        yield broker
    finally:
        broker.stop()


def _ci_keyring(signer: Signer) -> Keyring:
    ring = Keyring()
    ring.trust(signer.key_id, signer.public_raw, types=["deployment.*"], sources=["ci/*"])
    return ring


def test_consumer_in_a_thread_survives_a_broker_restart(
    restartable_broker: LocalBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Tansu keeps its log in memory, so the restarted broker starts empty; the test puts the
    old log back (same partitions, same order, hence the same offsets), as a broker with a
    persistent log would have it, then produces new events."""
    broker = restartable_broker
    settings = KafkaSettings(bootstrap=broker.bootstrap, topic="restart.events")
    ensure_topics(settings, {settings.topic: 3, settings.dlq_topic: 1})
    signer = Signer.generate("ci-main")
    db = tmp_path / "ledger.duckdb"
    before = _signed(signer, 60, "before")
    first = _produce_events(settings, before)

    consumer = LedgerConsumer(settings, db, _ci_keyring(signer), workers=1, batch_size=50)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run()
        except BaseException as exc:  # the test reports it below
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: consumer.stats.accepted == 60 or failure, "the first 60 events")
        caplog.set_level(logging.WARNING, logger="kafka")
        caplog.clear()
        broker.stop()
        wait_for(
            lambda: any(r.name.startswith("kafka") for r in caplog.records) or failure,
            "the consumer's Kafka client to find the broker gone",
        )
        assert thread.is_alive(), failure  # it keeps running against a dead broker
        broker.start()
        ensure_topics(settings, {settings.topic: 3, settings.dlq_topic: 1})
        for partition in range(3):  # the log a persistent broker would still have
            old = sorted((p for p in first if p.partition == partition), key=lambda p: p.offset)
            again = produce_raw(
                settings, [p.value for p in old], keys=[p.key for p in old], partition=partition
            )
            assert [p.offset for p in again] == [p.offset for p in old]
        after = _signed(signer, 90, "after")
        _produce_events(settings, after)
        wait_for(
            lambda: consumer.stats.accepted >= 150 or failure,
            f"the 90 new events (stats: {consumer.stats})",
            timeout=90,
        )
        assert thread.is_alive(), failure
    finally:
        consumer.stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert not failure, failure
    assert_gap_free(entries(db))
    rows = event_entries(db)
    assert sorted(r["event_id"] for r in rows) == sorted(e.id for e, _ in before + after)
    assert verify(db).size == 1 + 150  # the keyring's record, then the events


def test_events_produced_after_a_broker_restart_with_an_empty_log_all_arrive(
    restartable_broker: LocalBroker, tmp_path: Path
) -> None:
    """The consumer is paused (SIGSTOP) across the restart so that it cannot fetch the empty
    partitions in between (which would reset it to offset 0 by luck): the outcome is
    deterministic."""
    broker = restartable_broker
    settings = KafkaSettings(bootstrap=broker.bootstrap, topic="restart.empty")
    ensure_topics(settings, {settings.topic: 3, settings.dlq_topic: 1})
    signer = Signer.generate("ci-main")
    keyring_path = tmp_path / "keyring.json"
    _ci_keyring(signer).save(keyring_path)
    db = tmp_path / "ledger.duckdb"
    before = _signed(signer, 60, "svc")
    _produce_events(settings, before)
    log = tmp_path / "consume.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ledger",
                "consume",
                "--bootstrap",
                broker.bootstrap,
                "--topic",
                settings.topic,
                "--db",
                str(db),
                "--keyring",
                str(keyring_path),
                "--workers",
                "1",
                "--verbose",
            ],
            cwd=REPO,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_for(lambda: "head 61" in log.read_text().replace("\n", " "), "the first 60 events")
        proc.send_signal(signal.SIGSTOP)
        broker.stop()
        broker.start()
        ensure_topics(settings, {settings.topic: 3, settings.dlq_topic: 1})
        after = _signed(signer, 180, "svc")  # same keys: every partition passes its old end
        _produce_events(settings, after)
        proc.send_signal(signal.SIGCONT)
        with contextlib.suppress(AssertionError):  # what did not arrive is named below
            wait_for(
                lambda: f"head {1 + len(before) + len(after)}" in log.read_text(),
                "every event to be chained after the restart",
                timeout=90,
            )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_gap_free(entries(db))
    missing = {e.id for e, _ in after} - {r["event_id"] for r in event_entries(db)}
    assert not missing, (
        f"{len(missing)} of {len(after)} events produced after the restart never reached the ledger"
    )
