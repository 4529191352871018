"""`ledger report`: a period's findings, numbers and timelines as a document for an auditor."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ledger.cli._common import (
    DEFAULT_DB,
    ApiUrl,
    DbPath,
    JsonFlag,
    OnlyService,
    PartialAfter,
    PeriodFrom,
    PeriodQuestion,
    PeriodTo,
    console,
    fail,
    local_or_remote,
    out,
    period_question,
    print_json,
    reporting_errors,
)

_FORMATS = ("html", "md", "csv", "json")


def report(
    env: Annotated[str, typer.Option("--env", help="The production environment to report on.")],
    from_: PeriodFrom,
    out_path: Annotated[
        Path,
        typer.Option(
            "--out",
            help="The file to write (replaced if it exists); '-': standard output (md, csv, json).",
        ),
    ],
    to: PeriodTo = "now",
    fmt: Annotated[
        str, typer.Option("--format", help="html (for people, and paper) | md | csv | json.")
    ] = "html",
    service: OnlyService = None,
    top: Annotated[
        int,
        typer.Option(
            "--top",
            min=1,
            help="The HTML lists this many findings of each rule; with more, every finding "
            "goes beside it (same name, .csv and .json).",
        ),
    ] = 50,
    partial_after: PartialAfter = None,
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    json_out: JsonFlag = False,
) -> None:
    """Write the auditor's report of a period: findings by requirement, numbers, timelines.

    One document a person reads and prints, each statement tracing to signed ledger
    entries: the ledger and the checkpoint covering the period, the integrity statement,
    the findings of `ledger check` by PCI DSS / HIPAA requirement, with their entries.

    Then the pilot numbers (immutable and mutable side by side) and a timeline per service.
    HTML is one self-contained file (no script, nothing loaded); md, csv and json hold the
    same findings.

    Example: `ledger report --env prod --from '30 days ago' --format html --out report.html`"""
    from ledger.report.formats import render, sidecars, truncated

    with reporting_errors():
        if fmt not in _FORMATS:
            fail(f"--format: {fmt!r} is not one of {', '.join(_FORMATS)}")
        to_stdout = str(out_path) == "-"
        if to_stdout and fmt == "html":
            fail("--out: an HTML report is a file (the findings beyond --top go beside it)")
        if to_stdout and json_out:
            fail("--json prints what was written, to standard output: give --out FILE")
        if not to_stdout and out_path.is_dir():
            fail(f"--out: {out_path} is a folder")
        asked = period_question(env, from_, to, service, partial_after)
        with _progress(quiet=json_out) as say:
            document: dict[str, Any] = local_or_remote(
                db,
                api,
                "/v1/report?" + urlencode(asked.query | {"format": "json"}),
                lambda reader: _gather(reader, db, env, asked, service, say),
            )
            say(f"writing {fmt}", 0, 0)
            written: list[Path] = []
            full = None
            if fmt == "html" and truncated(document, top):
                beside = sidecars(out_path)
                full = f"{beside[0].name} and {beside[1].name}, beside this file"
                for path, kind in zip(beside, ("csv", "json"), strict=True):
                    _write(path, render(document, kind))
                    written.append(path)
            text = render(document, fmt, top=top, full=full)
            if to_stdout:
                sys.stdout.write(text)
            else:
                _write(out_path, text)
                written.insert(0, out_path)
    summary = _summary(document, fmt, written, top)
    if json_out:
        print_json(summary)
    elif not to_stdout:
        _print(summary)


def _gather(
    reader: Any,
    db: Path,
    env: str,
    asked: PeriodQuestion,
    service: str | None,
    say: Callable[[str, int, int], None],
) -> dict[str, Any]:
    from ledger.report.collect import gather
    from ledger.store.verified import read_record

    return gather(reader, env, asked.start, asked.end, service, thresholds=asked.thresholds,
                  verified=read_record(db), progress=say)  # fmt: skip


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """What the report is doing, as `ledger verify` shows it: a transient progress display
    on a terminal, ``report: …`` lines on stderr otherwise (a CI job's log), nothing with
    --json."""
    lines = not quiet and not console.is_terminal
    with Progress(
        TextColumn("{task.description:>28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet or lines,
    ) as bar:
        task = bar.add_task("report", total=None)
        last = ""

        def say(stage: str, done: int, total: int) -> None:
            nonlocal last, task
            if stage != last:  # a stage of its own: counted (done of total), or not (None)
                bar.remove_task(task)
                task = bar.add_task(stage, total=total or None)
            bar.update(task, completed=done)
            if lines and (total or stage != last):
                console.print(f"report: {stage}" + (f" {done:,}/{total:,}" if total else ""))
            last = stage

        yield say


def _write(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _summary(document: dict[str, Any], fmt: str, written: list[Path], top: int) -> dict[str, Any]:
    from ledger.rules.catalogue import SEVERITIES

    check = document["check"]
    found = [f["severity"] for f in check["findings"]]
    by = {s: found.count(s) for s in reversed(SEVERITIES) if s in found}
    checkpoint = document["ledger"]["checkpoint"]
    return {
        "out": str(written[0]) if written else "-",
        "format": fmt,
        "written": [str(path) for path in written],
        "environment": document["environment"],
        "from": document["from"],
        "to": document["to"],
        "findings": len(check["findings"]),
        "severities": by,
        "top": top,
        "services": [t["service"] for t in document["timelines"]],
        "checkpoint": None if checkpoint is None else {k: checkpoint[k] for k in ("size", "root")},
        "stats": document["stats"] is not None,
    }


def _print(summary: dict[str, Any]) -> None:
    severities = ", ".join(f"{n} {s}" for s, n in summary["severities"].items()) or "none"
    out.print(
        f"wrote {summary['out']} ({summary['format']}): {summary['environment']} from "
        f"{summary['from']} to {summary['to']}, {summary['findings']} finding(s) "
        f"({severities}), {len(summary['services'])} service(s) charted"
    )
    for extra in summary["written"][1:]:
        out.print(f"wrote {extra}: every finding (the HTML lists {summary['top']} per rule)")
    checkpoint = summary["checkpoint"]
    if checkpoint is None:
        console.print("note: no signed checkpoint covers the period yet")
    if not summary["stats"]:
        console.print("note: the pilot numbers (ledger stats) are not available in this version")
