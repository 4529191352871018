"""Reads while the consumer writes: the read-only HTTP API served by the consumer process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from consumer_helpers import cli_json, ledger_cli, metric_samples, produce_raw
from helpers import IMAGE_A, make_event, wait_for

from consumers.ledger_consumer import CheckpointPolicy, LedgerConsumer
from ledger.api import client
from ledger.evidence.bundle import verify_bundle
from ledger.log.checkpoint import TrustedKey
from ledger.transport.broker import free_port
from ledger.transport.producer import LedgerProducer
from ledger.transport.settings import KafkaSettings
from ledger.wire.keyring import Keyring, Signer

pytestmark = pytest.mark.kafka

TOKEN = "test-token-0123456789"


LEDGER_KEY = Signer.generate("ledger")


@pytest.fixture
def running(
    kafka: KafkaSettings, keyring: Keyring, tmp_path: Path
) -> Iterator[tuple[LedgerConsumer, str, Path]]:
    """A consumer serving the API, signing checkpoints (and so bundles) with LEDGER_KEY."""
    db = tmp_path / "ledger.duckdb"
    port = free_port()
    policy = CheckpointPolicy(LEDGER_KEY, tmp_path / "ledger.witness", every=5)
    consumer = LedgerConsumer(
        kafka,
        db,
        keyring,
        workers=1,
        serve=("127.0.0.1", port),
        api_token=TOKEN,
        checkpoints=policy,
    )
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while consumer.api_url is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert consumer.api_url == url
    yield consumer, url, db
    consumer.stop.set()
    thread.join(30)
    assert not thread.is_alive()


def _get(url: str, path: str, token: str = TOKEN) -> httpx.Response:
    return httpx.get(url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _wait_for_size(url: str, size: int) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = _get(url, "/v1/status").json()
        if status["size"] >= size:
            return dict(status)
        time.sleep(0.2)
    raise AssertionError(f"ledger did not reach {size} entries: {status}")


def test_second_process_reads_while_the_consumer_writes(
    running: tuple[LedgerConsumer, str, Path], kafka: KafkaSettings, ci_signer: Signer
) -> None:
    _, url, db = running
    with LedgerProducer(ci_signer, kafka) as producer:
        for n in range(20):
            producer.emit(make_event("mutation.applied", target=f"conf-{n}"))
    status = _wait_for_size(url, 1 + 20)  # the keyring's record, then the events
    assert status["size"] == 1 + 20 and status["quarantined"] == 0

    env = {**os.environ, "LEDGER_API_TOKEN": TOKEN}
    cli = subprocess.run(
        [sys.executable, "-m", "ledger", "verify", "--api", url, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert report["ok"] is True and report["size"] == 1 + 20
    served = _get(url, "/v1/verify").json()
    assert report.pop("timings").keys() == served.pop("timings").keys()
    assert report == served  # CLI and API print the same JSON (timings aside)
    assert (report["signatures_checked"], report["signatures_verified"]) == (False, 0)

    timeline = ledger_cli("timeline", "--api", url, "--service", "checkout", "--env", "prod",
                          "--json", LEDGER_API_TOKEN=TOKEN)  # fmt: skip
    assert [e["data"]["target"] for e in cli_json(timeline)] == [f"conf-{n}" for n in range(20)]

    # Opening the file directly fails with a message that says what to do instead.
    direct = subprocess.run(
        [sys.executable, "-m", "ledger", "status", "--db", str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert direct.returncode == 2
    assert "--api" in direct.stderr and "--serve" in direct.stderr

    # Writes go on while readers read.
    with LedgerProducer(ci_signer, kafka) as producer:
        for n in range(20, 30):
            producer.emit(make_event("mutation.applied", target=f"conf-{n}"))
    assert _wait_for_size(url, 1 + 30)["size"] == 1 + 30


def test_api_refuses_a_missing_or_wrong_token(running: tuple[LedgerConsumer, str, Path]) -> None:
    _, url, _ = running
    assert httpx.get(url + "/v1/status", timeout=10).status_code == 401
    assert _get(url, "/v1/quarantine", token="wrong").status_code == 401
    assert _get(url, "/v1/quarantine").status_code == 200
    # the schema too; no HTML doc pages (their scripts would come from a CDN)
    assert httpx.get(url + "/openapi.json", timeout=10).status_code == 401
    for page in ("/docs", "/redoc"):
        assert _get(url, page).status_code == 404


def test_api_is_described_by_openapi(running: tuple[LedgerConsumer, str, Path]) -> None:
    _, url, _ = running
    spec = _get(url, "/openapi.json").json()
    assert {"/v1/status", "/v1/verify", "/v1/quarantine"} <= set(spec["paths"])
    assert all(list(ops) == ["get"] for ops in spec["paths"].values())  # read-only
    for path, ops in spec["paths"].items():  # every parameter says what it takes
        assert "401" in ops["get"]["responses"], path
        for parameter in ops["get"].get("parameters", []):
            assert parameter.get("description"), f"{path}: {parameter['name']}"


def test_serving_without_a_token_is_refused(kafka: KafkaSettings, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_API_TOKEN"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ledger",
            "consume",
            "--bootstrap",
            kafka.bootstrap,
            "--topic",
            kafka.topic,
            "--db",
            str(tmp_path / "l.duckdb"),
            "--keyring",
            str(tmp_path / "missing.json"),
            "--serve",
            "127.0.0.1:1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "LEDGER_API_TOKEN" in result.stderr


def test_evidence_bundle_while_the_consumer_writes(
    running: tuple[LedgerConsumer, str, Path],
    kafka: KafkaSettings,
    ci_signer: Signer,
    tmp_path: Path,
) -> None:
    """An auditor's bundle without stopping ingestion: the consumer signs it with its ledger
    key; the CLI fetches it, checks it and writes it byte for byte as served."""
    _, url, _ = running
    with LedgerProducer(ci_signer, kafka) as producer:
        for n in range(12):
            producer.emit(make_event("deployment.succeeded", change_ref=f"CHG-{n}"))
    _wait_for_size(url, 1 + 12)
    at = make_event("deployment.succeeded").time.isoformat()
    query = urlencode({"service": "checkout", "env": "prod", "at": at})
    served = _get(url, f"/v1/evidence?{query}")
    assert served.status_code == 200, served.text
    assert verify_bundle(served.content, TrustedKey("ledger", LEDGER_KEY.public_raw))

    out, pub = tmp_path / "bundle.json", tmp_path / "ledger.pub"
    pub.write_bytes(LEDGER_KEY.public_pem())
    fetched = ledger_cli("evidence", "--api", url, "--service", "checkout", "--env", "prod",
                         "--at", at, "--out", str(out), LEDGER_API_TOKEN=TOKEN)  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    checked = ledger_cli("verify-bundle", str(out), "--trusted-key", str(pub), "--json")
    assert checked.returncode == 0, checked.stderr
    assert cli_json(checked)["answer"]["deployment"]["change_ref"] == "CHG-11"

    assert _get(url, "/v1/evidence?service=checkout&env=prod").status_code == 400


def test_evidence_needs_a_consumer_with_the_ledger_key(
    kafka: KafkaSettings, keyring: Keyring, tmp_path: Path
) -> None:
    port = free_port()
    consumer = LedgerConsumer(kafka, tmp_path / "l.duckdb", keyring, workers=1,
                              serve=("127.0.0.1", port), api_token=TOKEN)  # fmt: skip
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while consumer.api_url is None and time.monotonic() < deadline:
            time.sleep(0.05)
        path = "/v1/evidence?service=s&env=e&at=2026-01-01T00:00:00Z"
        response = _get(consumer.api_url or "", path)
        assert response.status_code == 404 and "--ledger-key" in response.text
    finally:
        consumer.stop.set()
        thread.join(30)


def test_the_client_reads_every_page_of_a_timeline(
    running: tuple[LedgerConsumer, str, Path],
    kafka: KafkaSettings,
    ci_signer: Signer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pages of 7 (the API's cap made small): 20 entries in three pages, none lost or
    repeated, in the timeline's order."""
    _, url, _ = running
    with LedgerProducer(ci_signer, kafka) as producer:
        for n in range(20):
            producer.emit(make_event("mutation.applied", target=f"conf-{n}"))
    _wait_for_size(url, 1 + 20)
    monkeypatch.setenv("LEDGER_API_TOKEN", TOKEN)
    monkeypatch.setattr(client, "MAX_PAGE", 7)
    path = "/v1/timeline?service=checkout&env=prod"
    asked: list[str] = []
    fetch = client.fetch

    def counted(base: str, page: str) -> object:
        asked.append(page)
        return fetch(base, page)

    monkeypatch.setattr(client, "fetch", counted)
    rows = client.fetch_pages(url, path, key="seq")
    assert len(asked) == 3
    assert rows == _get(url, path).json() and len(rows) == 20


