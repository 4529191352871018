"""Questions to the ledger: asof, snapshot, diff, timeline, search (DuckDB in, typed answers out).

SQL narrows the entries to the few the point-in-time rules can depend on (the latest
deployment, failures after it, the latest mutation per target unless a later deployment
wiped it, the grants and revocations of those changes' refs, the latest classification);
ledger.rules.pointintime applies the rules.
Valid time is the event ``time``; ``known_at`` restricts to what had been ingested by then.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import groupby
from operator import attrgetter, itemgetter
from typing import Any, TypeVar

from ledger.rules.answers import Diff, SearchHit, Snapshot, TimelineEntry, changes
from ledger.rules.pointintime import INSTANCE_LOCAL_KINDS, AsOf, Fact, reconstruct
from ledger.rules.questions import SearchTerms, check_window
from ledger.store.keyrings import compromised, recorded_keyrings, revocations
from ledger.store.reader import LedgerReader
from ledger.wire.records import LEDGER_ENVIRONMENT

__all__ = [
    "FACT_COLUMNS",
    "approvals_for",
    "asof",
    "candidates",
    "diff",
    "search",
    "snapshot",
    "streams",
    "timeline",
    "to_facts",
    "unit_identity",
    "without_cyclic_gc",
]

_T = TypeVar("_T")

_LOCAL_KINDS = ", ".join(f"'{kind}'" for kind in sorted(INSTANCE_LOCAL_KINDS))

_WIDE = """seq, event_id, type, time, actor, service, change_ref, image, target_kind, target,
    instance, content_hash, tool, method, approver, valid_until, updated, total, state,
    criticality, model, ingested_at"""

FACT_COLUMNS = """seq, event_id, type, epoch_us(time), actor, service, change_ref, image,
       target_kind, target, instance, content_hash, tool, method, approver,
       epoch_us(valid_until), updated, total, state, criticality, model, epoch_us(ingested_at)"""
"""What :func:`to_facts` reads of each fact (the service is the sixth column)."""

_CANDIDATES = f"""
WITH base AS {{materialized}} (
    SELECT {{columns}}
    FROM facts
    WHERE environment = $env {{stream}} AND time <= $at
      AND ($known_at IS NULL OR ingested_at <= $known_at)
),
-- One hash aggregation finds the latest deployment and the latest classification of each
-- service (they have no target: one group each) and the latest mutation of each (kind,
-- target, instance); cheaper than a sorting window per kind.
latest AS (
    SELECT * FROM base SEMI JOIN (
        SELECT arg_max(seq, (time, seq)) AS seq FROM base
        WHERE type IN ('deployment.succeeded', 'deployment.rolled_back', 'mutation.applied',
                       'service.classified')
        GROUP BY service, type = 'mutation.applied', type = 'service.classified',
                 target_kind, target, instance
    ) USING (seq)
),
live AS (
    SELECT * FROM latest WHERE type IN ('deployment.succeeded', 'deployment.rolled_back')
),
failed AS (
    SELECT b.seq FROM base b LEFT JOIN live l ON b.service = l.service
    WHERE b.type = 'deployment.failed'
      AND (l.seq IS NULL OR b.time > l.time OR (b.time = l.time AND b.seq > l.seq))
),
-- Instance-local mutations that a later deployment wiped are dropped here, and with them
-- the grants of their refs: about 40% of a snapshot's candidates on the benchmark ledger.
mutations AS (
    SELECT m.* FROM latest m LEFT JOIN live l ON m.service = l.service
    WHERE m.type = 'mutation.applied'
      AND (l.seq IS NULL OR m.target_kind NOT IN ({_LOCAL_KINDS})
           OR m.time > l.time OR (m.time = l.time AND m.seq > l.seq))
),
changes AS (FROM live UNION ALL FROM mutations),
approvals AS (
    SELECT b.seq FROM base b
    SEMI JOIN changes c ON b.service = c.service AND b.change_ref = c.change_ref
    WHERE b.type IN ('approval.granted', 'approval.revoked')
),
-- Revocations that claim a time after the instant: the rules place them by the ledger's
-- order, so one recorded before a change it revokes counts (docs/queries.md, rule 4).
late AS (
    SELECT {FACT_COLUMNS} FROM facts f
    SEMI JOIN changes c ON f.service = c.service AND f.change_ref = c.change_ref
    WHERE f.environment = $env {{late_stream}} AND f.type = 'approval.revoked' AND f.time > $at
      AND ($known_at IS NULL OR f.ingested_at <= $known_at)
)
SELECT * FROM (
    SELECT {FACT_COLUMNS} FROM {{wide}} seq IN (
        SELECT seq FROM latest WHERE type <> 'mutation.applied'
        UNION ALL SELECT seq FROM failed UNION ALL SELECT seq FROM mutations
        UNION ALL SELECT seq FROM approvals
    )
    UNION ALL FROM late
)
{{order}}
"""
_SERVICE_CANDIDATES = _CANDIDATES.format(
    stream="AND service = $service",
    late_stream="AND f.service = $service",
    materialized="",
    columns=_WIDE,
    wide="base WHERE",
    order="",
)
_ENVIRONMENT_CANDIDATES = _CANDIDATES.format(
    stream="AND service COLLATE C > $after", late_stream="AND f.service COLLATE C > $after",
    materialized="NOT MATERIALIZED",
    columns="seq, type, time, service, change_ref, target_kind, target, instance",
    wide="facts WHERE environment = $env AND",
    # byte order, as Python sorts str (groupby needs it), whatever default_collation
    order="ORDER BY service COLLATE C",
)  # fmt: skip
"""Two statements, not one with ``$service IS NULL OR``: DuckDB checks a plain equality
against the zone maps of the query index, so the one-service form reads its stream only.
One stream's few thousand facts are read once, every column, and kept (``base``); a whole
environment's are a million at ten million entries, so the narrowing reads the narrow
columns, once per part rather than copied (snapshot p50 245 -> 212 ms), and the wide ones
are read for the chosen candidates only (measured, interleaved at 10M: asof p50 18.7 ->
14.5 ms with the one-stream form, which also needs no ordering)."""


def unit_identity(column: str) -> str:
    """SQL: the identity of the unit a reference in ``column`` names, compared across
    environments (promotion, first sight): the content digest after its ``@`` (an image's,
    an artifact's), else the whole reference (an AMI's id is its identity)."""
    return f"CASE WHEN contains({column}, '@') THEN split_part({column}, '@', 2) ELSE {column} END"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""Times are fetched as epoch microseconds and added to this: DuckDB's own TIMESTAMPTZ to
datetime conversion goes through the session time zone and takes twice as long."""


