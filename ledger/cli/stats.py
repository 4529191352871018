"""`ledger stats`: how each deployment model performs in production, from the ledger."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from ledger.cli._common import (
    DEFAULT_DB,
    ApiUrl,
    DbPath,
    JsonFlag,
    OnlyService,
    PeriodFrom,
    PeriodTo,
    console,
    fail,
    local_or_remote,
    out,
    period_question,
    print_json,
    reporting_errors,
)
from ledger.cli._terminal import styled, table


def stats(
    env: Annotated[str, typer.Option("--env", help="The production environment to measure.")],
    from_: PeriodFrom,
    to: PeriodTo = "now",
    by: Annotated[
        str,
        typer.Option(
            "--by", help="One row per deployment model (as classified at the time of each "
            "change) or per service: model | service."),
    ] = "model",
    service: OnlyService = None,
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    json_out: JsonFlag = False,
) -> None:  # fmt: skip
    """Measure deployment frequency, lead time, failure rate and time to restore, by
    deployment model.

    The numbers to draw the horizon from: immutable and mutable side by side (each change
    under the model its service had then), or one row per service.

    Restores, mixed fleets, unapproved and manual changes are `ledger check`'s findings for
    the same period; lead time runs from the commit (`commit_time`), else from the first
    sight of the image in the ledger.

    Example: `ledger stats --env prod --from '30 days ago' --by model`"""
    from ledger.rules.stats import GROUPINGS
    from ledger.store.stats import stats as run_stats

    with reporting_errors():
        if by not in GROUPINGS:
            fail(f"--by: {by!r} is not one of {', '.join(GROUPINGS)}")
        asked = period_question(env, from_, to, service)
        report: dict[str, Any] = local_or_remote(
            db, api, "/v1/stats?" + urlencode(asked.query | {"by": by}),
            lambda r: run_stats(r, env, asked.start, asked.end, by=by, service=service)
            .model_dump(mode="json"),
        )  # fmt: skip
    if json_out:
        print_json(report)
    else:
        _print(report)


def _print(report: dict[str, Any]) -> None:
    from ledger.rules.findings import human_duration

    def took(seconds: int | None) -> str:
        return "-" if seconds is None else human_duration(seconds)

    scope = f" ({report['service']})" if report["service"] else ""
    out.print(styled((report["environment"], "bold"), f"{scope} from {report['from']} to "
                     f"{report['to']}, by {report['by']}"))  # fmt: skip
    grid = table(
        report["by"], "deploys", "per day", "lead p50", "lead p90", "lead from",
        "failure rate", "restore p50", "restore max", "unrestored", "mixed fleet",
        "unapproved", "manual",
    )  # fmt: skip
    for n in [*report["groups"], report["total"]]:
        basis = n["lead_time_basis"]
        rate = n["change_failure_rate"]
        per_day = n["deployments_per_day"]
        mixed = (
            "-"
            if not n["partial_fleets"]
            else f"{human_duration(n['partial_fleet_s'])} ({n['partial_fleets']}, max "
            f"{took(n['partial_fleet_max_s'])})"
        )
        grid.add_row(
            styled(("(total)", "bold")) if n is report["total"] else n["group"],
            str(n["deployments"]),
            "-" if per_day is None else f"{per_day:g}",
            took(n["lead_time_p50_s"]),
            took(n["lead_time_p90_s"]),
            ", ".join(
                f"{count} {name.replace('_', ' ')}" for name, count in basis.items() if count
            ) or "-",
            "-" if rate is None else
            f"{rate:.0%} ({n['failed'] + n['rolled_back']}/{n['attempts']})",
            took(n["time_to_restore_p50_s"]),
            took(n["time_to_restore_max_s"]),
            str(n["unrestored"]),
            mixed,
            str(n["unapproved_changes"]),
            str(n["manual_changes"]),
        )  # fmt: skip
    out.print(grid)
    out.print(f"lead time: {report['lead_time_basis']}")
    for note in report["notes"]:
        console.print(f"note: {note}")
