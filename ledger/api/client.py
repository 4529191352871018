"""Client side of the read-only API, for the CLI's --api option."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from ledger.errors import ConfigurationError, TransportError

__all__ = ["MAX_PAGE", "fetch", "fetch_bytes", "fetch_pages", "fetch_to_file", "fetch_whole"]

MAX_PAGE = 1000
"""The most rows one list answer of the API holds."""
_BUSY_TRIES = 5


def fetch(base_url: str, path: str, token: str | None = None) -> Any:
    """GET one JSON answer; the token defaults to LEDGER_API_TOKEN."""
    return _get(base_url, path, token).json()


def fetch_bytes(base_url: str, path: str, token: str | None = None) -> bytes:
    """GET one answer as the exact bytes served (a signed bundle)."""
    return _get(base_url, path, token).content


def fetch_pages(
    base_url: str, path: str, limit: int | None = None, after: int = 0, key: str = "id"
) -> list[Any]:
    """Every row of a paged list answer (``after``/``limit`` asked for page by page, each
    page after the row whose ``key`` is ``after``), at most ``limit``."""
    rows: list[Any] = []
    joiner = "&" if "?" in path else "?"
    while limit is None or len(rows) < limit:
        want = MAX_PAGE if limit is None else min(MAX_PAGE, limit - len(rows))
        page = fetch(base_url, f"{path}{joiner}{urlencode({'after': after, 'limit': want})}")
        rows += page
        if len(page) < want:
            break
        after = page[-1][key]
    return rows


def fetch_to_file(base_url: str, path: str, out: Path, token: str | None = None) -> int:
    """GET an answer streamed into ``out`` (a new file): its size in bytes."""
    token = token or os.environ.get("LEDGER_API_TOKEN")
    if not token:
        raise ConfigurationError("--api needs the API token: set LEDGER_API_TOKEN")
    url = base_url.rstrip("/") + path
    try:
        with httpx.stream("GET", url, headers={"Authorization": f"Bearer {token}"},
                          timeout=3600) as response:  # fmt: skip
            if response.status_code != 200:
                response.read()
                raise TransportError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
            with out.open("xb") as written:
                for chunk in response.iter_bytes():
                    written.write(chunk)
    except httpx.HTTPError as exc:
        raise TransportError(f"cannot reach the ledger API at {url}: {exc}") from None
    except FileExistsError:
        raise ConfigurationError(
            f"{out} already exists; a backup is written to a new file"
        ) from None
    return out.stat().st_size


def fetch_whole(base_url: str, path: str, field: str) -> Any:
    """An answer whose ``field`` list the API pages by service (a snapshot, a diff): every
    page asked for in turn, after the ``next_after`` of the one before, and joined."""
    joiner = "&" if "?" in path else "?"
    whole: dict[str, Any] | None = None
    after = ""
    while True:
        page = fetch(base_url, f"{path}{joiner}{urlencode({'after': after, 'limit': MAX_PAGE})}")
        after = page.pop("next_after", None)
        if whole is None:
            whole = page
        else:
            whole[field] += page[field]
        if after is None:
            return whole


def _get(base_url: str, path: str, token: str | None) -> httpx.Response:
    token = token or os.environ.get("LEDGER_API_TOKEN")
    if not token:
        raise ConfigurationError("--api needs the API token: set LEDGER_API_TOKEN")
    url = base_url.rstrip("/") + path
    for attempt in range(1, _BUSY_TRIES + 1):
        try:
            response = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=300)
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach the ledger API at {url}: {exc}") from None
        if response.status_code != 503 or attempt == _BUSY_TRIES:
            break
        time.sleep(min(_retry_after(response), 10.0))  # busy: it said when to ask again
    if response.status_code == 401:
        raise ConfigurationError(f"{url}: the API refused the token (401)")
    if response.status_code != 200:
        raise TransportError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
    return response


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(float(response.headers.get("Retry-After", "1")), 0.1)
    except ValueError:
        return 1.0
