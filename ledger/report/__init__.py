"""`ledger report`: a period's findings, numbers and timelines as a document an auditor reads.

``gather`` (module ``collect``) reads what the document says from the ledger (DuckDB): the
findings and integrity statement of ``ledger check``, the framework's pilot numbers
(``ledger stats``), each service's timeline over the period and the signed checkpoint that
covers it. The result is plain JSON (the ``json`` format, and what ``GET
/v1/report?format=json`` serves); ``render`` (module ``formats``, pure: no DuckDB) turns it
into HTML, Markdown, CSV or JSON, the charts' geometry coming from ``chart`` (pure).
Exported lazily (PEP 562), so rendering a document fetched over ``--api`` loads no DuckDB.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger.report.collect import gather
    from ledger.report.formats import CONTENT_TYPES, FORMATS, TOP_PER_RULE, render, sidecars

__all__ = ["CONTENT_TYPES", "FORMATS", "TOP_PER_RULE", "gather", "render", "sidecars"]

_EXPORTS = {
    "gather": "ledger.report.collect",
    "CONTENT_TYPES": "ledger.report.formats",
    "FORMATS": "ledger.report.formats",
    "TOP_PER_RULE": "ledger.report.formats",
    "render": "ledger.report.formats",
    "sidecars": "ledger.report.formats",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ledger.report' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
