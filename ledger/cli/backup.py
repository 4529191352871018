"""`ledger backup`: a consistent copy of the ledger, verified before it is called one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.cli._common import (
    DEFAULT_DB,
    ApiUrl,
    DbPath,
    Exit,
    JsonFlag,
    LedgerKeyPath,
    OptionalKeyring,
    TrustedKeyPath,
    console,
    fail,
    keyring_or_default,
    print_json,
    reporting_errors,
    trusted_key,
)


def backup(
    out: Annotated[Path, typer.Option("--out", help="The backup file to write (a new file).")],
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    keyring: OptionalKeyring = None,
    trusted: TrustedKeyPath = None,
    json_out: JsonFlag = False,
) -> None:
    """Copy the ledger consistently, while the consumer runs or from the file, then verify the copy.

    With --api, through the running consumer (one snapshot, while it goes on chaining);
    else from --db. Exit 1 when the copy does not verify.

    Example: `ledger backup --api http://127.0.0.1:8787 --out /backups/ledger-2026-12-06.duckdb`"""
    if out.exists():
        fail(f"{out} already exists; a backup is written to a new file")
    from ledger.store.reader import LedgerReader
    from ledger.store.reports import verification_report

    with reporting_errors():
        ring = keyring_or_default(keyring)
        root = trusted_key(trusted)
        if api:
            from ledger.api.client import fetch_to_file

            fetch_to_file(api, "/v1/backup", out)
        else:
            if not db.exists():
                fail(f"{db} does not exist")
            from ledger.store.backup import backup_file

            backup_file(db, out)
        with LedgerReader(out) as copy:
            report: dict[str, Any] = verification_report(copy, ring, trusted=root)
    report = {"backup": str(out), "bytes": out.stat().st_size} | report
    if json_out:
        print_json(report)
    elif report["ok"]:
        console.print(f"backup {out}: {report['size']:,} entries, {report['bytes']:,} bytes, "
                      "verified" + ("" if report["signatures_checked"] else
                                    " (signatures not re-checked: give --keyring)"))  # fmt: skip
    else:
        console.print(f"backup {out} does NOT verify: {report['check']}: {report['reason']}",
                      style="red")  # fmt: skip
    if not report["ok"]:
        raise typer.Exit(Exit.CHECK_FAILED)


def restore(
    backup_file: Annotated[
        Path, typer.Option("--backup", help="The backup to put in place (ledger backup).")
    ],
    db: Annotated[
        Path, typer.Option("--db", envvar="LEDGER_DB", help="Where the ledger goes (a new file).")
    ],
    ledger_key: LedgerKeyPath = None,
    witness: Annotated[
        Path | None, typer.Option(help="Append the new checkpoint to this witness file.")
    ] = None,
    keyring: OptionalKeyring = None,
    json_out: JsonFlag = False,
) -> None:
    """Put a backup in place of a lost ledger, and state the restore, signed by the ledger key.

    The backup is verified first; the ledger key then states the restore as the next entry,
    and checkpoints the lost copy signed past it are reported as superseded by verify.

    Then start the consumer: it reads again what the topic holds after the backup's offsets.

    Example: `ledger restore --backup /backups/ledger-2026-12-06.duckdb --db ledger.duckdb
    --ledger-key ledger.key --witness ledger.witness`"""
    if ledger_key is None:
        fail("--ledger-key (LEDGER_LEDGER_KEY): the ledger key states the restore")
    if db.exists():
        fail(f"{db} exists: move the lost or damaged ledger away first (keep it as evidence)")
    import shutil

    from ledger.store.reader import LedgerReader
    from ledger.store.reports import verification_report
    from ledger.store.writer import LedgerWriter
    from ledger.transport.witness import append_note
    from ledger.wire.keyring import Signer

    with reporting_errors():
        signer = Signer.from_file(ledger_key)
        if not backup_file.exists():
            fail(f"{backup_file} does not exist")
        with LedgerReader(backup_file) as reader:
            checked = verification_report(reader, keyring_or_default(keyring))
        if not checked["ok"]:
            fail(f"the backup does not verify: {checked['check']}: {checked['reason']}",
                 Exit.CHECK_FAILED)  # fmt: skip
        shutil.copyfile(backup_file, db)
        writer = LedgerWriter(db, checkpoint_signer=signer)
        try:
            seq, note = writer.record_restore()
        finally:
            writer.close()
        if witness is not None:
            append_note(witness, note)
    if json_out:
        print_json({"db": str(db), "restored_size": seq - 1, "restore_seq": seq,
                    "checkpoint": note})  # fmt: skip
        return
    console.print(
        f"restored {db} from {backup_file} at size {seq - 1:,}; entry {seq} states it, signed "
        f"by {signer.key_id}; start the consumer, which reads again from the backup's offsets"
    )
