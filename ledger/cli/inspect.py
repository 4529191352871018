"""`ledger verify`, `ledger quarantine`, `ledger status`: check and inspect what was stored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from ledger.cli._common import (
    DEFAULT_DB,
    ApiUrl,
    DbPath,
    Exit,
    JsonFlag,
    OptionalKeyring,
    TrustedKeyPath,
    console,
    fail,
    keyring_or_default,
    local_or_remote,
    out,
    print_json,
    reporting_errors,
    short_time,
)
from ledger.cli._common import trusted_key as trusted_key_path
from ledger.cli._options import CONNECTION, Connection, shared
from ledger.cli._terminal import styled, table
from ledger.errors import ConfigurationError

if TYPE_CHECKING:
    from ledger.store.reader import LedgerReader
    from ledger.transport.settings import KafkaSettings

CheckpointFiles = Annotated[
    list[Path] | None,
    typer.Option(
        "--checkpoint",
        help="A witness file of signed checkpoints kept outside the "
        "ledger (repeatable): prove the ledger extends each. Needs --trusted-key.",
    ),
]
CheckpointTopic = Annotated[
    str | None,
    typer.Option(
        "--checkpoint-topic",
        help="A Kafka topic of signed checkpoints (the "
        "consumer's ledger.checkpoints): prove the ledger extends each. Needs "
        "--bootstrap and --trusted-key.",
    ),
]
_STAGES = {"chain": "hashes and links", "tree": "Merkle tree", "index": "query index",
           "keyrings": "keyring records", "signatures": "signatures",
           "checkpoints": "checkpoints"}  # fmt: skip


@shared("connection", CONNECTION)
def verify(
    connection: Connection,
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    keyring: OptionalKeyring = None,
    trusted_key: TrustedKeyPath = None,
    checkpoint: CheckpointFiles = None,
    checkpoint_topic: CheckpointTopic = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Signature-checking processes; default: cores.")
    ] = None,
    record: Annotated[
        bool,
        typer.Option(
            "--record",
            help="Write the result beside the ledger (DB.verified.json), where the consumer's "
            "metrics and alerts read it.",
        ),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Re-check everything stored: hashes, links, tree, checkpoints, every signature.

    Exit 1 naming the first bad entry and the check it failed (docs/formats.md §10). Run it
    on a schedule with --record, and alert on the result (docs/operations.md).

    Example: `ledger verify --db ledger.duckdb --trusted-key ledger.pub --checkpoint
    ledger.witness`"""
    from ledger.store.reports import verification_report

    with reporting_errors():
        if (checkpoint or checkpoint_topic) and trusted_key is None:
            given = "--checkpoint" if checkpoint else "--checkpoint-topic"
            fail(
                f"{given} needs --trusted-key (LEDGER_TRUSTED_KEY): the ledger's public "
                "key, kept apart from it, is what the checkpoints are checked against; "
                "nothing was verified",
                Exit.NO_TRUST_ROOT,
            )
        if api and (checkpoint or checkpoint_topic or trusted_key):
            fail(
                "--checkpoint, --checkpoint-topic and --trusted-key are checked against the "
                "file: use --db (a copy, or with the consumer stopped)"
            )
        settings = connection.settings(checkpoint_topic) if checkpoint_topic else None
        trusted = trusted_key_path(trusted_key)
        external = _witnessed(checkpoint or [])
        published = _published(settings) if settings is not None else []
        ring = keyring_or_default(keyring) if not api else None

        lines = not json_out and not console.is_terminal  # a CI job's log: a line a tenth

        def local(reader: LedgerReader) -> dict[str, Any]:
            with Progress(
                TextColumn("{task.description:>16}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                disable=json_out or lines,
            ) as bar:
                tasks: dict[str, TaskID] = {}
                tenths: dict[str, int] = {}

                def advance(stage: str, done: int, total: int) -> None:
                    if stage not in tasks:
                        tasks[stage] = bar.add_task(_STAGES[stage], total=total)
                    bar.update(tasks[stage], completed=done, total=total)
                    tenth = 10 * done // max(total, 1)
                    if lines and tenth > tenths.get(stage, 0):
                        tenths[stage] = tenth
                        console.print(
                            f"progress: {_STAGES[stage]} "
                            + (f"{done:,} of {total:,}" if total > 1 else "checked")
                        )

                return verification_report(
                    reader,
                    ring,
                    trusted=trusted,
                    external=external,
                    published=published,
                    workers=workers,
                    progress=advance,
                )

        report = local_or_remote(db, api, "/v1/verify", local)
        if record:
            from ledger.store.verified import write_record

            write_record(db, report)
    if json_out:
        print_json(report)
    else:
        _print_verification(report)
    if not report["ok"]:
        raise typer.Exit(Exit.CHECK_FAILED)


def _witnessed(paths: list[Path]) -> list[tuple[str, str]]:
    """(FILE#n, note) for every signed checkpoint note of the witness files."""
    from ledger.log.checkpoint import split_notes

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
    """(TOPIC[partition]@offset, note) for every record of the checkpoint topic (bytes
    that are no text are kept as they decode: they fail to open, and are skipped)."""
    from ledger.transport.topics import read_topic

    records = read_topic(settings, settings.topic)
    if not records:
        raise ConfigurationError(f"topic {settings.topic} holds no signed checkpoint")
    return [
        (f"{settings.topic}[{partition}]@{offset}", (value or b"").decode("utf-8", "replace"))
        for partition, offset, value in records
    ]


def _print_verification(report: dict[str, Any]) -> None:
    if not report["ok"]:
        where = f"at entry {report['first_bad_seq']} " if report["first_bad_seq"] else ""
        console.print(styled(("FAILED", "red"), f" {where}({report['check']}): {report['reason']}"))
        return
    console.print(
        styled(("OK", "green"), f" {report['size']:,} entries: hashes, links, Merkle "
               f"tree and query index intact ({report['algorithm']})")
    )  # fmt: skip
    out.print(f"head  {report['head_hash']}\nroot  {report['root']}")
    recorded = report["keyrings"]["recorded"]
    if report["signatures_checked"]:
        judged = f"the {recorded} keyring(s) the ledger recorded" if recorded else "the keyring"
        console.print(
            f"signatures: {report['signatures_verified']:,} re-verified and authorized by {judged}"
        )
    elif report["signatures_verified"]:
        console.print(
            f"signatures: only {report['signatures_verified']:,} re-verified, under "
            f"the keyrings the ledger recorded; the others name none: pass --keyring to "
            "judge them",
            style="yellow",
        )
    else:
        console.print(
            "signatures NOT re-verified: no keyring recorded in the ledger or "
            "given (pass --keyring), or read through --api (the server does not re-check "
            "them)",
            style="yellow",
        )
    for mark in report["compromised"]:
        where = (
            f"the keyring record at entry {mark['recorded_seq']}"
            if mark["recorded_seq"] is not None
            else "the keyring given (not yet recorded in the ledger)"
        )
        console.print(
            f"compromised: key {mark['key_id']} is revoked from {mark['revoked_at']} by "
            f"{where}; it signed {mark['entries']:,} entries the ledger witnessed since "
            f"(first: entry {mark['first_seq']}), accepted then and resting on it now",
            style="yellow",
        )
    if report["keyrings"]["given_matches_latest"] is False:
        console.print(
            "the keyring given is not the one the ledger recorded last: entries "
            "are judged under the keyrings recorded in the chain, not the file",
            style="yellow",
        )
    keys = report["ledger_keys"]
    if len(keys) > 1:
        console.print(
            "ledger keys: "
            + ", ".join(
                f"{k['key']} ({k['fingerprint'][:19]}…) from entry {k['since']}" for k in keys
            )
            + "; each named by a rotation the key before it signed"
        )
    cps = report["checkpoints"]
    if not cps["stored"] and not cps["external"]:
        console.print(
            "no signed checkpoint: a cut-off tail or a rewritten chain cannot be detected",
            style="yellow",
        )
        return
    latest = f", latest at size {cps['latest_size']:,}" if cps["latest_size"] else ""
    console.print(
        f"checkpoints: {cps['stored']} stored{latest}; {cps['external']} external "
        "consistent with the ledger"
    )
    for restore in report["restores"]:
        console.print(
            f"restored at size {restore['size']:,} (stated at entry {restore['seq']} by the "
            "ledger key)",
            style="yellow",
        )
    for superseded in cps["superseded"]:
        console.print(
            f"superseded: {superseded['where']} (size {superseded['size']:,}) was signed by the "
            f"copy lost before the restore at entry {superseded['restore_seq']}",
            style="yellow",
        )
    for skipped in cps["skipped"]:
        console.print(
            f"skipped {skipped['where']}: not the trusted key's checkpoint of this ledger: "
            f"{skipped['reason']}",
            style="yellow",
        )
    if not cps["trusted_key"]:
        console.print(
            "no --trusted-key: checkpoints were opened with the key stored "
            "beside them, so a rewrite by whoever holds the ledger file and a "
            "checkpoint key is not excluded",
            style="yellow",
        )


def quarantine(
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    after: Annotated[int, typer.Option(min=0, help="Only ids above this one.")] = 0,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many; default all.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """List quarantined messages: where they came from, why, and their raw bytes.

    Example: `ledger quarantine --db ledger.duckdb --limit 20`"""
    with reporting_errors():
        if api:
            from ledger.api.client import fetch_pages

            rows = fetch_pages(api, "/v1/quarantine", limit, after)
        else:
            from ledger.store.reports import quarantine_report

            rows = local_or_remote(db, None, "", lambda r: quarantine_report(r, after, limit))
    if json_out:
        print_json(rows)
        return
    grid = table("id", "received", "from", "bytes", "reason", "detail")
    for row in rows:
        size = row["value_size"]
        replayed = row.get("replayed_seq")
        grid.add_row(
            str(row["id"]),
            short_time(row["received_at"]),
            f"{row['kafka_topic']}[{row['kafka_partition']}]@{row['kafka_offset']}",
            "none" if size is None else f"{size:,}" + (" (cut)" if row["truncated"] else ""),
            row["reason"],
            row["detail"] + (f"\nreplayed: chained as entry {replayed}" if replayed else ""),
        )
    out.print(grid)
    console.print(f"{len(rows)} quarantined message(s)")


def status(db: DbPath = DEFAULT_DB, api: ApiUrl = None, json_out: JsonFlag = False) -> None:
    """Size, head hash, last ingestion time and quarantine count of the ledger.

    Example: `ledger status --db ledger.duckdb`"""
    from ledger.store.reports import status_report

    with reporting_errors():
        report = local_or_remote(db, api, "/v1/status", status_report)
    if json_out:
        print_json(report)
        return
    width = max(map(len, report))
    for name, value in report.items():
        out.print(f"{name:>{width}}  {value}")
