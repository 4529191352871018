"""A report document as HTML, Markdown, CSV or JSON (pure: the document in, text out).

Every string of the document came from the ledger, and much of it from whoever signed an
event (an actor, a target, a change ref): none may act as markup. HTML (and the SVG in it)
and Markdown are written by Jinja2 templates whose every ``{{ }}`` is escaped (HTML's
autoescape; Markdown's escaping as the environment's ``finalize``), control characters and
direction overrides shown as escapes as the terminal shows them; CSV cells cannot start a
formula (OWASP: a leading ``= + - @``, tab or CR gets a ``'``); JSON escapes ``< > &``.

The HTML is one self-contained file: inline CSS and SVG, no script, nothing it loads (its
Content-Security-Policy forbids any request), readable on screen and on paper. A rule
with more findings than ``top`` shows the ``top`` most severe; every finding is in the
CSV and JSON, which the caller writes beside it (:func:`sidecars`) and names (``full``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from ledger.report.chart import Chart, chart, counts, parse_time, short_image
from ledger.rules.catalogue import RULES, SEVERITIES, severity_rank

__all__ = [
    "CONTENT_TYPES",
    "CSV_COLUMNS",
    "FORMATS",
    "TOP_PER_RULE",
    "csv_cell",
    "markdown_text",
    "render",
    "sidecars",
    "truncated",
    "visible",
]

FORMATS = ("html", "md", "csv", "json")
CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
}
TOP_PER_RULE = 50
"""The findings of one rule (under one requirement) the HTML shows; the rest are counted,
and every one is in the CSV and JSON."""
CSV_COLUMNS = (
    "rule",
    "severity",
    "service",
    "environment",
    "time",
    "message",
    "requirements",
    "entry_seqs",
    "event_ids",
    "details",
)

_CONTROLS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_JSON_ESCAPED = re.compile(f"[<>&{_CONTROLS.pattern[1:-1]}]")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_MARKDOWN = re.compile(r"([\\`*_\[\]|~])")
_DEFAULT_REVIEW = ("PCI DSS 10.4.1.1", "HIPAA 164.308(a)(1)(ii)(D)")


def visible(text: str) -> str:
    """``text`` with every control character and direction override shown as an escape
    (``\\x1b``, ``\\u202e``), but for newlines and tabs: it cannot hide or reorder what
    surrounds it."""
    return _CONTROLS.sub(
        lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text
    )


def csv_cell(value: Any) -> str:
    """A CSV cell that no spreadsheet reads as a formula (OWASP's rule: prefix ``'``), its
    control characters and direction overrides shown as escapes."""
    text = "" if value is None else str(value)
    return ("'" if text.startswith(_FORMULA) else "") + visible(text)


def markdown_text(value: Any) -> str:
    """A value as Markdown text that reads as itself wherever it stands but at the start of
    a line (the template never puts one there): HTML's specials as entities, the marks of
    emphasis, code, links and tables escaped, on one line (a table cell cannot hold two)."""
    text = visible(str(value)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = " ".join(text.replace("\t", " ").splitlines())
    return _MARKDOWN.sub(r"\\\1", text)


def _html_value(value: Any) -> Any:
    """What an HTML ``{{ }}`` writes, before it is escaped: its controls made visible (in
    markup a filter already escaped, such as a ``join``, too: escapes add no markup)."""
    if isinstance(value, Markup):
        return Markup(visible(str(value)))
    return visible(value) if isinstance(value, str) else value


@cache
def _templates(kind: str) -> Environment:
    markdown = kind == "md"
    environment = Environment(
        loader=PackageLoader("ledger.report", "templates"),
        autoescape=not markdown,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=markdown_text if markdown else _html_value,
    )
    environment.filters |= {
        "when": _when,
        "duration": _duration,
        "number": _number,
        "short_image": short_image,
    }
    return environment


def sidecars(out: Path) -> tuple[Path, Path]:
    """Where every finding of an HTML report ``out`` goes: the same stem, .csv and .json."""
    return out.with_suffix(".csv"), out.with_suffix(".json")


def truncated(document: Mapping[str, Any], top: int = TOP_PER_RULE) -> bool:
    """Whether the HTML shows fewer findings or timelines than the document holds."""
    return len(document["timelines"]) > CHARTS_TOP or any(
        rule["hidden"] for group in _groups(document, top) for rule in group["rules"]
    )


CHARTS_TOP = 40
"""The HTML charts this many services' timelines (those with the most unapproved changes,
then findings, then entries); every service is in its table, every timeline in the JSON.
Five hundred charts made a 43 MB page at the benchmark's scale, which no one reads."""


def _most_eventful(
    rows: Sequence[tuple[str, Mapping[str, int]]],
    by_service: Mapping[str | None, Sequence[Any]],
    most: int,
) -> list[str]:
    ranked = sorted(rows, key=lambda r: (-r[1]["unapproved"], -len(by_service.get(r[0], ())),
                                         -sum(r[1].values()), r[0]))  # fmt: skip
    return [name for name, _ in ranked[:most]]


