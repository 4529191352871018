"""Shared CLI pieces: option types read from the environment, output, and error reporting."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from ledger.api.client import fetch
from ledger.errors import ConfigurationError, LedgerError
from ledger.store.reader import LedgerReader
from ledger.transport.settings import DEFAULT_TOPIC, KafkaSettings

PIPED_WIDTH = 200
"""Results piped to a file, grep or less are not folded to fit 80 columns (rich's default
when stdout is no terminal): no table here is wider than this. A terminal, or COLUMNS, sets
the width as usual."""

console = Console(stderr=True, highlight=False, soft_wrap=True)
"""Messages and progress go to stderr; results go to stdout."""
out = Console(
    highlight=False, soft_wrap=True,
    width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPED_WIDTH,
)

Bootstrap = Annotated[
    str | None,
    typer.Option(
        "--bootstrap",
        envvar="LEDGER_BOOTSTRAP",
        help="Kafka bootstrap servers, host:port[,host:port].",
        show_envvar=True,
    ),
]
Topic = Annotated[
    str,
    typer.Option("--topic", envvar="LEDGER_TOPIC", help="Event topic.", show_envvar=True),
]
DbPath = Annotated[
    Path,
    typer.Option("--db", envvar="LEDGER_DB", help="Ledger DuckDB file.", show_envvar=True),
]
KeyringPath = Annotated[
    Path,
    typer.Option(
        "--keyring", envvar="LEDGER_KEYRING", help="Keyring JSON file.", show_envvar=True
    ),
]
ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar="LEDGER_API_URL",
        show_envvar=True,
        help="Read through a running consumer's HTTP API (its URL) instead of --db.",
    ),
]
ApiToken = Annotated[
    str | None,
    typer.Option(
        "--api-token", envvar="LEDGER_API_TOKEN", show_envvar=True,
        help="Bearer token of the HTTP API.",
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]

SecurityProtocol = Annotated[
    str | None,
    typer.Option(help="Kafka security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL).",
                 envvar="LEDGER_KAFKA_SECURITY_PROTOCOL"),
]
SaslMechanism = Annotated[
    str | None,
    typer.Option(help="SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).",
                 envvar="LEDGER_KAFKA_SASL_MECHANISM"),
]
SslCafile = Annotated[
    Path | None, typer.Option(help="CA bundle for TLS.", envvar="LEDGER_KAFKA_SSL_CAFILE")
]

DEFAULT_DB = Path("ledger.duckdb")
DEFAULT_KEYRING = Path("keyring.json")

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_KEYRING",
    "DEFAULT_TOPIC",
    "ApiToken",
    "ApiUrl",
    "Bootstrap",
    "DbPath",
    "JsonFlag",
    "KeyringPath",
    "SaslMechanism",
    "SecurityProtocol",
    "SslCafile",
    "Topic",
    "console",
    "fail",
    "kafka_settings",
    "local_or_remote",
    "out",
    "parse_time",
    "print_json",
    "reporting_errors",
    "short_digest",
    "short_image",
    "short_time",
    "table",
]


def fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn domain errors into one clear line and exit code 2 (1 is kept for 'check failed')."""
    try:
        yield
    except LedgerError as exc:
        fail(exc.message)


def local_or_remote(
    db: Path, api: str | None, path: str, local: Callable[[LedgerReader], Any]
) -> Any:
    """Answer from the file, or from a running consumer's API when --api is given."""
    if api:
        return fetch(api, path)
    reader = LedgerReader(db)
    try:
        return local(reader)
    finally:
        reader.close()


def table(*headers: str, title: str | None = None) -> Table:
    """A table that wraps, and folds what it cannot wrap, rather than cutting anything off.

    Rich shortens an over-wide cell to an ellipsis by default: on an 80-column terminal two
    images of one service became the same ``checkout@sha25…``, hiding the very change a
    diff is about. No vertical rules and one space of padding (on the right): their width
    goes to the cells.
    """
    grid = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                 padding=(0, 1, 0, 0))
    for header in headers:
        grid.add_column(header, overflow="fold")
    return grid


def short_digest(value: str) -> str:
    """``sha256:<64 hex>`` as its first 12 hex digits, as container tools show image IDs."""
    return value.partition(":")[2][:12] or value


def short_time(value: str, *, seconds: bool = True) -> str:
    """An RFC 3339 time from the JSON as the tables print it: ``2026-11-24 14:03[:00]``."""
    return value[: 19 if seconds else 16].replace("T", " ")


def short_image(image: str | None) -> str:
    """``registry/path/name@sha256:<hex>`` as ``name@<12 hex>``; the JSON keeps it whole."""
    if not image:
        return "-"
    name, _, digest = image.partition("@")
    return f"{name.rsplit('/', 1)[-1]}@{short_digest(digest)}"


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


_RELATIVE = re.compile(r"^(\d+)\s*(second|minute|hour|day|week)s?\s+ago$")


def parse_time(value: str, option: str) -> datetime:
    """RFC 3339 with an explicit offset, 'now', or 'N seconds|minutes|hours|days|weeks ago'."""
    text = value.strip().lower()
    if text == "now":
        return datetime.now(UTC)
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = int(relative[1]), relative[2]
        return datetime.now(UTC) - timedelta(**{unit + "s": amount})
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option}: {value!r} is not a time: use RFC 3339 (2026-11-20T14:03:00Z), "
             "'now' or '3 weeks ago'")
    if moment.tzinfo is None:
        fail(f"{option}: {value!r} needs an explicit UTC offset, e.g. 2026-11-20T14:03:00Z")
    return moment.astimezone(UTC)


def kafka_settings(
    bootstrap: str | None,
    topic: str,
    security_protocol: str | None = None,
    sasl_mechanism: str | None = None,
    ssl_cafile: Path | None = None,
) -> KafkaSettings:
    if not bootstrap:
        raise ConfigurationError(
            "no Kafka bootstrap server: pass --bootstrap host:port or set LEDGER_BOOTSTRAP"
        )
    overrides: dict[str, str | None] = {
        "security_protocol": security_protocol,
        "sasl_mechanism": sasl_mechanism,
        "ssl_cafile": str(ssl_cafile) if ssl_cafile else None,
    }
    return KafkaSettings.from_env(bootstrap, topic, overrides)