def _time(micros: int | None) -> datetime | None:
    return None if micros is None else _EPOCH + timedelta(microseconds=micros)


def _ledger_size(reader: LedgerReader, known_at: datetime | None) -> int:
    row = reader.one(
        "SELECT count(*) FROM entries WHERE $known_at IS NULL OR ingested_at <= $known_at",
        {"known_at": known_at},
    )
    return int(row[0]) if row else 0


def _answers(
    reader: LedgerReader,
    environment: str,
    at: datetime,
    known_at: datetime | None,
    ledger_size: int,
    after: str = "",
) -> list[AsOf]:
    """An answer for each service with candidate entries whose name sorts after ``after``
    (byte order), in service order.

    Facts are built and judged one service at a time, so each service's facts are garbage
    once its answer exists.
    """
    rows = reader.con.execute(
        _ENVIRONMENT_CANDIDATES,
        {"env": environment, "at": at, "known_at": known_at, "after": after},
    ).fetchall()
    with without_cyclic_gc():
        return [
            reconstruct(svc, environment, at, to_facts(group), ledger_size, known_at)
            for svc, group in groupby(rows, key=itemgetter(5))
        ]


@contextmanager
def without_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a snapshot's answers are built.

    The tens of thousands of rows, facts and models alive at once make it walk the young
    heap every few hundred allocations: half of the Python time of a snapshot at ten
    million entries (measured: 130 -> 65 ms). Nothing built here is cyclic; reference
    counting frees it all. Re-enabled only if it was enabled, so a caller's choice holds.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def to_facts(rows: Iterable[tuple[Any, ...]]) -> list[Fact]:
    """Facts from the query index's columns: the event data the rules read, by type."""
    facts = []
    for (seq, event_id, kind, micros, actor, _, change_ref, image, target_kind, target,
         instance, hash_, tool, method, approver, valid_until, updated, total, state,
         criticality, model, recorded) in rows:  # fmt: skip
        data: dict[str, Any]
        if kind == "mutation.applied":
            data = {
                "target_kind": target_kind,
                "target": target,
                "instance": instance,
                "hash": hash_,
                "tool": tool,
                "method": method,
                "change_ref": change_ref,
            }
        elif kind in ("approval.granted", "approval.revoked"):
            data = {
                "change_ref": change_ref,
                "approver": approver,
                "image": image,
                "hash": hash_,
                "valid_until": _time(valid_until),
            }
        elif kind == "service.classified":
            data = {"state": state, "criticality": criticality, "model": model}
        else:  # deployment.*
            data = {
                "image": image,
                "change_ref": change_ref,
                "instances": None if total is None else {"updated": updated, "total": total},
            }
        facts.append(Fact(seq, event_id, kind, _EPOCH + timedelta(microseconds=micros), actor,
                          data, _EPOCH + timedelta(microseconds=recorded)))  # fmt: skip
    return facts


