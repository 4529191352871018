"""JSON-ready answers shared by the CLI and the HTTP API, so both print the same thing."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ledger.log.checkpoint import parse_verifier_key
from ledger.store.index import RUNS, run_last
from ledger.store.integrity import Progress, verify_ledger
from ledger.store.reader import LedgerReader
from ledger.wire.keyring import iso_utc, key_fingerprint

if TYPE_CHECKING:
    from ledger.log.checkpoint import TrustedKey
    from ledger.wire.keyring import Keyring

__all__ = ["quarantine_report", "status_report", "verification_report"]


def verification_report(
    reader: LedgerReader,
    keyring: Keyring | None = None,
    *,
    signatures: bool = True,
    trusted: TrustedKey | None = None,
    external: Sequence[tuple[str, str]] = (),
    published: Sequence[tuple[str, str]] = (),
    workers: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """What ``ledger verify`` established (ledger/integrity.py), or its first failure.

    Without a keyring to judge under (none recorded, none given) or with ``signatures``
    False the per-entry signature checks are skipped: ``signatures_checked`` is false.
    ``first_bad_seq`` names the first bad entry (for a truncation, the first missing one;
    null when a checkpoint shows a rewrite that no single entry reveals).
    """
    meta = reader.meta()
    report = verify_ledger(reader, keyring, signatures=signatures, trusted=trusted,
                           external=external, published=published, workers=workers,
                           progress=progress)  # fmt: skip
    failure = report.failure
    return {
        "ok": report.ok,
        "ledger_id": meta.get("ledger_id"),
        "algorithm": meta.get("hash_algorithm"),
        "size": report.size,
        "head_hash": report.head_hash.hex() if report.head_hash is not None else None,
        "root": base64.b64encode(report.root).decode() if report.root is not None else None,
        "checkpoints": {
            "stored": report.checkpoints_stored,
            "external": report.checkpoints_external,
            "trusted_key": report.trusted_key,
            "latest_size": report.latest_checkpoint_size,
            "skipped": [{"where": w, "reason": r} for w, r in report.checkpoints_skipped],
            "superseded": [
                {"where": w, "size": n, "restore_seq": r}
                for w, n, r in report.checkpoints_superseded
            ],
        },
        "signatures_checked": report.signatures_checked,
        "signatures_verified": report.signatures_verified,
        "keyrings": {
            "recorded": report.keyrings_recorded,
            "given_matches_latest": report.keyring_file_matches,
        },
        "restores": [{"seq": r.seq, "size": r.size} for r in report.restores],
        "ledger_keys": [
            {"since": key.since, "key": key.name, "fingerprint": _fingerprint(key.vkey)}
            for key in report.ledger_keys
        ],
        "compromised": [
            {
                "key_id": revocation.key_id,
                "revoked_at": iso_utc(revocation.revoked_at),
                "recorded_seq": revocation.recorded_seq,
                "entries": count,
                "first_seq": first,
            }
            for revocation, count, first in report.compromised
        ],
        "first_bad_seq": report.first_bad_seq,
        "check": failure.check if failure is not None else None,
        "reason": failure.message if failure is not None else None,
        "timings": report.timings,
    }


def _fingerprint(vkey: str) -> str:
    return key_fingerprint(parse_verifier_key(vkey)[1])


def quarantine_report(
    reader: LedgerReader, after: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """Quarantined messages (ids above ``after``, at most ``limit``) with what was kept of
    their raw key and value in base64, and ``truncated``: whether either was cut
    (``value_size``, ``key_size``: the whole)."""
    rows = reader.quarantine(after, limit)
    for row in rows:
        row["received_at"] = row["received_at"].isoformat()
        row["truncated"] = any(
            row[size] is not None and row[size] != len(row[kept])
            for kept, size in (("kafka_key", "key_size"), ("value", "value_size"))
        )
        for name in ("kafka_key", "value"):
            raw = row[name]
            row[name] = base64.b64encode(bytes(raw)).decode("ascii") if raw is not None else None
    return rows


def status_report(reader: LedgerReader) -> dict[str, Any]:
    meta = reader.meta()
    head = reader.one("SELECT seq, hash, ingested_at FROM entries ORDER BY seq DESC LIMIT 1")
    quarantined = reader.one("SELECT count(*) FROM quarantine")
    # How far the signed checkpoints trail the entries: what truncation could still erase.
    checkpoint = reader.one("SELECT size, signed_at FROM checkpoints ORDER BY size DESC LIMIT 1")
    # How much of the ledger the query index holds in runs; the rest is derived per question.
    runs = [run_last(name) for (name,) in reader.con.execute(RUNS).fetchall()]
    return {
        "ledger_id": meta.get("ledger_id"),
        "origin": meta.get("origin"),
        "algorithm": meta.get("hash_algorithm"),
        "format_version": meta.get("format_version"),
        "size": head[0] if head else 0,
        "head_hash": bytes(head[1]).hex() if head else None,
        "last_ingested_at": head[2].isoformat() if head else None,
        "checkpoint_size": checkpoint[0] if checkpoint else None,
        "checkpoint_signed_at": checkpoint[1].isoformat() if checkpoint else None,
        "quarantined": quarantined[0] if quarantined else 0,
        "index_runs": len(runs),
        "indexed_size": max(runs, default=0),
    }
