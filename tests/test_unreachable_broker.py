"""A wrong or unreachable broker: the consumer says so in one line per attempt, gives up
when told to (exit 3), and creates nothing until the broker answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from consumer_helpers import ledger_cli

from ledger.transport.broker import free_port
from ledger.wire.keyring import Keyring


@pytest.mark.parametrize("give_up", [["--until-idle", "2"], ["--connect-timeout", "3"]])
def test_the_consumer_gives_up_on_a_broker_that_never_answers(
    tmp_path: Path, keyring_file: Path, give_up: list[str]
) -> None:
    db = tmp_path / "ledger.duckdb"
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = ledger_cli("consume", "--bootstrap", address, "--db", str(db), "--keyring",
                        str(keyring_file), *give_up, timeout=120)  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert f"error: Kafka at {address} did not answer" in result.stderr
    assert "is the broker running there?" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Connection failed" not in result.stderr  # kafka-python's own lines stay quiet
    assert not db.exists()  # nothing created before the broker answers


def test_the_library_consumer_creates_nothing_before_the_broker_answers(
    tmp_path: Path, keyring: Keyring
) -> None:
    from consumers.ledger_consumer import LedgerConsumer
    from ledger.errors import TransportError
    from ledger.transport.settings import KafkaSettings

    db = tmp_path / "ledger.duckdb"
    settings = KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}", topic="ledger.events")
    with pytest.raises(TransportError):
        LedgerConsumer(settings, db, keyring, workers=1, connect_timeout=2).run()
    assert not db.exists()
