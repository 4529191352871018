"""What was live at an instant: the point-in-time rules over one service/environment (pure).

Input: the accepted facts of one service and environment whose valid ``time`` is at or
before the instant asked about (and, for a bitemporal question, ingested by the second
instant), in any order. Output: the deployment, a partial fleet, the live mutations, the
approval status of each live change, the classification, and the sequence numbers of the
entries the answer rests on. The rules, in docs/queries.md:

1. Deployment: the latest ``deployment.succeeded`` or ``deployment.rolled_back``.
2. Partial: a later ``deployment.failed`` with ``0 < updated < total`` is a mixed fleet.
3. Mutations: the latest ``mutation.applied`` per (target_kind, target, instance);
   instance-local kinds (file, package, patch) are wiped by a later deployment; a null
   hash removes the target.
4. Approval of a change: an earlier grant for its change_ref, by someone other than the
   actor, still valid, for the same image or hash, and not revoked in between.
5. Classification: the latest ``service.classified``.

Facts are ordered by (time, seq): late or out-of-order arrivals are placed by valid time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "INSTANCE_LOCAL_KINDS",
    "Approval",
    "AsOf",
    "Classification",
    "Deployment",
    "Evidence",
    "Fact",
    "LiveMutation",
    "Partial",
    "UnapprovedReason",
    "reconstruct",
]

INSTANCE_LOCAL_KINDS = frozenset({"file", "package", "patch"})
"""Replaced with the instances: a new deployment wipes them. Other kinds live outside."""

UnapprovedReason = Literal[
    "missing", "self_approved", "expired", "revoked", "after_change", "scope_mismatch"
]


@dataclass(frozen=True)
class Fact:
    """One accepted ledger entry, as the rules need it."""

    seq: int
    event_id: str
    type: str
    time: datetime
    actor: str
    data: dict[str, Any]

    @property
    def order(self) -> tuple[datetime, int]:
        return (self.time, self.seq)


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class Approval(_Answer):
    change_ref: str
    approver: str
    event_id: str
    seq: int


class Deployment(_Answer):
    image: str
    time: datetime
    event_id: str
    seq: int
    actor: str
    change_ref: str | None
    approved: bool
    unapproved_reason: UnapprovedReason | None
    approval: Approval | None


class Partial(_Answer):
    image: str
    updated: int
    total: int
    event_id: str
    seq: int


class LiveMutation(_Answer):
    target_kind: str
    target: str
    instance: str | None
    hash: str
    time: datetime
    event_id: str
    seq: int
    actor: str
    tool: str
    method: str
    change_ref: str | None
    approved: bool
    unapproved_reason: UnapprovedReason | None
    approval: Approval | None


class Classification(_Answer):
    state: str
    criticality: str
    model: str


class Evidence(_Answer):
    ledger_size: int
    entries: list[int]


class AsOf(_Answer):
    service: str
    environment: str
    at: datetime
    known_at: datetime | None = None
    deployment: Deployment | None
    partial: Partial | None
    mutations: list[LiveMutation]
    classification: Classification | None
    evidence: Evidence


@dataclass(frozen=True)
class _Verdict:
    approval: Fact | None
    reason: UnapprovedReason | None
    evidence: tuple[int, ...]


_LIVE_TYPES = frozenset({"deployment.succeeded", "deployment.rolled_back"})
_ORDER = attrgetter("time", "seq")
"""``Fact.order`` as a C-level key: sorting thousands of facts per snapshot adds up."""


@dataclass
class _Approvals:
    """The grants and revocations of one change ref, each in (time, seq) order."""

    grants: list[Fact] = field(default_factory=list)
    revocations: list[Fact] = field(default_factory=list)


def _judge(
    change: Fact, scope: tuple[str, str | None], approvals: dict[str, _Approvals]
) -> _Verdict:
    """Rule 4 for one change; ``scope`` is ("image" | "hash", the change's value)."""
    ref = change.data.get("change_ref")
    found = approvals.get(ref) if ref else None
    if found is None or not found.grants:
        return _Verdict(None, "missing", ())
    grants, revocations = found.grants, found.revocations
    before = [g for g in grants if g.time <= change.time]
    if not before:
        return _Verdict(None, "after_change", tuple(g.seq for g in grants))
    failures: list[_Verdict] = []
    for grant in reversed(before):  # the latest first
        reason = _grant_failure(change, scope, grant, revocations)
        if reason is None:
            return _Verdict(grant, None, (grant.seq,))
        revoked_by = tuple(r.seq for r in revocations if grant.order < r.order < change.order)
        failures.append(_Verdict(None, reason, (grant.seq, *revoked_by)))
    return failures[0]  # the latest grant's reason


def _grant_failure(
    change: Fact, scope: tuple[str, str | None], grant: Fact, revocations: list[Fact]
) -> UnapprovedReason | None:
    if grant.data["approver"] == change.actor:
        return "self_approved"
    kind, value = scope
    other = "hash" if kind == "image" else "image"
    if grant.data.get(other) is not None or grant.data.get(kind) not in (None, value):
        return "scope_mismatch"
    valid_until = grant.data.get("valid_until")
    if valid_until is not None and change.time > valid_until:
        return "expired"
    # "Between" in the ledger's order, (time, seq): a revocation tied on time with the grant
    # or the change is placed before or after it by sequence number.
    if any(grant.order < r.order < change.order for r in revocations):
        return "revoked"
    return None


def _status(verdict: _Verdict) -> dict[str, Any]:
    """The approval fields of a judged change (deployment or mutation)."""
    grant = verdict.approval
    approval = (
        None
        if grant is None
        else {
            "change_ref": grant.data["change_ref"],
            "approver": grant.data["approver"],
            "event_id": grant.event_id,
            "seq": grant.seq,
        }
    )
    return {
        "approved": verdict.reason is None,
        "unapproved_reason": verdict.reason,
        "approval": approval,
    }


def reconstruct(
    service: str,
    environment: str,
    at: datetime,
    facts: Iterable[Fact],
    ledger_size: int,
    known_at: datetime | None = None,
) -> AsOf:
    """Apply rules 1-5 to the facts of one service/environment dated at or before ``at``.

    One pass in (time, seq) order groups the facts by kind. The answer is validated once,
    as a whole: pydantic checks nested data in one call, much faster than a model per part
    when a snapshot builds thousands of them.
    """
    live: Fact | None = None
    failures: list[Fact] = []
    latest: dict[tuple[str, str, str | None], Fact] = {}
    classified: Fact | None = None
    approvals: defaultdict[str, _Approvals] = defaultdict(_Approvals)
    for fact in sorted((f for f in facts if f.time <= at), key=_ORDER):
        kind = fact.type
        if kind in _LIVE_TYPES:
            live = fact
        elif kind == "mutation.applied":
            d = fact.data
            latest[(d["target_kind"], d["target"], d.get("instance"))] = fact
        elif kind == "approval.granted":
            approvals[fact.data["change_ref"]].grants.append(fact)
        elif kind == "approval.revoked":
            approvals[fact.data["change_ref"]].revocations.append(fact)
        elif kind == "deployment.failed":
            failures.append(fact)
        elif kind == "service.classified":
            classified = fact

    evidence: set[int] = set()
    deployment = None
    if live is not None:
        verdict = _judge(live, ("image", live.data["image"]), approvals)
        evidence.update((live.seq, *verdict.evidence))
        deployment = {
            "image": live.data["image"],
            "time": live.time,
            "event_id": live.event_id,
            "seq": live.seq,
            "actor": live.actor,
            "change_ref": live.data.get("change_ref"),
            **_status(verdict),
        }

    partial = None
    for fact in failures:
        if live is not None and fact.order < live.order:
            continue
        instances = fact.data.get("instances")
        if instances and 0 < instances["updated"] < instances["total"]:
            partial = {
                "image": fact.data["image"],
                "updated": instances["updated"],
                "total": instances["total"],
                "event_id": fact.event_id,
                "seq": fact.seq,
            }
    if partial is not None:
        evidence.add(partial["seq"])

    mutations = []
    for (kind, target, instance), fact in sorted(latest.items(), key=lambda kv: _ORDER(kv[1])):
        if fact.data["hash"] is None:
            continue  # removed
        if kind in INSTANCE_LOCAL_KINDS and live is not None and live.order > fact.order:
            continue  # wiped: the instances were replaced after the change
        verdict = _judge(fact, ("hash", fact.data["hash"]), approvals)
        evidence.update((fact.seq, *verdict.evidence))
        mutations.append(
            {
                "target_kind": kind,
                "target": target,
                "instance": instance,
                "hash": fact.data["hash"],
                "time": fact.time,
                "event_id": fact.event_id,
                "seq": fact.seq,
                "actor": fact.actor,
                "tool": fact.data["tool"],
                "method": fact.data["method"],
                "change_ref": fact.data.get("change_ref"),
                **_status(verdict),
            }
        )

    if classified is not None:
        evidence.add(classified.seq)

    return AsOf.model_validate(
        {
            "service": service,
            "environment": environment,
            "at": at,
            "known_at": known_at,
            "deployment": deployment,
            "partial": partial,
            "mutations": mutations,
            "classification": None if classified is None else classified.data,
            "evidence": {"ledger_size": ledger_size, "entries": sorted(evidence)},
        }
    )
