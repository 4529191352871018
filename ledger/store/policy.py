"""The horizon policy as the ledger records it: its ``policy.recorded`` entries, and each
service's latest classification (``ledger horizon``, ``ledger check``, ``/v1/horizon``).

``policy.recorded`` events carry the service name :data:`POLICY_SERVICE` and the policy's
environment; the policy in force for a change is the latest record with a lower ``seq``
(the ledger's order, which no producer chooses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.rules.policy import POLICY_SERVICE, Classification
from ledger.store.query import streams
from ledger.store.reader import LedgerReader

__all__ = [
    "POLICY_SERVICE",
    "RecordedClassification",
    "RecordedPolicy",
    "classifications",
    "horizon_report",
    "known_services",
    "policy_records",
]


@dataclass(frozen=True)
class RecordedPolicy:
    """One ``policy.recorded`` entry: where the ledger put it, and its event's data."""

    seq: int
    event_id: str
    time: datetime
    data: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "event_id": self.event_id,
            "time": self.time.isoformat(),
            "data": self.data,
        }


@dataclass(frozen=True)
class RecordedClassification(Classification):
    """A service's latest ``service.classified`` entry (``why`` None: recorded without one)."""

    seq: int = 0
    time: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | {
            "seq": self.seq,
            "time": None if self.time is None else self.time.isoformat(),
        }


def policy_records(reader: LedgerReader, environment: str) -> list[RecordedPolicy]:
    """Every ``policy.recorded`` entry of ``environment``, in the ledger's order (seq)."""
    rows = reader.con.execute(
        "SELECT seq, event_id, time, data FROM entries "
        "WHERE type = 'policy.recorded' AND environment = $env ORDER BY seq",
        {"env": environment},
    ).fetchall()
    return [
        RecordedPolicy(int(seq), str(event_id), time, json.loads(data))
        for seq, event_id, time, data in rows
    ]


def classifications(reader: LedgerReader, environment: str) -> dict[str, RecordedClassification]:
    """Each service's latest ``service.classified`` in ``environment``, by (time, seq) as
    the point-in-time rules place them (rule 5), by service name."""
    rows = reader.con.execute(
        "SELECT service, seq, time, data FROM entries "
        "WHERE type = 'service.classified' AND environment = $env "
        "QUALIFY row_number() OVER (PARTITION BY service ORDER BY time DESC, seq DESC) = 1 "
        "ORDER BY service",
        {"env": environment},
    ).fetchall()
    found: dict[str, RecordedClassification] = {}
    for service, seq, time, data in rows:
        d = json.loads(data)
        found[str(service)] = RecordedClassification(
            state=d["state"],
            criticality=d["criticality"],
            model=d["model"],
            why=d.get("why"),
            seq=int(seq),
            time=time,
        )
    return found


def known_services(reader: LedgerReader, environment: str) -> list[str]:
    """The services any event names in ``environment`` (the policy records' own aside)."""
    return [s for env, s in streams(reader) if env == environment and s != POLICY_SERVICE]


def horizon_report(reader: LedgerReader, environment: str) -> dict[str, Any]:
    """What ``ledger horizon plan`` compares a policy with, as JSON (``/v1/horizon``): each
    service's latest classification, the latest policy record (or null), the services
    known in ``environment``."""
    records = policy_records(reader, environment)
    return {
        "environment": environment,
        "classifications": {
            service: c.as_dict() for service, c in classifications(reader, environment).items()
        },
        "policy": records[-1].as_dict() if records else None,
        "services": known_services(reader, environment),
    }
