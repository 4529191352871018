"""`ledger check`: the findings of a period of one environment, and how sound the ledger is.

SQL reads, in a few statements, what the rules need: the period's changes with the context
before it (the longest canary or configuration window), every classification, the grants
and revocations of the period's change refs, where the period's images were seen
succeeding in pre-production, and the deployment refs configuration changes may name;
ledger.rules.findings applies the rules in one pass per service. The ledger's own records
add late arrivals, compromised keys and refused messages. The integrity statement does not
re-verify the whole ledger: it reads the last recorded verification, proves the checkpoint
that covers the period extends it, and checks afresh the signatures of what it cites.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from operator import itemgetter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ledger.errors import LedgerError, QueryError
from ledger.log.chain import NO_KEYRING, Origin
from ledger.log.proof import b64, check_consistency
from ledger.rules.catalogue import RULES, severity_rank
from ledger.rules.findings import (
    MAX_CITED,
    Cited,
    Finding,
    Period,
    Policies,
    PolicyInForce,
    evaluate,
    finding,
    sort_findings,
)
from ledger.rules.pointintime import RULES_VERSION
from ledger.rules.questions import check_window
from ledger.store.integrity import BATCH_ROWS, entry_checks
from ledger.store.keyrings import compromised_in, recorded_keyrings, revocations
from ledger.store.policy import RecordedPolicy, policy_records
from ledger.store.prove import build_consistency
from ledger.store.query import FACT_COLUMNS, to_facts, unit_identity, without_cyclic_gc
from ledger.store.reader import LedgerReader
from ledger.store.verified import VerificationRecord
from ledger.wire.keyring import Keyrings

__all__ = ["CheckReport", "Integrity", "PeriodFindings", "check", "failing", "findings"]

_CHANGES = (
    "'deployment.succeeded', 'deployment.rolled_back', 'deployment.failed', 'mutation.applied'"
)

_FACTS = f"""
WITH changes AS (
    SELECT {FACT_COLUMNS} FROM facts
    WHERE environment = $env AND ($service IS NULL OR service = $service)
      AND type IN ({_CHANGES}) AND time BETWEEN $context AND $end
),
refs AS (
    SELECT DISTINCT service, change_ref FROM facts
    WHERE environment = $env AND ($service IS NULL OR service = $service)
      AND type IN ({_CHANGES}) AND time BETWEEN $start AND $end AND change_ref IS NOT NULL
)
SELECT * FROM changes
UNION ALL
SELECT {FACT_COLUMNS} FROM facts SEMI JOIN refs USING (service, change_ref)
WHERE environment = $env AND type IN ('approval.granted', 'approval.revoked')
UNION ALL
SELECT {FACT_COLUMNS} FROM facts
WHERE environment = $env AND ($service IS NULL OR service = $service)
  AND type = 'service.classified' AND time <= $end
ORDER BY service COLLATE C, epoch_us(time), seq
"""
"""Every fact the rules read, by service (byte order, as groupby needs) then (time, seq)."""

_PROMOTED = f"""
SELECT {unit_identity("image")} AS digest, environment, min(seq) FROM facts
WHERE type = 'deployment.succeeded' AND list_contains($preprod, environment)
  AND {unit_identity("image")} IN (
    SELECT {unit_identity("image")} FROM facts
    WHERE environment = $env AND ($service IS NULL OR service = $service)
      AND type = 'deployment.succeeded' AND time BETWEEN $start AND $end)
GROUP BY ALL
"""
"""Where and first when (seq) the ledger saw each image of the period succeed before
production: by digest, whatever the repository is called there."""

_RELEASES = """
SELECT DISTINCT service, change_ref FROM facts
WHERE environment = $env AND type IN ('deployment.started', 'deployment.succeeded')
  AND (service, change_ref) IN (
    SELECT (service, change_ref) FROM facts
    WHERE environment = $env AND ($service IS NULL OR service = $service)
      AND type = 'mutation.applied' AND target_kind IN ('config', 'flag')
      AND time BETWEEN $start AND $end AND change_ref IS NOT NULL)
"""
"""The deployment change refs that the period's configuration changes name."""