def approvals_for(
    reader: LedgerReader, service: str, environment: str, change_ref: str
) -> list[Fact]:
    """The grants and revocations of one change ref in one service and environment: what
    decides the approval of a change that names it (``ledger gate``'s question)."""
    rows = reader.con.execute(
        f"SELECT {FACT_COLUMNS} FROM facts WHERE environment = $env AND service = $service "
        "AND change_ref = $ref AND type IN ('approval.granted', 'approval.revoked')",
        {"env": environment, "service": service, "ref": change_ref},
    ).fetchall()
    return to_facts(rows)


def candidates(
    reader: LedgerReader,
    service: str,
    environment: str,
    at: datetime,
    known_at: datetime | None = None,
) -> list[Fact]:
    """The facts of one service the rules can depend on at ``at``: what an evidence bundle
    carries so that a verifier re-derives the answer from them alone."""
    rows = reader.con.execute(
        _SERVICE_CANDIDATES,
        {"env": environment, "service": service, "at": at, "known_at": known_at},
    ).fetchall()
    return to_facts(rows)


def asof(
    reader: LedgerReader,
    service: str,
    environment: str,
    at: datetime,
    known_at: datetime | None = None,
    *,
    marks: bool = True,
) -> AsOf:
    """What was live for one service in one environment at ``at``; with ``marks``, which
    of its evidence a key reported compromised since signed (not a rule: bundles, which
    re-derive the answer from the rules alone, ask without)."""
    size = _ledger_size(reader, known_at)
    facts = candidates(reader, service, environment, at, known_at)
    answer = reconstruct(service, environment, at, facts, size, known_at)
    return _marked(reader, [answer], known_at)[0] if marks else answer


def snapshot(
    reader: LedgerReader,
    environment: str,
    at: datetime,
    known_at: datetime | None = None,
    *,
    after: str = "",
    limit: int | None = None,
) -> Snapshot:
    """Every service of an environment at ``at``: the whole estate, one answer each; a
    page: the services after ``after`` (by name), at most ``limit``, with ``next_after``
    when more follow."""
    size = _ledger_size(reader, known_at)
    answers = _answers(reader, environment, at, known_at, size, after)
    page, next_after = _page(answers, limit, attrgetter("service"))
    return Snapshot(
        environment=environment,
        at=at,
        known_at=known_at,
        services=_marked(reader, page, known_at),
        next_after=next_after,
    )


def _page(
    items: list[_T], limit: int | None, name: Callable[[_T], str]
) -> tuple[list[_T], str | None]:
    """The first ``limit`` items, and the name to ask after for the next page (None: none)."""
    if limit is None or len(items) <= limit:
        return items, None
    return items[:limit], name(items[limit - 1])


def _marked(reader: LedgerReader, answers: list[AsOf], known_at: datetime | None) -> list[AsOf]:
    """The answers, each with the entries of its evidence a revoked key signed after its
    revocation, by the keyrings the ledger had recorded (by ``known_at``)."""
    revoked = revocations(recorded_keyrings(reader.con, known_at))
    seqs = [seq for answer in answers for seq in answer.evidence.entries]
    found = compromised(reader.con, revoked, seqs)
    if not found:
        return answers
    by_seq = {c.seq: c for c in found}
    return [
        a.model_copy(update={"compromised": [by_seq[s] for s in a.evidence.entries if s in by_seq]})
        for a in answers
    ]


def diff(
    reader: LedgerReader,
    environment: str,
    start: datetime,
    end: datetime,
    *,
    after: str = "",
    limit: int | None = None,
) -> Diff:
    """What changed between two moments: like comparing two snapshots; a page: the changes
    of the services after ``after`` (by name), at most ``limit`` services, with
    ``next_after`` when more follow."""
    check_window(start, end)
    before = snapshot(reader, environment, start, after=after).services
    now = snapshot(reader, environment, end, after=after).services
    names, next_after = _page(sorted({a.service for a in before + now}), limit, str)
    kept = set(names)
    found = changes([a for a in before if a.service in kept], [a for a in now if a.service in kept])
    return Diff(environment=environment, from_=start, to=end, changes=found, next_after=next_after)


