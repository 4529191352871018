"""`ledger horizon`: the horizon policy file (docs/horizon.md) against what the ledger
records: `plan` lists what differs, `apply` signs and sends it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

import typer

from ledger.cli._common import (
    DEFAULT_DB,
    ApiUrl,
    DbPath,
    DeliveryTimeout,
    JsonFlag,
    console,
    fail,
    local_or_remote,
    new_app,
    out,
    parse_time,
    print_json,
    read_input,
    reporting_errors,
    short_digest,
)
from ledger.cli._options import PRODUCER, Producer, shared
from ledger.cli._terminal import styled

if TYPE_CHECKING:
    from ledger.cli.emit import Emit
    from ledger.rules.policy import Classification, HorizonPlan, HorizonPolicy, PolicyChange
    from ledger.wire.events import Event

app = new_app(
    "Keep the horizon policy (where each service sits, and why) in the ledger: plan, then apply."
)

PolicyFile = Annotated[
    Path,
    typer.Option(
        "--policy",
        help="The horizon policy file (TOML; docs/horizon.md), '-': standard input.",
    ),
]


def _load(path: Path) -> tuple[HorizonPolicy, str]:
    """The policy the file holds and the file's digest; exit 2 naming the line if bad."""
    from ledger.rules.policy import parse_policy, policy_digest

    raw = read_input(path)
    source = "<stdin>" if str(path) == "-" else str(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{source} is not UTF-8 text: {exc}")
    with reporting_errors():
        parsed = parse_policy(text, source)
    return parsed, policy_digest(raw)


def _plan(policy: HorizonPolicy, digest: str, db: Path, api: str | None) -> HorizonPlan:
    """The plan against the ledger file, or the running consumer's API."""
    from ledger.rules.policy import Classification, plan

    env = policy.environment

    def local(reader: Any) -> dict[str, Any]:
        from ledger.store.policy import horizon_report  # DuckDB only when reading the file

        report: dict[str, Any] = horizon_report(reader, env)
        return report

    with reporting_errors():
        state = local_or_remote(db, api, "/v1/horizon?" + urlencode({"env": env}), local)
    current: dict[str, Classification] = {
        service: Classification(c["state"], c["criticality"], c["model"], c.get("why"))
        for service, c in state["classifications"].items()
    }
    recorded = state["policy"]["data"] if state["policy"] else None
    return plan(policy, digest, state["services"], current, recorded)


@app.command("plan")
def plan_command(
    policy: PolicyFile,
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    json_out: JsonFlag = False,
) -> None:
    """What `apply` would record: each service's classification new (+) or changed (~), the
    policy record if it differs, and the services no entry covers. Sends nothing.

    Example: `ledger horizon plan --policy horizon.toml --db ledger.duckdb`"""
    parsed, digest = _load(policy)
    result = _plan(parsed, digest, db, api)
    if json_out:
        print_json(result.as_dict())
    else:
        _print_plan(result)


@app.command("apply")
@shared("producer", PRODUCER)
def apply_command(
    producer: Producer,
    policy: PolicyFile,
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    time: Annotated[
        str | None,
        typer.Option(
            "--time",
            help="Time of the events sent (RFC 3339); default now, to the second. The same "
            "--time again sends the same events, with the same ids (a retry after exit 3).",
        ),
    ] = None,
    timeout: DeliveryTimeout = 120.0,
    json_out: JsonFlag = False,
) -> None:
    """Plan, then sign and send what differs: a service.classified (with its why) for each
    service new or changed, and one policy.recorded when the policy differs from the latest.

    Event ids are derived from the events' content, so what the ledger already records is
    never sent twice: applying the same file again sends nothing.

    Example: `ledger horizon apply --policy horizon.toml --db ledger.duckdb --key
    keys/platform.key`"""
    from ledger.cli.emit import Emit, _deliver, _report

    parsed, digest = _load(policy)
    at = (parse_time(time, "--time") if time else datetime.now(UTC)).replace(microsecond=0)
    with reporting_errors():  # no key, no broker: refused before the ledger is read
        producer.signer()
        producer.settings()
    result = _plan(parsed, digest, db, api)
    stamp = at.isoformat().replace("+00:00", "Z")
    options = Emit(producer, stamp, None, None, None, timeout, json_out)
    if not json_out:
        _print_plan(result)
    if result.empty:
        if json_out:
            print_json({"plan": result.as_dict(), "sent": []})
        else:
            console.print("nothing to apply")
        return
    events = _events(options, parsed, result)
    if not json_out:
        console.print(
            f"sending {len(events)} event(s) dated {stamp}; if delivery fails, run "
            f"again with --time {stamp} to send the same events"
        )
    deliveries = _deliver(options, events)
    if json_out:
        print_json({"plan": result.as_dict(), "sent": [d.__dict__ for d in deliveries]})
    else:
        _report(options, deliveries, [])


def _events(options: Emit, policy: HorizonPolicy, result: HorizonPlan) -> list[Event]:
    """What applying the plan records: the policy record first, then each classification;
    ids derived from their content."""
    from ledger.cli.emit import _build
    from ledger.rules.policy import POLICY_SERVICE
    from ledger.wire.events import with_derived_id

    env = policy.environment
    events = []
    if result.policy is not None:
        data = dict(result.policy.after)
        events.append(_build(options, "policy.recorded", POLICY_SERVICE, env, data))
    for change in result.changes:
        data = change.after.as_dict()
        events.append(_build(options, "service.classified", change.service, env, data))
    return [with_derived_id(event) for event in events]


# --- the plan, for a person ------------------------------------------------------------------


def _shown(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _cell(c: Classification) -> str:
    return f"{c.state}, {c.criticality} criticality: {c.model}"


def _print_plan(result: HorizonPlan) -> None:
    out.print(
        f"horizon plan for {result.environment} from {result.source} "
        f"({short_digest(result.digest)})"
    )
    for change in result.changes:
        after, before = change.after, change.before
        by = "" if change.entry == change.service else f" (by match {change.entry})"
        if before is None:
            out.print(styled(("  + ", "green"), f"{change.service}: {_cell(after)}{by}"))
        else:
            fields = [f for f in change.changed if f != "why"]
            what = (
                "; ".join(f"{f} {getattr(before, f)} -> {getattr(after, f)}" for f in fields)
                or "why"
            )
            out.print(styled(("  ~ ", "yellow"), f"{change.service}: {what}{by}"))
        if change.departs_from_matrix:
            out.print(
                styled(
                    ("      ! departs from the matrix", "yellow"),
                    f": {after.state}, {after.criticality} gives {change.matrix_model}; "
                    f"this policy says {after.model}",
                )
            )
        if "why" in change.changed:
            if before is not None:
                out.print(f"      why was: {_shown(before.why)}")
            out.print(f"      why: {_shown(after.why)}")
    if result.policy is not None:
        _print_policy_change(result.policy)
    for missing in result.unclassified:
        recorded = (
            "" if missing.recorded is None else (f"; the ledger records {_cell(missing.recorded)}")
        )
        out.print(
            styled(
                ("  ? ", "cyan"),
                f"{missing.service}: no entry of the policy covers it "
                f"(unclassified, not an action{recorded})",
            )
        )
    added = sum(1 for c in result.changes if c.before is None)
    changed = len(result.changes) - added
    record = "no change" if result.policy is None else result.policy.action
    out.print(
        f"plan: {added} to add, {changed} to change, {len(result.unchanged)} unchanged; "
        f"policy record: {record}; {len(result.unclassified)} unclassified"
    )


def _print_policy_change(change: PolicyChange) -> None:
    rules = [f for f in change.changed if f != "digest"]
    if change.before is None:
        listed = "; ".join(f"{f} {_shown(change.after[f])}" for f in rules)
        out.print(styled(("  + ", "green"), f"policy record: {listed}"))
        return
    before = change.before
    listed = "; ".join(f"{f} {_shown(before.get(f))} -> {_shown(change.after[f])}" for f in rules)
    out.print(
        styled(
            ("  ~ ", "yellow"),
            f"policy record: {listed or 'the file changed (its digest), not its rules'}",
        )
    )
