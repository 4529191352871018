"""Event ids for the integrations: the same tool output gives the same ids, every time.

An integration (``ledger ingest NAME``) must be idempotent by construction: ingesting one
input twice chains nothing twice, because both runs send the same events (the same id and
byte-identical payloads) and the consumer records a repeated id once. The id is
UUIDv7-shaped (:func:`ledger.wire.events.derived_event_id`) so that ids still grow with
time, as the consumer's duplicate check relies on:

- its 48-bit millisecond field is the time *the tool's data* gives the event (never the
  clock of the machine that runs the parser);
- its 74 other free bits are the first bits of SHA-256 over :func:`id_material`: the tool,
  the run of the tool the event comes from, and the resource the event is about.

The material is the UTF-8 bytes of this JSON array, without spaces::

    ["deploy-ledger/ingest-id/v1", TOOL, [RUN…], [RESOURCE…]]

(``json.dumps(..., ensure_ascii=False, separators=(",", ":"))``), so another language can
derive the same ids. ``RUN`` identifies one run of the tool (for CI: provider, project, run
id and attempt); ``RESOURCE`` what the event is about within that run (for CI: service,
environment, status and image). Two events of one run about one resource at one millisecond
would share an id: a parser that can produce them puts what tells them apart in
``RESOURCE``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from ledger.wire.events import derived_event_id

__all__ = ["ID_VERSION", "id_material", "ingest_id"]

ID_VERSION = "deploy-ledger/ingest-id/v1"
"""The first element of every id's material: a new derivation would change it."""


def id_material(tool: str, run: Sequence[str], resource: Sequence[str]) -> bytes:
    """The bytes whose digest fills an ingested event's id (see the module's text)."""
    values = [tool, *run, *resource]
    if not all(isinstance(value, str) for value in values):
        raise TypeError("an id's material is made of strings")
    return json.dumps(
        [ID_VERSION, tool, list(run), list(resource)], ensure_ascii=False, separators=(",", ":")
    ).encode()


def ingest_id(at: datetime, tool: str, run: Sequence[str], resource: Sequence[str]) -> str:
    """The id of the event about ``resource`` that run ``run`` of ``tool`` reports at
    ``at`` (an aware time, from the tool's data): UUIDv7-shaped, the same for the same
    input."""
    if at.tzinfo is None:
        raise ValueError("an ingested event's time carries its offset")
    return derived_event_id(at, id_material(tool, run, resource))
