"""Shared CLI pieces: exit codes, output, error reporting, and the options many commands take.

Importing this loads Typer and Rich only: a command imports the library parts it uses
itself, so ``ledger --help`` and ``ledger keys list`` start fast (docs/cli.md).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ledger.cli._terminal import TerminalConsole, styled
from ledger.errors import LedgerError, QueryError, TransportError

if TYPE_CHECKING:
    from ledger.log.checkpoint import TrustedKey
    from ledger.store.reader import LedgerReader
    from ledger.wire.keyring import Keyring


class Exit(IntEnum):
    """Every command's exit codes (docs/cli.md): scripts and CI templates branch on them."""

    OK = 0
    CHECK_FAILED = 1  # verify, check, gate, a refused bundle or proof
    USAGE = 2  # a usage or input error: nothing was done
    UNREACHABLE = 3  # a service could not be reached (the broker, the API)
    NO_TRUST_ROOT = 4  # nothing was verified because no trust root was given
    SPOOLED = 5  # events were written to the local spool instead of Kafka


PIPED_WIDTH = 200
"""Results piped to a file, grep or less are not folded to fit 80 columns (rich's default
when stdout is no terminal): no table here is wider than this. A terminal, or COLUMNS, sets
the width as usual."""

console = TerminalConsole(stderr=True, soft_wrap=True)
"""Messages and progress go to stderr; results go to stdout."""
out = TerminalConsole(
    soft_wrap=True,
    width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPED_WIDTH,
)

DEFAULT_DB = Path("ledger.duckdb")
DEFAULT_KEYRING = Path("keyring.json")

DbPath = Annotated[
    Path,
    typer.Option("--db", envvar="LEDGER_DB", help="Ledger DuckDB file.", show_envvar=True),
]
KeyringPath = Annotated[
    Path,
    typer.Option("--keyring", envvar="LEDGER_KEYRING", help="Keyring JSON file.", show_envvar=True),
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
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
TrustedKeyPath = Annotated[
    Path | None,
    typer.Option(
        "--trusted-key",
        envvar="LEDGER_TRUSTED_KEY",
        show_envvar=True,
        help="The ledger's public key (PEM), kept apart from the ledger; its name is the "
        "file's stem.",
    ),
]
OptionalKeyring = Annotated[
    Path | None,
    typer.Option(
        "--keyring",
        envvar="LEDGER_KEYRING",
        show_envvar=True,
        help="Keyring to re-verify every signature with (default: keyring.json "
        "when present; without one, signatures are not re-verified).",
    ),
]
EventTopic = Annotated[
    str, typer.Option("--topic", envvar="LEDGER_TOPIC", show_envvar=True, help="Event topic.")
]
CheckpointTopicOpt = Annotated[
    str, typer.Option(envvar="LEDGER_CHECKPOINT_TOPIC", help="Topic checkpoints go to.")
]
LedgerKeyPath = Annotated[
    Path | None,
    typer.Option(
        "--ledger-key",
        envvar="LEDGER_LEDGER_KEY",
        show_envvar=True,
        help="The ledger's own private key: signs as the ledger (checkpoints, bundles).",
    ),
]


DeliveryTimeout = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=1,
        envvar="LEDGER_EMIT_TIMEOUT",
        help="Seconds to wait for the broker to acknowledge every event.",
    ),
]
PeriodFrom = Annotated[
    str, typer.Option("--from", help="Start of the period: RFC 3339, 'now' or '30 days ago'.")
]
PeriodTo = Annotated[str, typer.Option("--to", help="End of the period.")]
OnlyService = Annotated[str | None, typer.Option("--service", help="Only this service's changes.")]
PartialAfter = Annotated[
    str | None,
    typer.Option(
        "--partial-after",
        help="A mixed fleet longer than this is a finding, e.g. 1h, 30m (default: the "
        "policy's, else 1h).",
    ),
]


@dataclass(frozen=True)
class PeriodQuestion:
    """A question about a period of an environment (check, stats, report), as options
    give it: its instants, the thresholds it sets, and the API query that asks the same."""

    start: datetime
    end: datetime
    thresholds: dict[str, int]
    query: dict[str, str]


