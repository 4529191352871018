"""`ledger consume`, `ledger verify`, `ledger quarantine`: ingest, then check what was stored."""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

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
    short_time,
    table,
)
from ledger.cli.proof import TrustedKeyOption
from ledger.cli.proof import trusted_key as trusted_key_from
from ledger.errors import ConfigurationError
from ledger.log.checkpoint import split_notes
from ledger.store.reader import LedgerReader
from ledger.store.reports import quarantine_report, status_report, verification_report
from ledger.transport.settings import DEFAULT_CHECKPOINT_TOPIC, KafkaSettings
from ledger.transport.topics import read_topic
from ledger.wire.keyring import Keyring, Signer

log = logging.getLogger("ledger.consumer")


def _log_handler() -> logging.Handler:
    """Rich on a terminal; otherwise one plain line per record with a UTC timestamp, as log
    collectors (docker logs, journald) take them: Rich wraps a record over several lines at
    80 columns, and each line would arrive as a record of its own."""
    if console.is_terminal:
        rich = RichHandler(console=console, show_path=False,
                           log_time_format="[%Y-%m-%d %H:%M:%S]")
        rich.setFormatter(logging.Formatter("%(message)s"))
        return rich
    plain = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                  "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    plain.setFormatter(formatter)
    return plain


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
        typer.Option(min=0, help="Exit 0 after this many seconds with no new message."),
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
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        handlers=[_log_handler()])
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
            log.warning("no --checkpoint-key: no signed checkpoints, so truncation of the "
                        "ledger cannot be detected")
        if not ring.keys:
            log.warning("keyring %s trusts no key: every event will be quarantined "
                        "(unknown_key); add keys with `ledger keys trust`", keyring)
        consumer = LedgerConsumer(settings, db, ring, group=group, batch_size=batch_size,
                                  workers=workers, serve=listen, api_token=api_token,
                                  checkpoints=policy)

        def _stop(signum: int, frame: FrameType | None) -> None:
            log.info("%s: finishing the current batch", signal.Signals(signum).name)
            consumer.stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        stats = consumer.run(until_idle=until_idle)
    if json_out:
        print_json(stats.as_dict())
    else:
        console.print(f"accepted {stats.accepted}, duplicates {stats.duplicates}, "
                      f"quarantined {stats.quarantined}, checkpoints {stats.checkpoints}")


OptionalKeyring = Annotated[
    Path | None,
    typer.Option("--keyring", envvar="LEDGER_KEYRING", show_envvar=True,
                 help="Keyring to re-verify every signature with (default: keyring.json "
                      "when present; without one, signatures are not re-verified)."),
]
CheckpointFiles = Annotated[
    list[Path] | None,
    typer.Option("--checkpoint", help="A witness file of signed checkpoints kept outside the "
                 "ledger (repeatable): prove the ledger extends each. Needs --trusted-key."),
]
CheckpointTopic = Annotated[
    str | None,
    typer.Option("--checkpoint-topic", help="A Kafka topic of signed checkpoints (the "
                 "consumer's ledger.checkpoints): prove the ledger extends each. Needs "
                 "--bootstrap and --trusted-key."),
]
_STAGES = {"chain": "hashes and links", "tree": "Merkle tree", "index": "query index",
           "signatures": "signatures", "checkpoints": "checkpoints"}  # fmt: skip