_LATE = """
WITH thresholds AS (SELECT unnest($after_seq) AS seq, unnest($late_us) AS late_us),
late AS (
    SELECT e.seq, e.event_id, e.service, e.time,
           epoch_us(e.witnessed_at) - epoch_us(e.time) AS late_us
    FROM entries e ASOF JOIN thresholds t ON e.seq > t.seq
    WHERE e.environment = $env AND ($service IS NULL OR e.service = $service)
      AND e.time BETWEEN $start AND $end AND e.format = 2 AND e.origin IS DISTINCT FROM $ledger
      AND epoch_us(e.witnessed_at) - epoch_us(e.time) > t.late_us
)
SELECT service, count(*), max(late_us), min(seq), arg_min(time, seq),
       list(seq ORDER BY seq)[1:$cited], list(event_id ORDER BY seq)[1:$cited]
FROM late GROUP BY service ORDER BY service
"""
"""Per service, its entries of the period that claim a time further before the ledger
witnessed them than the policy in force for each allows (the ASOF join: the latest policy
record before the entry)."""

_QUARANTINED = """
SELECT reason, count(*), min(received_at), max(received_at), list(id ORDER BY id)[1:$cited]
FROM quarantine WHERE received_at BETWEEN $start AND $end GROUP BY reason ORDER BY reason
"""


class Integrity(BaseModel):
    """How sound the ledger is, established without re-verifying it whole: what was checked."""

    model_config = ConfigDict(frozen=True)

    last_verification: VerificationRecord | None
    checkpoint: dict[str, Any] | None
    """The oldest signed checkpoint covering the period: its size and root hash."""
    consistency: dict[str, Any] | None
    """A proof that the checkpoint extends the verified ledger (``from`` -> ``to``)."""
    cited_entries: int
    signatures_verified: int
    failure: str | None
    statement: str


class CheckReport(BaseModel):
    model_config = ConfigDict(frozen=True, validate_by_name=True, serialize_by_alias=True)

    environment: str
    from_: datetime = Field(alias="from")
    to: datetime
    service: str | None
    rules: int
    policies: list[dict[str, Any]]
    """The policy records in force during the period: the one at its start, and those
    recorded within it (empty: none recorded, the defaults apply)."""
    counts: dict[str, int]
    findings: list[Finding]
    integrity: Integrity
    notes: list[str]
    next_after: str | None = Field(default=None, exclude_if=lambda value: value is None)
    """A page (the API's): ask again with ``after`` set to this."""


Progress = Callable[[str], None]


@dataclass(frozen=True)
class PeriodFindings:
    """What the rules found in a period, before anything is said of the ledger's integrity:
    ``ledger stats`` reads the findings, ``ledger check`` adds the statement."""

    period: Period
    findings: list[Finding]
    policies: list[dict[str, Any]]
    notes: list[str]


def findings(
    reader: LedgerReader,
    environment: str,
    start: datetime,
    end: datetime,
    service: str | None = None,
    *,
    thresholds: Mapping[str, int] | None = None,
    progress: Progress | None = None,
) -> PeriodFindings:
    """Every finding of the period [start, end] (valid time) in ``environment``, sorted by
    time; ``thresholds`` (seconds, by name) override the policy's."""
    check_window(start, end)
    if end < start:
        raise QueryError("--from must not be after --to")
    say = progress or (lambda _: None)
    period = Period(environment, start, end)
    records = policy_records(reader, environment)
    policies = Policies(
        [PolicyInForce.from_record(r.seq, r.event_id, r.data) for r in records], thresholds
    )
    say("reading the period's changes")
    with without_cyclic_gc():  # a million short-lived rows, facts and findings: none cyclic
        return _findings(reader, period, policies, records, service, say)


