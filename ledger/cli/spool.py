"""`ledger spool`: send what producers spooled when Kafka did not take it, and say what is
pending (the spool's format and guarantees: ledger.transport.spool, docs/reliability.md)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledger.cli._common import (
    DeliveryTimeout,
    Exit,
    JsonFlag,
    console,
    fail,
    new_app,
    out,
    print_json,
    reporting_errors,
)
from ledger.cli._options import CONNECTION, Connection, shared
from ledger.cli._terminal import table

if TYPE_CHECKING:
    from ledger.transport.spool import FlushResult, SpoolFile, Unreadable

app = new_app(
    "Send the events a producer spooled when Kafka did not take them, or say what is pending."
    "\n\nA producer command given --spool DIR (or LEDGER_SPOOL) writes the signed events the "
    "broker did not acknowledge to a file of its own in DIR, and exits 5."
)


@app.callback()
def spool() -> None:
    """Send the events a producer spooled when Kafka did not take them, or say what is pending."""


SpoolDir = Annotated[
    Path,
    typer.Argument(metavar="DIR", help="The spool directory (the producers' --spool)."),
]


@app.command()
@shared("connection", CONNECTION)
def flush(
    connection: Connection,
    directory: SpoolDir,
    topic: Annotated[
        str | None,
        typer.Option(
            "--topic",
            help="Send every event to this topic; default: the topic each was spooled for.",
        ),
    ] = None,
    timeout: DeliveryTimeout = 120.0,
    json_out: JsonFlag = False,
) -> None:
    """Send every spooled event, the exact bytes signed (no key needed), oldest file first;
    a file is removed once the broker acknowledged every event in it.

    Sending twice is safe: the ledger records an event id once. Exit 3 when the broker did
    not take them all: what it did not acknowledge stays spooled.

    A line cut short by a crash is named with its file and line number (exit 1, once every
    other event was sent), and its file kept as FILE.damaged.

    Example: `ledger spool flush /var/spool/ledger --bootstrap kafka-1:9092`"""
    from ledger.transport import spool as spooled
    from ledger.transport.settings import DEFAULT_TOPIC

    with reporting_errors():
        settings = connection.settings(topic or DEFAULT_TOPIC)  # no broker named: exit 2 now
    producers = []

    def connect() -> Any:
        from ledger.transport.producer import LedgerProducer

        producers.append(LedgerProducer(None, settings))
        return producers[-1]

    try:
        with reporting_errors():
            result = spooled.flush(directory, connect, timeout, topic)
    finally:
        for producer in producers:
            with contextlib.suppress(Exception):  # what it still held stays spooled
                producer.close()
    _report_flush(directory, result, json_out)


def _report_flush(directory: Path, result: FlushResult, json_out: bool) -> None:
    if json_out:
        print_json(
            {
                "sent": len(result.delivered),
                "files_sent": [str(p) for p in result.sent_files],
                "damaged": [str(p) for p in result.damaged_files],
                "unreadable": [_unreadable(u) for u in result.unreadable],
                "in_use": [str(p) for p in result.in_use],
                "still_spooled": result.still_spooled,
                "error": result.failure,
                "delivered": [d.__dict__ for d in result.delivered],
            }
        )
    else:
        kept = {p.with_suffix("") for p in result.damaged_files}  # FILE.jsonl.damaged
        for path in result.sent_files:
            console.print(f"sent {path}" + ("" if path in kept else ", removed"))
        if result.sent_files or result.delivered:
            console.print(
                f"{len(result.delivered)} event(s) sent from {len(result.sent_files)} file(s) "
                "and acknowledged"
            )
        elif not result.failure:
            console.print(f"nothing to flush in {directory}")
        _print_unreadable(result.unreadable)
        for path in result.damaged_files:
            console.print(
                f"note: {path} kept: its unreadable line(s) named above are lost; every other "
                "event in it was sent. Remove it once looked at",
                style="yellow",
            )
        for path in result.in_use:
            console.print(
                f"note: {path} is being written or flushed by another process: left for the "
                "next flush",
                style="yellow",
            )
    if result.failure:
        fail(
            f"{result.failure}; {result.still_spooled} event(s) stay spooled in {directory}: run "
            f"`ledger spool flush {directory}` again once the broker answers",
            Exit.UNREACHABLE,
        )
    if result.unreadable:
        raise typer.Exit(Exit.CHECK_FAILED)


@app.command()
def status(directory: SpoolDir, json_out: JsonFlag = False) -> None:
    """What is spooled and not sent yet: files, events, the oldest and newest spooled time
    and the oldest's age; lines that cannot be read, by file and line number.

    Example: `ledger spool status /var/spool/ledger --json`"""
    from ledger.transport import spool as spooled

    now = datetime.now(UTC)
    files = spooled.pending(directory)
    summary = spooled.summary(files, now)
    damaged = spooled.damaged(directory)
    if json_out:
        print_json({"directory": str(directory), **summary,
                    "damaged": [str(p) for p in damaged]})  # fmt: skip
        return
    if not directory.is_dir():
        console.print(f"note: there is no directory {directory}: nothing spooled there")
        return
    _print_status(directory, files, summary)
    _print_unreadable([u for f in files for u in f.unreadable])
    for path in damaged:
        console.print(
            f"note: {path} holds lines that could not be read; every other event in it was "
            "sent. Remove it once looked at",
            style="yellow",
        )


def _print_status(directory: Path, files: list[SpoolFile], summary: dict[str, Any]) -> None:
    if not summary["events"] and not files:
        out.print(f"nothing pending in {directory}")
        return
    line = f"{directory}: {summary['events']} event(s) pending in {summary['files']} file(s)"
    if summary["oldest"]:
        line += (
            f", oldest spooled {summary['oldest']} ({_age(summary['age_seconds'])} ago), "
            f"newest {summary['newest']}"
        )
    out.print(line)
    grid = table("file", "events", "oldest", "newest", "unreadable")
    for row in summary["by_file"]:
        grid.add_row(
            Path(row["file"]).name,
            "in use" if row["in_use"] else str(row["events"]),
            row["oldest"] or "-",
            row["newest"] or "-",
            str(row["unreadable"]),
        )
    out.print(grid)


def _unreadable(line: Unreadable) -> dict[str, Any]:
    return {"file": str(line.file), "line": line.line, "reason": line.reason}


def _print_unreadable(lines: list[Unreadable]) -> None:
    for line in lines:
        console.print(f"unreadable: {line}", style="red")


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
