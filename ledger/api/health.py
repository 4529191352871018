"""Health and metrics for orchestrators and Prometheus: ``/healthz``, ``/readyz``, ``/metrics``.

They need no token and read no ledger content: an orchestrator's probe and a Prometheus
scrape carry no bearer token by default, and what they answer (the process is alive; the
broker, the writer and the checkpoints are keeping up; counts and timestamps) says nothing
about what any entry holds. They are served on the API's listener (and so share its
address, which should not face the internet), or alone with ``ledger consume --metrics``.
They skip the API's admission limit: a probe must answer while the ledger is busy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # FastAPI is loaded only by a consumer that serves these routes
    from fastapi import FastAPI
    from prometheus_client import CollectorRegistry, Counter

__all__ = ["HEALTH_PATHS", "Health", "add_health", "health_app"]

HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass(frozen=True)
class Health:
    """What the health routes read: the consumer's metrics and its readiness checks (each
    true when that part keeps up), and where the API counts its requests."""

    registry: CollectorRegistry
    ready: Callable[[], dict[str, bool]]
    api_requests: Counter


def add_health(app: FastAPI, health: Health) -> None:
    """The three routes, on ``app`` and outside its token (see the module's docstring)."""
    from fastapi import Response
    from fastapi.responses import JSONResponse
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        """Alive: the process answers. (Restart it when this fails.)"""
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        """Ready: every check holds (503 naming those that do not)."""
        checks = health.ready()
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """The Prometheus text exposition of the consumer's metrics."""
        return Response(generate_latest(health.registry), media_type=CONTENT_TYPE_LATEST)


def health_app(health: Health) -> FastAPI:
    """The health routes alone (``ledger consume --metrics`` without the API)."""
    from fastapi import FastAPI

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    add_health(app, health)
    return app
