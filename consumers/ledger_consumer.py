"""The ledger consumer: Kafka -> verify -> hash-chained DuckDB ledger, exactly once.

Exactly once comes from the ledger, not from Kafka: the offsets that follow each batch are
committed in the same DuckDB transaction as the entries and quarantined messages the batch
produced, and on start every partition is positioned from those stored offsets. The
consumer assigns the topic's partitions itself (the ledger has one writer, so there is no
group to share them with); offsets are also committed to the consumer group after each
DuckDB commit, for lag monitoring only.

Rejected messages go to the quarantine table (raw bytes, coordinates, reason) and to the
dead-letter topic, both cut to ``KEPT_BYTES`` with the size and digest of the whole. The
quarantine row is written exactly once; the dead-letter copy is flushed before the DuckDB
commit, so it is delivered at least once while that topic can be reached, and a copy that
cannot be delivered is logged and counted, never a reason to stop chaining.

With a checkpoint key, a signed checkpoint of the Merkle tree is stored with the batch that
makes one due (every N entries, or when the newest is T seconds old), then published to the
checkpoint topic and appended to the witness file: copies kept outside the ledger, against
which truncation or a rewrite is caught. The newest is published again on start, in case
the process died between the commit and the publication.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.structs import OffsetAndMetadata

from consumers.metrics import ConsumerMetrics
from consumers.verification import Verifier
from ledger.api.access import ApiTokens
from ledger.errors import ConfigurationError, TransportError
from ledger.log.chain import Witness
from ledger.store.batch import Accepted, Plan, Received, Rejected
from ledger.store.clock import LedgerClock
from ledger.store.writer import LedgerWriter
from ledger.transport.settings import DEFAULT_CHECKPOINT_TOPIC, KafkaSettings
from ledger.transport.topics import ensure_topics
from ledger.transport.witness import append_note
from ledger.wire.keyring import Keyring, Signer
from ledger.workers import Outcome

if TYPE_CHECKING:
    from ledger.api.server import ApiServer

__all__ = ["CheckpointPolicy", "ConsumerStats", "LedgerConsumer"]

log = logging.getLogger("ledger.consumer")


@dataclass(frozen=True)
class CheckpointPolicy:
    """Sign a checkpoint after ``every`` new entries, or once new entries are ``seconds`` old."""

    signer: Signer
    witness: Path
    topic: str = DEFAULT_CHECKPOINT_TOPIC
    every: int = 10_000
    seconds: float = 30.0


@dataclass(frozen=True)
class _Pending:
    batch: list[Received]
    outcomes: Callable[[], list[Outcome]]
    keyring: bytes  # the digest of the keyring the batch is judged under


@dataclass
class ConsumerStats:
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    batches: int = 0
    checkpoints: int = 0
    dead_letter_failures: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    last_commit: float | None = None  # time.monotonic() of the last DuckDB commit

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "batches": self.batches,
            "checkpoints": self.checkpoints,
            "dead_letter_failures": self.dead_letter_failures,
            "quarantine_reasons": dict(sorted(self.reasons.items())),
        }


_LOG_APPEND_TIME = 1
"""A record's ``timestamp_type`` when the broker stamped it on append (the topic's
``message.timestamp.type=LogAppendTime``): the producer cannot choose it, and every read
of the topic sees the same."""


def _stamp(path: Path | None) -> tuple[int, int] | None:
    """When the keyring file last changed, and its size (None: no file, or none to watch)."""
    try:
        stat = path.stat() if path is not None else None
    except OSError:
        return None
    return None if stat is None else (stat.st_mtime_ns, stat.st_size)


def _received(record: Any, fetched_us: int) -> Received:
    """A fetched record, witnessed by the broker's append time when it carries one, else
    by the consumer's clock when it was fetched."""
    if record.timestamp_type == _LOG_APPEND_TIME and record.timestamp >= 0:
        witnessed_us, witness = record.timestamp * 1000, Witness.BROKER
    else:
        witnessed_us, witness = fetched_us, Witness.CONSUMER
    return Received(record.topic, record.partition, record.offset, record.key, record.value,
                    witnessed_us, witness)  # fmt: skip


