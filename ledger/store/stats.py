"""`ledger stats`: the numbers of a period of one production environment, by deployment
model or by service (DuckDB in, ledger.rules.stats out).

One statement reads the period's changes with what the numbers need of their context: the
service's deployment model in force at each (its latest ``service.classified`` by (time,
seq) before the change, as the point-in-time rules place it), a deployment's
``commit_time`` (event schema v2) and when an event first named its image digest, in any
environment. ``ledger check`` over the same period gives the verdicts: restores, partial
fleets over the threshold, unapproved and manual changes. ledger.rules.stats counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.errors import QueryError
from ledger.rules.findings import Finding, Period
from ledger.rules.questions import check_window
from ledger.rules.stats import GROUPINGS, Change, Stats, summarize
from ledger.store.check import findings
from ledger.store.query import unit_identity
from ledger.store.reader import LedgerReader

__all__ = ["stats"]

_CHANGES = f"""
WITH changes AS (
    SELECT seq, type, service, time, image, updated, total FROM facts
    WHERE environment = $env AND ($service IS NULL OR service = $service)
      AND type IN ('deployment.succeeded', 'deployment.failed', 'deployment.rolled_back',
                   'mutation.applied')
      AND time BETWEEN $start AND $end
),
classified AS (
    SELECT service, time, seq, model FROM facts
    WHERE environment = $env AND ($service IS NULL OR service = $service)
      AND type = 'service.classified' AND time <= $end
),
commits AS (
    SELECT seq, TRY_CAST(data->>'$.commit_time' AS TIMESTAMPTZ) AS commit_time FROM entries
    WHERE environment = $env AND ($service IS NULL OR service = $service)
      AND type = 'deployment.succeeded' AND time BETWEEN $start AND $end
),
sightings AS (
    SELECT {unit_identity("image")} AS digest, time, seq FROM facts
    WHERE image IS NOT NULL AND {unit_identity("image")} IN (
        SELECT {unit_identity("image")} FROM changes WHERE type = 'deployment.succeeded')
)
SELECT c.seq, c.type, c.service, epoch_us(c.time), c.updated, c.total,
    (SELECT arg_max(k.model, (k.time, k.seq)) FROM classified k
     WHERE k.service = c.service AND (k.time, k.seq) < (c.time, c.seq)),
    epoch_us(m.commit_time),
    CASE WHEN c.type = 'deployment.succeeded' THEN (
        SELECT epoch_us(min(s.time)) FROM sightings s
        WHERE s.digest = {unit_identity("c.image")} AND s.seq <> c.seq AND s.time <= c.time)
    END
FROM changes c LEFT JOIN commits m USING (seq)
ORDER BY c.service COLLATE C, c.time, c.seq
"""
"""The period's changes: seq, type, service, time, instances, the model in force, the
commit time and the first sight of the image (another event naming its digest, at or
before it: a pre-production deployment, an approval, an earlier deployment)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(micros: int | None) -> datetime | None:
    return None if micros is None else _EPOCH + timedelta(microseconds=micros)


def stats(
    reader: LedgerReader,
    environment: str,
    start: datetime,
    end: datetime,
    *,
    by: str = "model",
    service: str | None = None,
    found: Sequence[Finding] | None = None,
) -> Stats:
    """The numbers of the period [start, end] (valid time, as ``ledger check`` reads it)
    in ``environment``: per deployment model at the time of each change (``by="model"``)
    or per service (``by="service"``), and in total; only ``service``'s with one."""
    if by not in GROUPINGS:
        raise QueryError(f"--by: {by!r} is not one of {', '.join(GROUPINGS)}")
    check_window(start, end)
    if found is None:  # the period's findings, unless the caller has them (ledger report)
        found = findings(reader, environment, start, end, service).findings
    params: dict[str, Any] = {"env": environment, "service": service, "start": start, "end": end}
    changes = [
        Change(
            seq=int(seq),
            type=kind,
            service=svc,
            time=_EPOCH + timedelta(microseconds=micros),
            model=model,
            instances=None if total is None else {"updated": updated, "total": total},
            commit_time=_time(commit),
            first_seen=_time(seen),
        )
        for seq, kind, svc, micros, updated, total, model, commit, seen in reader.con.execute(
            _CHANGES, params
        ).fetchall()
    ]
    period = Period(environment, start, end)
    return summarize(period, changes, found, by=by, service=service)
