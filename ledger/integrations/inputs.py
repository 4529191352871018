"""Reading a tool's output strictly: every refusal names the input, the position in it and
what was expected, as one :class:`InputError` (a domain error: ``ledger ingest`` exits 2
with its message, and nothing is sent).

Shared by the parsers of ``ledger.integrations``: JSON documents and JSON Lines streams
with line and column on a syntax error, a path (``head_commit.timestamp``) on a wrong value,
and RFC 3339 times that must carry their offset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ledger.errors import ConfigurationError

__all__ = ["InputError", "json_path", "parse_json", "parse_time"]


class InputError(ConfigurationError):
    """A tool's output (a file, a variable, an option) that is not what its parser reads.

    ``source`` names the input (a file's path, a variable, an option), ``position`` where in
    it (``line 3 column 7``, ``head_commit.timestamp``; None: the whole input), ``expected``
    what would have been read."""

    reason = "bad_input"

    def __init__(
        self, source: str, problem: str, expected: str | None = None, position: str | None = None
    ) -> None:
        where = f"{source}, {position}" if position else source
        text = f"{where}: {problem}" + (f"; expected {expected}" if expected else "")
        super().__init__(text)
        self.source = source
        self.position = position
        self.problem = problem
        self.expected = expected


def json_path(path: Sequence[str | int]) -> str:
    """``["head_commit", "timestamp"]`` as ``head_commit.timestamp``, ``[…, 0]`` as ``[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "the top level"


def parse_json(data: bytes, source: str, expected: str) -> Any:
    """One JSON document, or an :class:`InputError` naming where it stops being one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(source, "not UTF-8 text", expected, f"byte {exc.start}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            source, f"not valid JSON ({exc.msg})", expected, f"line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InputError(source, "JSON nested too deeply to read", expected) from None
    except ValueError as exc:  # an integer of more digits than Python converts (4,300)
        raise InputError(source, f"not JSON this reader takes ({exc})", expected) from None


_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$"
)


def parse_time(value: object, source: str, position: str | None = None) -> datetime:
    """An RFC 3339 time with its offset (``2026-11-20T14:03:00Z``), in UTC; digits beyond
    the microsecond are dropped (the ledger keeps microseconds)."""
    expected = "an RFC 3339 time with its offset, e.g. 2026-11-20T14:03:00Z"
    if not isinstance(value, str):
        raise InputError(source, f"a {type(value).__name__}, not a time", expected, position)
    if not _RFC3339.match(value):
        raise InputError(source, f"{value[:64]!r} is not a time", expected, position)
    text = value.upper().replace("Z", "+00:00")
    whole, dot, rest = text[:19], text[19:20], text[20:]
    if dot == ".":  # at most six fractional digits for fromisoformat
        digits = re.match(r"\d+", rest)
        assert digits is not None
        text = f"{whole}.{digits[0][:6]}{rest[digits.end() :]}"
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise InputError(source, f"{value!r} is not a time ({exc})", expected, position) from None
