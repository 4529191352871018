"""`ledger check`: a period's production changes against the team's own process and policy."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from ledger.cli._common import (
    DEFAULT_DB,
    ApiUrl,
    DbPath,
    Exit,
    JsonFlag,
    console,
    fail,
    local_or_remote,
    out,
    parse_time,
    print_json,
    reporting_errors,
    short_time,
)
from ledger.cli._terminal import styled, table
from ledger.rules.catalogue import SEVERITIES

_COLOURS = {"high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


def check(
    env: Annotated[str, typer.Option("--env", help="The production environment to check.")],
    from_: Annotated[
        str, typer.Option("--from", help="Start of the period: RFC 3339, 'now' or '30 days ago'.")
    ],
    to: Annotated[str, typer.Option("--to", help="End of the period.")] = "now",
    service: Annotated[
        str | None, typer.Option("--service", help="Only this service's changes.")
    ] = None,
    fail_on: Annotated[
        str,
        typer.Option(
            "--fail-on", help="Exit 1 when a finding is at or above this severity: "
            "info | low | medium | high."),
    ] = "high",
    partial_after: Annotated[
        str | None,
        typer.Option(
            "--partial-after", help="A mixed fleet longer than this is a finding, e.g. 1h, 30m "
            "(default: the policy's, else 1h)."),
    ] = None,
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
        start, end = parse_time(from_, "--from"), parse_time(to, "--to")
        thresholds = {} if partial_after is None else {
            "partial_after": _duration(partial_after)}  # fmt: skip
        query = {"env": env, "from": start.isoformat(), "to": end.isoformat()}
        query |= {"service": service} if service else {}
        query |= {"partial_after": partial_after} if partial_after else {}
        report: dict[str, Any] = local_or_remote(
            db, api, "/v1/check?" + urlencode(query),
            lambda r: run_check(r, env, start, end, service, thresholds=thresholds,
                                verified=read_record(db), progress=_progress).model_dump(
                mode="json"),
            paged="findings",
        )  # fmt: skip
    if json_out:
        print_json(report)
    else:
        _print(report)
    if failing(report, fail_on):
        raise typer.Exit(Exit.CHECK_FAILED)


def _duration(value: str) -> int:
    from ledger.rules.policy import parse_duration

    try:
        return parse_duration(value)
    except ValueError:
        fail(f"--partial-after: {value!r} is not a duration such as 90s, 15m, 1h or 2d")


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
