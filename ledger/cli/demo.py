"""`ledger demo`: the whole flow on the embedded default, from keys to a verified ledger."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress
from rich.table import Table

from consumers.ledger_consumer import LedgerConsumer
from ledger.broker import LocalBroker
from ledger.cli._common import Bootstrap, JsonFlag, console, out, print_json, reporting_errors
from ledger.cli.query import print_asof, print_diff
from ledger.demo import KEY_POLICIES, build_history, demo_keyring, emit_history, forged_messages
from ledger.integrity import verify_chain
from ledger.kafka import DEFAULT_TOPIC, KafkaSettings, ensure_topics
from ledger.query import asof, diff, snapshot
from ledger.store import LedgerReader


def demo(
    bootstrap: Bootstrap = None,
    db: Annotated[Path, typer.Option("--db", help="Ledger file to (re)create.")] = Path(
        "demo.duckdb"
    ),
    workdir: Annotated[
        Path, typer.Option("--dir", help="Where the demo's keys and keyring go.")
    ] = Path("demo"),
    json_out: JsonFlag = False,
) -> None:
    """Run the whole flow: broker, keys, three weeks of signed events, consume, verify, summary.

    Without --bootstrap (or LEDGER_BOOTSTRAP) it starts the bundled local broker on a free
    loopback port and stops it at the end.
    """
    with reporting_errors():
        _reset(db, workdir)
        if bootstrap:
            topic = f"ledger.demo.{uuid.uuid4().hex[:8]}"
            summary = _run(KafkaSettings(bootstrap, topic), db, workdir, json_out)
        else:
            with LocalBroker() as broker:
                console.print(f"started the local Kafka-compatible broker on {broker.bootstrap}")
                summary = _run(KafkaSettings(broker.bootstrap, DEFAULT_TOPIC), db, workdir,
                               json_out)
            console.print("stopped the local broker")
    if json_out:
        print_json(summary)
    else:
        _print_summary(summary)


def _reset(db: Path, workdir: Path) -> None:
    """Remove what an earlier demo run wrote (and only that)."""
    for path in (db, db.with_name(db.name + ".wal"), workdir / "keyring.json"):
        path.unlink(missing_ok=True)
    for key_id in KEY_POLICIES:
        for suffix in (".key", ".pub"):
            (workdir / "keys" / f"{key_id}{suffix}").unlink(missing_ok=True)


def _run(settings: KafkaSettings, db: Path, workdir: Path, quiet: bool) -> dict[str, Any]:
    signers, keyring = demo_keyring(workdir / "keys")
    keyring.save(workdir / "keyring.json")
    console.print(f"generated {len(signers)} signing keys in {workdir / 'keys'}; "
                  f"keyring {workdir / 'keyring.json'}")
    history = build_history(datetime.now(UTC))
    forged = forged_messages(history, signers["ci-github"])
    ensure_topics(settings, {settings.topic: 3, settings.dlq_topic: 1})
    total = len(history.events) + len(forged)
    with Progress("emitting", BarColumn(), MofNCompleteColumn(), console=console,
                  transient=True, disable=quiet or not console.is_terminal) as progress:
        task = progress.add_task("emit", total=total)
        emitted = emit_history(settings, history, signers, forged,
                               lambda n: progress.advance(task, n))
    console.print(f"emitted {emitted} signed events ({len(forged)} of them forged) "
                  f"to {settings.topic}")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    consumer = LedgerConsumer(settings, db, keyring)
    stats = consumer.run(until_idle=2.0)
    console.print(f"consumed into {db}: {stats.accepted} chained, "
                  f"{stats.quarantined} quarantined, {stats.duplicates} duplicates")
    reader = LedgerReader(db)
    try:
        report = verify_chain(reader.iter_entries())
        by_type = reader.con.execute(
            "SELECT type, count(*) FROM entries GROUP BY type ORDER BY type"
        ).fetchall()
        latest = [
            (answer.service, env, answer.deployment)
            for env in ("prod", "staging")
            for answer in snapshot(reader, env, history.end).services
            if answer.deployment is not None
        ]
        quarantined = [(q["reason"], q["detail"]) for q in reader.quarantine()]
        # The question the ledger exists for: what was live at 14:03 two days ago?
        moment = (history.end - timedelta(days=2)).replace(hour=14, minute=3)
        answer = asof(reader, "payments", "prod", moment).model_dump(mode="json")
        week = diff(reader, "prod", history.end - timedelta(days=7), history.end)
    finally:
        reader.close()
    return {
        "db": str(db),
        "topic": settings.topic,
        "history": {"from": history.start.isoformat(), "to": history.end.isoformat()},
        "stats": stats.as_dict(),
        "chain": {"ok": True, "size": report.size, "head_hash": report.head_hash},
        "entries_by_type": dict(by_type),
        "latest_deployments": [
            {"service": s, "environment": e, "image": d.image, "time": d.time.isoformat(),
             "actor": d.actor}
            for s, e, d in sorted(latest, key=lambda item: (item[0], item[1]))
        ],
        "quarantined": [{"reason": r, "detail": d} for r, d in quarantined],
        "asof": answer,
        "diff": week.model_dump(mode="json"),
    }


def _print_summary(summary: dict[str, Any]) -> None:
    console.print(f"verified: chain of {summary['chain']['size']} entries intact, "
                  f"head {summary['chain']['head_hash'][:16]}…\n")
    counts = Table("event type", "entries", title="What the ledger holds")
    for kind, n in summary["entries_by_type"].items():
        counts.add_row(kind, str(n))
    out.print(counts)
    latest = Table("service", "env", "image (digest)", "since", "by",
                   title="Latest deployment per service")
    for d in summary["latest_deployments"]:
        name, digest = d["image"].split("@")
        latest.add_row(d["service"], d["environment"], f"{name.rsplit('/', 1)[-1]}@{digest[:19]}…",
                       d["time"][:16].replace("T", " "), d["actor"])
    out.print(latest)
    refused = Table("reason", "detail", title="Refused and quarantined")
    for q in summary["quarantined"]:
        refused.add_row(q["reason"], q["detail"])
    out.print(refused)
    out.print("\n[bold]What was live?[/bold] ledger asof --service payments --env prod "
              f"--at {summary['asof']['at']}")
    print_asof(summary["asof"])
    out.print("\n[bold]What changed in prod in the last week?[/bold] "
              "ledger diff --env prod --from '1 week ago'")
    print_diff(summary["diff"])
    console.print(f"\nexplore it: ledger snapshot --db {summary['db']} --env prod; "
                  f"ledger timeline --db {summary['db']} --service search --env prod; "
                  f"ledger verify --db {summary['db']}")
