"""`ledger consume`, `ledger verify`, `ledger quarantine`: ingest, then check what was stored."""

from __future__ import annotations

import base64
import logging
import signal
from types import FrameType
from typing import Annotated

import typer
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from consumers.ledger_consumer import LedgerConsumer
from ledger.cli._common import (
    DEFAULT_DB,
    DEFAULT_KEYRING,
    DEFAULT_TOPIC,
    Bootstrap,
    DbPath,
    JsonFlag,
    KeyringPath,
    SaslMechanism,
    SecurityProtocol,
    SslCafile,
    Topic,
    console,
    kafka_settings,
    out,
    print_json,
    reporting_errors,
)
from ledger.errors import ChainBrokenError
from ledger.integrity import verify_chain
from ledger.keys import Keyring
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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every batch.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Verify signed events from Kafka and chain them into the ledger (runs until stopped)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    logging.getLogger("kafka").setLevel(logging.ERROR)
    with reporting_errors():
        settings = kafka_settings(bootstrap, topic, security_protocol, sasl_mechanism, ssl_cafile)
        ring = Keyring.load(keyring)
        consumer = LedgerConsumer(settings, db, ring, group=group, batch_size=batch_size,
                                  workers=workers)

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
                      f"quarantined {stats.quarantined}")


def verify(db: DbPath = DEFAULT_DB, json_out: JsonFlag = False) -> None:
    """Recompute every link of the chain from the stored bytes; exit 1 at the first bad entry."""
    with reporting_errors():
        reader = LedgerReader(db)
        meta, total = reader.meta(), reader.size()
        try:
            with Progress("verifying", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=True,
                          disable=json_out or not console.is_terminal) as progress:
                task = progress.add_task("entries", total=total)
                report = verify_chain(reader.iter_entries(),
                                      lambda n: progress.advance(task, n))
        except ChainBrokenError as exc:
            if json_out:
                print_json({"ok": False, "db": str(db), "algorithm": meta.get("hash_algorithm"),
                            "first_bad_seq": exc.seq, "check": exc.check, "reason": exc.message})
            else:
                console.print(f"[red]FAILED[/red] at entry {exc.seq} ({exc.check}): {exc.message}")
            raise typer.Exit(1) from None
        finally:
            reader.close()
    if json_out:
        print_json({"ok": True, "db": str(db), "algorithm": meta.get("hash_algorithm"),
                    "size": report.size, "head_hash": report.head_hash})
    else:
        console.print(f"[green]OK[/green] {report.size} entries, chain intact "
                      f"({meta.get('hash_algorithm')}); head {report.head_hash}")


def quarantine(db: DbPath = DEFAULT_DB, json_out: JsonFlag = False) -> None:
    """List quarantined messages: where they came from, why, and their raw bytes."""
    with reporting_errors():
        reader = LedgerReader(db)
        rows = reader.quarantine()
        reader.close()
    if json_out:
        for row in rows:
            for name in ("kafka_key", "value"):
                raw = row[name]
                row[name] = base64.b64encode(bytes(raw)).decode() if raw is not None else None
        print_json(rows)
        return
    table = Table("id", "received", "from", "reason", "detail")
    for row in rows:
        table.add_row(str(row["id"]), f"{row['received_at']:%Y-%m-%d %H:%M:%S}",
                      f"{row['kafka_topic']}[{row['kafka_partition']}]@{row['kafka_offset']}",
                      row["reason"], row["detail"])
    out.print(table)
    console.print(f"{len(rows)} quarantined message(s) in {db}")
