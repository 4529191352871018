"""`ledger demo`, the README's "run it" command, end to end as a new user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ledger.cli import app
from ledger.cli import demo as demo_cli
from ledger.demo import build_history
from ledger.errors import TransportError
from ledger.evidence.bundle import verify_bundle
from ledger.log.checkpoint import TrustedKey, open_checkpoint, split_notes
from ledger.rules.catalogue import RULES
from ledger.store.integrity import verify_ledger
from ledger.store.reader import LedgerReader
from ledger.wire.events import ApprovalGrantedEvent
from ledger.wire.keyring import load_public_key

pytestmark = pytest.mark.kafka


def test_demo_runs_end_to_end_on_the_embedded_broker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    result = subprocess.run(
        [sys.executable, "-m", "ledger", "demo", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert "started the local Kafka-compatible broker" in result.stderr
    assert "stopped the local broker" in result.stderr

    history = build_history(datetime.now(UTC))
    assert summary["stats"]["accepted"] == len(history.events)
    assert summary["chain"]["ok"] is True
    assert summary["chain"]["size"] == 1 + len(history.events)  # the keyring's record first
    # The two forged messages were refused, each for its own reason.
    assert sorted(q["reason"] for q in summary["quarantined"]) == [
        "key_not_allowed_type",
        "unknown_key",
    ]
    # The history has what the issue asks for.
    kinds = summary["entries_by_type"]
    for kind in (
        "deployment.succeeded",
        "deployment.failed",
        "deployment.rolled_back",
        "mutation.applied",
        "approval.granted",
        "service.classified",
    ):
        assert kinds.get(kind, 0) > 0, kind

    db = tmp_path / "demo.duckdb"
    with LedgerReader(db) as reader:
        assert verify_ledger(reader, None, workers=1).check().size == summary["chain"]["size"]
        manual = reader.con.execute(
            "SELECT count(*) FROM entries WHERE type = 'mutation.applied' "
            'AND data LIKE \'%"method":"manual"%\''
        ).fetchone()
        partial = reader.con.execute(
            "SELECT data FROM entries WHERE type = 'deployment.failed'"
        ).fetchone()
    assert manual is not None and manual[0] >= 1
    assert partial is not None and json.loads(partial[0])["instances"] == {"total": 5, "updated": 2}
    assert (tmp_path / "demo" / "keyring.json").exists()
    assert (tmp_path / "demo" / "keys" / "ci-github.key").stat().st_mode & 0o777 == 0o600
    # Its history breaks each rule of `ledger check` at least once, and the gate refuses.
    checked = summary["check"]
    assert {rule for rule, n in checked["counts"].items() if n} == set(RULES)
    assert [e["rule"] for e in checked["examples"]] and "passed" in checked["integrity"]
    assert summary["gate"]["allowed"] is False and len(summary["gate"]["reasons"]) == 2

    # The consumer signed checkpoints with the ledger key and appended them to the witness.
    ledger_pub = load_public_key(tmp_path / "demo" / "keys" / "ledger.pub")
    notes = split_notes((tmp_path / "demo.witness").read_text())
    assert len(notes) == summary["stats"]["checkpoints"] >= 1
    last = open_checkpoint(notes[-1], "ledger", ledger_pub)
    assert last.size == summary["chain"]["size"]
    # The answer it printed was written as an evidence bundle and verified offline, against
    # the checkpoint the consumer published.
    evidence = summary["evidence"]
    assert evidence["ok"] is True and evidence["trusted"] is True
    assert evidence["answer"] == summary["asof"]
    bundle = (tmp_path / "demo-evidence.json").read_bytes()
    report = verify_bundle(bundle, TrustedKey("ledger", ledger_pub))
    assert report.answer == summary["asof"]
    assert report.checkpoint == last
    assert report.entries == evidence["entries"]
    assert set(summary["asof"]["evidence"]["entries"]) <= set(report.entries)
    # ...and the auditor's report of the history, beside the ledger.
    assert summary["report"] == "demo-report.html"
    assert "Deployment audit report: prod" in (tmp_path / "demo-report.html").read_text()


def test_demo_prints_the_offline_check_of_its_evidence(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env["COLUMNS"] = "80"  # the narrowest common terminal: nothing may be cut off in it
    result = subprocess.run(
        [sys.executable, "-m", "ledger", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    # Rich shortens over-wide cells to an ellipsis unless told otherwise; it once made both
    # sides of the diff's image changes read "checkout@sha25…".
    assert "…" not in result.stdout
    report = verify_bundle(
        (tmp_path / "demo-evidence.json").read_bytes(),
        TrustedKey("ledger", load_public_key(tmp_path / "demo" / "keys" / "ledger.pub")),
    )
    for mutation in report.answer["mutations"]:  # each live change, with its whole hash
        assert f": {mutation['hash']}" in result.stdout
    name, _, digest = report.answer["deployment"]["image"].partition("@")
    short = f"{name.rsplit('/', 1)[-1]}@{digest.removeprefix('sha256:')[:12]}"
    assert "Evidence, checked offline: demo-evidence.json" in result.stdout
    assert f"answer re-derived for {short}" in result.stdout
    assert "ledger verify-bundle demo-evidence.json --trusted-key" in result.stderr
    checked = subprocess.run(
        [sys.executable, "-m", "ledger", "verify-bundle", "demo-evidence.json",
         "--trusted-key", "demo/keys/ledger.pub"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "signed by trusted ledger key 'ledger'" in checked.stderr


def test_demo_history_has_a_self_approval_and_a_missing_one() -> None:
    history = build_history(datetime(2026, 11, 26, tzinfo=UTC))
    events = [e for _, e in history.events]
    # Keyed as looked up: a change's ref is optional, a grant's is not.
    grants: dict[tuple[str, str | None], ApprovalGrantedEvent] = {
        (e.service, e.data.change_ref): e for e in events if e.type == "approval.granted"
    }
    changes = [
        e
        for e in events
        if e.type in ("deployment.succeeded", "mutation.applied")
        and getattr(e.data, "change_ref", None)
    ]
    missing = [c for c in changes if (c.service, c.data.change_ref) not in grants]
    self_approved = [
        c
        for c in changes
        if (g := grants.get((c.service, c.data.change_ref))) is not None
        and g.data.approver == c.actor
    ]
    assert any(c.service == "inventory" for c in missing)
    assert any(c.service == "sessions" for c in self_approved)


def test_demo_history_is_deterministic_apart_from_generated_ids() -> None:
    def shape(end: datetime) -> list[tuple[str, str, datetime, str]]:
        return [
            (key, e.type, e.time, e.data.model_dump_json()) for key, e in build_history(end).events
        ]

    end = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    assert shape(end) == shape(end)
    assert shape(end) != shape(datetime(2026, 11, 27, 9, 30, tzinfo=UTC))


def test_an_unreachable_broker_leaves_the_last_runs_results_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ledger demo --bootstrap WRONG` used to delete the last run's ledger, keys and bundle
    before finding out that the broker does not answer."""

    def unreachable(settings: Any, topics: Any) -> None:
        raise TransportError(f"cannot reach Kafka at {settings.bootstrap}: timed out")

    monkeypatch.setattr(demo_cli, "ensure_topics", unreachable)
    monkeypatch.chdir(tmp_path)
    kept = [Path("demo.duckdb"), Path("demo.witness"), Path("demo-evidence.json"),
            Path("demo/keyring.json"), Path("demo/keys/ledger.key")]  # fmt: skip
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"the last run's {path.name}")
    result = CliRunner().invoke(app, ["demo", "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 3  # a service could not be reached
    assert "cannot reach Kafka at 127.0.0.1:1" in result.stderr
    assert all(path.read_text() == f"the last run's {path.name}" for path in kept)


def test_a_demo_with_its_own_ledger_file_leaves_the_default_ones_alone(tmp_path: Path) -> None:
    """Every file the demo writes is named after --db and --dir: a second demo beside the
    first once overwrote the first one's evidence bundle."""
    kept = [tmp_path / "demo.duckdb", tmp_path / "demo-evidence.json", tmp_path / "demo.witness"]
    for path in kept:
        path.write_text(f"the default demo's {path.name}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    result = subprocess.run(
        [sys.executable, "-m", "ledger", "demo", "--db", "second.duckdb", "--dir", "second"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert all(path.read_text() == f"the default demo's {path.name}" for path in kept)
    key = TrustedKey("ledger", load_public_key(tmp_path / "second" / "keys" / "ledger.pub"))
    assert verify_bundle((tmp_path / "second-evidence.json").read_bytes(), key).trusted
    assert (tmp_path / "second.witness").exists()
