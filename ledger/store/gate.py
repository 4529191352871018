"""`ledger gate`: would a change be approved if it were recorded now (PCI DSS 6.5.1)?

The change is judged as if it were the ledger's next entry, by the point-in-time rules
themselves (``reconstruct`` over the service's facts and the grants of its change ref), so
the gate can never disagree with what ``asof`` would say once the change is recorded: a
grant already in the ledger (recorded before the change, in the ledger's order), by
someone other than the actor, for this image or hash, unexpired and not revoked. And,
when pre-production environments are named, the image must have been witnessed
succeeding in one of them (the promotion path; compared by digest, not by name): those
given, else those the horizon policy in force names for the service (ledger horizon).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ledger.errors import QueryError
from ledger.rules.findings import PolicyInForce
from ledger.rules.pointintime import Fact, reconstruct
from ledger.store.policy import policy_records
from ledger.store.query import approvals_for, candidates
from ledger.store.reader import LedgerReader

__all__ = ["GateAnswer", "ProposedChange", "gate"]


@dataclass(frozen=True)
class ProposedChange:
    """A deployment (``image``) or an in-place change (``target_kind``, ``target``,
    ``hash``) about to be made by ``actor``."""

    service: str
    environment: str
    actor: str
    change_ref: str | None = None
    image: str | None = None
    target_kind: str | None = None
    target: str | None = None
    hash: str | None = None

    def __post_init__(self) -> None:
        mutation = (self.target_kind, self.target, self.hash)
        if (self.image is None) != all(v is not None for v in mutation) or (
            self.image is not None and any(v is not None for v in mutation)
        ):
            raise QueryError("give an image, or all of a target kind, a target and a hash")


@dataclass
class GateAnswer:
    allowed: bool
    approved: bool
    unapproved_reason: str | None
    approval: dict[str, Any] | None
    promotion: dict[str, Any]
    reasons: list[str] = field(default_factory=list)


def gate(
    reader: LedgerReader, change: ProposedChange, preprod: list[str] | None = None
) -> GateAnswer:
    """Judge ``change`` as the ledger's next entry, now; and its promotion path through
    ``preprod`` (None: the environments the policy in force names)."""
    now = datetime.now(UTC)
    policy = None
    if preprod is None:
        records = policy_records(reader, change.environment)
        if records:
            latest = records[-1]
            policy = latest.seq
            in_force = PolicyInForce.from_record(latest.seq, latest.event_id, latest.data)
            preprod = list(in_force.preprod_for(change.service))
    facts = candidates(reader, change.service, change.environment, now)
    if change.change_ref:
        known = {f.seq for f in facts}
        approvals = approvals_for(reader, change.service, change.environment, change.change_ref)
        facts += [f for f in approvals if f.seq not in known]
    proposed = Fact(reader.size() + 1, "gate", _kind(change), now, change.actor,
                    _data(change), now)  # fmt: skip
    answer = reconstruct(change.service, change.environment, now, [*facts, proposed],
                         reader.size())  # fmt: skip
    if change.image is not None:
        judged: Any = answer.deployment
    else:
        judged = next(m for m in answer.mutations if (m.target_kind, m.target, m.instance)
                      == (change.target_kind, change.target, None))  # fmt: skip
    reasons = []
    if not judged.approved:
        reasons.append(f"not approved: {judged.unapproved_reason} (change ref "
                       f"{change.change_ref or 'none'})")  # fmt: skip
    promotion = _promotion(reader, change, preprod) | {"policy": policy}
    if promotion["checked"] and not promotion["entries"]:
        reasons.append(f"{change.image} was never witnessed succeeding in "
                       f"{', '.join(promotion['environments'])}")  # fmt: skip
    return GateAnswer(
        allowed=not reasons,
        approved=judged.approved,
        unapproved_reason=judged.unapproved_reason,
        approval=None if judged.approval is None else judged.approval.model_dump(mode="json"),
        promotion=promotion,
        reasons=reasons,
    )


def _kind(change: ProposedChange) -> str:
    return "deployment.succeeded" if change.image is not None else "mutation.applied"


def _data(change: ProposedChange) -> dict[str, Any]:
    if change.image is not None:
        return {"image": change.image, "change_ref": change.change_ref, "instances": None}
    return {"target_kind": change.target_kind, "target": change.target, "instance": None,
            "hash": change.hash, "tool": "gate", "method": "pipeline",
            "change_ref": change.change_ref}  # fmt: skip


def _promotion(
    reader: LedgerReader, change: ProposedChange, preprod: list[str] | None
) -> dict[str, Any]:
    """Where the ledger saw this image succeed before production (any service: a digest
    names the artifact, whatever the service calls it)."""
    if not preprod or change.image is None:
        return {"checked": False, "environments": preprod or [], "entries": []}
    rows = reader.con.execute(
        "SELECT seq FROM entries WHERE type = 'deployment.succeeded' AND image = $image "
        "AND environment IN (SELECT unnest($envs)) ORDER BY seq",
        {"image": change.image, "envs": preprod},
    ).fetchall()
    return {"checked": True, "environments": preprod, "entries": [int(s) for (s,) in rows]}
