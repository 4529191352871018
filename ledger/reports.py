"""JSON-ready answers shared by the CLI and the HTTP API, so both print the same thing."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from ledger.errors import ChainBrokenError
from ledger.integrity import verify_chain
from ledger.store import LedgerReader

__all__ = ["quarantine_report", "status_report", "verification_report"]


def verification_report(
    reader: LedgerReader, progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """``ok`` with size and head, or the first bad entry, the check it failed and why."""
    meta = reader.meta()
    base = {"algorithm": meta.get("hash_algorithm"), "ledger_id": meta.get("ledger_id")}
    try:
        report = verify_chain(reader.iter_entries(), progress)
    except ChainBrokenError as exc:
        return base | {"ok": False, "first_bad_seq": exc.seq, "check": exc.check,
                       "reason": exc.message}
    return base | {"ok": True, "size": report.size, "head_hash": report.head_hash}


def quarantine_report(reader: LedgerReader) -> list[dict[str, Any]]:
    """Quarantined messages with their raw key and value in base64."""
    rows = reader.quarantine()
    for row in rows:
        row["received_at"] = row["received_at"].isoformat()
        for name in ("kafka_key", "value"):
            raw = row[name]
            row[name] = base64.b64encode(bytes(raw)).decode("ascii") if raw is not None else None
    return rows


def status_report(reader: LedgerReader) -> dict[str, Any]:
    meta = reader.meta()
    head = reader.one("SELECT seq, hash, ingested_at FROM entries ORDER BY seq DESC LIMIT 1")
    quarantined = reader.one("SELECT count(*) FROM quarantine")
    return {
        "ledger_id": meta.get("ledger_id"),
        "algorithm": meta.get("hash_algorithm"),
        "format_version": meta.get("format_version"),
        "size": head[0] if head else 0,
        "head_hash": bytes(head[1]).hex() if head else None,
        "last_ingested_at": head[2].isoformat() if head else None,
        "quarantined": quarantined[0] if quarantined else 0,
    }
