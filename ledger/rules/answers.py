"""The answers to questions over many instants or entries, and how a diff is judged (pure).

One service at one instant is :class:`ledger.rules.pointintime.AsOf`; a snapshot is one
per service, a diff compares two snapshots aspect by aspect, a timeline and a search list
entries. The JSON of these models is the CLI's ``--json`` output and the HTTP API's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ledger.rules.pointintime import AsOf

__all__ = ["Change", "Diff", "SearchHit", "Snapshot", "TimelineEntry", "changes"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Snapshot(_Model):
    environment: str
    at: datetime
    known_at: datetime | None
    services: list[AsOf]
    next_after: str | None = Field(default=None, exclude_if=lambda value: value is None)
    """A page of the estate (the API's): ask again with ``after`` set to this service."""


class Change(_Model):
    service: str
    aspect: str  # deployment | partial | mutation | approval | classification
    key: str
    before: Any
    after: Any


class Diff(_Model):
    model_config = ConfigDict(frozen=True, validate_by_name=True, serialize_by_alias=True)

    environment: str
    from_: datetime = Field(alias="from")
    to: datetime
    changes: list[Change]
    next_after: str | None = Field(default=None, exclude_if=lambda value: value is None)
    """A page (the API's): ask again with ``after`` set to this service."""


def _aspects(answer: AsOf) -> dict[tuple[str, str], Any]:
    """The comparable parts of one answer, keyed by (aspect, key)."""
    parts: dict[tuple[str, str], Any] = {}
    if answer.deployment is not None:
        parts[("deployment", "image")] = answer.deployment.image
        parts[("approval", "deployment")] = (
            "approved" if answer.deployment.approved else answer.deployment.unapproved_reason
        )
    if answer.partial is not None:
        parts[("partial", "image")] = (
            f"{answer.partial.image} ({answer.partial.updated}/{answer.partial.total})"
        )
    for m in answer.mutations:
        key = f"{m.target_kind}:{m.target}" + (f"@{m.instance}" if m.instance else "")
        parts[("mutation", key)] = m.hash
        parts[("approval", key)] = "approved" if m.approved else m.unapproved_reason
    if answer.classification is not None:
        c = answer.classification
        parts[("classification", "model")] = f"{c.state}/{c.criticality}/{c.model}"
    return parts


def changes(before: list[AsOf], after: list[AsOf]) -> list[Change]:
    """What differs between two snapshots' answers, by service, aspect and key."""
    old_parts = {a.service: _aspects(a) for a in before}
    new_parts = {a.service: _aspects(a) for a in after}
    found = []
    for service in sorted(old_parts.keys() | new_parts.keys()):
        old, new = old_parts.get(service, {}), new_parts.get(service, {})
        for aspect, key in sorted(old.keys() | new.keys()):
            was, now = old.get((aspect, key)), new.get((aspect, key))
            if was != now:
                found.append(Change(service=service, aspect=aspect, key=key, before=was, after=now))
    return found


class TimelineEntry(_Model):
    seq: int
    event_id: str
    type: str
    time: datetime
    ingested_at: datetime
    actor: str
    source: str
    key_id: str
    data: dict[str, Any]
    witnessed_at: datetime | None = Field(default=None, exclude_if=lambda value: value is None)
    """When the ledger witnessed it (entries of format 2): far from ``time``, the event
    arrived late or claims a time long past (a backfill, or a back-dated history)."""
    compromised_since: datetime | None = Field(default=None, exclude_if=lambda value: value is None)
    """Its key was revoked at this time, at or before the ledger witnessed it: accepted
    then, and resting on a key reported compromised since (ledger.store.keyrings)."""


class SearchHit(_Model):
    seq: int
    event_id: str
    type: str
    time: datetime
    service: str
    environment: str
    actor: str
    change_ref: str | None
    image: str | None
