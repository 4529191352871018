"""Kafka connection settings and TLS/SASL pass-through (no Kafka client is loaded here)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.errors import ConfigurationError

__all__ = [
    "DEFAULT_CHECKPOINT_TOPIC",
    "DEFAULT_TOPIC",
    "DLQ_SUFFIX",
    "PASSTHROUGH",
    "KafkaSettings",
]

DEFAULT_TOPIC = "ledger.events"
DEFAULT_CHECKPOINT_TOPIC = "ledger.checkpoints"
DLQ_SUFFIX = ".dlq"
_ENV_PREFIX = "LEDGER_KAFKA_"
# TLS/SASL settings passed through to kafka-python, each also read from LEDGER_KAFKA_<NAME>.
PASSTHROUGH = (
    "security_protocol",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
)


_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str
    topic: str = DEFAULT_TOPIC
    options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _TOPIC_NAME.match(self.topic) or self.topic in (".", ".."):
            raise ConfigurationError(
                f"topic {self.topic!r}: a Kafka topic name is 1-249 letters, digits, '.', "
                "'_' or '-'"
            )

    @classmethod
    def from_env(
        cls, bootstrap: str, topic: str, overrides: Mapping[str, str | None] | None = None
    ) -> KafkaSettings:
        options = {
            name: value
            for name in PASSTHROUGH
            if (value := (overrides or {}).get(name) or os.environ.get(_ENV_PREFIX + name.upper()))
        }
        return cls(bootstrap=bootstrap, topic=topic, options=options)

    def client_config(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap.split(","), **self.options}

    @property
    def dlq_topic(self) -> str:
        return self.topic + DLQ_SUFFIX
