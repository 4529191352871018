"""The decoded columns stored beside each envelope, derived from the verified event (pure).

The columns exist for queries; they are not evidence. Verification re-derives them from
the stored envelope bytes and compares, so an edited column is caught.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from ledger.log.chain import micros
from ledger.wire.events import Event, unit_reference

__all__ = ["DecodedColumns", "decoded_columns"]


class DecodedColumns(NamedTuple):
    event_id: str
    type: str
    time_us: int
    service: str
    environment: str
    actor: str
    source: str
    key_id: str
    change_ref: str | None
    image: str | None
    target_kind: str | None
    target: str | None
    instance: str | None
    content_hash: str | None
    data: str


def decoded_columns(event: Event, key_id: str) -> DecodedColumns:
    data = event.data.model_dump(mode="json")
    return DecodedColumns(
        event_id=event.id,
        type=event.type,
        time_us=micros(event.time),
        service=event.service,
        environment=event.environment,
        actor=event.actor,
        source=event.source,
        key_id=key_id,
        change_ref=data.get("change_ref"),
        image=unit_reference(event.data),
        target_kind=data.get("target_kind"),
        target=data.get("target"),
        instance=data.get("instance"),
        content_hash=data.get("hash"),
        data=json.dumps(data, sort_keys=True, separators=(",", ":")),
    )
