"""`ledger stats`: the numbers a team draws its horizon from, by deployment model (pure).

For a period of one production environment, per deployment model (as classified at the
time of each change) or per service: how often it deploys, the lead time to production,
the change failure rate, the time to restore, how long fleets stayed mixed, and how many
changes were unapproved or manual. Two inputs: the period's changes (with the model in
force for each, its commit time and when the ledger first saw its artifact), and the
findings ``ledger check`` gave for the same period (restores, unapproved and manual
changes are its verdicts, not computed again here). docs/compliance.md defines each number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from math import ceil
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from ledger.rules.findings import Finding, Period, mixed_fleet

__all__ = [
    "GROUPINGS",
    "LEAD_TIME_BASIS",
    "UNCLASSIFIED",
    "Change",
    "Grouping",
    "LeadTimeBasis",
    "Numbers",
    "Stats",
    "percentile",
    "summarize",
]

Grouping = Literal["model", "service"]
GROUPINGS: Final[tuple[Grouping, ...]] = ("model", "service")

UNCLASSIFIED: Final = "unclassified"
"""The model of a change made while no classification of its service was in force."""

_MODELS: Final = ("immutable", "mutable")
"""Always shown side by side when grouping by model, even when one has no change."""

LEAD_TIME_BASIS: Final = (
    "lead time is the deployment's time minus its commit_time (deployment data, schema v2) "
    "when it carries one; else minus the first sight of its artifact: the earliest time any "
    "event of any environment (a pre-production deployment, an approval) named the same image "
    "digest. A deployment with neither (its artifact first seen in that very deployment) has "
    "no lead time and is left out of the percentiles (lead_time_basis.unknown)"
)

_DEPLOYMENTS: Final = frozenset(
    {"deployment.succeeded", "deployment.failed", "deployment.rolled_back"}
)


@dataclass(frozen=True)
class Change:
    """One production change of the period, as the numbers read it."""

    seq: int
    type: str
    service: str
    time: datetime
    model: str | None
    """The service's deployment model at the time of the change (its latest
    ``service.classified`` by (time, seq) before it); None: not classified."""
    instances: Mapping[str, int] | None = None
    """``updated`` and ``total`` of a deployment that says them."""
    commit_time: datetime | None = None
    first_seen: datetime | None = None
    """The earliest time another event named the same image digest (at or before this one)."""


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class LeadTimeBasis(_Answer):
    """How many successful deployments' lead times rest on each basis."""

    commit_time: int
    first_seen: int
    unknown: int


class Numbers(_Answer):
    """One group's numbers: a deployment model or a service (or ``total``)."""

    group: str
    services: list[str]
    """The services whose changes the group counts."""
    models: list[str]
    """The deployment models those changes were made under."""
    deployments: int
    """Successful production deployments (``deployment.succeeded``)."""
    deployments_per_day: float | None
    lead_time_p50_s: int | None
    lead_time_p90_s: int | None
    lead_time_basis: LeadTimeBasis
    attempts: int
    """Deployment attempts: succeeded + failed + rolled back."""
    failed: int
    rolled_back: int
    change_failure_rate: float | None
    """(failed + rolled_back) / attempts; null without an attempt."""
    restored: int
    """Failed deployments the service was restored from within the period."""
    unrestored: int
    time_to_restore_p50_s: int | None
    time_to_restore_max_s: int | None
    partial_fleets: int
    """Failed deployments that left ``0 < updated < total`` instances."""
    partial_fleet_s: int
    """How long those fleets stayed mixed, in all: until the next deployment or rollback,
    or the end of the period."""
    partial_fleet_max_s: int | None
    partial_fleet_findings: int
    """Of those, the ones mixed for longer than ``partial_after`` (``partial_fleet``)."""
    unapproved_changes: int
    """``unapproved_change`` findings: deployments and in-place changes."""
    manual_changes: int
    """``manual_change`` findings, resolved or not."""


class Stats(_Answer):
    model_config = ConfigDict(frozen=True, validate_by_name=True, serialize_by_alias=True)

    environment: str
    from_: datetime = Field(alias="from")
    to: datetime
    by: Grouping
    service: str | None
    groups: list[Numbers]
    total: Numbers
    lead_time_basis: str
    """What a lead time is measured from (the counts are each group's)."""
    notes: list[str]


