"""`ledger consume`, `ledger verify`, `ledger quarantine`: ingest, then check what was stored."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from consumers.ledger_consumer import CheckpointPolicy, LedgerConsumer
from ledger.api.server import parse_listen
from ledger.cli._common import (
    DEFAULT_DB,
    DEFAULT_KEYRING,
    DEFAULT_TOPIC,
    ApiToken,
    ApiUrl,
    Bootstrap,
    DbPath,
    JsonFlag,
    KeyringPath,
    SaslMechanism,
    SecurityProtocol,
    SslCafile,
    Topic,
    console,
    fail,
    kafka_settings,
    local_or_remote,
    out,
    print_json,
    reporting_errors,
)
from ledger.kafka import DEFAULT_CHECKPOINT_TOPIC
from ledger.keys import Keyring, Signer
from ledger.reports import quarantine_report, status_report, verification_report
from ledger.store import LedgerReader


def consume(
    bootstrap: Bootstrap = None,
    topic: Topic = DEFAULT_TOPIC,
    db: DbPath = DEFAULT_DB,
    keyring: KeyringPath = DEFAULT_KEYRING,
    group: Annotated[
        str, typer.Option(envvar="LEDGER_GROUP", help="Consumer group for lag monitoring.")
    ] = "deploy-ledger",
    until_idle: Annotated[
        float | None,
        typer.Option(help="Exit 0 after this many seconds with no new message."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Messages per transaction.")] = 5000,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Signature-verification processes; default: cores.")
    ] = None,
    security_protocol: SecurityProtocol = None,
    sasl_mechanism: SaslMechanism = None,
    ssl_cafile: SslCafile = None,
    serve: Annotated[
        str | None,
        typer.Option(envvar="LEDGER_SERVE", show_envvar=True,
                     help="Serve the read-only HTTP API on HOST:PORT (token: LEDGER_API_TOKEN)."),
    ] = None,
    api_token: ApiToken = None,
    checkpoint_key: Annotated[
        Path | None,
        typer.Option(envvar="LEDGER_CHECKPOINT_KEY", show_envvar=True,
                     help="The ledger's own private key: sign checkpoints of the tree."),
    ] = None,
    checkpoint_every: Annotated[
        int, typer.Option(min=1, envvar="LEDGER_CHECKPOINT_EVERY",
                          help="Sign a checkpoint after this many new entries...")
    ] = 10_000,
    checkpoint_seconds: Annotated[
        float, typer.Option(min=0.1, envvar="LEDGER_CHECKPOINT_SECONDS",
                            help="...or once the newest entries are this many seconds old.")
    ] = 30.0,
    checkpoint_topic: Annotated[
        str, typer.Option(envvar="LEDGER_CHECKPOINT_TOPIC", help="Topic checkpoints go to.")
    ] = DEFAULT_CHECKPOINT_TOPIC,
    witness: Annotated[
        Path | None,
        typer.Option(envvar="LEDGER_WITNESS", show_envvar=True,
                     help="File every checkpoint is appended to; default: DB with .witness."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every batch.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Verify signed events from Kafka and chain them into the ledger (runs until stopped).

    With --checkpoint-key, signed checkpoints of the Merkle tree go to the ledger, the
    checkpoint topic and the witness file (keep a copy of it away from the ledger).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    logging.getLogger("kafka").setLevel(logging.ERROR)
    with reporting_errors():
        listen = parse_listen(serve) if serve else None
        if listen and not api_token:
            fail("--serve needs a token: set LEDGER_API_TOKEN (or --api-token)")
        settings = kafka_settings(bootstrap, topic, security_protocol, sasl_mechanism, ssl_cafile)
        ring = Keyring.load(keyring)
        policy = None
        if checkpoint_key is not None:
            policy = CheckpointPolicy(
                Signer.from_file(checkpoint_key), witness or db.with_suffix(".witness"),
                checkpoint_topic, checkpoint_every, checkpoint_seconds,
            )
        elif witness is not None:
            fail("--witness needs --checkpoint-key (LEDGER_CHECKPOINT_KEY)")
        else:
            console.print("[yellow]no --checkpoint-key: no signed checkpoints, so truncation "
                          "of the ledger cannot be detected[/yellow]")
        consumer = LedgerConsumer(settings, db, ring, group=group, batch_size=batch_size,
                                  workers=workers, serve=listen, api_token=api_token,
                                  checkpoints=policy)

        def _stop(signum: int, frame: FrameType | None) -> None:
            console.print(f"{signal.Signals(signum).name}: finishing the current batch")
            consumer.stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        stats = consumer.run(until_idle=until_idle)
    if json_out:
        print_json(stats.as_dict())
    else:
        console.print(f"accepted {stats.accepted}, duplicates {stats.duplicates}, "
                      f"quarantined {stats.quarantined}, checkpoints {stats.checkpoints}")


def verify(db: DbPath = DEFAULT_DB, api: ApiUrl = None, json_out: JsonFlag = False) -> None:
    """Recompute every link of the chain from the stored bytes; exit 1 at the first bad entry."""

    def local(reader: LedgerReader) -> dict[str, Any]:
        with Progress("verifying", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True,
                      disable=json_out or not console.is_terminal) as progress:
            task = progress.add_task("entries", total=reader.size())
            return verification_report(reader, lambda n: progress.advance(task, n))

    with reporting_errors():
        report = local_or_remote(db, api, "/v1/verify", local)
    if json_out:
        print_json(report)
    elif report["ok"]:
        console.print(f"[green]OK[/green] {report['size']} entries, chain intact "
                      f"({report['algorithm']}); head {report['head_hash']}")
    else:
        console.print(f"[red]FAILED[/red] at entry {report['first_bad_seq']} "
                      f"({report['check']}): {report['reason']}")
    if not report["ok"]:
        raise typer.Exit(1)


def quarantine(db: DbPath = DEFAULT_DB, api: ApiUrl = None, json_out: JsonFlag = False) -> None:
    """List quarantined messages: where they came from, why, and their raw bytes."""
    with reporting_errors():
        rows = local_or_remote(db, api, "/v1/quarantine", quarantine_report)
    if json_out:
        print_json(rows)
        return
    table = Table("id", "received", "from", "reason", "detail")
    for row in rows:
        table.add_row(str(row["id"]), row["received_at"][:19].replace("T", " "),
                      f"{row['kafka_topic']}[{row['kafka_partition']}]@{row['kafka_offset']}",
                      row["reason"], row["detail"])
    out.print(table)
    console.print(f"{len(rows)} quarantined message(s)")


def status(db: DbPath = DEFAULT_DB, api: ApiUrl = None, json_out: JsonFlag = False) -> None:
    """Size, head hash, last ingestion time and quarantine count of the ledger."""
    with reporting_errors():
        report = local_or_remote(db, api, "/v1/status", status_report)
    if json_out:
        print_json(report)
        return
    for name, value in report.items():
        out.print(f"{name:>16}  {value}")
