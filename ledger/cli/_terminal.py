"""What reaches a terminal: never markup, never a control sequence.

Much of what the CLI prints was chosen by whoever wrote to the topic or the file handed to
a command (an actor, a key id, a refusal's detail, a bundle's query). So the consoles read
no markup and no emoji codes, and show each control character and bidirectional override
as an escape (``\\x1b``): stored text can neither style, hide nor rewrite what surrounds
it. Styles come only from :func:`styled` parts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

__all__ = ["TerminalConsole", "plain", "styled", "table"]

_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[{_CONTROLS}]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(text: str) -> str:
    """``text`` with every control character and direction override shown as an escape,
    but for newlines and tabs."""
    return _UNSAFE.sub(_visible, text)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Text of ``parts``, each plain or ``(text, style)``: ``styled(("FAILED", "red"), msg)``.
    Never markup; :class:`TerminalConsole` cleans its text as it does any other."""
    return Text.assemble(*parts)


class TerminalConsole(Console):
    """A rich console that reads no markup and renders every text through :func:`plain`,
    whatever object carries it (a string, a table cell, a :class:`Text`)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **options)

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            yield segment if segment.control else segment._replace(text=plain(segment.text))


def table(*headers: str, title: str | None = None) -> Table:
    """A table that wraps, and folds what it cannot wrap, rather than cutting anything off.

    Rich shortens an over-wide cell to an ellipsis by default: on an 80-column terminal two
    images of one service became the same ``checkout@sha25…``, hiding the very change a
    diff is about. No vertical rules and one space of padding (on the right): their width
    goes to the cells.
    """
    grid = Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0)
    )
    for header in headers:
        grid.add_column(header, overflow="fold")
    return grid