def percentile(values: Iterable[int], p: int) -> int | None:
    """The nearest-rank ``p``-th percentile: the smallest value that at least ``p`` percent
    of the values are at or below (a value that occurred); None of no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(ceil(p * len(ordered) / 100), 1) - 1]


def _seconds(later: datetime, earlier: datetime) -> int:
    return int((later - earlier).total_seconds())


def _lead_time(change: Change) -> tuple[str, int | None]:
    """The basis and the lead time of a successful deployment, in seconds."""
    if change.commit_time is not None and change.commit_time <= change.time:
        return "commit_time", _seconds(change.time, change.commit_time)
    if change.first_seen is not None and change.first_seen <= change.time:
        return "first_seen", _seconds(change.time, change.first_seen)
    return "unknown", None


def _models_in_order(models: Iterable[str]) -> list[str]:
    order = (*_MODELS, UNCLASSIFIED)
    found = set(models)
    return [m for m in order if m in found] + sorted(found - set(order))


@dataclass(frozen=True)
class _Judged:
    """What ``ledger check`` said about the changes, by the seq of the change it is about."""

    restores: Mapping[int, int | None]
    """Each failed deployment of the period: its time to restore (None: not restored)."""
    partial_findings: frozenset[int]
    unapproved: Mapping[int, int]
    manual: Mapping[int, int]

    @classmethod
    def of(cls, findings: Iterable[Finding]) -> _Judged:
        restores: dict[int, int | None] = {}
        partial: set[int] = set()
        unapproved: dict[int, int] = {}
        manual: dict[int, int] = {}
        for f in findings:
            if not f.entries:
                continue
            seq = f.entries[0].seq
            if f.rule == "failed_change":
                restored = f.details.get("restored")
                restores[seq] = None if restored is None else int(restored["time_to_restore_s"])
            elif f.rule == "partial_fleet":
                partial.add(seq)
            elif f.rule == "unapproved_change":
                unapproved[seq] = unapproved.get(seq, 0) + 1
            elif f.rule == "manual_change":
                manual[seq] = manual.get(seq, 0) + 1
        return cls(restores, frozenset(partial), unapproved, manual)


def _numbers(group: str, changes: Sequence[Change], judged: _Judged, period: Period) -> Numbers:
    succeeded = [c for c in changes if c.type == "deployment.succeeded"]
    failed = [c for c in changes if c.type == "deployment.failed"]
    rolled_back = sum(c.type == "deployment.rolled_back" for c in changes)
    attempts = sum(c.type in _DEPLOYMENTS for c in changes)
    days = (period.end - period.start).total_seconds() / 86400

    basis = {"commit_time": 0, "first_seen": 0, "unknown": 0}
    leads = []
    for change in succeeded:
        kind, lead = _lead_time(change)
        basis[kind] += 1
        if lead is not None:
            leads.append(lead)

    restores = [judged.restores[c.seq] for c in failed if c.seq in judged.restores]
    restored = [r for r in restores if r is not None]

    mixed = []
    for change in (c for c in failed if mixed_fleet(c.instances)):
        restore = judged.restores.get(change.seq)  # the next deployment or rollback's
        mixed.append(restore if restore is not None else _seconds(period.end, change.time))

    return Numbers(
        group=group,
        services=sorted({c.service for c in changes}),
        models=_models_in_order(c.model or UNCLASSIFIED for c in changes),
        deployments=len(succeeded),
        deployments_per_day=round(len(succeeded) / days, 3) if days > 0 else None,
        lead_time_p50_s=percentile(leads, 50),
        lead_time_p90_s=percentile(leads, 90),
        lead_time_basis=LeadTimeBasis(**basis),
        attempts=attempts,
        failed=len(failed),
        rolled_back=rolled_back,
        change_failure_rate=(
            round((len(failed) + rolled_back) / attempts, 4) if attempts else None
        ),
        restored=len(restored),
        unrestored=len(restores) - len(restored),
        time_to_restore_p50_s=percentile(restored, 50),
        time_to_restore_max_s=max(restored, default=None),
        partial_fleets=len(mixed),
        partial_fleet_s=sum(mixed),
        partial_fleet_max_s=max(mixed, default=None),
        partial_fleet_findings=sum(c.seq in judged.partial_findings for c in failed),
        unapproved_changes=sum(judged.unapproved.get(c.seq, 0) for c in changes),
        manual_changes=sum(judged.manual.get(c.seq, 0) for c in changes),
    )


def summarize(
    period: Period,
    changes: Iterable[Change],
    findings: Iterable[Finding],
    by: Grouping = "model",
    service: str | None = None,
) -> Stats:
    """The numbers of the period's production ``changes`` (deployments and in-place
    changes, each with its model at the time), by deployment model or by service, and in
    total; ``findings`` are ``ledger check``'s for the same period (restores, partial
    fleets over the threshold, unapproved and manual changes)."""
    if by not in GROUPINGS:
        raise ValueError(f"by {by!r} is not one of {', '.join(GROUPINGS)}")
    inside = [c for c in changes if period.holds(c.time)]
    judged = _Judged.of(findings)
    key: Callable[[Change], str] = (
        (lambda c: c.model or UNCLASSIFIED) if by == "model" else (lambda c: c.service)
    )
    grouped: dict[str, list[Change]] = {}
    for change in inside:
        grouped.setdefault(key(change), []).append(change)
    names = (
        _models_in_order([*_MODELS, *grouped])
        if by == "model"
        else sorted(grouped)  # byte order, as the services are listed everywhere
    )
    return Stats(
        environment=period.environment,
        from_=period.start,
        to=period.end,
        by=by,
        service=service,
        groups=[_numbers(name, grouped.get(name, []), judged, period) for name in names],
        total=_numbers("total", inside, judged, period),
        lead_time_basis=LEAD_TIME_BASIS,
        notes=_notes(period, inside),
    )


def _notes(period: Period, changes: Sequence[Change]) -> list[str]:
    notes = []
    if not changes:
        notes.append(f"no production change of {period.environment} falls in the period")
    unclassified = {c.service for c in changes if c.model is None}
    if unclassified:
        notes.append(
            f"{len(unclassified)} service(s) changed with no deployment model in force "
            f"({', '.join(sorted(unclassified))}): counted as {UNCLASSIFIED} "
            "(`ledger horizon apply`)"
        )
    succeeded = [c for c in changes if c.type == "deployment.succeeded"]
    bases = [_lead_time(c)[0] for c in succeeded]
    if succeeded and "commit_time" not in bases:
        notes.append(
            "no deployment carries a commit_time: every lead time is from the first sight of "
            "its artifact, which starts when the artifact reached the ledger (a pre-production "
            "deployment, an approval), after the commit"
        )
    unknown = bases.count("unknown")
    if unknown:
        notes.append(
            f"{unknown} deployment(s) have no lead time: no commit_time, and the ledger saw "
            "their artifact first in that very deployment"
        )
    return notes
