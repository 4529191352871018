"""`ledger check`: a period's production changes against the team's own process and policy."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

import typer

from ledger.cli._common import (
    DEFAULT_DB,
    ApiUrl,
    DbPath,
    Exit,
    JsonFlag,
    OnlyService,
    PartialAfter,
    PeriodFrom,
    PeriodTo,
    console,
    fail,
    local_or_remote,
    out,
    period_question,
    print_json,
    reporting_errors,
    short_time,
)
from ledger.cli._terminal import styled, table
from ledger.rules.catalogue import SEVERITIES

if TYPE_CHECKING:
    from ledger.store.check import CheckReport

_COLOURS = {"high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


def check(
    env: Annotated[str, typer.Option("--env", help="The production environment to check.")],
    from_: PeriodFrom,
    to: PeriodTo = "now",
    service: OnlyService = None,
    fail_on: Annotated[
        str,
        typer.Option(
            "--fail-on", help="Exit 1 when a finding is at or above this severity: "
            "info | low | medium | high."),
    ] = "high",
    partial_after: PartialAfter = None,
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    json_out: JsonFlag = False,
) -> None:  # fmt: skip
    """Check a period's production changes against the process and the horizon policy.

    Every finding names its rule, severity, the requirements it is evidence about (PCI DSS
    v4.0, HIPAA) and the ledger entries it rests on; the answer ends with how sound the
    ledger is. Exit 0 when no finding is at or above --fail-on, 1 when one is.

    Example: `ledger check --env prod --from '30 days ago' --fail-on high`"""
    from ledger.store.check import check as run_check
    from ledger.store.check import failing
    from ledger.store.verified import read_record

    with reporting_errors():
        if fail_on not in SEVERITIES:
            fail(f"--fail-on: {fail_on!r} is not one of {', '.join(SEVERITIES)}")
        asked = period_question(env, from_, to, service, partial_after)
        report: CheckReport | dict[str, Any] = local_or_remote(
            db, api, "/v1/check?" + urlencode(asked.query),
            lambda r: run_check(r, env, asked.start, asked.end, service,
                                thresholds=asked.thresholds, verified=read_record(db),
                                progress=_progress),
            paged="findings",
        )  # fmt: skip
    if isinstance(report, dict):  # through the API
        severities = [f["severity"] for f in report["findings"]]
        if json_out:
            print_json(report)
        else:
            _print(report)
    else:
        severities = [f.severity for f in report.findings]
        if json_out:  # in one step: at ten million entries the answer is hundreds of MB
            sys.stdout.write(report.model_dump_json(indent=2) + "\n")
        else:
            _print(report.model_dump(mode="json"))
    if failing(severities, fail_on):
        raise typer.Exit(Exit.CHECK_FAILED)


def _progress(stage: str) -> None:
    console.print(f"check: {stage}")


def _print(report: dict[str, Any]) -> None:
    found = report["findings"]
    by = {s: sum(f["severity"] == s for f in found) for s in reversed(SEVERITIES)}
    counts = ", ".join(f"{n} {s}" for s, n in by.items() if n) or "none"
    scope = f" ({report['service']})" if report["service"] else ""
    out.print(styled((report["environment"], "bold"), f"{scope} from {report['from']} to "
                     f"{report['to']}: {len(found)} finding(s): {counts}"))  # fmt: skip
    if found:
        grid = table("time", "severity", "rule", "service", "finding", "entries")
        for f in found:
            seqs = [str(c["seq"]) for c in f["entries"]]
            more = f["details"].get("more")
            grid.add_row(
                short_time(f["time"], seconds=False),
                styled((f["severity"], _COLOURS[f["severity"]])),
                f["rule"],
                f["service"] or "-",
                f"{f['message']} [{', '.join(f['requirements'][:2])}]",
                ", ".join(seqs) + (f" +{more}" if more else "") or "-",
            )
        out.print(grid)
    policies = report["policies"]
    out.print("policy: " + (", ".join(f"entry {p['seq']} ({p['digest']})" for p in policies)
                            or "none recorded (defaults)"))  # fmt: skip
    out.print(f"integrity: {report['integrity']['statement']}")
    for note in report["notes"]:
        console.print(f"note: {note}")
