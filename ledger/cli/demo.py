"""`ledger demo`: the whole flow on the embedded default, from keys to an offline-checked answer."""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress

from ledger.cli._common import (
    JsonFlag,
    console,
    out,
    print_json,
    reporting_errors,
    short_image,
    short_time,
)
from ledger.cli._options import CONNECTION, Connection, shared
from ledger.cli._terminal import styled, table
from ledger.cli.evidence import check_bundle_file, report_json
from ledger.cli.query import print_asof, print_diff
from ledger.demo import (
    GATED,
    KEY_POLICIES,
    LEDGER_KEY_ID,
    build_history,
    demo_keyring,
    emit_history,
    forged_messages,
    ledger_key,
)
from ledger.evidence.build import build_bundle
from ledger.evidence.bundle import AsOfQuery
from ledger.log.checkpoint import TrustedKey
from ledger.report.collect import gather
from ledger.report.formats import render, sidecars, truncated
from ledger.rules.catalogue import severity_rank
from ledger.store.check import check
from ledger.store.gate import gate
from ledger.store.integrity import verify_ledger
from ledger.store.query import asof, diff, snapshot
from ledger.store.reader import LedgerReader
from ledger.store.verified import record_path, write_record
from ledger.transport.broker import LocalBroker
from ledger.transport.settings import DEFAULT_CHECKPOINT_TOPIC, DEFAULT_TOPIC, KafkaSettings
from ledger.transport.topics import ensure_topics


@shared("connection", CONNECTION)
def demo(
    connection: Connection,
    db: Annotated[Path, typer.Option("--db", help="Ledger file to (re)create.")] = Path(
        "demo.duckdb"
    ),
    workdir: Annotated[
        Path, typer.Option("--dir", help="Where the demo's keys and keyring go.")
    ] = Path("demo"),
    json_out: JsonFlag = False,
) -> None:
    """Run the whole flow end to end, on a local broker unless one is given.

    Broker, keys, three weeks of signed events, consume with signed checkpoints, verify,
    ask, then write an evidence bundle and check it offline, and the auditor's report of
    the three weeks (an HTML file named after --db: demo-report.html).

    Without --bootstrap (or LEDGER_BOOTSTRAP) it starts the bundled local broker on a free
    loopback port and stops it at the end.

    Example: `ledger demo`"""
    with reporting_errors():
        if connection.bootstrap:
            topic = f"ledger.demo.{uuid.uuid4().hex[:8]}"
            console.print(f"using the broker at {connection.bootstrap} (topic {topic})")
            summary = _run(
                connection.settings(topic), f"{topic}.checkpoints", db, workdir, json_out
            )
        else:
            with LocalBroker() as broker:
                console.print(f"started the local Kafka-compatible broker on {broker.bootstrap}")
                summary = _run(
                    KafkaSettings(broker.bootstrap, DEFAULT_TOPIC),
                    DEFAULT_CHECKPOINT_TOPIC,
                    db,
                    workdir,
                    json_out,
                )
            console.print("stopped the local broker")
    if json_out:
        print_json(summary)
    else:
        _print_summary(summary)


def _witness(db: Path) -> Path:
    return db.with_suffix(".witness")  # where `ledger consume` puts it by default


def _bundle(db: Path) -> Path:
    return db.with_name(f"{db.stem}-evidence.json")  # demo.duckdb: demo-evidence.json


def _report(db: Path) -> Path:
    return db.with_name(f"{db.stem}-report.html")  # demo.duckdb: demo-report.html


def _reset(db: Path, workdir: Path) -> None:
    """Remove what an earlier demo run wrote (and only that)."""
    for path in (
        db,
        db.with_name(db.name + ".wal"),
        workdir / "keyring.json",
        _witness(db),
        _bundle(db),
        _report(db),
        *sidecars(_report(db)),
        record_path(db),
    ):
        path.unlink(missing_ok=True)
    for key_id in (*KEY_POLICIES, LEDGER_KEY_ID):
        for suffix in (".key", ".pub"):
            (workdir / "keys" / f"{key_id}{suffix}").unlink(missing_ok=True)