def test_emit_checks_under_the_keyring_the_running_consumer_recorded(
    running: tuple[LedgerConsumer, str, Path],
    kafka: KafkaSettings,
    ci_signer: Signer,
    tmp_path: Path,
) -> None:
    """`emit --api URL` asks the consumer which keyring it judges under (the one it recorded
    last) and checks each event under it before sending: an approval signed with the CI
    key is named and nothing is sent; a deployment goes."""
    _, url, _ = running
    _wait_for_size(url, 1)  # the keyring's record
    key = tmp_path / "ci-main.key"
    ci_signer.save(key)
    common = ("--key", str(key), "--source", "ci/github/acme", "--bootstrap", kafka.bootstrap,
              "--topic", kafka.topic, "--api", url)  # fmt: skip
    refused = ledger_cli("emit", "approval", "--service", "checkout", "--env", "prod",
                         "--change-ref", "CHG-1", "--approver", "carol", "--image", IMAGE_A,
                         *common, LEDGER_API_TOKEN=TOKEN)  # fmt: skip
    assert refused.returncode == 2
    assert f"the keyring {url} recorded at entry 1" in refused.stderr
    assert "key_not_allowed_type" in refused.stderr and "nothing was sent" in refused.stderr
    sent = ledger_cli("emit", "deployment", "--service", "checkout", "--env", "prod",
                      "--image", IMAGE_A, *common, LEDGER_API_TOKEN=TOKEN)  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert f"checked under the keyring {url} recorded at entry 1 as of now: authorized" in (
        " ".join(sent.stderr.split())
    )
    assert _wait_for_size(url, 2)["size"] == 2
    served = _get(url, "/v1/keyring").json()
    assert served["seq"] == 1 and "ci-main" in served["keyring"]["keys"]


