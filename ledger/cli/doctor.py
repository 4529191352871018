"""`ledger doctor`: check a deployment end to end, one line per check."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ledger.cli._common import (
    DEFAULT_DB,
    DEFAULT_KEYRING,
    CheckpointTopicOpt,
    DbPath,
    EventTopic,
    Exit,
    JsonFlag,
    KeyringPath,
    out,
    print_json,
    reporting_errors,
)
from ledger.cli._options import CONNECTION, Connection, shared
from ledger.cli._terminal import styled
from ledger.transport.settings import DEFAULT_CHECKPOINT_TOPIC, DEFAULT_TOPIC

_STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


@shared("connection", CONNECTION)
def doctor(
    connection: Connection,
    topic: EventTopic = DEFAULT_TOPIC,
    checkpoint_topic: CheckpointTopicOpt = DEFAULT_CHECKPOINT_TOPIC,
    db: DbPath = DEFAULT_DB,
    keyring: KeyringPath = DEFAULT_KEYRING,
    witness: Annotated[
        Path | None,
        typer.Option(envvar="LEDGER_WITNESS", help="Witness file; default: DB with .witness."),
    ] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the broker.")] = 10.0,
    json_out: JsonFlag = False,
) -> None:
    """Check a deployment end to end: broker, topics and their retention, keyring, ledger,
    witness file, ledger key, last recorded verification.

    One line per check (ok, warn, fail); exit 1 when any check fails.

    Example: `ledger doctor --bootstrap kafka-1:9092 --db ledger.duckdb --keyring keyring.json`"""
    from ledger.doctor import diagnose

    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # the findings say it once
    with reporting_errors():
        settings = connection.settings(topic)
        findings = list(diagnose(settings, checkpoint_topic, db, keyring, witness, timeout))
    if json_out:
        print_json([f.__dict__ for f in findings])
    else:
        for f in findings:
            out.print(styled((f"{f.status:<4}", _STYLE[f.status]), f"  {f.check}: {f.detail}"))
    if any(f.status == "fail" for f in findings):
        raise typer.Exit(Exit.CHECK_FAILED)
