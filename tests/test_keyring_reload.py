"""A keyring change without a restart: SIGHUP, or the file changing, makes the consumer judge
what comes next under the file as it is, recorded in the chain first (keyring records), and
log what changed; a file that does not load leaves the keyring in force, said loudly."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from consumer_helpers import REPO, cli_env, entries, event_entries, quarantine
from helpers import make_event, wait_for

from ledger.store.integrity import verify_ledger
from ledger.store.reader import LedgerReader
from ledger.transport.broker import free_port
from ledger.transport.producer import LedgerProducer
from ledger.transport.settings import KafkaSettings
from ledger.wire.keyring import Keyring, Signer

pytestmark = pytest.mark.kafka

TOKEN = "reload-token-0123456789"


def _keyring_seq(url: str) -> int:
    try:
        answer = httpx.get(url + "/v1/keyring", headers={"Authorization": f"Bearer {TOKEN}"},
                           timeout=5)  # fmt: skip
    except httpx.HTTPError:
        return 0
    return int(answer.json()["seq"]) if answer.status_code == 200 else 0


def _status(url: str) -> dict[str, int]:
    answer = httpx.get(url + "/v1/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    return dict(answer.json())


def test_sighup_and_a_changed_file_reload_the_keyring_recorded_first(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    newcomer = Signer.generate("ci-newcomer")
    ring_file, db, log = tmp_path / "keyring.json", tmp_path / "ledger.duckdb", tmp_path / "log"
    keyring.save(ring_file)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = cli_env(LEDGER_BOOTSTRAP=kafka.bootstrap, LEDGER_TOPIC=kafka.topic, LEDGER_DB=str(db),
                  LEDGER_KEYRING=str(ring_file), LEDGER_API_TOKEN=TOKEN)  # fmt: skip
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ledger", "consume", "--serve", f"127.0.0.1:{port}"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        wait_for(lambda: _keyring_seq(url) == 1 or proc.poll() is not None, "the consumer")
        with LedgerProducer(newcomer, kafka) as producer:  # not trusted yet: quarantined
            producer.emit(make_event(actor="early"))
        wait_for(lambda: _status(url)["quarantined"] == 1, "the quarantine")

        trusted = keyring.model_copy(deep=True)
        trusted.trust(newcomer.key_id, newcomer.public_raw, types=["deployment.*"],
                      sources=["ci/*"])  # fmt: skip
        trusted.save(ring_file)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: _keyring_seq(url) > 1, "the new keyring recorded")
        assert f"trusts {newcomer.key_id} for deployment.* from ci/*" in log.read_text()
        with LedgerProducer(newcomer, kafka) as producer:
            producer.emit(make_event(actor="after-sighup"))
        wait_for(lambda: _status(url)["size"] == 3, "the newcomer's event chained")

        ring_file.write_text("{not json")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "keyring not reloaded" in log.read_text(), "the refusal logged")
        assert proc.poll() is None

        trusted.retire(newcomer.key_id, datetime.now(UTC))
        trusted.save(ring_file)  # no signal: the file's change is noticed within 10 s
        wait_for(lambda: _keyring_seq(url) == 4, "the changed file recorded", timeout=60)
        assert f"retires {newcomer.key_id} from" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
    rows = entries(db)
    assert [r["type"] for r in rows] == [
        "ledger.keyring", "ledger.keyring", "deployment.succeeded", "ledger.keyring",
    ]  # fmt: skip
    assert [r["actor"] for r in event_entries(db)] == ["after-sighup"]
    assert [q["reason"] for q in quarantine(db)] == ["unknown_key"]
    with LedgerReader(db) as reader:
        report = verify_ledger(reader, None, workers=1)
    assert report.ok and report.keyrings_recorded == 3