def test_metrics_and_health_need_no_token_and_count_what_happened(
    running: tuple[LedgerConsumer, str, Path], kafka: KafkaSettings, ci_signer: Signer
) -> None:
    """An orchestrator's probes and a Prometheus scrape carry no token: they get counts
    and states, never an entry; every /v1 route still needs the token."""
    _, url, _ = running
    with LedgerProducer(ci_signer, kafka) as producer:
        for n in range(5):
            producer.emit(make_event("mutation.applied", target=f"conf-{n}"))
    _wait_for_size(url, 1 + 5)
    produce_raw(kafka, [b"\x00 not an envelope"])
    wait_for(lambda: _get(url, "/v1/status").json()["quarantined"] == 1, "the quarantine")
    assert httpx.get(url + "/v1/status", timeout=30).status_code == 401
    assert httpx.get(url + "/healthz", timeout=30).json() == {"status": "alive"}
    ready = httpx.get(url + "/readyz", timeout=30)
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "checks": {"broker": True, "writer": True,
                                                       "checkpoint": True}}  # fmt: skip
    scraped = httpx.get(url + "/metrics", timeout=30)
    assert scraped.status_code == 200
    samples = metric_samples(scraped.text)
    assert samples["ledger_entries_chained_total"] == 5
    assert samples['ledger_quarantined_total{reason="malformed_envelope"}'] == 1
    assert samples["ledger_size"] == 1 + 5
    assert samples["ledger_batch_commit_seconds_count"] >= 1
    assert samples['ledger_api_requests_total{outcome="ok"}'] >= 1
    assert samples['ledger_api_requests_total{outcome="unauthorized"}'] == 1


def test_the_client_joins_every_page_of_a_snapshot(
    running: tuple[LedgerConsumer, str, Path],
    kafka: KafkaSettings,
    ci_signer: Signer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, url, _ = running
    with LedgerProducer(ci_signer, kafka) as producer:
        for n in range(7):
            producer.emit(make_event(service=f"svc-{n}"))
    _wait_for_size(url, 1 + 7)
    monkeypatch.setenv("LEDGER_API_TOKEN", TOKEN)
    monkeypatch.setattr(client, "MAX_PAGE", 3)
    path = "/v1/snapshot?" + urlencode({"env": "prod", "at": datetime.now(UTC).isoformat()})
    whole = client.fetch_whole(url, path, "services")  # pages of one instant, as the CLI asks
    one_page = _get(url, path).json()
    assert whole == one_page and len(whole["services"]) == 7 and "next_after" not in whole


def test_a_backup_through_the_running_consumer_is_consistent_and_verified(
    running: tuple[LedgerConsumer, str, Path],
    kafka: KafkaSettings,
    ci_signer: Signer,
    keyring: Keyring,
    tmp_path: Path,
) -> None:
    """While the consumer keeps chaining, `ledger backup --api` writes one snapshot of the
    ledger and verifies it (signatures too, with the keyring; checkpoints under the ledger's
    public key) before calling it a backup."""
    _, url, _ = running
    with LedgerProducer(ci_signer, kafka) as producer:
        for n in range(10):
            producer.emit(make_event(service=f"svc-{n}"))
        _wait_for_size(url, 1 + 10)
        for n in range(10):  # still arriving while the copy is taken
            producer.emit(make_event(service=f"late-{n}"))
        ring, pub, out = tmp_path / "keyring.json", tmp_path / "ledger.pub", tmp_path / "b.duckdb"
        keyring.save(ring)
        pub.write_bytes(LEDGER_KEY.public_pem())
        result = ledger_cli("backup", "--api", url, "--out", str(out), "--keyring", str(ring),
                            "--trusted-key", str(pub), "--json",
                            LEDGER_API_TOKEN=TOKEN)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = cli_json(result)
    assert report["ok"] and report["signatures_checked"] and report["checkpoints"]["trusted_key"]
    assert 1 + 10 <= report["size"] <= 1 + 20
    assert report["bytes"] == out.stat().st_size
    again = ledger_cli("backup", "--api", url, "--out", str(out), LEDGER_API_TOKEN=TOKEN)
    assert again.returncode == 2 and "already exists" in again.stderr
