"""The record of the last verification of a ledger, kept beside it (``LEDGER.verified.json``).

`ledger verify --record` writes it, the consumer's metrics and ``ledger doctor`` read it, so
that a verification that failed, or stopped happening, can be alerted on. It is a file
beside the ledger rather than a row in it: a verifier reads the ledger while the consumer
writes it, and DuckDB gives a file one writer. It carries no authority (anyone who can
write the directory can write it): it tells an operator when to look, and ``ledger
verify`` is what looks.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

__all__ = ["VerificationRecord", "read_record", "record_path", "write_record"]


class VerificationRecord(BaseModel):
    """When a verification ran, how much of the ledger it covered, and how it ended."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: AwareDatetime
    size: int
    ok: bool
    signatures_checked: bool
    check: str | None = None
    first_bad_seq: int | None = None


def record_path(db: Path) -> Path:
    return db.with_name(db.name + ".verified.json")


def write_record(db: Path, report: dict[str, Any]) -> VerificationRecord:
    """Record ``report`` (``ledger verify --json``'s) for ``db``, atomically."""
    record = VerificationRecord(
        at=datetime.now(UTC), size=report["size"], ok=report["ok"],
        signatures_checked=report["signatures_checked"], check=report["check"],
        first_bad_seq=report["first_bad_seq"],
    )  # fmt: skip
    path = record_path(db)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(record.model_dump_json() + "\n")
    os.replace(tmp, path)
    return record


def read_record(db: Path) -> VerificationRecord | None:
    """The last record for ``db``; None when there is none or it does not parse (it is read
    by long-running processes: a damaged file must not stop them)."""
    try:
        return VerificationRecord.model_validate_json(record_path(db).read_bytes())
    except (OSError, ValidationError, json.JSONDecodeError):
        return None