def period_question(
    env: str, from_: str, to: str, service: str | None, partial_after: str | None = None
) -> PeriodQuestion:
    from ledger.rules.policy import parse_duration

    start, end = parse_time(from_, "--from"), parse_time(to, "--to")
    query = {"env": env, "from": start.isoformat(), "to": end.isoformat()}
    query |= {"service": service} if service else {}
    thresholds = {}
    if partial_after is not None:
        try:
            thresholds["partial_after"] = parse_duration(partial_after)
        except ValueError:
            fail(f"--partial-after: {partial_after!r} is not a duration such as 90s, 15m, 1h "
                 "or 2d")  # fmt: skip
        query["partial_after"] = partial_after
    return PeriodQuestion(start, end, thresholds, query)


def new_app(help: str) -> typer.Typer:
    """A command group as every group here is made (markdown help, no completion)."""
    return typer.Typer(
        help=help,
        no_args_is_help=True,
        rich_markup_mode="markdown",
        add_completion=False,
        pretty_exceptions_enable=False,
    )


def fail(message: str, code: Exit = Exit.USAGE) -> NoReturn:
    console.print(styled(("error:", "red"), f" {message}"))
    raise typer.Exit(code)


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn domain errors, and DuckDB's when it cannot read the file, into one clear line
    and their exit code: 3 when a service could not be reached, else 2 (1 is kept for 'a
    check failed')."""
    try:
        yield
    except TransportError as exc:
        fail(exc.message, Exit.UNREACHABLE)
    except LedgerError as exc:
        fail(exc.message)
    except Exception as exc:
        duckdb = sys.modules.get("duckdb")  # loaded if it raised: not imported for this
        if duckdb is None or not isinstance(exc, duckdb.Error):
            raise
        fail(
            f"the ledger could not be read: {str(exc).splitlines()[0]}. If the file is "
            "damaged, restore it from a backup (or a copy taken while the consumer was "
            "stopped), then run `ledger verify` on it"
        )


def read_input(path: Path) -> bytes:
    """The bytes of the file a command works on; ``-`` is standard input."""
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")


def trusted_key(path: Path | None) -> TrustedKey | None:
    """The ledger key a verifier trusts: signed-note key name = the .pub file's stem."""
    if path is None:
        return None
    from ledger.log.checkpoint import TrustedKey
    from ledger.wire.keyring import load_public_key

    return TrustedKey(path.stem, load_public_key(path))


def local_or_remote(
    db: Path, api: str | None, path: str, local: Callable[[LedgerReader], Any], *,
    paged: str | None = None,
) -> Any:  # fmt: skip
    """Answer from the file, or from a running consumer's API when --api is given, whole:
    ``paged`` ``"seq"``: a list of entries the API pages; another name: the list in that
    field of an answer it pages by service (``services``, ``changes``)."""
    if api:
        from ledger.api.client import fetch, fetch_pages, fetch_whole  # HTTP only when asked

        if paged == "seq":
            return fetch_pages(api, path, key="seq")
        return fetch_whole(api, path, paged) if paged else fetch(api, path)
    from ledger.store.reader import LedgerReader  # DuckDB only when asked for

    with LedgerReader(db) as reader:
        return local(reader)


def short_digest(value: str) -> str:
    """``sha256:<64 hex>`` as its first 12 hex digits, as container tools show image IDs."""
    return value.partition(":")[2][:12] or value


def short_time(value: str, *, seconds: bool = True) -> str:
    """An RFC 3339 time from the JSON as the tables print it: ``2026-11-24 14:03[:00]``."""
    return value[: 19 if seconds else 16].replace("T", " ")


def short_image(image: str | None) -> str:
    """``registry/path/name@sha256:<hex>`` as ``name@<12 hex>`` (an artifact's reference
    likewise, or whole when it has no digest); the JSON keeps it whole."""
    if not image:
        return "-"
    name, at, digest = image.partition("@")
    if not at:  # an artifact with no digest (ami:ami-…): its reference is its identity
        return image
    return f"{name.rsplit('/', 1)[-1]}@{short_digest(digest)}"


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def parse_time(value: str, option: str) -> datetime:
    """RFC 3339 with an explicit offset, 'now', or 'N seconds|minutes|hours|days|weeks ago'
    (ledger.rules.questions.parse_instant, as the API reads them)."""
    from ledger.rules.questions import parse_instant

    try:
        return parse_instant(value, option, datetime.now(UTC))
    except QueryError as exc:
        fail(exc.message)


def keyring_or_default(path: Path | None) -> Keyring | None:
    """The keyring given, else keyring.json when present; None: signatures not re-checked."""
    from ledger.wire.keyring import Keyring

    if path is None:
        if not DEFAULT_KEYRING.exists():
            return None
        path = DEFAULT_KEYRING
    return Keyring.load(path)