def _findings(
    reader: LedgerReader,
    period: Period,
    policies: Policies,
    records: Sequence[RecordedPolicy],
    service: str | None,
    say: Callable[[str], None],
) -> PeriodFindings:
    environment, start, end = period.environment, period.start, period.end
    params = {"env": environment, "service": service, "start": start, "end": end}
    context = start - max(policies.longest("canary_window"), policies.longest("config_window"))
    rows = reader.con.execute(_FACTS, params | {"context": context}).fetchall()
    streams = [(svc, to_facts(group)) for svc, group in groupby(rows, key=itemgetter(5))]
    say(f"judging {len(rows):,} facts of {len(streams):,} services")
    found = evaluate(
        period, streams, policies, _promoted(reader, policies, params), _releases(reader, params)
    )
    found += _late(reader, policies, period, params)
    found += _compromised(reader, policies, period, service)
    found += _quarantined(reader, policies, period)
    return PeriodFindings(
        period, sort_findings(found), _in_force(records, period),
        _notes(policies, period, streams),
    )  # fmt: skip


def check(
    reader: LedgerReader,
    environment: str,
    start: datetime,
    end: datetime,
    service: str | None = None,
    *,
    thresholds: Mapping[str, int] | None = None,
    verified: VerificationRecord | None = None,
    progress: Progress | None = None,
) -> CheckReport:
    """:func:`findings`, counted, and the integrity statement; ``verified`` is the last
    recorded verification."""
    found = findings(reader, environment, start, end, service, thresholds=thresholds,
                     progress=progress)  # fmt: skip
    counted = Counter(f.rule for f in found.findings)
    if progress is not None:
        progress("checking the integrity of what the findings cite")
    return CheckReport(
        environment=environment,
        from_=start,
        to=end,
        service=service,
        rules=RULES_VERSION,
        policies=found.policies,
        counts={rule: counted[rule] for rule in RULES},
        findings=found.findings,
        integrity=_integrity(reader, found.findings, found.period, service, verified),
        notes=found.notes,
    )


def failing(severities: Iterable[str], fail_on: str) -> bool:
    """Whether any finding's severity is at or above ``fail_on``."""
    bar = severity_rank(fail_on)
    return any(severity_rank(severity) >= bar for severity in severities)


def _promoted(
    reader: LedgerReader, policies: Policies, params: dict[str, Any]
) -> dict[str, list[tuple[str, int]]]:
    preprod = sorted(
        {
            env
            for p in policies.records
            for env in (*p.preprod, *(e for _, o in p.overrides for e in o))
        }
    )
    found: defaultdict[str, list[tuple[str, int]]] = defaultdict(list)
    if preprod:
        for digest, env, seq in reader.con.execute(
            _PROMOTED, params | {"preprod": preprod}
        ).fetchall():
            found[digest].append((env, int(seq)))
    return dict(found)


def _releases(reader: LedgerReader, params: dict[str, Any]) -> dict[str, frozenset[str]]:
    refs: defaultdict[str, set[str]] = defaultdict(set)
    for svc, ref in reader.con.execute(_RELEASES, params).fetchall():
        refs[svc].add(ref)
    return {svc: frozenset(r) for svc, r in refs.items()}


