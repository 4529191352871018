"""Client side of the read-only API, for the CLI's --api option."""

from __future__ import annotations

import os
from typing import Any

import httpx

from ledger.errors import ConfigurationError, TransportError

__all__ = ["fetch", "fetch_bytes"]


def fetch(base_url: str, path: str, token: str | None = None) -> Any:
    """GET one JSON answer; the token defaults to LEDGER_API_TOKEN."""
    return _get(base_url, path, token).json()


def fetch_bytes(base_url: str, path: str, token: str | None = None) -> bytes:
    """GET one answer as the exact bytes served (a signed bundle)."""
    return _get(base_url, path, token).content


def _get(base_url: str, path: str, token: str | None) -> httpx.Response:
    token = token or os.environ.get("LEDGER_API_TOKEN")
    if not token:
        raise ConfigurationError("--api needs the API token: set LEDGER_API_TOKEN")
    url = base_url.rstrip("/") + path
    try:
        response = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=300)
    except httpx.HTTPError as exc:
        raise TransportError(f"cannot reach the ledger API at {url}: {exc}") from None
    if response.status_code == 401:
        raise ConfigurationError(f"{url}: the API refused the token (401)")
    if response.status_code != 200:
        raise TransportError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
    return response
