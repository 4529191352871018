"""What a report says, read from the ledger: one JSON-ready document for a period.

The findings, counts, policies and integrity statement are ``ledger check``'s, unchanged;
the pilot numbers are ``ledger stats``'s (immutable and mutable side by side); the ledger's
identity is its origin and the oldest signed checkpoint that covers the period (the one
``check`` proves), with its signed note, which anyone holding the ledger's public key can
check. The timelines hold, for each service with a finding or a change in the period, what
the chart draws: the image live when the period starts, then every deployment, mutation
and approval of the period (from the query index, in (time, seq) order).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any

from ledger.rules.policy import POLICY_SERVICE
from ledger.store.check import check
from ledger.store.reader import LedgerReader
from ledger.store.stats import stats
from ledger.store.verified import VerificationRecord

__all__ = ["DOCUMENT_VERSION", "Progress", "gather"]

DOCUMENT_VERSION = 1
"""The shape of the document (``"report"``): new fields may be added, none renamed."""

Progress = Callable[[str, int, int], None]
"""``(stage, done, total)``: a stage with ``total`` 0 has no count."""

CHANGES = (
    "deployment.succeeded",
    "deployment.failed",
    "deployment.rolled_back",
    "mutation.applied",
)
"""What makes a service part of the report, with or without a finding."""

_MARKED = (*CHANGES, "approval.granted", "approval.revoked")

_PERIOD = f"""
SELECT service, seq, event_id, type, epoch_us(time), actor, image, change_ref, target_kind,
       target, instance, method, updated, total
FROM facts
WHERE environment = $env AND ($service IS NULL OR service = $service)
  AND type IN ({", ".join(f"'{kind}'" for kind in _MARKED)}) AND time BETWEEN $start AND $end
ORDER BY service COLLATE C, epoch_us(time), seq
"""
"""Every fact the charts mark, by service (byte order, as groupby needs) then (time, seq)."""

_BEFORE = """
SELECT service,
    arg_max({'seq': seq, 'event_id': event_id, 'time': epoch_us(time), 'image': image,
             'actor': actor}, (time, seq)) FILTER (WHERE type <> 'deployment.failed'),
    arg_max({'seq': seq, 'type': type, 'time': epoch_us(time), 'image': image,
             'updated': updated, 'total': total}, (time, seq))
FROM facts
WHERE environment = $env AND list_contains($services, service) AND time < $start
  AND type IN ('deployment.succeeded', 'deployment.rolled_back', 'deployment.failed')
GROUP BY service
"""
"""Each service's deployment live when the period starts, and its last deployment event
before it (a failure that left a mixed fleet still mixed at the start)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(micros: int) -> str:
    return iso(_EPOCH + timedelta(microseconds=micros))


def iso(moment: datetime) -> str:
    """An instant as the JSON of every answer writes it (``2026-11-02T06:30:00Z``)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def gather(
    reader: LedgerReader,
    environment: str,
    start: datetime,
    end: datetime,
    service: str | None = None,
    *,
    thresholds: Mapping[str, int] | None = None,
    verified: VerificationRecord | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The report of the period [start, end] (valid time) of ``environment``: the same
    period, thresholds and verification record ``check`` takes."""
    say = progress or (lambda stage, done, total: None)
    say("checking the period", 0, 0)
    checked = check(
        reader,
        environment,
        start,
        end,
        service,
        thresholds=thresholds,
        verified=verified,
        progress=lambda stage: say(stage, 0, 0),
    )
    report = checked.model_dump(mode="json")
    say("the framework's pilot numbers", 0, 0)
    numbers = stats(reader, environment, start, end, service=service,
                    found=checked.findings).model_dump(mode="json")  # fmt: skip
    timelines = _timelines(reader, environment, start, end, service, report["findings"], say)
    say("the ledger's identity", 0, 0)
    return {
        "report": DOCUMENT_VERSION,
        "generated_at": iso(now or datetime.now(UTC)),
        "environment": environment,
        "from": report["from"],
        "to": report["to"],
        "service": service,
        "ledger": _identity(reader, report["integrity"]["checkpoint"]),
        "check": report,
        "stats": numbers,
        "timelines": timelines,
    }


def _identity(reader: LedgerReader, covering: dict[str, Any] | None) -> dict[str, Any]:
    """Which ledger this is, and the signed checkpoint the period's entries hang from."""
    meta = reader.meta()
    checkpoint = None
    if covering is not None:
        row = reader.one(
            "SELECT signed_at, note, vkey FROM checkpoints WHERE size = $size "
            "ORDER BY signed_at LIMIT 1",
            {"size": covering["size"]},
        )
        checkpoint = dict(covering)
        if row is not None:
            checkpoint |= {"signed_at": iso(row[0]), "note": str(row[1]), "key": str(row[2])}
    return {
        "origin": meta.get("origin"),
        "ledger_id": meta.get("ledger_id"),
        "algorithm": meta.get("hash_algorithm"),
        "size": reader.size(),
        "ledger_key": reader.ledger_key(),
        "checkpoint": checkpoint,
    }


def _timelines(
    reader: LedgerReader,
    environment: str,
    start: datetime,
    end: datetime,
    service: str | None,
    findings: list[dict[str, Any]],
    say: Progress,
) -> list[dict[str, Any]]:
    say("reading the timelines", 0, 0)
    rows = reader.con.execute(
        _PERIOD, {"env": environment, "service": service, "start": start, "end": end}
    ).fetchall()
    streams = {svc: list(group) for svc, group in groupby(rows, key=itemgetter(0))}
    flagged = {f["service"] for f in findings if f["service"] is not None}
    changed = {svc for svc, group in streams.items() if any(r[3] in CHANGES for r in group)}
    services = sorted((flagged | changed) - {POLICY_SERVICE})  # the policy is no service
    before = {
        svc: (live, last)
        for svc, live, last in reader.con.execute(
            _BEFORE, {"env": environment, "services": services, "start": start}
        ).fetchall()
    }
    timelines = []
    tenth = 0
    for done, svc in enumerate(services, 1):
        live, last = before.get(svc, (None, None))
        timelines.append(
            {
                "service": svc,
                "live_at_start": None if live is None else live | {"time": _time(live["time"])},
                "mixed_at_start": _mixed(last),
                "entries": [_entry(row) for row in streams.get(svc, [])],
            }
        )
        if 10 * done // len(services) > tenth or done == len(services):
            tenth = 10 * done // len(services)
            say("timelines", done, len(services))
    return timelines


def _mixed(last: dict[str, Any] | None) -> dict[str, Any] | None:
    """The failed deployment that left the fleet mixed when the period starts, if any."""
    if last is None or last["type"] != "deployment.failed":
        return None
    if not (last["total"] and 0 < (last["updated"] or 0) < last["total"]):
        return None
    return {
        "seq": last["seq"],
        "time": _time(last["time"]),
        "image": last["image"],
        "updated": last["updated"],
        "total": last["total"],
    }


def _entry(row: tuple[Any, ...]) -> dict[str, Any]:
    (
        _,
        seq,
        event_id,
        kind,
        micros,
        actor,
        image,
        change_ref,
        target_kind,
        target,
        instance,
        method,
        updated,
        total,
    ) = row
    entry: dict[str, Any] = {
        "seq": seq,
        "event_id": event_id,
        "type": kind,
        "time": _time(micros),
        "actor": actor,
    }
    optional = {
        "image": image,
        "change_ref": change_ref,
        "target_kind": target_kind,
        "target": target,
        "instance": instance,
        "method": method,
        "updated": updated,
        "total": total,
    }
    return entry | {key: value for key, value in optional.items() if value is not None}