def streams(reader: LedgerReader) -> list[tuple[str, str]]:
    """Every (environment, service) that some event names, sorted: what a question can ask
    about (to tell a misspelt name from a service with nothing recorded). The ledger's own
    records are not events."""
    rows = reader.con.execute(
        "SELECT DISTINCT environment, service FROM entries WHERE environment <> $ledger "
        "ORDER BY ALL",
        {"ledger": LEDGER_ENVIRONMENT},
    ).fetchall()
    return [(str(environment), str(service)) for environment, service in rows]


_AFTER = "AND ($after = 0 OR (time, seq) > (SELECT (time, seq) FROM entries WHERE seq = $after))"
"""Paging by (time, seq), the order lists are in: after the entry whose seq is $after."""


def timeline(
    reader: LedgerReader,
    service: str,
    environment: str,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    marks: bool = True,
    after: int = 0,
    limit: int | None = None,
) -> list[TimelineEntry]:
    """The ordered history of one service/environment (by valid time, then seq); with
    ``marks``, each entry a key reported compromised since signed says since when. A page:
    the entries after entry ``after`` in that order, at most ``limit``."""
    check_window(start, end)
    rows = reader.rows(
        "SELECT seq, event_id, type, time, ingested_at, actor, source, key_id, data, "
        "CASE WHEN format = 2 THEN witnessed_at END AS witnessed_at "
        "FROM entries WHERE service = $service AND environment = $env "
        f"AND ($start IS NULL OR time >= $start) AND ($end IS NULL OR time <= $end) {_AFTER} "
        "ORDER BY time, seq LIMIT $limit",
        {"service": service, "env": environment, "start": start, "end": end, "after": after,
         "limit": limit},
    )  # fmt: skip
    entries = [TimelineEntry(**row | {"data": json.loads(row["data"])}) for row in rows]
    if not marks:
        return entries
    revoked = revocations(recorded_keyrings(reader.con))
    found = {
        c.seq: c.revoked_at for c in compromised(reader.con, revoked, (e.seq for e in entries))
    }
    return [
        e.model_copy(update={"compromised_since": found[e.seq]}) if e.seq in found else e
        for e in entries
    ]


# An image column matches when its digest starts with $digest (with the algorithm when
# $digest names one, else the hex after it) and its repository is $repo, or ends with
# /$repo when that is a bare name (as the tables show images: checkout@4f1c2b3a4f1c).
_IMAGE_MATCHES = """(
    starts_with(CASE WHEN $algorithm THEN split_part({col}, '@', 2)
                     ELSE split_part(split_part({col}, '@', 2), ':', 2) END, $digest)
    AND ($repo IS NULL OR split_part({col}, '@', 1) = $repo
         OR (NOT contains($repo, '/') AND ends_with(split_part({col}, '@', 1), '/' || $repo))))"""


def search(
    reader: LedgerReader, terms: SearchTerms, after: int = 0, limit: int | None = None
) -> list[SearchHit]:
    """Where and when an image ran, a commit was deployed, or a change ref was used (a
    page: the hits after entry ``after`` in (time, seq) order, at most ``limit``)."""
    params: dict[str, Any]
    if terms.image is not None:  # the image run, approved, or rolled back away from
        where = " OR ".join(
            _IMAGE_MATCHES.format(col=col) for col in ("image", "data->>'$.from_image'")
        )
        pattern = terms.image
        params = {"repo": pattern.repo, "digest": pattern.digest, "algorithm": pattern.algorithm}
    elif terms.artifact is not None:  # the unit, with or without its digest
        where, params = "(image = $v OR starts_with(image, $v || '@'))", {"v": terms.artifact}
    elif terms.commit is not None:
        where, params = "starts_with(data->>'$.commit', $v)", {"v": terms.commit}
    else:
        where, params = "change_ref = $v", {"v": str(terms.change_ref)}
    rows = reader.rows(
        "SELECT seq, event_id, type, time, service, environment, actor, change_ref, image "
        f"FROM entries WHERE ({where}) {_AFTER} ORDER BY time, seq LIMIT $limit",
        params | {"after": after, "limit": limit},
    )
    return [SearchHit(**row) for row in rows]
