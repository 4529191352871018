"""Metrics, health and the alert rules of docs/operations.md.

The rules are the operator's: each is checked by Prometheus's own `promtool` (`check rules`,
and a `test rules` case that makes it fire), and every metric a rule names must be in a
live scrape of a running consumer, so a renamed metric cannot silently disarm an alert.
`promtool` comes from Debian's `prometheus` package; when it is not installed, the package
is downloaded and unpacked (not installed: no service is started) into a cache.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from consumer_helpers import REPO, cli_env, ledger_cli, metric_samples
from helpers import make_event, wait_for
from ledger_builders import signers, write_ledger
from prometheus_client import generate_latest

from consumers.ledger_consumer import ConsumerStats
from consumers.metrics import BROKER_SILENCE, ConsumerMetrics
from ledger.store.verified import record_path
from ledger.transport.broker import free_port
from ledger.transport.producer import LedgerProducer, seal
from ledger.transport.settings import KafkaSettings
from ledger.wire.keyring import Signer

DOCS = REPO / "docs" / "operations.md"
PROMTOOL_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deploy-ledger"


def _rules_text() -> str:
    text = DOCS.read_text()
    (block,) = re.findall(r"```yaml\n(groups:.*?)```", text, re.S)
    return str(block)


def _rules() -> list[dict[str, Any]]:
    (group,) = yaml.safe_load(_rules_text())["groups"]
    return list(group["rules"])


@pytest.fixture(scope="session")
def promtool() -> Path:
    found = shutil.which("promtool")
    if found:
        return Path(found)
    unpacked = PROMTOOL_CACHE / "prometheus" / "usr" / "bin" / "promtool"
    if not unpacked.exists():
        work = PROMTOOL_CACHE / "download"
        work.mkdir(parents=True, exist_ok=True)
        download = ["apt-get", "download", "prometheus"]
        if subprocess.run(download, cwd=work, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            result = subprocess.run(download, cwd=work, capture_output=True, text=True)
            assert result.returncode == 0, (
                "promtool is needed to check the alert rules: install Debian's prometheus "
                f"package, or let apt-get download it (it said: {result.stderr.strip()})"
            )
        (package,) = work.glob("prometheus_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(package), str(PROMTOOL_CACHE / "prometheus")],
                       check=True)  # fmt: skip
    return unpacked


# Input series (one sample a minute) that make each alert fire, and when to look.
_STALE = {"ledger_size": "100x90", "ledger_checkpoint_size": "50x90",
          "ledger_checkpoint_timestamp_seconds": "0x90"}  # fmt: skip
FIRING: dict[str, tuple[dict[str, str], str]] = {
    "LedgerLoggingStopped": ({"ledger_last_commit_timestamp_seconds": "0x20"}, "12m"),
    "LedgerCommitsFailing": ({"ledger_commit_failures_total": "0+1x40"}, "25m"),
    "LedgerCheckpointStale": (_STALE, "75m"),
    "LedgerCheckpointNotPublished": ({"ledger_checkpoint_publish_failures_total": "0+1x40"}, "35m"),
    "LedgerQuarantineSpike": ({'ledger_quarantined_total{reason="unknown_key"}': "0+10x20"}, "15m"),
    "LedgerAuthorizationRefusals": ({'ledger_quarantined_total{reason="key_revoked"}': "0+1x20"},
                                    "15m"),
    "LedgerLagGrowing": ({'ledger_consumer_lag{partition="0"}': "20000x30"}, "20m"),
    "LedgerClockJumped": ({"ledger_clock_jumps_total": "0 0 1 1 1 1"}, "4m"),
    "LedgerVerificationFailing": ({"ledger_verify_ok": "0x5"}, "2m"),
    "LedgerVerificationStale": ({"ledger_verify_timestamp_seconds": "0x60"}, "50h"),
}  # fmt: skip
INTERVAL = {"LedgerVerificationStale": "1h"}  # the others: a sample a minute

QUIET = {  # a healthy consumer: none fires
    "ledger_last_commit_timestamp_seconds": "0+60x90",
    "ledger_commit_failures_total": "0x90",
    "ledger_size": "100+10x90",
    "ledger_checkpoint_size": "100+10x90",
    "ledger_checkpoint_timestamp_seconds": "0+60x90",
    "ledger_checkpoint_publish_failures_total": "0x90",
    'ledger_quarantined_total{reason="invalid_event"}': "0x90",
    'ledger_consumer_lag{partition="0"}': "10x90",
    "ledger_clock_jumps_total": "0x90",
    "ledger_verify_ok": "1x90",
    "ledger_verify_timestamp_seconds": "0+60x90",
}


def test_the_alert_rules_parse_and_each_fires_on_its_fault(promtool: Path, tmp_path: Path) -> None:
    rules = _rules()
    assert {r["alert"] for r in rules} == set(FIRING)
    (tmp_path / "rules.yml").write_text(_rules_text())
    checked = subprocess.run([str(promtool), "check", "rules", "rules.yml"], cwd=tmp_path,
                             capture_output=True, text=True)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    cases = []
    for rule in rules:
        series, at = FIRING[rule["alert"]]
        fired = {"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}
        cases.append({
            "interval": INTERVAL.get(rule["alert"], "1m"),
            "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "alert_rule_test": [{"eval_time": at, "alertname": rule["alert"],
                                 "exp_alerts": [fired]}],
        })  # fmt: skip
    cases.append({
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in QUIET.items()],
        "alert_rule_test": [{"eval_time": "85m", "alertname": r["alert"], "exp_alerts": []}
                            for r in rules],
    })  # fmt: skip
    (tmp_path / "test.yml").write_text(yaml.safe_dump({"rule_files": ["rules.yml"],
                                                       "tests": cases}))  # fmt: skip
    tested = subprocess.run([str(promtool), "test", "rules", "test.yml"], cwd=tmp_path,
                            capture_output=True, text=True)  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.kafka
def test_every_metric_the_rules_name_is_in_a_live_scrape_of_metrics_alone(
    kafka: KafkaSettings, ci_signer: Signer, keyring_file: Path, tmp_path: Path
) -> None:
    """`consume --metrics HOST:PORT` without the API: /metrics, /healthz and /readyz
    answer, nothing else does, and the rules' metrics are all there."""
    with LedgerProducer(ci_signer, kafka) as producer:
        for _ in range(3):
            producer.emit(make_event())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = cli_env(LEDGER_BOOTSTRAP=kafka.bootstrap, LEDGER_TOPIC=kafka.topic,
                  LEDGER_DB=str(tmp_path / "ledger.duckdb"),
                  LEDGER_KEYRING=str(keyring_file))  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger", "consume", "--metrics", f"127.0.0.1:{port}"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: _chained(url) == 3 or proc.poll() is not None, "3 events chained")
        assert proc.poll() is None
        exposition = httpx.get(url + "/metrics", timeout=10).text
        ready = httpx.get(url + "/readyz", timeout=10)
        status = httpx.get(url + "/v1/status", timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert status.status_code == 404  # the API is not served
    named = {m for rule in _rules() for m in re.findall(r"\bledger_[a-z_]+", rule["expr"])}
    exposed = set(re.findall(r"^# TYPE (ledger_[a-z_]+) ", exposition, re.M))
    missing = {m for m in named if m not in exposed and m.removesuffix("_total") not in exposed}
    assert not missing, f"alert rules name metrics a consumer does not expose: {missing}"
    assert metric_samples(exposition)['ledger_consumer_lag{partition="0"}'] >= 0


def _chained(url: str) -> float:
    try:
        text = httpx.get(url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return -1
    return metric_samples(text).get("ledger_entries_chained_total", -1)


def test_readiness_names_the_part_that_is_not_keeping_up() -> None:
    metrics = ConsumerMetrics(ConsumerStats(), Path("no-ledger.duckdb"))
    assert metrics.ready() == {"broker": False, "writer": True, "checkpoint": True}
    metrics.broker_answered = time.monotonic()
    assert all(metrics.ready().values())
    metrics.broker_answered = time.monotonic() - BROKER_SILENCE - 1
    metrics.commit_failing, metrics.checkpoint_overdue = True, True
    assert metrics.ready() == {"broker": False, "writer": False, "checkpoint": False}
    metrics.committed(0.01, 10)
    assert metrics.ready()["writer"] is True


def test_a_recorded_verification_is_what_the_metrics_say(tmp_path: Path) -> None:
    """`verify --record` writes the result beside the ledger; the gauges read it at each
    scrape. A record someone damaged gives no reading (and no crash), not a false one."""
    ci, _, ring = signers()
    db = tmp_path / "ledger.duckdb"
    write_ledger(
        db, [seal(make_event(), ci) for _ in range(3)], ring, None, [], record_keyring=True
    )
    metrics = ConsumerMetrics(ConsumerStats(), db)
    assert "ledger_verify_ok" not in metric_samples(generate_latest(metrics.registry).decode())
    result = ledger_cli("verify", "--db", str(db), "--record", "--json")
    assert result.returncode == 0, result.stderr
    samples = metric_samples(generate_latest(metrics.registry).decode())
    assert (samples["ledger_verify_ok"], samples["ledger_verify_size"]) == (1, 4)
    assert abs(samples["ledger_verify_timestamp_seconds"] - time.time()) < 3600
    record_path(db).write_text("{ not json")
    assert "ledger_verify_ok" not in metric_samples(generate_latest(metrics.registry).decode())