def _late(
    reader: LedgerReader, policies: Policies, period: Period, params: dict[str, Any]
) -> list[Finding]:
    """One finding per service: its entries of the period that claim a time further before
    the ledger witnessed them than the policy in force allows (a backfill, or back-dating)."""
    limits = [(0, policies.default), *((p.seq, p) for p in policies.records)]
    rows = reader.con.execute(_LATE, params | {
        "after_seq": [seq for seq, _ in limits],
        "late_us": [p.threshold("late_after") // timedelta(microseconds=1) for _, p in limits],
        "ledger": int(Origin.LEDGER), "cited": MAX_CITED,
    }).fetchall()  # fmt: skip
    found = []
    for svc, count, worst_us, first_seq, first_time, seqs, event_ids in rows:
        policy = policies.at(first_seq)
        worst = timedelta(microseconds=worst_us)
        cited = [Cited(s, e) for s, e in zip(seqs, event_ids, strict=True)]
        details = {"entries": count, "max_late_s": int(worst.total_seconds()), "compromised": False}
        found.append(
            finding(
                "late_arrival",
                policy,
                period.environment,
                svc,
                first_time,
                f"{count} {'entry' if count == 1 else 'entries'} of {svc} "
                f"claim{'s' if count == 1 else ''} a time before the ledger witnessed "
                f"{'it' if count == 1 else 'them'} by more than "
                f"{_hours(policy.threshold('late_after'))} (up to {_hours(worst)}): a backfill, "
                "or a history written after the fact",
                cited,
                details | ({"more": count - len(cited)} if count > len(cited) else {}),
            )
        )
    return found


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h" if hours < 48 else f"{hours / 24:.0f} d"


def _compromised(
    reader: LedgerReader, policies: Policies, period: Period, service: str | None
) -> list[Finding]:
    """An entry signed by a key reported compromised since it was witnessed: high, whatever
    the policy says of late arrivals (the key no longer vouches for it)."""
    revoked = revocations(recorded_keyrings(reader.con))
    marks = compromised_in(
        reader.con, revoked, period.environment, period.start, period.end, service
    )
    return [
        finding(
            "late_arrival",
            policies.at(mark.seq),
            period.environment,
            svc,
            time,
            f"entry {mark.seq} of {svc} was signed by key {mark.key_id}, reported compromised "
            f"since {mark.revoked_at.isoformat()} (before the ledger witnessed the entry)",
            [Cited(seq=mark.seq, event_id=event_id)],
            {
                "compromised": True,
                "key_id": mark.key_id,
                "revoked_at": mark.revoked_at.isoformat(),
                "revocation_seq": mark.recorded_seq,
            },
            severity="high",
        )
        for mark, event_id, svc, time in marks
    ]


def _quarantined(reader: LedgerReader, policies: Policies, period: Period) -> list[Finding]:
    """One finding per refusal reason among the messages received in the period (the whole
    ledger's: a refused message may name no environment). They are outside the chain: the
    finding names them by quarantine id (``ledger quarantine``)."""
    policy = policies.latest()  # refused messages have no place in the chain
    rows = reader.con.execute(
        _QUARANTINED, {"start": period.start, "end": period.end, "cited": 100}
    ).fetchall()
    return [
        finding(
            "quarantine_in_period",
            policy,
            period.environment,
            None,
            first,
            f"{count} message(s) were refused as {reason} between {first.isoformat()} and "
            f"{last.isoformat()}: possible tampering, or a misconfigured producer",
            [],
            {
                "reason": reason,
                "messages": int(count),
                "quarantine_ids": list(ids),
                "last_received": last.isoformat(),
            },
        )
        for reason, count, first, last, ids in rows
    ]


def _in_force(records: Sequence[RecordedPolicy], period: Period) -> list[dict[str, Any]]:
    """The records in force during the period: the last recorded before it starts (by
    claimed time) and every one recorded within it."""
    before = [r for r in records if r.time < period.start]
    within = [r for r in records if period.holds(r.time)]
    chosen = ([before[-1]] if before else []) + within
    return [
        {
            "seq": r.seq,
            "event_id": r.event_id,
            "time": r.time.isoformat(),
            "digest": r.data.get("digest"),
        }
        for r in chosen
    ]


def _notes(policies: Policies, period: Period, streams: Sequence[tuple[str, Any]]) -> list[str]:
    notes = []
    if not policies.records:
        notes.append(
            f"no horizon policy is recorded for {period.environment}: default severities and "
            "thresholds apply, and promotion is not checked (`ledger horizon apply`)"
        )
    elif not any(p.preprod or p.overrides for p in policies.records):
        notes.append("the policy names no pre-production environment: promotion is not checked")
    if not streams:
        notes.append(f"no change of {period.environment} falls in the period")
    return notes


def _integrity(
    reader: LedgerReader,
    found: Iterable[Finding],
    period: Period,
    service: str | None,
    verified: VerificationRecord | None,
) -> Integrity:
    cited = sorted({c.seq for f in found for c in f.entries})
    checked, failure = _signatures(reader, cited)
    last = _last_entry(reader, period, service)
    checkpoint, consistency, said = _covering(reader, last, verified)
    parts = [said]
    if verified is None:
        parts.insert(0, "no verification of this ledger is recorded (`ledger verify --record`)")
    else:
        parts.insert(
            0,
            f"the last recorded verification ({verified.at.isoformat()}, "
            f"{verified.size:,} entries) {'passed' if verified.ok else 'FAILED'}",
        )
    unchecked = len(cited) - checked
    parts.append(
        f"the signatures of {checked:,} of the {len(cited):,} entries the findings cite were "
        "checked afresh under the keyrings the ledger recorded"
        + (f", and one failed: {failure}" if failure else ", all valid" if checked else "")
        + (f" ({unchecked:,} judged under no recorded keyring: `ledger verify --keyring` "
           "checks those)" if unchecked else "")
    )  # fmt: skip
    return Integrity(
        last_verification=verified,
        checkpoint=checkpoint,
        consistency=consistency,
        cited_entries=len(cited),
        signatures_verified=checked,
        failure=failure,
        statement="; ".join(parts) + ".",
    )


def _signatures(reader: LedgerReader, seqs: list[int]) -> tuple[int, str | None]:
    """Checks 6-8 of ``ledger verify`` on exactly these entries, each under the keyring it
    was judged under, one process per core when there are many: how many were checked, and
    the first failure."""
    if not seqs:
        return 0, None
    recorded = {ring.digest().hex(): ring for _, ring in recorded_keyrings(reader.con)}
    # A semi-join, not list_contains (which scans the whole list for every row); the range
    # lets DuckDB skip the row groups outside it.
    where = "WHERE seq BETWEEN $first AND $last AND seq IN (SELECT unnest($seqs))"
    params = {"seqs": seqs, "first": seqs[0], "last": seqs[-1]}
    row = reader.one(
        f"SELECT count(*) FROM entries {where} AND format = 2 "
        "AND (origin = $ledger OR keyring IS DISTINCT FROM $none)",
        params | {"ledger": int(Origin.LEDGER), "none": NO_KEYRING},
    )
    checkable = int(row[0]) if row else 0  # those judged under a keyring the ledger recorded
    if not checkable:
        return 0, None
    workers = (os.cpu_count() or 1) if checkable >= _POOLED else 1
    failure = entry_checks(reader.con, Keyrings(recorded=recorded), where, params, workers,
                           BATCH_ROWS, lambda *_: None)  # fmt: skip
    return checkable, None if failure is None else failure.message


_POOLED = 5_000
"""From this many cited entries, their signatures are checked in worker processes (one per
core, as ``ledger verify`` does): below it, starting the workers costs more than it saves."""


def _last_entry(reader: LedgerReader, period: Period, service: str | None) -> int:
    row = reader.one(
        "SELECT max(seq) FROM entries WHERE environment = $env "
        "AND ($service IS NULL OR service = $service) AND time BETWEEN $start AND $end",
        {"env": period.environment, "service": service, "start": period.start, "end": period.end},
    )
    return int(row[0]) if row and row[0] is not None else 0


def _covering(
    reader: LedgerReader, last: int, verified: VerificationRecord | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str]:
    """The oldest checkpoint that covers entry ``last``, and a proof that it extends the
    verified ledger."""
    sizes = sorted({size for size, _, _, _ in reader.checkpoints() if size >= last})
    if not sizes:
        return (
            None,
            None,
            (f"no signed checkpoint covers the period yet (its last entry is {last})"),
        )
    size = sizes[0]
    root = next(r for s, r, _, _ in reader.checkpoints() if s == size)
    checkpoint = {"size": size, "root": b64(root)}
    if verified is None or not verified.ok:
        return checkpoint, None, f"checkpoint {size} covers the period"
    if verified.size >= size:
        return (
            checkpoint,
            None,
            (f"checkpoint {size} covers the period, within the verified entries"),
        )
    try:  # the signed root must be the stored tree's (build), and extend the verified one
        check_consistency(build_consistency(reader, verified.size, size), None)
    except LedgerError as exc:
        return (
            checkpoint,
            {"from": verified.size, "to": size, "verified": False},
            (
                f"checkpoint {size} could NOT be proven to extend the verified {verified.size:,} "
                f"entries: {exc.message}"
            ),
        )
    return (
        checkpoint,
        {"from": verified.size, "to": size, "verified": True},
        (
            f"a consistency proof (RFC 9162) shows checkpoint {size}, which covers the period, "
            f"extends the verified {verified.size:,} entries"
        ),
    )