def _run(
    settings: KafkaSettings, checkpoint_topic: str, db: Path, workdir: Path, quiet: bool
) -> dict[str, Any]:
    from consumers.ledger_consumer import CheckpointPolicy, LedgerConsumer  # the service

    # The broker answers before anything of the last run is replaced.
    ensure_topics(settings, {settings.topic: 3, settings.dlq_topic: 1})
    _reset(db, workdir)
    signers, keyring = demo_keyring(workdir / "keys")
    keyring.save(workdir / "keyring.json")
    ledger_signer = ledger_key(workdir / "keys")
    console.print(
        f"generated {len(signers)} signing keys and the ledger's key in "
        f"{workdir / 'keys'}; keyring {workdir / 'keyring.json'}"
    )
    history = build_history(datetime.now(UTC))
    forged = forged_messages(history, signers["ci-github"])
    total = len(history.events) + len(forged)
    with Progress(
        "emitting",
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=quiet or not console.is_terminal,
    ) as progress:
        task = progress.add_task("emit", total=total)
        emitted = emit_history(
            settings, history, signers, forged, lambda n: progress.advance(task, n)
        )
    console.print(
        f"emitted {emitted} signed events ({len(forged)} of them forged) to {settings.topic}"
    )
    logging.getLogger("kafka").setLevel(logging.ERROR)
    # Batches of 50, a checkpoint after each 50 entries and one on the way out: a few
    # checkpoints to prove inclusion and consistency against.
    policy = CheckpointPolicy(ledger_signer, _witness(db), checkpoint_topic, every=50)
    consumer = LedgerConsumer(settings, db, keyring, batch_size=50, checkpoints=policy,
                              keyring_source=f"file {workdir / 'keyring.json'}")  # fmt: skip
    stats = consumer.run(until_idle=2.0)
    console.print(
        f"consumed into {db}: {stats.accepted} chained, "
        f"{stats.quarantined} quarantined, {stats.duplicates} duplicates; "
        f"{stats.checkpoints} signed checkpoints, also in {_witness(db)}"
    )
    with LedgerReader(db) as reader:
        trusted = TrustedKey(LEDGER_KEY_ID, ledger_signer.public_raw)
        report = verify_ledger(reader, keyring, trusted=trusted, workers=1).check()
        verified = write_record(db, {"size": report.size, "ok": True, "check": None,
                                     "signatures_checked": report.signatures_checked,
                                     "first_bad_seq": None})  # fmt: skip
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
        # ...and the answer as evidence an auditor checks without the ledger.
        query = AsOfQuery(kind="asof", service="payments", environment="prod", at=moment)
        bundle, _ = build_bundle(reader, query, keyring, ledger_signer)
        # The period against the team's process and policy; then a change about to be made.
        checked_period = check(reader, "prod", history.start, datetime.now(UTC),
                               verified=verified)  # fmt: skip
        refused = gate(reader, GATED)
        # ...and the period as a document an auditor reads and prints.
        document = gather(reader, "prod", history.start, history.end, verified=verified)
    _write_report(_report(db), document)
    _bundle(db).write_bytes(bundle)
    pub = workdir / "keys" / f"{LEDGER_KEY_ID}.pub"
    checked = check_bundle_file(_bundle(db), pub)
    return {
        "db": str(db),
        "topic": settings.topic,
        "history": {"from": history.start.isoformat(), "to": history.end.isoformat()},
        "stats": stats.as_dict(),
        "chain": {
            "ok": True,
            "size": report.size,
            "head_hash": report.head_hash.hex() if report.head_hash else None,
            "checkpoints": report.checkpoints_stored,
        },
        "entries_by_type": dict(by_type),
        "latest_deployments": [
            {
                "service": s,
                "environment": e,
                "image": d.image,
                "time": d.time.isoformat(),
                "actor": d.actor,
            }
            for s, e, d in sorted(latest, key=lambda item: (item[0], item[1]))
        ],
        "quarantined": [{"reason": r, "detail": d} for r, d in quarantined],
        "asof": answer,
        "diff": week.model_dump(mode="json"),
        "witness": str(_witness(db)),
        "check": _check_summary(checked_period.model_dump(mode="json")),
        "gate": {"change": asdict(GATED), **asdict(refused)},
        "evidence": {"path": str(_bundle(db)), "trusted_key": str(pub)} | report_json(checked),
        "report": str(_report(db)),
    }


