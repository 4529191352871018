"""Read-only HTTP API, served by the consumer process itself.

DuckDB allows one writing process, so the process that writes the ledger is the one that
serves reads while it runs: each request reads through its own cursor of the writer's
connection and sees a consistent snapshot. Every request needs ``Authorization: Bearer
<token>``, the OpenAPI schema (``/openapi.json``) too; there are no HTML doc pages. The
JSON is the same as the CLI's ``--json`` output.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import duckdb
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.background import BackgroundTask

from ledger.api.access import ApiTokens, Forbidden
from ledger.api.client import MAX_PAGE
from ledger.api.health import HEALTH_PATHS, Health, add_health
from ledger.errors import ConfigurationError, EvidenceError
from ledger.evidence.build import build_bundle, evidence_query
from ledger.rules.answers import Diff, SearchHit, Snapshot, TimelineEntry
from ledger.rules.pointintime import AsOf
from ledger.rules.policy import parse_duration
from ledger.rules.questions import parse_instant, search_terms
from ledger.rules.stats import Stats
from ledger.store.backup import backup_to
from ledger.store.check import CheckReport, check
from ledger.store.gate import ProposedChange, gate
from ledger.store.keyrings import recorded_keyrings
from ledger.store.policy import horizon_report
from ledger.store.query import (
    asof,
    diff,
    search,
    snapshot,
    timeline,
)
from ledger.store.reader import LedgerReader
from ledger.store.reports import quarantine_report, status_report, verification_report
from ledger.store.stats import stats
from ledger.store.verified import VerificationRecord, read_record
from ledger.wire.keyring import Keyring, Signer

__all__ = ["create_app"]

access = logging.getLogger("ledger.access")
"""One line per request: client, token name, method, path and query, status, time taken.
Never the token (docs/operations.md "Who read what")."""

_bearer = HTTPBearer(auto_error=False)


def _authorized(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    tokens: ApiTokens = request.app.state.tokens
    try:
        who = None if credentials is None else tokens.who(credentials.credentials, request.url.path)
    except Forbidden as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    if who is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.who = who


def _reader(request: Request) -> Iterator[LedgerReader]:
    con: duckdb.DuckDBPyConnection = request.app.state.cursor()
    try:
        yield LedgerReader(con)
    finally:
        con.close()


Reader = Annotated[LedgerReader, Depends(_reader)]

# Query parameters, named and described as the CLI's options (OpenAPI carries the text).
_INSTANT = "RFC 3339 with an offset (2026-11-24T14:03:00Z), 'now' or '3 weeks ago'"
Service = Annotated[str, Query(description="Service name, e.g. checkout.")]
Env = Annotated[str, Query(description="Environment, e.g. prod.")]
At = Annotated[str, Query(description=f"The instant asked about (valid time): {_INSTANT}.")]
MaybeAt = Annotated[str | None, Query(description=f"What was live at this instant: {_INSTANT}.")]
KnownAt = Annotated[
    str | None,
    Query(description="Answer with only what the ledger had ingested by then (transaction time)."),
]
From = Annotated[str, Query(alias="from", description=f"The earlier instant: {_INSTANT}.")]
To = Annotated[str, Query(alias="to", description=f"The later instant: {_INSTANT}.")]
MaybeFrom = Annotated[str | None, Query(alias="from", description="From this instant.")]
MaybeTo = Annotated[str | None, Query(alias="to", description="Up to this instant.")]
After = Annotated[int, Query(ge=0, description="Only what comes after the entry of this seq.")]
AfterService = Annotated[
    str, Query(description="Only the services after this one (by name): `next_after` of a page.")
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"At most this many (≤ {MAX_PAGE}).")]
OnlyService = Annotated[str | None, Query(description="Only this service's changes.")]
PartialAfter = Annotated[
    str | None, Query(description="A mixed fleet longer than this is a finding, e.g. 1h, 30m.")
]
_REFUSED: dict[int | str, dict[str, Any]] = {
    400: {"description": "A question that cannot be asked, named in `detail`."}
}
_REPORT_TYPES = ("text/html", "text/markdown", "text/csv", "application/json")
"""What `/v1/report` answers in, by its `format` (ledger.report.formats.CONTENT_TYPES)."""


def create_app(
    cursor: Callable[[], duckdb.DuckDBPyConnection],
    tokens: ApiTokens | str,
    bundles: tuple[Keyring, Signer] | None = None,
    max_queries: int | None = None,
    health: Health | None = None,
    db: Path | None = None,
) -> FastAPI:
    """An app reading through ``cursor()`` (one per request), guarded by ``tokens`` (a
    string: the one shared token); with
    ``bundles`` (the producers' keyring and the ledger key), it also signs evidence. At most
    ``max_queries`` requests are answered at once (default ``LEDGER_API_QUERIES``, else 8).
    With ``health``, it serves the health routes too (ledger.api.health), and counts its
    requests by outcome; ``db`` (the ledger's path) is where the last recorded verification
    is read from, which `/v1/check` states."""
    if isinstance(tokens, str):
        tokens = ApiTokens.shared(tokens)
    router = APIRouter(dependencies=[Depends(_authorized)])
    app = FastAPI(
        title="deploy-ledger",
        summary="Read-only access to a signed, hash-chained deployment ledger.",
        version="1",
        responses={401: {"description": "Missing or wrong bearer token."}},
        # The schema is served below, behind the token like every other path; no /docs or
        # /redoc pages, which would load their scripts from a CDN.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.cursor = cursor
    app.state.db = db
    app.state.tokens = tokens
    admitted = threading.BoundedSemaphore(
        max_queries or int(os.environ.get("LEDGER_API_QUERIES", "8"))
    )

    @app.middleware("http")
    async def admit(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        """A bounded number of questions at once: DuckDB gives the reader connections no
        memory limit of their own, and readers beyond it could starve the writer (once,
        out of memory in its COMMIT). Beyond it: 503, ask again in a second."""
        if request.url.path in HEALTH_PATHS:
            return await call_next(request)
        started = time.perf_counter()
        if not admitted.acquire(blocking=False):
            response: Any = JSONResponse(
                {"detail": "busy: too many questions at once; ask again shortly"},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        else:
            try:
                response = await call_next(request)
            finally:
                admitted.release()
        _count(health, response.status_code)
        access.info(
            "%s %s %s %s %d %.0fms", request.client.host if request.client else "-",
            getattr(request.state, "who", "-"), request.method,
            request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            response.status_code, (time.perf_counter() - started) * 1000,
        )  # fmt: skip
        return response

    @app.exception_handler(ConfigurationError)
    def refused(request: Request, exc: ConfigurationError) -> JSONResponse:
        """A question that cannot be asked (a window that ends before it starts, `at` with
        `from`): 400, with the reason the CLI would print."""
        return JSONResponse({"detail": exc.message}, status_code=400)

    @router.get("/openapi.json", include_in_schema=False)
    def get_openapi() -> dict[str, Any]:
        """The OpenAPI schema of this API (it needs the token too)."""
        return app.openapi()

    @router.get("/v1/status")
    def get_status(reader: Reader) -> dict[str, Any]:
        """Size, head hash and quarantine count of the ledger as of now."""
        return status_report(reader)

    @router.get("/v1/verify")
    def get_verify(reader: Reader) -> dict[str, Any]:
        """Hashes, links, tree and stored checkpoints (as `ledger verify --json`).

        Signatures are not re-verified here (``signatures_checked`` is false): that needs
        a process per core, which the consumer's own process does not spawn per request.
        """
        return verification_report(reader, signatures=False)

    @router.get("/v1/quarantine")
    def get_quarantine(
        reader: Reader,
        after: Annotated[int, Query(ge=0, description="Only ids above this one.")] = 0,
        limit: Limit = 100,
    ) -> list[dict[str, Any]]:
        """Refused messages with raw bytes and reasons (as `ledger quarantine --json`), a
        page at a time: ask again with `after` set to the last id until a page is short."""
        return quarantine_report(reader, after, limit)

    @router.get(
        "/v1/backup",
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {}},
                         "description": "A consistent copy of the ledger file (DuckDB)."}},
    )  # fmt: skip
    def get_backup() -> FileResponse:
        """A consistent copy of the ledger, taken while the consumer goes on (as `ledger
        backup --api`, which verifies it once written)."""
        con = cursor()
        try:
            [(where,)] = con.execute(
                "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
            ).fetchall()
            folder = Path(tempfile.mkdtemp(prefix=".backup-", dir=Path(where).parent))
            copy = folder / "ledger.duckdb"
            backup_to(con, copy)
        finally:
            con.close()
        return FileResponse(copy, media_type="application/octet-stream",
                            background=BackgroundTask(shutil.rmtree, folder))  # fmt: skip

    @router.get("/v1/gate")
    def get_gate(
        reader: Reader,
        service: Service,
        env: Env,
        actor: Annotated[str, Query(description="Who is about to make the change.")],
        image: Annotated[str | None, Query(description="A deployment: the image.")] = None,
        target_kind: Annotated[
            str | None, Query(description="An in-place change: its kind.")
        ] = None,
        target: Annotated[str | None, Query(description="...its target.")] = None,
        hash: Annotated[str | None, Query(description="...and the new content's hash.")] = None,
        change_ref: Annotated[
            str | None, Query(description="Change/ticket reference the approval names.")
        ] = None,
        preprod: Annotated[
            list[str] | None,
            Query(
                description="A pre-production environment the image must have succeeded "
                "in (repeatable)."
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Would this change be approved if it were made now (as `ledger gate --json`)?"""
        proposed = ProposedChange(service, env, actor, change_ref, image, target_kind, target,
                                  hash)  # fmt: skip
        return asdict(gate(reader, proposed, preprod))

    @router.get("/v1/horizon")
    def get_horizon(reader: Reader, env: Env) -> dict[str, Any]:
        """What the ledger records of the horizon policy of an environment (as `ledger
        horizon plan --api` reads it): each service's latest classification, the latest
        policy record (or null), and the services any event names there."""
        return horizon_report(reader, env)

    @router.get("/v1/check", responses=_REFUSED)
    def get_check(
        request: Request,
        reader: Reader,
        env: Annotated[str, Query(description="The production environment to check.")],
        from_: From,
        to: To = "now",
        service: OnlyService = None,
        partial_after: PartialAfter = None,
        after: Annotated[
            str, Query(description="Only the findings after this many: `next_after` of a page.")
        ] = "",
        limit: Limit = MAX_PAGE,
    ) -> CheckReport:
        """A period's production changes checked against the process and the horizon
        policy (as `ledger check --json`), the findings a page at a time."""
        skip = int(after) if after.isdigit() else 0
        report = check(reader, env, _when(from_, "from"), _when(to, "to"), service,
                       thresholds=_thresholds(partial_after),
                       verified=_verified(request))  # fmt: skip
        page = report.findings[skip : skip + limit]
        more = skip + limit < len(report.findings)
        return report.model_copy(
            update={"findings": page, "next_after": str(skip + limit) if more else None}
        )

    @router.get("/v1/stats", responses=_REFUSED)
    def get_stats(
        reader: Reader,
        env: Annotated[str, Query(description="The production environment to measure.")],
        from_: From,
        to: To = "now",
        by: Annotated[
            str,
            Query(
                description="One group per deployment model (as classified at the time of "
                "each change) or per service: model | service."
            ),
        ] = "model",
        service: OnlyService = None,
    ) -> Stats:
        """Deployment frequency, lead time, change failure rate, time to restore, mixed
        fleets, unapproved and manual changes of a period, by deployment model or service
        (as `ledger stats --json`)."""
        return stats(reader, env, _when(from_, "from"), _when(to, "to"), by=by,
                     service=service)  # fmt: skip

    @router.get(
        "/v1/report",
        response_class=Response,
        responses={200: {"content": {kind: {} for kind in _REPORT_TYPES},
                         "description": "The document, as `ledger report --format` writes it."},
                   **_REFUSED},
    )  # fmt: skip
    def get_report(
        request: Request,
        reader: Reader,
        env: Annotated[str, Query(description="The production environment to report on.")],
        from_: From,
        to: To = "now",
        fmt: Annotated[
            str,
            Query(
                alias="format",
                description="html (one self-contained file) | md | csv | json (the whole "
                "document: findings, numbers, timelines).",
            ),
        ] = "html",
        service: OnlyService = None,
        partial_after: PartialAfter = None,
    ) -> Response:
        """The auditor's report of a period (as `ledger report`): findings by requirement,
        the pilot numbers, a timeline per service, the ledger's identity and integrity."""
        from ledger.report.collect import gather
        from ledger.report.formats import CONTENT_TYPES, render, truncated

        if fmt not in CONTENT_TYPES:
            raise HTTPException(400, f"format: {fmt!r} is not one of {', '.join(CONTENT_TYPES)}")
        document = gather(reader, env, _when(from_, "from"), _when(to, "to"), service,
                          thresholds=_thresholds(partial_after),
                          verified=_verified(request))  # fmt: skip
        full = "this report's CSV and JSON forms (the same request, format=csv or format=json)"
        full_needed = fmt == "html" and truncated(document)
        return Response(render(document, fmt, full=full if full_needed else None),
                        media_type=CONTENT_TYPES[fmt])  # fmt: skip

    @router.get("/v1/keyring", responses={404: {"description": "No keyring recorded yet."}})
    def get_keyring(reader: Reader) -> dict[str, Any]:
        """The keyring the ledger recorded last, which it judges new events under (as
        `ledger emit --api` checks them before sending): its record's seq, digest, keys."""
        recorded = recorded_keyrings(reader.con)
        if not recorded:
            raise HTTPException(404, "the ledger has recorded no keyring yet")
        seq, keyring = recorded[-1]
        return {"seq": seq, "digest": keyring.digest().hex(),
                "keyring": keyring.model_dump(mode="json")}  # fmt: skip

    @router.get("/v1/asof")
    def get_asof(
        reader: Reader, service: Service, env: Env, at: At = "now", known_at: KnownAt = None
    ) -> AsOf:
        """What was live for one service at an instant (as `ledger asof --json`)."""
        return asof(reader, service, env, _when(at, "at"), _maybe(known_at, "known_at"))

    @router.get("/v1/snapshot")
    def get_snapshot(
        reader: Reader,
        env: Env,
        at: At = "now",
        known_at: KnownAt = None,
        after: AfterService = "",
        limit: Limit = MAX_PAGE,
    ) -> Snapshot:
        """Every service of an environment at an instant (as `ledger snapshot --json`)."""
        return snapshot(reader, env, _when(at, "at"), _maybe(known_at, "known_at"), after=after,
                        limit=limit)  # fmt: skip

    @router.get("/v1/diff", responses=_REFUSED)
    def get_diff(
        reader: Reader,
        env: Env,
        start: From,
        end: To,
        after: AfterService = "",
        limit: Limit = MAX_PAGE,
    ) -> Diff:
        """What changed between two instants (as `ledger diff --json`)."""
        return diff(reader, env, _when(start, "from"), _when(end, "to"), after=after, limit=limit)

    @router.get("/v1/timeline", responses=_REFUSED)
    def get_timeline(
        reader: Reader,
        service: Service,
        env: Env,
        start: MaybeFrom = None,
        end: MaybeTo = None,
        after: After = 0,
        limit: Limit = MAX_PAGE,
    ) -> list[TimelineEntry]:
        """The ordered history of a service (as `ledger timeline --json`), a page at a time:
        ask again with `after` set to the last entry's `seq` until a page is short."""
        return timeline(
            reader,
            service,
            env,
            _maybe(start, "from"),
            _maybe(end, "to"),
            after=after,
            limit=limit,
        )

    @router.get("/v1/search", responses=_REFUSED)
    def get_search(
        reader: Reader,
        image: Annotated[
            str | None,
            Query(
                description=(
                    "A digest or its first hex digits (sha256:4f1c…, 4f1c2b3a), optionally "
                    "after the repository (checkout@4f1c2b3a) or a whole reference; not a tag."
                )
            ),
        ] = None,
        commit: Annotated[str | None, Query(description="A commit SHA or its prefix.")] = None,
        change_ref: Annotated[str | None, Query(description="A change ref, e.g. CHG-1042.")] = None,
        after: After = 0,
        limit: Limit = MAX_PAGE,
    ) -> list[SearchHit]:
        """Where an image ran, a commit was deployed or a change ref used, a page at a time
        (as the timeline)."""
        return search(reader, search_terms(image, commit, change_ref), after, limit)

    @router.get(
        "/v1/evidence",
        response_class=Response,
        responses={200: {"content": {"application/json": {}},
                         "description": "The signed bundle, byte for byte as `ledger evidence` "
                                        "writes it (a DSSE envelope)."}, **_REFUSED,
                   404: {"description": "This consumer signs no bundles (no ledger key)."},
                   409: {"description": "The entries failed a check while being bundled."}},
    )  # fmt: skip
    def get_evidence(
        reader: Reader,
        service: Service,
        env: Env,
        at: MaybeAt = None,
        start: MaybeFrom = None,
        end: MaybeTo = None,
    ) -> Response:
        """An evidence bundle (as `ledger evidence`), signed with the consumer's ledger key
        (`--ledger-key`): give `at`, or `from` and optionally `to`."""
        if bundles is None:
            raise HTTPException(404, "this consumer signs no bundles: start it with "
                                     "--ledger-key (the ledger key)")  # fmt: skip
        query = evidence_query(
            service, env, _maybe(at, "at"), _maybe(start, "from"), _maybe(end, "to")
        )
        try:
            data, _ = build_bundle(reader, query, *bundles)
        except EvidenceError as exc:
            raise HTTPException(409, f"{exc.check}: {exc.message}") from None
        return Response(data, media_type="application/json")

    app.include_router(router)
    if health is not None:
        add_health(app, health)
    return app


def _count(health: Health | None, status_code: int) -> None:
    """A request's outcome, as the API's metric counts it."""
    if health is None:
        return
    outcome = {2: "ok", 4: "refused", 5: "failed"}.get(status_code // 100, "other")
    if status_code in (401, 403):
        outcome = "unauthorized"
    elif status_code == 503:
        outcome = "busy"
    health.api_requests.labels(outcome).inc()


def _when(value: str, name: str) -> datetime:
    """A time as the CLI reads it, with the same defaults and refusals (400)."""
    return parse_instant(value, name, datetime.now(UTC))


def _thresholds(partial_after: str | None) -> dict[str, int]:
    """The thresholds a question sets (``partial_after``), as the CLI reads them (400)."""
    if partial_after is None:
        return {}
    try:
        return {"partial_after": parse_duration(partial_after)}
    except ValueError:
        raise HTTPException(400, f"partial_after: {partial_after!r} is not a duration such as "
                            "90s, 15m, 1h or 2d") from None  # fmt: skip


def _verified(request: Request) -> VerificationRecord | None:
    """The last recorded verification of the ledger this API serves (ledger verify --record)."""
    db: Path | None = request.app.state.db
    return None if db is None else read_record(db)


def _maybe(value: str | None, name: str) -> datetime | None:
    return None if value is None else _when(value, name)