class LedgerConsumer:
    """Reads one topic into one ledger file. Call :meth:`run`; set ``stop`` to end it."""

    def __init__(
        self,
        settings: KafkaSettings,
        db_path: Path,
        keyring: Keyring,
        *,
        group: str | None = "deploy-ledger",
        batch_size: int = 5000,
        batch_seconds: float = 0.5,
        workers: int | None = None,
        partitions: int = 3,
        serve: tuple[str, int] | None = None,
        api_token: str | ApiTokens | None = None,
        checkpoints: CheckpointPolicy | None = None,
        keyring_source: str = "the keyring given to the consumer",
        connect_timeout: float | None = None,
        metrics_listen: tuple[str, int] | None = None,
        keyring_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self.db_path = db_path
        self.keyring = keyring
        self.keyring_source = keyring_source
        self.connect_timeout = connect_timeout  # None: as long as until_idle, else forever
        self.group = group
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.workers = workers if workers is not None else (multiprocessing.cpu_count() or 1)
        self.partitions = partitions
        self.serve = serve
        self.api_token = api_token
        self.api_url: str | None = None
        self.checkpoints = checkpoints
        self._unpublished: str | None = None  # a stored checkpoint not yet published
        self._checkpoint_clock = time.monotonic()
        self._positioned_id: str | None = None
        self.stats = ConsumerStats()
        self.metrics = ConsumerMetrics(self.stats, db_path)
        self.metrics_listen = metrics_listen  # the health routes alone, without the API
        self.stop = threading.Event()
        self.reload = threading.Event()
        """Set (SIGHUP, or the keyring file changed): judge what comes next under the
        keyring file as it is now, once it is recorded in the chain."""
        self.keyring_path = keyring_path
        self._keyring_stamp = _stamp(keyring_path)
        self.clock = LedgerClock(on_jump=self._clock_jumped)

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self, until_idle: float | None = None) -> ConsumerStats:
        """Consume until ``stop`` is set, or until ``until_idle`` seconds pass with no message."""
        # A ledger that exists is checked before anything else (damaged, cut, locked); a new
        # one is created only once the broker answers.
        writer = self._open_writer() if self.db_path.exists() else None
        try:
            clients = self._connect(self.connect_timeout or until_idle)
            if clients is None:  # stopped while waiting for the broker
                return self.stats
            verifier = Verifier(self.keyring, self.workers)
            try:
                writer = writer or self._open_writer()
                recorded = writer.record_keyring(self.keyring, self.keyring_source)
                if recorded is not None:
                    log.info("keyring recorded as entry %d (%d keys, digest %s), from %s",
                             recorded, len(self.keyring.keys), self.keyring.digest().hex()[:16],
                             self.keyring_source)  # fmt: skip
                api = self._start_api(writer)
                try:
                    self._run(writer, verifier, clients, until_idle)
                finally:
                    if api is not None:
                        api.stop()
            finally:
                verifier.close()
                clients[1].close(timeout=10)
                clients[0].close(autocommit=False)
        finally:
            if writer is not None:
                writer.close()
        return self.stats

    def _open_writer(self) -> LedgerWriter:
        signer = self.checkpoints.signer if self.checkpoints else None
        writer = LedgerWriter(self.db_path, checkpoint_signer=signer, clock=self.clock)
        try:
            writer.refuse_cut_tail()
        except BaseException:
            writer.close()
            raise
        return writer

    def _start_api(self, writer: LedgerWriter) -> ApiServer | None:
        """Serve reads from this process: the only one DuckDB lets open the file; or, with
        only ``metrics_listen``, the health routes alone."""
        if self.serve is None:
            return self._start_health()
        if not self.api_token:
            raise ConfigurationError(
                "serving the HTTP API needs a token (LEDGER_API_TOKEN) or a token file "
                "(LEDGER_API_TOKENS)"
            )
        # Imported here: FastAPI, uvicorn and the evidence code would add 11 MB to every
        # consumer, serving or not (measured at import: 91 -> 102 MB).
        from ledger.api.app import create_app
        from ledger.api.server import ApiServer

        bundles = None if self.checkpoints is None else (self.keyring, self.checkpoints.signer)
        app = create_app(writer.read_cursor, self.api_token, bundles, health=self.metrics.health(),
                         db=self.db_path)  # fmt: skip
        api = ApiServer(app, *self.serve)
        api.start()
        self.api_url = api.url
        log.info("serving read-only HTTP API on %s", api.url)
        return api

    def _start_health(self) -> ApiServer | None:
        if self.metrics_listen is None:
            return None
        from ledger.api.health import health_app
        from ledger.api.server import ApiServer

        server = ApiServer(health_app(self.metrics.health()), *self.metrics_listen)
        server.start()
        log.info("serving /metrics, /healthz and /readyz on %s", server.url)
        return server

    def _connect(self, limit: float | None) -> tuple[KafkaConsumer, KafkaProducer] | None:
        """Topics and clients, retried with backoff while the broker is unavailable, for
        ``limit`` seconds at most (None: until stopped)."""
        delay, started = 1.0, time.monotonic()
        while not self.stop.is_set():
            try:
                topics = {self.settings.topic: self.partitions, self.settings.dlq_topic: 1}
                if self.checkpoints is not None:
                    topics[self.checkpoints.topic] = 1
                left = 15.0 if limit is None else limit - (time.monotonic() - started)
                ensure_topics(self.settings, topics, timeout=min(15.0, max(left, 1.0)))
                consumer = KafkaConsumer(
                    **self.settings.client_config(),
                    group_id=self.group,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    max_poll_records=self.batch_size,
                    fetch_max_bytes=8 * 1024 * 1024,
                    max_partition_fetch_bytes=4 * 1024 * 1024,
                    metadata_max_age_ms=10_000,
                    # Each value is verified by its Ed25519 signature, a stronger check than
                    # the batch CRC-32C that kafka-python would compute in pure Python.
                    check_crcs=False,
                )
                dlq = KafkaProducer(
                    **self.settings.client_config(),
                    acks="all",
                    enable_idempotence=True,
                    retries=2**31 - 1,
                    delivery_timeout_ms=30_000,
                    max_block_ms=10_000,  # a topic it cannot reach must not hold up chaining
                )
                self.metrics.broker_answered = time.monotonic()
                return consumer, dlq
            except (TransportError, KafkaError) as exc:
                waited = time.monotonic() - started
                if limit is not None and waited + delay > limit:
                    raise TransportError(
                        f"Kafka at {self.settings.bootstrap} did not answer in {waited:.0f} s "
                        f"({exc}); is the broker running there?"
                    ) from None
                log.warning(
                    "Kafka at %s unavailable (%s); retrying in %.0f s",
                    self.settings.bootstrap,
                    exc,
                    delay,
                )
                self.stop.wait(delay)
                delay = min(delay * 2, 30.0)
        return None

    def _run(
        self,
        writer: LedgerWriter,
        verifier: Verifier,
        clients: tuple[KafkaConsumer, KafkaProducer],
        until_idle: float | None,
    ) -> None:
        consumer, dlq = clients
        self._unpublished = writer.latest_checkpoint() if self.checkpoints else None
        assigned = self._assign(consumer, writer, set())
        idle_since, last_refresh = time.monotonic(), float("-inf")  # measure at once
        log.info(
            "ledger %s at seq %d; reading %s (%d partitions)",
            self.db_path,
            writer.head_seq,
            self.settings.topic,
            len(assigned),
        )
        # Batches submitted to the workers, oldest first: the next one is verified while
        # the main process commits the previous one, so neither side waits on the other.
        pending: deque[_Pending] = deque()
        while True:
            if self.reload.is_set() and not pending:  # what was judged before is chained
                self.reload.clear()
                self._reload_keyring(writer, verifier)
            reloading = self.reload.is_set()  # read nothing more until then
            batch = [] if self.stop.is_set() or reloading else self._collect(consumer)
            now = time.monotonic()
            if self._recreated(consumer):
                # Positions from the old incarnation are meaningless: start it over.
                pending.clear()
                self._position(consumer, writer, assigned)
                continue
            if batch:
                outcomes = verifier.submit([(m.value, m.witnessed_us) for m in batch])
                pending.append(_Pending(batch, outcomes, verifier.keyring_digest))
                idle_since = now
            if len(pending) > 1 or (pending and not batch):
                try:
                    self._commit(pending.popleft(), writer, consumer, dlq)
                except (TransportError, duckdb.Error) as exc:
                    # Nothing of the batch was stored (one transaction): read it again.
                    self.metrics.commit_failures.inc()
                    self.metrics.commit_failing = True
                    why = exc.message if isinstance(exc, TransportError) else str(exc)
                    log.warning("batch not committed (%s); retrying from stored offsets", why)
                    pending.clear()
                    self.stop.wait(2.0)
                    self._position(consumer, writer, assigned)
                    continue
            if not batch and not pending:
                stopping = self.stop.is_set() or (
                    until_idle is not None and now - idle_since >= until_idle
                )
                # Idle: sign what is not covered yet once it is old enough (or on the way out).
                self._checkpoint_idle(writer, force=stopping)
                self.metrics.idle()
                if stopping:
                    self._publish(dlq)
                    break
            self._publish(dlq)
            if now - last_refresh >= 10.0:
                if _stamp(self.keyring_path) != self._keyring_stamp:
                    self.reload.set()
                assigned = self._assign(consumer, writer, assigned)
                self._measure(consumer, writer, assigned)
                last_refresh = now

    # --- partitions --------------------------------------------------------------------------

    def _assign(
        self, consumer: KafkaConsumer, writer: LedgerWriter, current: set[TopicPartition]
    ) -> set[TopicPartition]:
        """Assign every partition of the topic; new ones are picked up as they appear."""
        found = consumer.partitions_for_topic(self.settings.topic) or set()
        wanted = {TopicPartition(self.settings.topic, p) for p in found}
        if wanted and wanted != current:
            consumer.assign(sorted(wanted))
            self._position(consumer, writer, wanted)
            if current:
                log.info("now reading %d partitions", len(wanted))
        return wanted or current

    def _position(
        self, consumer: KafkaConsumer, writer: LedgerWriter, partitions: set[TopicPartition]
    ) -> None:
        """Seek to the stored offsets, or to the beginning of a topic recreated since."""
        stored = writer.stored_offsets()
        current = self._topic_id(consumer)
        known = writer.stored_topic_ids().get(self.settings.topic)
        recreated = current is not None and known is not None and current != known
        if recreated:
            log.warning(
                "topic %s was recreated (id %s, was %s): reading it from the beginning;"
                " events already chained are skipped as duplicates",
                self.settings.topic,
                current,
                known,
            )
        for tp in partitions:
            offset = None if recreated else stored.get((tp.topic, tp.partition))
            if offset is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, offset)
        self._positioned_id = current

    def _topic_id(self, consumer: KafkaConsumer) -> str | None:
        """The topic's id from the client's metadata (None where the broker gives none).

        Offsets only mean something within one incarnation of a topic: a topic deleted and
        recreated (or a broker that lost its log) starts again at 0.
        """
        cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
        topic_id = cluster.topic_id(self.settings.topic) if cluster is not None else None
        return str(topic_id) if topic_id else None

    def _recreated(self, consumer: KafkaConsumer) -> bool:
        current = self._topic_id(consumer)
        return (
            current is not None
            and self._positioned_id is not None
            and current != self._positioned_id
        )

    # --- batches -----------------------------------------------------------------------------

    def _collect(self, consumer: KafkaConsumer) -> list[Received]:
        batch: list[Received] = []
        deadline = time.monotonic() + self.batch_seconds
        while len(batch) < self.batch_size and not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            records = consumer.poll(
                timeout_ms=int(remaining * 1000), max_records=self.batch_size - len(batch)
            )
            fetched_us = self.clock.now_us()
            for tp_records in records.values():
                batch.extend(_received(r, fetched_us) for r in tp_records)
            if not records and batch:
                break
        return batch

    def _reload_keyring(self, writer: LedgerWriter, verifier: Verifier) -> None:
        """Judge from now on under the keyring file as it is, recorded in the chain first; a
        file that does not load leaves the keyring in force as it was, said loudly."""
        path = self.keyring_path
        if path is None:
            return
        self._keyring_stamp = _stamp(path)
        try:
            new = Keyring.load(path)
        except ConfigurationError as exc:
            log.error("keyring not reloaded, still judging under the one in force: %s", exc)
            return
        changes = new.changes_from(self.keyring)
        if new.digest() == verifier.keyring_digest:
            log.info("keyring %s reloaded: unchanged", path)
            return
        seq = writer.record_keyring(new, self.keyring_source)
        verifier.reload(new)
        self.keyring = new
        log.info("keyring reloaded from %s and recorded as entry %s: %s", path, seq,
                 "; ".join(changes) or "same keys")  # fmt: skip

    def _clock_jumped(self, jump_us: int) -> None:
        self.metrics.clock_jumps.inc()
        log.error(
            "the host's clock jumped %s by %.1f s: witnessed and transaction times are kept "
            "from going back, but check the host's time source (NTP)",
            "forward" if jump_us > 0 else "back",
            abs(jump_us) / 1e6,
        )

    def _commit(
        self,
        pending: _Pending,
        writer: LedgerWriter,
        consumer: KafkaConsumer,
        dlq: KafkaProducer,
    ) -> None:
        """Chain a verified batch: dead letters first, then one DuckDB transaction."""
        batch = pending.batch
        messages: list[Accepted | Rejected] = [
            Accepted(m, columns, pending.keyring)
            if columns is not None
            else Rejected(m, reason, detail)
            for m, (columns, reason, detail) in zip(batch, pending.outcomes(), strict=True)
        ]
        offsets: dict[tuple[str, int], int] = {}
        for m in batch:
            key = (m.topic, m.partition)
            offsets[key] = max(offsets.get(key, 0), m.offset + 1)
        plan = writer.prepare(messages, offsets)
        if self._positioned_id is not None:
            plan.topic_ids[self.settings.topic] = self._positioned_id
        if plan.quarantined:
            self._dead_letter(dlq, plan.quarantined)
        started = time.perf_counter()
        self._signed(writer.commit(plan, checkpoint=self._checkpoint_due(writer, plan)))
        self.metrics.committed(time.perf_counter() - started, writer.head_seq)
        self._cluster(writer)
        self.stats.last_commit = time.monotonic()
        self.stats.batches += 1
        self.stats.accepted += len(plan.entries)
        self.stats.duplicates += plan.duplicates
        self.stats.quarantined += len(plan.quarantined)
        for rejected in plan.quarantined:
            self.stats.reasons[rejected.reason] = self.stats.reasons.get(rejected.reason, 0) + 1
            log.warning(
                "quarantined %s[%d]@%d: %s: %s",
                rejected.received.topic,
                rejected.received.partition,
                rejected.received.offset,
                rejected.reason,
                rejected.detail,
            )
        log.debug(
            "batch: %d chained (head %d), %d duplicates, %d quarantined",
            len(plan.entries),
            writer.head_seq,
            plan.duplicates,
            len(plan.quarantined),
        )
        self._commit_group(consumer, offsets)

    def _cluster(self, writer: LedgerWriter) -> None:
        """Keep the query index current (ledger.store.index): cheap unless a run is due.

        The index is derived from the entries, so a failure to extend it (a full disk,
        DuckDB's memory limit) must not stop the ledger recording evidence: the entries are
        committed already, questions read the unindexed tail on the fly, and the writer
        tries again a run's worth of entries later.
        """
        started = time.monotonic()
        try:
            added = writer.cluster()
        except duckdb.Error as exc:
            log.error(
                "query index not extended (%s): entries are recorded all the same and "
                "read unindexed; tried again after another run's worth",
                exc,
            )
            return
        if added:
            log.info(
                "query index: %d entries clustered in %.1f s (head %d)",
                added,
                time.monotonic() - started,
                writer.head_seq,
            )

    # --- checkpoints -------------------------------------------------------------------------

    def _checkpoint_due(self, writer: LedgerWriter, plan: Plan) -> bool:
        if self.checkpoints is None:
            return False
        uncovered = writer.head_seq + len(plan.entries) - writer.checkpoint_size
        old = time.monotonic() - self._checkpoint_clock >= self.checkpoints.seconds
        return uncovered >= self.checkpoints.every or (uncovered > 0 and old)

    def _checkpoint_idle(self, writer: LedgerWriter, force: bool) -> None:
        if self.checkpoints is None or writer.head_seq == writer.checkpoint_size:
            return
        if force or time.monotonic() - self._checkpoint_clock >= self.checkpoints.seconds:
            self._signed(writer.commit(Plan(), checkpoint=True))

    def _signed(self, note: str | None) -> None:
        if note is None:
            return
        self._checkpoint_clock = time.monotonic()
        self.stats.checkpoints += 1
        self.metrics.checkpoint(int(note.splitlines()[1]))
        self._unpublished = note
        log.debug("checkpoint signed: %s", note.splitlines()[1])

    def _publish(self, producer: KafkaProducer) -> None:
        """Copies outside the ledger: the witness file, then the checkpoint topic. Retried
        at the next pass on failure (the checkpoint itself is safe in the ledger)."""
        note, policy = self._unpublished, self.checkpoints
        if note is None or policy is None:
            return
        try:
            append_note(policy.witness, note)
            producer.send(policy.topic, value=note.encode()).get(timeout=30)
        except (OSError, KafkaError) as exc:
            self.metrics.publish_failures.inc()
            log.warning("checkpoint not published yet (%s); will retry", exc)
            return
        self._unpublished = None

    def _dead_letter(self, dlq: KafkaProducer, rejected: list[Rejected]) -> None:
        """Copy refused messages to the dead-letter topic, as the quarantine keeps them (cut
        to ``KEPT_BYTES``, said in headers). A copy that cannot be delivered is logged and
        counted, never a reason to stop chaining: the quarantine row is the record."""
        sent = []
        unreachable: KafkaError | None = None
        for r in rejected:
            headers = [
                ("ledger_reason", r.reason.encode()),
                ("ledger_detail", r.detail.encode()[:4096]),
                ("ledger_origin",
                 f"{r.received.topic}[{r.received.partition}]@{r.received.offset}".encode()),
            ]  # fmt: skip
            if r.value_sha256 is not None:
                headers += [("ledger_value_size", str(r.value_size).encode()),
                            ("ledger_value_sha256", r.value_sha256.hex().encode())]  # fmt: skip
            if r.truncated:
                headers.append(("ledger_truncated", ",".join(r.truncated).encode()))
            if unreachable is not None:  # each send would wait max_block_ms in turn
                self._dead_letter_failed(r, unreachable)
                continue
            try:
                sent.append((r, dlq.send(self.settings.dlq_topic, key=r.key, value=r.value,
                                         headers=headers)))  # fmt: skip
            except KafkaTimeoutError as exc:
                unreachable = exc
                self._dead_letter_failed(r, exc)
            except KafkaError as exc:
                self._dead_letter_failed(r, exc)
        try:
            dlq.flush(timeout=30)
        except KafkaError as exc:
            log.error("dead-letter topic %s: flush failed: %s", self.settings.dlq_topic, exc)
        for r, future in sent:
            try:
                future.get(timeout=0)
            except KafkaError as exc:
                self._dead_letter_failed(r, exc)

    def _dead_letter_failed(self, rejected: Rejected, exc: Exception) -> None:
        self.stats.dead_letter_failures += 1
        received = rejected.received
        log.error(
            "dead letter for %s[%d]@%d not delivered to %s (%s): it is kept in the "
            "quarantine table all the same",
            received.topic, received.partition, received.offset, self.settings.dlq_topic, exc,
        )  # fmt: skip

    def _measure(
        self, consumer: KafkaConsumer, writer: LedgerWriter, assigned: set[TopicPartition]
    ) -> None:
        """What the metrics and readiness need from the broker (lag per partition: a round
        trip that also shows the broker answers) and from the checkpoints (one overdue)."""
        policy = self.checkpoints
        self.metrics.checkpoint_overdue = (
            policy is not None
            and writer.head_seq > writer.checkpoint_size
            and time.monotonic() - self._checkpoint_clock > 2 * policy.seconds + 60
        )
        if not assigned:
            return
        try:
            ends = consumer.end_offsets(sorted(assigned))
            lags = {tp.partition: end - consumer.position(tp) for tp, end in ends.items()}
        except (KafkaError, AssertionError, ValueError) as exc:
            log.debug("lag not measured: %r", exc)
            return
        self.metrics.broker_answered = time.monotonic()
        for partition, lag in lags.items():
            self.metrics.lag.labels(str(partition)).set(max(lag, 0))

    def _commit_group(self, consumer: KafkaConsumer, offsets: dict[tuple[str, int], int]) -> None:
        """Lag monitoring only; the ledger's own offsets are the ones that count."""
        if self.group is None:
            return
        try:
            consumer.commit(
                {
                    TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                    for (t, p), o in offsets.items()
                }
            )
        except (KafkaError, AssertionError, ValueError) as exc:
            log.debug("group offset commit skipped: %r", exc)