def _write_report(path: Path, document: dict[str, Any]) -> None:
    """The HTML report; every finding beside it too when it lists only the top of a rule."""
    full = None
    if truncated(document):
        beside = sidecars(path)
        for extra, kind in zip(beside, ("csv", "json"), strict=True):
            extra.write_text(render(document, kind), encoding="utf-8")
        full = f"{beside[0].name} and {beside[1].name}, beside this file"
    path.write_text(render(document, "html", full=full), encoding="utf-8")


def _check_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The counts, the first finding of each rule, and the integrity statement."""
    first: dict[str, Any] = {}
    for finding in report["findings"]:
        first.setdefault(finding["rule"], finding)
    ranked = sorted(first.values(), key=lambda f: -severity_rank(f["severity"]))
    integrity = report["integrity"]["statement"]
    return {"from": report["from"], "to": report["to"], "counts": report["counts"],
            "examples": ranked, "integrity": integrity}  # fmt: skip


def _print_summary(summary: dict[str, Any]) -> None:
    chain = summary["chain"]
    console.print(
        f"verified: chain of {chain['size']} entries intact, "
        f"{chain['checkpoints']} signed checkpoints consistent with it, "
        f"head {chain['head_hash'][:16]}…\n"
    )
    counts = table("event type", "entries", title="What the ledger holds")
    for kind, n in summary["entries_by_type"].items():
        counts.add_row(kind, str(n))
    out.print(counts)
    latest = table(
        "service", "env", "image (digest)", "since", "by", title="Latest deployment per service"
    )
    for d in summary["latest_deployments"]:
        latest.add_row(
            d["service"],
            d["environment"],
            short_image(d["image"]),
            short_time(d["time"], seconds=False),
            d["actor"],
        )
    out.print(latest)
    refused = table("reason", "detail", title="Refused and quarantined")
    for q in summary["quarantined"]:
        refused.add_row(q["reason"], q["detail"])
    out.print(refused)
    out.print(
        styled("\n", ("What was live?", "bold"),
               f" ledger asof --service payments --env prod --at {summary['asof']['at']}")
    )  # fmt: skip
    print_asof(summary["asof"])
    out.print(
        styled("\n", ("What changed in prod in the last week?", "bold"),
               " ledger diff --env prod --from '1 week ago'")
    )  # fmt: skip
    print_diff(summary["diff"])
    _print_check(summary["check"], summary["gate"])
    evidence = summary["evidence"]
    out.print(
        styled("\n", ("Evidence, checked offline:", "bold"),
               f" {evidence['path']}: {len(evidence['entries'])} signed entries, each proven "
               f"in the checkpoint of size {evidence['checkpoint']['size']}; answer re-derived "
               f"for {short_image(evidence['subjects'][0])} ", ("OK", "green"))
    )  # fmt: skip
    out.print(
        styled("\n", ("The auditor's report:", "bold"),
               f" {summary['report']}: the period's findings by requirement, the pilot "
               "numbers and a timeline per service, in one self-contained HTML file")
    )  # fmt: skip
    keys = Path(evidence["trusted_key"]).parent
    console.print(
        f"\nexplore it: ledger snapshot --db {summary['db']} --env prod; "
        f"ledger verify --db {summary['db']} --keyring {keys.parent / 'keyring.json'} "
        f"--trusted-key {evidence['trusted_key']} --checkpoint {summary['witness']}; "
        f"ledger verify-bundle {evidence['path']} "
        f"--trusted-key {evidence['trusted_key']}"
    )


def _print_check(checked: dict[str, Any], gated: dict[str, Any]) -> None:
    out.print(
        styled("\n", ("Did prod follow the process and the horizon policy?", "bold"),
               f" ledger check --env prod --from {checked['from'][:16]}")
    )  # fmt: skip
    grid = table("rule", "findings", "severity", "for example", "entries")
    for example in checked["examples"]:
        seqs = ", ".join(str(c["seq"]) for c in example["entries"][:4])
        grid.add_row(example["rule"], str(checked["counts"][example["rule"]]),
                     example["severity"], example["message"], seqs or "-")  # fmt: skip
    out.print(grid)
    out.print(f"integrity: {checked['integrity']}")
    change = gated["change"]
    out.print(
        styled("\n", ("May this change go out?", "bold"),
               f" ledger gate --service {change['service']} --env {change['environment']} "
               f"--actor {change['actor']} --image {short_image(change['image'])} "
               f"--change-ref {change['change_ref']}")
    )  # fmt: skip
    for reason in gated["reasons"]:
        out.print(styled(("refused", "red"), f": {reason}"))
