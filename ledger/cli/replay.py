"""`ledger replay`: judge quarantined messages again under the keyring, on a stopped ledger."""

from __future__ import annotations

from ledger.cli._common import (
    DEFAULT_DB,
    DEFAULT_KEYRING,
    DbPath,
    JsonFlag,
    KeyringPath,
    console,
    fail,
    print_json,
    reporting_errors,
)


def replay(
    db: DbPath = DEFAULT_DB, keyring: KeyringPath = DEFAULT_KEYRING, json_out: JsonFlag = False
) -> None:
    """Judge quarantined messages again under the keyring, and chain those that now pass.

    For events refused only because their key was not trusted yet. Stop the consumer first
    (it is the ledger's one writer). What passes is chained now, marked as replayed, with
    its original Kafka coordinates; its quarantine row names the entry.

    Example: `ledger replay --db ledger.duckdb --keyring keyring.json`"""
    if not db.exists():
        fail(f"{db} does not exist")
    from ledger.store.replay import replay_quarantine
    from ledger.store.writer import LedgerWriter
    from ledger.wire.keyring import Keyring

    with reporting_errors():
        ring = Keyring.load(keyring)
        writer = LedgerWriter(db)
        try:
            report = replay_quarantine(writer, ring, f"file {keyring}")
        finally:
            writer.close()
    if json_out:
        print_json({
            "chained": [{"quarantine_id": q, "seq": s} for q, s in report.chained],
            "still_refused": dict(sorted(report.still_refused.items())),
            "duplicates": report.duplicates,
            "cut": report.cut,
        })  # fmt: skip
        return
    for quarantine_id, seq in report.chained:
        console.print(f"quarantined message {quarantine_id} chained as entry {seq} (replayed)")
    refused = ", ".join(f"{n} {reason}" for reason, n in sorted(report.still_refused.items()))
    console.print(
        f"{len(report.chained)} chained; still refused: {refused or 'none'}; "
        f"{report.duplicates} already chained; {report.cut} kept only in part"
    )
