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
            from ledger.store.backup import backup_to

            with LedgerReader(db) as reader:
                backup_to(reader.con, out)
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
