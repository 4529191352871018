"""Topics: creating them, and reading one to its end (a copy kept outside the ledger)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from ledger.errors import ConfigurationError, TransportError
from ledger.transport.settings import KafkaSettings

__all__ = ["ensure_topics", "read_topic"]


def ensure_topics(
    settings: KafkaSettings, topics: Mapping[str, int], timeout: float = 15.0
) -> None:
    """Create the named topics (name -> partitions) if they do not exist yet; a broker that
    does not answer within ``timeout`` seconds is a :class:`TransportError`."""
    try:
        wait_ms = int(timeout * 1000)
        admin = KafkaAdminClient(
            **settings.client_config(), request_timeout_ms=wait_ms, bootstrap_timeout_ms=wait_ms
        )
    except KafkaError as exc:
        raise TransportError(f"cannot reach Kafka at {settings.bootstrap}: {exc}") from None
    try:
        missing = [name for name in topics if name not in set(admin.list_topics())]
        for name in missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, topics[name], 1)])
    except KafkaError as exc:
        raise TransportError(f"cannot create topics on {settings.bootstrap}: {exc}") from None
    finally:
        admin.close()


def read_topic(
    settings: KafkaSettings, topic: str, timeout: float = 60.0
) -> list[tuple[int, int, bytes]]:
    """Every record of ``topic`` up to its end as it is now, as (partition, offset, value):
    a copy kept outside the ledger, such as the checkpoint topic. No consumer group joins
    and nothing is committed."""
    try:
        consumer = KafkaConsumer(
            **settings.client_config(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
    except KafkaError as exc:
        raise TransportError(f"cannot reach Kafka at {settings.bootstrap}: {exc}") from None
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:  # the broker answered: the name is what is wrong
            raise ConfigurationError(f"topic {topic} does not exist on {settings.bootstrap}")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        records: list[tuple[int, int, bytes]] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in assigned):
            if time.monotonic() > deadline:
                raise TransportError(f"topic {topic}: not read to its end in {timeout:.0f} s")
            for tp, batch in consumer.poll(timeout_ms=500).items():
                records += [(tp.partition, r.offset, r.value) for r in batch
                            if r.offset < ends[tp]]  # fmt: skip
        return sorted(records)
    except KafkaError as exc:
        raise TransportError(f"cannot read topic {topic}: {exc}") from None
    finally:
        consumer.close()