def render(
    document: Mapping[str, Any], fmt: str, *, top: int = TOP_PER_RULE, full: str | None = None
) -> str:
    """The document in ``fmt`` (one of :data:`FORMATS`); ``full`` says where every
    finding is when the HTML shows only the ``top`` of a rule."""
    if fmt == "json":
        return _json(document)
    if fmt == "csv":
        return _csv(document["check"]["findings"])
    if fmt not in ("html", "md"):
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    view = _view(document, top, full)
    return _templates(fmt).get_template(f"report.{fmt}.j2").render(**view)


def _json(document: Mapping[str, Any]) -> str:
    """The document as it is (it loads back equal), but that ``< > &``, control characters
    and direction overrides are written as escapes: inert pasted into a page or a terminal."""
    text = json.dumps(document, indent=2, ensure_ascii=False)
    # They occur inside JSON strings only, where an escape means the same character.
    return _JSON_ESCAPED.sub(lambda m: f"\\u{ord(m[0]):04x}", text) + "\n"


def _csv(findings: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for f in findings:
        row = (
            f["rule"],
            f["severity"],
            f["service"] or "",
            f["environment"],
            f["time"],
            f["message"],
            "; ".join(f["requirements"]),
            " ".join(str(c["seq"]) for c in f["entries"]),
            " ".join(c["event_id"] for c in f["entries"]),
            json.dumps(f["details"], ensure_ascii=False, sort_keys=True),
        )
        writer.writerow([csv_cell(cell) for cell in row])
    return buffer.getvalue()


def _when(value: str | None) -> str:
    if not value:
        return "-"
    return parse_time(value).strftime("%Y-%m-%d %H:%M UTC")


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _ranked(findings: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Most severe first, then in time order (as check sorts them)."""
    return sorted(findings, key=lambda f: -severity_rank(f["severity"]))


def _groups(document: Mapping[str, Any], top: int) -> list[dict[str, Any]]:
    """The findings by the requirement each is first evidence about (its most specific),
    most severe group first; within a group, by rule, most severe first, the ``top`` of
    each shown."""
    by_requirement: defaultdict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for f in document["check"]["findings"]:
        by_requirement[f["requirements"][0] if f["requirements"] else "-"].append(f)
    groups = []
    for requirement, found in by_requirement.items():
        by_rule: defaultdict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for f in found:
            by_rule[f["rule"]].append(f)
        rules = []
        for rule, of_rule in by_rule.items():
            ranked = _ranked(of_rule)
            rules.append(
                {
                    "rule": rule,
                    "summary": RULES[rule].summary if rule in RULES else "",
                    "worst": ranked[0]["severity"],
                    "count": len(of_rule),
                    "severities": _severities(of_rule),
                    "all": ranked,
                    "shown": ranked[:top],
                    "hidden": max(len(of_rule) - top, 0),
                }
            )
        rules.sort(key=lambda r: (-severity_rank(r["worst"]), -r["count"], r["rule"]))
        groups.append(
            {
                "requirement": requirement,
                "worst": rules[0]["worst"],
                "count": len(found),
                "severities": _severities(found),
                "rules": rules,
            }
        )
    groups.sort(key=lambda g: (-severity_rank(g["worst"]), -g["count"], g["requirement"]))
    return groups


def _severities(findings: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counted = Counter(f["severity"] for f in findings)
    return {s: counted[s] for s in reversed(SEVERITIES)}


def _requirements(findings: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every requirement the period's findings are evidence about, with their counts."""
    by: defaultdict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for f in findings:
        for requirement in f["requirements"]:
            by[requirement].append(f)
    rows = [
        {
            "requirement": requirement,
            "count": len(found),
            "severities": _severities(found),
            "worst": _ranked(found)[0]["severity"],
            "rules": sorted({f["rule"] for f in found}),
        }
        for requirement, found in by.items()
    ]
    return sorted(rows, key=lambda r: (-severity_rank(r["worst"]), -r["count"], r["requirement"]))


def _rules(check: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every rule checked, with its count (zeros too: checked, nothing found)."""
    by_rule: defaultdict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for f in check["findings"]:
        by_rule[f["rule"]].append(f)
    rows = []
    for rule, count in check["counts"].items():
        found = by_rule.get(rule, [])
        default = RULES[rule].severity if rule in RULES else "info"
        worst = _ranked(found)[0]["severity"] if found else default
        rows.append(
            {
                "rule": rule,
                "count": count,
                "worst": worst,
                "default": default,
                "summary": RULES[rule].summary if rule in RULES else "",
                "severities": _severities(found),
            }
        )
    return sorted(
        rows, key=lambda r: (-(r["count"] > 0), -severity_rank(r["worst"]), -r["count"], r["rule"])
    )


_MEASURES = {
    "deployments": "successful deployments",
    "deployments_per_day": "deployment frequency (per day)",
    "lead_time_p50_s": "lead time, p50",
    "lead_time_p90_s": "lead time, p90",
    "attempts": "deployment attempts",
    "failed": "failed deployments",
    "rolled_back": "rollbacks",
    "change_failure_rate": "change failure rate",
    "restored": "failures restored",
    "unrestored": "failures not restored",
    "time_to_restore_p50_s": "time to restore, p50",
    "time_to_restore_max_s": "time to restore, longest",
    "partial_fleets": "mixed fleets",
    "partial_fleet_s": "time in mixed fleets (all)",
    "partial_fleet_max_s": "longest mixed fleet",
    "partial_fleet_findings": "mixed fleets over the threshold",
    "unapproved_changes": "unapproved changes",
    "manual_changes": "manual changes",
    "lead_time_basis.commit_time": "lead times from the commit time",
    "lead_time_basis.first_seen": "lead times from the artifact's first sighting",
    "lead_time_basis.unknown": "deployments with no lead time",
    "services": "services",
}
"""The pilot numbers ``ledger stats`` gives, in the order and words the report uses;
a number it adds later is shown after these, under its own name."""
_SKIPPED = ("group", "models")
_ORDER = ("immutable", "mutable")
_ABOUT = ("lead_time_basis",)


def _stats_table(stats: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The pilot numbers as a table: one column per group (immutable, mutable first, then
    any other, then the total), one row per number."""
    if not stats:
        return None
    groups: dict[str, Mapping[str, Any]] = {}
    for item in stats.get("groups") or []:
        if isinstance(item, Mapping):
            groups[str(item.get("group", len(groups) + 1))] = item
    columns = sorted(groups, key=lambda g: (_ORDER.index(g) if g in _ORDER else 9, g))
    if isinstance(stats.get("total"), Mapping):
        columns.append("total")
        groups["total"] = stats["total"]
    flat = {g: dict(_flatten(groups[g])) for g in columns}
    found = list(dict.fromkeys(key for g in columns for key in flat[g] if key not in _SKIPPED))
    keys = [k for k in _MEASURES if k in found] + [k for k in found if k not in _MEASURES]
    rows = [
        {
            "label": _MEASURES.get(key) or key.replace("_", " ").replace(".", ": "),
            "cells": [_stat(key, flat[g].get(key)) for g in columns],
            "numeric": all(not isinstance(flat[g].get(key), str) for g in columns),
        }
        for key in keys
    ]
    about = [str(stats[key]) for key in _ABOUT if isinstance(stats.get(key), str)]
    notes = [str(n) for n in stats.get("notes") or []]
    return {"columns": columns, "rows": rows, "about": about, "notes": notes}


def _flatten(value: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            found += _flatten(item, f"{name}.")
        elif isinstance(item, list):
            found.append((name, ", ".join(map(str, item)) or "-"))
        else:
            found.append((name, item))
    return found


def _stat(key: str, value: Any) -> str:
    """A number as a reader wants it: seconds as a duration, rates as percentages."""
    if value is None:
        return "-"
    if isinstance(value, bool | str):
        return str(value)
    if key.endswith("_s"):
        return _duration(value)
    if key.endswith("_rate"):
        return f"{value * 100:.1f} %"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return _number(value)


def _view(document: Mapping[str, Any], top: int, full: str | None) -> dict[str, Any]:
    check = document["check"]
    findings = check["findings"]
    start, end = parse_time(document["from"]), parse_time(document["to"])
    by_service: defaultdict[str | None, list[Mapping[str, Any]]] = defaultdict(list)
    for f in findings:
        by_service[f["service"]].append(f)
    timelines = document["timelines"]
    rows = [(t["service"], counts(t, by_service.get(t["service"], []))) for t in timelines]
    charted = set(_most_eventful(rows, by_service, CHARTS_TOP))
    charts: list[Chart] = [
        chart(timeline, by_service.get(timeline["service"], []), start, end)
        for timeline in timelines
        if timeline["service"] in charted
    ]
    groups = _groups(document, top)
    hidden = sum(rule["hidden"] for group in groups for rule in group["rules"])
    return {
        "document": document,
        "period": {
            "environment": document["environment"],
            "service": document["service"],
            "from": document["from"],
            "to": document["to"],
            "days": round((end - start).total_seconds() / 86400, 1),
        },
        "generated_at": document["generated_at"],
        "ledger": document["ledger"],
        "integrity": check["integrity"],
        "policies": check["policies"],
        "notes": check["notes"],
        "rules_version": check["rules"],
        "total": len(findings),
        "severities": _severities(findings),
        "rules": _rules(check),
        "requirements": _requirements(findings),
        "review": _DEFAULT_REVIEW,
        "groups": groups,
        "top": top,
        "hidden": hidden,
        "full": full,
        "stats": _stats_table(document.get("stats")),
        "stats_missing": document.get("stats") is None,
        "charts": charts,
        "services": [{"service": name, "counts": row} for name, row in rows],
        "charts_hidden": len(rows) - len(charts),
        "severity_order": list(reversed(SEVERITIES)),
    }
