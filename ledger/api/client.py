"""Client side of the read-only API, for the CLI's --api option."""

from __future__ import annotations

import os
from typing import Any

import httpx

from ledger.errors import ConfigurationError, TransportError

__all__ = ["fetch"]


def fetch(base_url: str, path: str, token: str | None = None) -> Any:
    """GET one JSON answer; the token defaults to LEDGER_API_TOKEN."""
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
        raise TransportError(f"{url}: HTTP {response.status_code}: {response.text[:200]}")
    return response.json()
