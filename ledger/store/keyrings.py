"""The keyrings the ledger recorded, and the entries a key reported compromised since signed.

A revocation takes effect where the ledger recorded it (the keyring record carrying it):
nothing before that record is judged differently. A revocation that declares an earlier
time (the compromise began before anyone knew) does not rewrite history; it *marks* what
the key signed that the ledger witnessed from that time on, so that answers and ``ledger
verify`` say which accepted entries rest on a key no longer believed. The marks come from
the chain (reproducible by every reader) and, for ``verify``, from the keyring file given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import duckdb

from ledger.errors import LedgerError
from ledger.log.chain import Origin
from ledger.rules.pointintime import Compromised
from ledger.wire.envelope import Envelope
from ledger.wire.keyring import Keyring
from ledger.wire.records import KEYRING_RECORD, open_keyring_record

__all__ = [
    "Revocation",
    "compromised",
    "compromised_counts",
    "compromised_in",
    "recorded_keyrings",
    "revocations",
]

_WITNESSED = "coalesce(CASE WHEN format = 2 THEN witnessed_at END, ingested_at)"
"""When the ledger witnessed an entry (one of format 1: when it chained it)."""


@dataclass(frozen=True)
class Revocation:
    """The earliest revocation of one key: when, and the keyring record that says so (None:
    the keyring given to verify, not yet recorded)."""

    key_id: str
    revoked_at: datetime
    recorded_seq: int | None


def recorded_keyrings(
    con: duckdb.DuckDBPyConnection, known_at: datetime | None = None
) -> list[tuple[int, Keyring]]:
    """Every keyring the ledger recorded (by ``known_at``, if given), with its record's seq,
    in chain order. A record that does not decode is left out: verify's check 6 names it."""
    rows = con.execute(
        "SELECT seq, envelope FROM entries WHERE type = $type AND origin = $origin "
        "AND ($known_at IS NULL OR ingested_at <= $known_at) ORDER BY seq",
        {"type": KEYRING_RECORD, "origin": int(Origin.LEDGER), "known_at": known_at},
    ).fetchall()
    found = []
    for seq, envelope in rows:
        try:
            found.append(
                (int(seq), open_keyring_record(Envelope.from_bytes(bytes(envelope))).keyring)
            )
        except LedgerError:
            continue
    return found


def revocations(
    recorded: Iterable[tuple[int, Keyring]], given: Keyring | None = None
) -> dict[str, Revocation]:
    """The earliest revocation of each key, by the recorded keyrings and then ``given``."""
    found: dict[str, Revocation] = {}
    sources = [*recorded, *([(None, given)] if given is not None else [])]
    for seq, keyring in sources:
        for key_id, entry in keyring.keys.items():
            known = found.get(key_id)
            if entry.revoked_at is not None and (
                known is None or entry.revoked_at < known.revoked_at
            ):
                found[key_id] = Revocation(key_id, entry.revoked_at, seq)
    return found


_MARKED = f"""
FROM entries e
JOIN (SELECT unnest($keys) AS key_id, unnest($times) AS revoked_at) r USING (key_id)
WHERE e.origin IS DISTINCT FROM $ledger AND {_WITNESSED} >= r.revoked_at
"""
"""The events signed by a revoked key that the ledger witnessed at or after its revocation."""


def _params(revoked: dict[str, Revocation]) -> dict[str, object]:
    return {
        "keys": list(revoked),
        "times": [r.revoked_at for r in revoked.values()],
        "ledger": int(Origin.LEDGER),
    }


def _mark(
    revoked: dict[str, Revocation], seq: int, key_id: str, witnessed: datetime
) -> Compromised:
    """The mark on entry ``seq``, which key ``key_id`` signed, witnessed at ``witnessed``."""
    revocation = revoked[key_id]
    return Compromised(
        seq=seq,
        key_id=key_id,
        witnessed_at=witnessed,
        revoked_at=revocation.revoked_at,
        recorded_seq=revocation.recorded_seq,
    )


def compromised(
    con: duckdb.DuckDBPyConnection, revoked: dict[str, Revocation], seqs: Iterable[int]
) -> list[Compromised]:
    """Which of the entries ``seqs`` a revoked key signed after its revocation, by seq."""
    wanted = sorted(set(seqs))
    if not revoked or not wanted:
        return []
    rows = con.execute(
        f"SELECT e.seq, e.key_id, {_WITNESSED} {_MARKED} AND list_contains($seqs, e.seq) "
        "ORDER BY e.seq",
        _params(revoked) | {"seqs": wanted},
    ).fetchall()
    return [_mark(revoked, *row) for row in rows]


def compromised_counts(
    con: duckdb.DuckDBPyConnection, revoked: dict[str, Revocation], below: int
) -> list[tuple[Revocation, int, int]]:
    """Per revoked key that signed any, of the entries before ``below``: (its revocation,
    how many it signed after it, the first of them)."""
    if not revoked:
        return []
    rows = con.execute(
        f"SELECT e.key_id, count(*), min(e.seq) {_MARKED} AND e.seq < $below "
        "GROUP BY e.key_id ORDER BY min(e.seq)",
        _params(revoked) | {"below": below},
    ).fetchall()
    return [(revoked[key_id], int(count), int(first)) for key_id, count, first in rows]


def compromised_in(
    con: duckdb.DuckDBPyConnection,
    revoked: dict[str, Revocation],
    environment: str,
    start: datetime,
    end: datetime,
    service: str | None = None,
) -> list[tuple[Compromised, str, str, datetime]]:
    """The entries of an environment (of one service, if given) claiming a time in [start,
    end] that a revoked key signed after its revocation: each mark, with the entry's event
    id, service and time, by seq."""
    if not revoked:
        return []
    rows = con.execute(
        f"SELECT e.seq, e.key_id, {_WITNESSED}, e.event_id, e.service, e.time {_MARKED} "
        "AND e.environment = $env AND ($service IS NULL OR e.service = $service) "
        "AND e.time BETWEEN $start AND $end ORDER BY e.seq",
        _params(revoked) | {"env": environment, "service": service, "start": start, "end": end},
    ).fetchall()
    return [
        (_mark(revoked, seq, key_id, witnessed), event_id, service_name, time)
        for seq, key_id, witnessed, event_id, service_name, time in rows
    ]