def verify(
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    keyring: OptionalKeyring = None,
    trusted_key: TrustedKeyOption = None,
    checkpoint: CheckpointFiles = None,
    checkpoint_topic: CheckpointTopic = None,
    bootstrap: Bootstrap = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Signature-checking processes; default: cores.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Re-check everything stored: hashes, links, tree, checkpoints, every signature.

    Exit 1 naming the first bad entry and the check it failed (docs/formats.md §10).
    """
    with reporting_errors():
        if (checkpoint or checkpoint_topic) and trusted_key is None:
            given = "--checkpoint" if checkpoint else "--checkpoint-topic"
            fail(f"{given} needs --trusted-key (LEDGER_TRUSTED_KEY): the ledger's public "
                 "key, kept apart from it, is what the checkpoints are checked against")
        if api and (checkpoint or checkpoint_topic or trusted_key):
            fail("--checkpoint, --checkpoint-topic and --trusted-key are checked against the "
                 "file: use --db (a copy, or with the consumer stopped)")
        settings = kafka_settings(bootstrap, checkpoint_topic) if checkpoint_topic else None
        trusted = trusted_key_from(trusted_key)
        external = _witnessed(checkpoint or [])
        if settings is not None:
            external += _published(settings)
        ring = _keyring(keyring) if not api else None

        lines = not json_out and not console.is_terminal  # a CI job's log: a line a tenth

        def local(reader: LedgerReader) -> dict[str, Any]:
            with Progress(TextColumn("{task.description:>16}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                          transient=True, disable=json_out or lines) as bar:
                tasks: dict[str, TaskID] = {}
                tenths: dict[str, int] = {}

                def advance(stage: str, done: int, total: int) -> None:
                    if stage not in tasks:
                        tasks[stage] = bar.add_task(_STAGES[stage], total=total)
                    bar.update(tasks[stage], completed=done, total=total)
                    tenth = 10 * done // max(total, 1)
                    if lines and tenth > tenths.get(stage, 0):
                        tenths[stage] = tenth
                        console.print(f"progress: {_STAGES[stage]} " + (
                            f"{done:,} of {total:,}" if total > 1 else "checked"))

                return verification_report(reader, ring, trusted=trusted, external=external,
                                           workers=workers, progress=advance)

        report = local_or_remote(db, api, "/v1/verify", local)
    if json_out:
        print_json(report)
    else:
        _print_verification(report)
    if not report["ok"]:
        raise typer.Exit(1)


def _keyring(path: Path | None) -> Keyring | None:
    """The keyring given, else keyring.json when present; None: signatures not re-checked."""
    if path is None:
        if not DEFAULT_KEYRING.exists():
            return None
        path = DEFAULT_KEYRING
    return Keyring.load(path)


def _witnessed(paths: list[Path]) -> list[tuple[str, str]]:
    """(FILE#n, note) for every signed checkpoint note of the witness files."""
    notes: list[tuple[str, str]] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read checkpoint file {path}: {exc}") from None
        found = split_notes(text)
        if not found:
            raise ConfigurationError(f"{path} holds no signed checkpoint")
        notes += [(f"{path}#{i}", note) for i, note in enumerate(found, 1)]
    return notes


def _published(settings: KafkaSettings) -> list[tuple[str, str]]:
    """(TOPIC[partition]@offset, note) for every record of the checkpoint topic."""
    records = read_topic(settings, settings.topic)
    if not records:
        raise ConfigurationError(f"topic {settings.topic} holds no signed checkpoint")
    notes: list[tuple[str, str]] = []
    for partition, offset, value in records:
        where = f"{settings.topic}[{partition}]@{offset}"
        try:
            notes.append((where, value.decode("utf-8")))
        except UnicodeDecodeError:
            raise ConfigurationError(f"{where} is not a signed checkpoint note") from None
    return notes


def _print_verification(report: dict[str, Any]) -> None:
    if not report["ok"]:
        where = f"at entry {report['first_bad_seq']} " if report["first_bad_seq"] else ""
        console.print(f"[red]FAILED[/red] {where}({report['check']}): {report['reason']}")
        return
    console.print(f"[green]OK[/green] {report['size']:,} entries: hashes, links, Merkle "
                  f"tree and query index intact ({report['algorithm']})")
    out.print(f"head  {report['head_hash']}\nroot  {report['root']}")
    if report["signatures_checked"]:
        console.print(f"signatures: {report['signatures_verified']:,} re-verified and "
                      "authorized by the keyring")
    else:
        console.print("[yellow]signatures NOT re-verified: no keyring (pass --keyring), or "
                      "read through --api (the server does not re-check them)[/yellow]")
    cps = report["checkpoints"]
    if not cps["stored"] and not cps["external"]:
        console.print("[yellow]no signed checkpoint: a cut-off tail or a rewritten chain "
                      "cannot be detected[/yellow]")
        return
    latest = f", latest at size {cps['latest_size']:,}" if cps["latest_size"] else ""
    console.print(f"checkpoints: {cps['stored']} stored{latest}; {cps['external']} external "
                  "consistent with the ledger")
    if not cps["trusted_key"]:
        console.print("[yellow]no --trusted-key: checkpoints were opened with the key stored "
                      "beside them, so a rewrite by whoever holds the ledger file and a "
                      "checkpoint key is not excluded[/yellow]")


def quarantine(db: DbPath = DEFAULT_DB, api: ApiUrl = None, json_out: JsonFlag = False) -> None:
    """List quarantined messages: where they came from, why, and their raw bytes."""
    with reporting_errors():
        rows = local_or_remote(db, api, "/v1/quarantine", quarantine_report)
    if json_out:
        print_json(rows)
        return
    grid = table("id", "received", "from", "reason", "detail")
    for row in rows:
        grid.add_row(str(row["id"]), short_time(row["received_at"]),
                     f"{row['kafka_topic']}[{row['kafka_partition']}]@{row['kafka_offset']}",
                     row["reason"], row["detail"])
    out.print(grid)
    console.print(f"{len(rows)} quarantined message(s)")


def status(db: DbPath = DEFAULT_DB, api: ApiUrl = None, json_out: JsonFlag = False) -> None:
    """Size, head hash, last ingestion time and quarantine count of the ledger."""
    with reporting_errors():
        report = local_or_remote(db, api, "/v1/status", status_report)
    if json_out:
        print_json(report)
        return
    width = max(map(len, report))
    for name, value in report.items():
        out.print(f"{name:>{width}}  {value}")
