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
4. Approval of a change: a grant for its change_ref dated no later than the change and
   recorded before it (in the ledger's order), by someone other than the actor, for the
   same image or hash, unexpired when the change was recorded, and not revoked in between
   (in the ledger's order).
5. Classification: the latest ``service.classified``.

Facts are placed by (time, seq): late or out-of-order arrivals are placed by valid time,
what the world looked like. Authority is judged by what the ledger witnessed: whether a
grant came before a change, and whether a revocation came between them, is decided by
their order in the ledger (``seq``), which no producer chooses; a grant's expiry by when
the change was recorded. Rule 4 is version 2 of the rules (:data:`RULES_VERSION`);
version 1, under which bundles written before it were computed, judged those by the times
the events claim (docs/queries.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "INSTANCE_LOCAL_KINDS",
    "RULES_VERSION",
    "Approval",
    "Approvals",
    "AsOf",
    "Classification",
    "Compromised",
    "Deployment",
    "Evidence",
    "Fact",
    "LiveMutation",
    "Partial",
    "UnapprovedReason",
    "Verdict",
    "judge",
    "reconstruct",
]

INSTANCE_LOCAL_KINDS = frozenset({"file", "package", "patch"})
"""Replaced with the instances: a new deployment wipes them. Other kinds live outside."""

RULES_VERSION: Final = 2
"""The version of the rules this build applies; answers carry it (version 1's did not)."""

UnapprovedReason = Literal[
    "missing",
    "after_change",
    "recorded_late",
    "self_approved",
    "scope_mismatch",
    "expired",
    "revoked",
]


@dataclass(frozen=True)
class Fact:
    """One accepted ledger entry, as the rules need it: ``time`` is what the event claims
    (valid time), ``seq`` and ``recorded`` (transaction time) what the ledger witnessed."""

    seq: int
    event_id: str
    type: str
    time: datetime
    actor: str
    data: dict[str, Any]
    recorded: datetime

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


class Compromised(_Answer):
    """An entry signed by a key reported compromised since: accepted when the ledger
    witnessed it, and resting on a key no longer believed (ledger.store.keyrings)."""

    seq: int
    key_id: str
    witnessed_at: datetime
    revoked_at: datetime
    recorded_seq: int | None
    """The keyring record that revokes the key (None: the keyring given, not recorded)."""


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
    rules: int | None = Field(default=None, exclude_if=lambda value: value is None)
    """The version of the rules the answer was computed under (absent: version 1)."""
    compromised: list[Compromised] = Field(default_factory=list, exclude_if=lambda v: not v)
    """Entries of the evidence signed by a key reported compromised since (absent: none).
    Not a rule's verdict: the keyrings recorded say it, and bundles do not carry it."""


@dataclass(frozen=True)
class Verdict:
    """Rule 4's answer for one change: the grant that approves it, or why none does, and
    the entries that say so."""

    approval: Fact | None
    reason: UnapprovedReason | None
    evidence: tuple[int, ...]


_LIVE_TYPES = frozenset({"deployment.succeeded", "deployment.rolled_back"})
_ORDER = attrgetter("time", "seq")
"""``Fact.order`` as a C-level key: sorting thousands of facts per snapshot adds up."""


@dataclass
class Approvals:
    """The grants and revocations of one change ref, each in (time, seq) order."""

    grants: list[Fact] = field(default_factory=list)
    revocations: list[Fact] = field(default_factory=list)


def judge(
    change: Fact,
    scope: tuple[str, str | None],
    approvals: dict[str, Approvals],
    rules: int = RULES_VERSION,
) -> Verdict:
    """Rule 4 for one change; ``scope`` is ("image" | "hash", the change's value);
    ``approvals`` the grants and revocations of its stream by change ref (``ledger check``
    judges every change of a period by this, as :func:`reconstruct` judges the live ones)."""
    ref = change.data.get("change_ref")
    found = approvals.get(ref) if ref else None
    if found is None or not found.grants:
        return Verdict(None, "missing", ())
    grants, revocations = found.grants, found.revocations
    before = [g for g in grants if g.time <= change.time]
    if not before:
        return Verdict(None, "after_change", tuple(g.seq for g in grants))
    if rules >= 2:  # and recorded before the change, in the ledger's order
        recorded = [g for g in before if g.seq < change.seq]
        if not recorded:
            return Verdict(None, "recorded_late", tuple(g.seq for g in before))
        before = recorded
    failures: list[Verdict] = []
    for grant in reversed(before):  # the latest first
        revoked_by = tuple(r.seq for r in revocations if _between(grant, r, change, rules))
        reason = _grant_failure(change, scope, grant, revoked_by, rules)
        if reason is None:
            return Verdict(grant, None, (grant.seq,))
        failures.append(Verdict(None, reason, (grant.seq, *revoked_by)))
    return failures[0]  # the latest grant's reason


def _between(grant: Fact, revocation: Fact, change: Fact, rules: int) -> bool:
    """Whether a revocation came between a grant and a change: in the ledger's order
    (version 2); in the order the events claim, ties placed by seq (version 1)."""
    if rules >= 2:
        return grant.seq < revocation.seq < change.seq
    return grant.order < revocation.order < change.order


def _grant_failure(
    change: Fact,
    scope: tuple[str, str | None],
    grant: Fact,
    revoked_by: tuple[int, ...],
    rules: int,
) -> UnapprovedReason | None:
    if grant.data["approver"] == change.actor:
        return "self_approved"
    kind, value = scope
    other = "hash" if kind == "image" else "image"
    if grant.data.get(other) is not None or grant.data.get(kind) not in (None, value):
        return "scope_mismatch"
    valid_until = grant.data.get("valid_until")
    # Version 2: a change recorded after the grant expired is not covered, whatever time it
    # claims (a back-dated change cannot slip inside the window).
    made = max(change.time, change.recorded) if rules >= 2 else change.time
    if valid_until is not None and made > valid_until:
        return "expired"
    if revoked_by:
        return "revoked"
    return None


def _status(verdict: Verdict) -> dict[str, Any]:
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
    rules: int = RULES_VERSION,
) -> AsOf:
    """Apply rules 1-5 (of version ``rules``) to the facts of one service/environment dated
    at or before ``at``; under version 2 a revocation counts whatever time it claims (its
    place in the ledger decides), so one dated later is kept too.

    One pass in (time, seq) order groups the facts by kind. The answer is validated once,
    as a whole: pydantic checks nested data in one call, much faster than a model per part
    when a snapshot builds thousands of them.
    """
    live: Fact | None = None
    failures: list[Fact] = []
    latest: dict[tuple[str, str, str | None], Fact] = {}
    classified: Fact | None = None
    approvals: defaultdict[str, Approvals] = defaultdict(Approvals)
    kept = (f for f in facts if f.time <= at or (rules >= 2 and f.type == "approval.revoked"))
    for fact in sorted(kept, key=_ORDER):
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
        verdict = judge(live, ("image", live.data["image"]), approvals, rules)
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
        verdict = judge(fact, ("hash", fact.data["hash"]), approvals, rules)
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
            "rules": rules if rules >= 2 else None,
        }
    )
