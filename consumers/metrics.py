"""The consumer's Prometheus metrics and readiness (served by ledger.api.health).

Counts the consumer already keeps for its summary (:class:`ConsumerStats`) are read at
scrape time rather than counted twice; what only metrics need (commit latency, lag, the
times of the last commit and checkpoint) is measured here. Each consumer has a registry of
its own, so that several in one process (the tests) never share a count. Metric names and
the alert rules built on them are in docs/operations.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ledger.api.health import Health
from ledger.store.verified import read_record

if TYPE_CHECKING:
    from consumers.ledger_consumer import ConsumerStats

__all__ = ["BROKER_SILENCE", "ConsumerMetrics"]

BROKER_SILENCE = 60.0
"""Seconds without an answer from the broker after which the consumer is not ready."""


class _Stats(Collector):
    """The consumer's running totals, as counters."""

    def __init__(self, stats: ConsumerStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        s = self._stats
        yield CounterMetricFamily("ledger_entries_chained", "Events chained.", value=s.accepted)
        yield CounterMetricFamily(
            "ledger_duplicates", "Events received again and not chained.", value=s.duplicates
        )
        by_reason = CounterMetricFamily(
            "ledger_quarantined", "Messages quarantined, by reason.", labels=["reason"]
        )
        for reason, count in sorted(s.reasons.items()):
            by_reason.add_metric([reason], count)
        yield by_reason
        yield CounterMetricFamily(
            "ledger_dead_letter_failures",
            "Refused messages not delivered to the dead-letter topic (kept in the quarantine).",
            value=s.dead_letter_failures,
        )
        yield CounterMetricFamily(
            "ledger_checkpoints_signed", "Checkpoints signed.", value=s.checkpoints
        )


class _Verified(Collector):
    """The last recorded verification of the ledger (`ledger verify --record`)."""

    def __init__(self, db: Path) -> None:
        self._db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        record = read_record(self._db)
        families = (
            GaugeMetricFamily("ledger_verify_ok", "1 if the last recorded verification passed."),
            GaugeMetricFamily(
                "ledger_verify_timestamp_seconds", "When the last verification ran (Unix time)."
            ),
            GaugeMetricFamily("ledger_verify_size", "Entries the last verification covered."),
        )
        if record is not None:
            values = (float(record.ok), record.at.timestamp(), float(record.size))
            for family, value in zip(families, values, strict=True):
                family.add_metric([], value)
        yield from families


class ConsumerMetrics:
    """Instruments the consumer updates, and what its health routes read."""

    def __init__(self, stats: ConsumerStats, db: Path) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        r.register(_Stats(stats))
        r.register(_Verified(db))
        self.commit_seconds = Histogram(
            "ledger_batch_commit_seconds", "Time to chain one batch (one DuckDB transaction).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r,
        )  # fmt: skip
        self.commit_failures = Counter(
            "ledger_commit_failures", "Batches that failed to commit and are read again.",
            registry=r,
        )  # fmt: skip
        self.last_commit = Gauge(
            "ledger_last_commit_timestamp_seconds",
            "When a batch was last committed (Unix time); with no traffic, when it last "
            "found nothing to read.",
            registry=r,
        )
        self.size = Gauge("ledger_size", "Entries in the ledger.", registry=r)
        self.lag = Gauge(
            "ledger_consumer_lag", "Messages on the events topic not read yet, by partition.",
            ["partition"], registry=r,
        )  # fmt: skip
        self.checkpoint_size = Gauge(
            "ledger_checkpoint_size", "Entries the last signed checkpoint covers.", registry=r
        )
        self.checkpoint_time = Gauge(
            "ledger_checkpoint_timestamp_seconds",
            "When the last checkpoint was signed (Unix time).",
            registry=r,
        )
        self.publish_failures = Counter(
            "ledger_checkpoint_publish_failures",
            "Checkpoints not yet copied to the witness file or the checkpoint topic.",
            registry=r,
        )
        self.clock_jumps = Counter(
            "ledger_clock_jumps", "Jumps of the host's clock the writer detected.", registry=r
        )
        self.api_requests = Counter(
            "ledger_api_requests", "HTTP API requests, by outcome.", ["outcome"], registry=r
        )
        self.broker_answered: float | None = None  # time.monotonic() of the last answer
        self.commit_failing = False
        self.checkpoint_overdue = False

    def committed(self, seconds: float, size: int) -> None:
        self.commit_seconds.observe(seconds)
        self.last_commit.set(time.time())
        self.size.set(size)
        self.commit_failing = False

    def idle(self) -> None:
        """Caught up: nothing to read is as good as a commit for "logging has stopped"."""
        self.last_commit.set(time.time())

    def checkpoint(self, size: int) -> None:
        self.checkpoint_size.set(size)
        self.checkpoint_time.set(time.time())

    def ready(self) -> dict[str, bool]:
        """Readiness, check by check: the broker answered lately, the last commit did not
        fail, and no checkpoint is overdue."""
        answered = self.broker_answered
        return {
            "broker": answered is not None and time.monotonic() - answered < BROKER_SILENCE,
            "writer": not self.commit_failing,
            "checkpoint": not self.checkpoint_overdue,
        }

    def health(self) -> Health:
        return Health(self.registry, self.ready, self.api_requests)
