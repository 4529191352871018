"""Read-only HTTP API, served by the consumer process itself.

DuckDB allows one writing process, so the process that writes the ledger is the one that
serves reads while it runs: each request reads through its own cursor of the writer's
connection and sees a consistent snapshot. Every request needs ``Authorization: Bearer
<token>``. The JSON is the same as the CLI's ``--json`` output.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import duckdb
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledger.reports import quarantine_report, status_report, verification_report
from ledger.store import LedgerReader

__all__ = ["create_app"]

_bearer = HTTPBearer(auto_error=False)


def _authorized(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    token: str = request.app.state.token
    if credentials is None or not secrets.compare_digest(
        credentials.credentials.encode(), token.encode()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _reader(request: Request) -> Iterator[LedgerReader]:
    con: duckdb.DuckDBPyConnection = request.app.state.cursor()
    try:
        yield LedgerReader(con)
    finally:
        con.close()


Reader = Annotated[LedgerReader, Depends(_reader)]


def create_app(cursor: Callable[[], duckdb.DuckDBPyConnection], token: str) -> FastAPI:
    """An app reading through ``cursor()`` (one per request), guarded by ``token``."""
    if not token:
        raise ValueError("the HTTP API needs a token")
    app = FastAPI(
        title="deploy-ledger",
        summary="Read-only access to a signed, hash-chained deployment ledger.",
        version="1",
        dependencies=[Depends(_authorized)],
    )
    app.state.cursor = cursor
    app.state.token = token

    @app.get("/v1/status")
    def get_status(reader: Reader) -> dict[str, Any]:
        """Size, head hash and quarantine count of the ledger as of now."""
        return status_report(reader)

    @app.get("/v1/verify")
    def get_verify(reader: Reader) -> dict[str, Any]:
        """Recompute every link of the chain (as `ledger verify --json`)."""
        return verification_report(reader)

    @app.get("/v1/quarantine")
    def get_quarantine(reader: Reader) -> list[dict[str, Any]]:
        """Refused messages with raw bytes and reasons (as `ledger quarantine --json`)."""
        return quarantine_report(reader)

    return app
