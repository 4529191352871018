"""`ledger asof|snapshot|diff|timeline|search`: what was live, what changed, where it ran."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

import typer

from ledger.cli._common import (
    DEFAULT_DB,
    ApiUrl,
    DbPath,
    JsonFlag,
    console,
    local_or_remote,
    out,
    parse_time,
    print_json,
    reporting_errors,
    short_digest,
    short_image,
    short_time,
)
from ledger.cli._terminal import styled, table
from ledger.rules.questions import check_window, search_terms

if TYPE_CHECKING:
    from ledger.store.reader import LedgerReader

Service = Annotated[str, typer.Option("--service", help="Service name.")]
Env = Annotated[str, typer.Option("--env", help="Environment, e.g. prod.")]
At = Annotated[str, typer.Option("--at", help="Instant: RFC 3339, 'now' or '3 weeks ago'.")]
KnownAt = Annotated[
    str | None,
    typer.Option("--known-at", help="Answer with only what the ledger had ingested by then."),
]


def _instants(at: str, known_at: str | None, **fixed: str) -> tuple[datetime, datetime | None, str]:
    """Valid and transaction time from the options, and the API query string for them."""
    moment = parse_time(at, "--at")
    known = parse_time(known_at, "--known-at") if known_at else None
    query = fixed | {"at": moment.isoformat()} | ({"known_at": known.isoformat()} if known else {})
    return moment, known, urlencode(query)


def _status(item: dict[str, Any]) -> tuple[str | tuple[str, str], ...]:
    """Whether a change was approved, as :func:`styled` parts."""
    if item["approved"]:
        return ("approved", "green"), f" by {item['approval']['approver']}"
    return ((item["unapproved_reason"], "red"),)


def print_asof(answer: dict[str, Any]) -> None:
    known = f" (as known at {answer['known_at']})" if answer.get("known_at") else ""
    out.print(styled((answer["service"], "bold"), " in ", (answer["environment"], "bold"),
                     f" at {answer['at']}{known}"))  # fmt: skip
    d = answer["deployment"]
    if d is None:
        out.print("  deployment: none recorded")
    else:
        out.print(styled(
            f"  deployment: {d['image']}\n              since {d['time']} by {d['actor']}"
            f" ({d['change_ref'] or 'no change ref'}; ", *_status(d), f") [entry {d['seq']}]"
        ))  # fmt: skip
    p = answer["partial"]
    if p is not None:
        out.print(styled("  ", ("partial fleet", "yellow"), f": {p['updated']}/{p['total']} "
                         f"instances on {p['image']} [entry {p['seq']}]"))  # fmt: skip
    if answer["mutations"]:
        # Two lines each rather than a nine-column table, which 80 columns cannot show.
        out.print(f"  changed in place, live ({len(answer['mutations'])}):")
        for m in answer["mutations"]:
            where = m["instance"] or "all instances"
            out.print(styled(
                f"    {m['target_kind']} {m['target']} on {where}: {m['hash']}\n"
                f"      since {m['time']} by {m['actor']} with {m['tool']} ({m['method']}; "
                f"{m['change_ref'] or 'no change ref'}; ", *_status(m), f") [entry {m['seq']}]"
            ))  # fmt: skip
    c = answer["classification"]
    if c is not None:
        out.print(f"  classified: {c['state']}, {c['criticality']} criticality, {c['model']}")
    e = answer["evidence"]
    out.print(
        f"  evidence: entries {', '.join(map(str, e['entries'])) or 'none'} "
        f"of a ledger of {e['ledger_size']}"
    )
    for mark in answer.get("compromised", []):
        out.print(styled(("  compromised:", "red"), (
            f" entry {mark['seq']} was signed by key {mark['key_id']}, revoked from "
            f"{mark['revoked_at']} (reported after the ledger accepted it at "
            f"{mark['witnessed_at']})"
        )))  # fmt: skip


def _unmatched(reader: LedgerReader, env: str, service: str | None = None) -> str | None:
    """A note when no entry names the environment or service asked about: an empty answer
    to a misspelt name would otherwise read as "nothing was deployed"."""
    from ledger.store.query import streams

    known = streams(reader)
    if (env, service) in known:
        return None
    environments = sorted({e for e, _ in known})
    if env not in environments:
        return f"no entry names environment {env!r}; the ledger has {_names(environments)}"
    if service is None:
        return None
    services = [s for e, s in known if e == env]
    return f"no entry names service {service!r} in {env}; {env} has {_names(services)}"


def _names(names: list[str], most: int = 12) -> str:
    shown = ", ".join(names[:most]) or "none"
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _ask(
    db: Path,
    api: str | None,
    path: str,
    ask: Callable[[LedgerReader], Any],
    empty: Callable[[Any], bool],
    env: str,
    service: str | None = None,
    *,
    paged: str | None = None,
) -> tuple[Any, str | None]:
    """The JSON answer, from the file or the API (``paged``: a list the API pages), and,
    for an empty one read from the file, a note naming what no entry carries (printed
    after the answer by :func:`_note`)."""
    note: str | None = None

    def local(reader: LedgerReader) -> Any:
        nonlocal note
        answer = ask(reader)
        if empty(answer):
            note = _unmatched(reader, env, service)
        return answer

    with reporting_errors():
        answer = local_or_remote(db, api, path, local, paged=paged)
    return answer, note


def _note(note: str | None) -> None:
    if note:
        console.print(styled(("note:", "yellow"), f" {note}"))


def _time_notes(answer: dict[str, Any], moment: datetime, known: datetime | None) -> list[str]:
    """Notes for an answer that would otherwise look normal: an instant still to come, a
    ledger that had recorded nothing by --known-at."""
    now = datetime.now(UTC)
    notes = [f"{flag} {when.isoformat()} is in the future: this is what the ledger holds now, "
             "and it may still change" for flag, when in (("--at", moment), ("--known-at", known))
             if when is not None and when > now]  # fmt: skip
    if known is not None and answer.get("evidence", {}).get("ledger_size") == 0:
        notes.append(f"the ledger had recorded nothing by --known-at {known.isoformat()}")
    return notes


def _answer(answer: dict[str, Any], notes: list[str], json_out: bool,
            show: Callable[[dict[str, Any]], None]) -> None:  # fmt: skip
    """Print an answer and its notes: on stderr after the text, as ``notes`` in the JSON."""
    if json_out:
        print_json(answer | ({"notes": notes} if notes else {}))
    else:
        show(answer)
    for note in notes:
        _note(note)


def asof(
    service: Service,
    env: Env,
    at: At = "now",
    known_at: KnownAt = None,
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    json_out: JsonFlag = False,
) -> None:
    """Exactly what was live for a service at an instant, with the entries that prove it.

    Example: `ledger asof --service checkout --env prod --at '2 hours ago'`"""
    from ledger.store.query import asof as asof_query

    moment, known, query = _instants(at, known_at, service=service, env=env)
    answer, note = _ask(
        db, api, "/v1/asof?" + query,
        lambda r: asof_query(r, service, env, moment, known).model_dump(mode="json"),
        lambda a: not a["evidence"]["entries"], env, service,
    )  # fmt: skip
    notes = ([note] if note else []) + _time_notes(answer, moment, known)
    _answer(answer, notes, json_out, print_asof)


def snapshot(
    env: Env,
    at: At = "now",
    known_at: KnownAt = None,
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    json_out: JsonFlag = False,
) -> None:
    """Every service of an environment at an instant: the whole estate, one row each.

    Example: `ledger snapshot --env prod --at 2026-11-24T14:03:00Z`"""
    from ledger.store.query import snapshot as snapshot_query

    moment, known, query = _instants(at, known_at, env=env)
    answer, note = _ask(
        db, api, "/v1/snapshot?" + query,
        lambda r: snapshot_query(r, env, moment, known).model_dump(mode="json"),
        lambda a: not a["services"], env, paged="services",
    )  # fmt: skip
    notes = ([note] if note else []) + _time_notes(answer, moment, known)
    _answer(answer, notes, json_out, _print_snapshot)


def _print_snapshot(answer: dict[str, Any]) -> None:
    env = answer["environment"]
    grid = table(
        "service",
        "image",
        "since",
        "approval",
        "changed in place",
        "model",
        title=f"{env} at {answer['at']}",
    )
    for s in answer["services"]:
        d, p, c = s["deployment"], s["partial"], s["classification"]
        image = short_image(d and d["image"])
        if p:  # a mixed fleet: the image some instances run beside the live one
            image += f"\npartial {p['updated']}/{p['total']}: {short_image(p['image'])}"
        unapproved = sum(not m["approved"] for m in s["mutations"])
        changed = str(len(s["mutations"])) + (f", {unapproved} unapproved" if unapproved else "")
        grid.add_row(
            s["service"],
            image,
            short_time(d["time"], seconds=False) if d else "-",
            styled(*_status(d)) if d else "-",
            changed,
            c["model"] if c else "-",
        )
    out.print(grid)


def diff(
    env: Env,
    start: Annotated[str, typer.Option("--from", help="Earlier instant.")],
    end: Annotated[str, typer.Option("--to", help="Later instant.")] = "now",
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    json_out: JsonFlag = False,
) -> None:
    """What changed in an environment between two instants: images, mutations, approvals.

    Example: `ledger diff --env prod --from '1 day ago' --to now`"""
    from ledger.store.query import diff as diff_query

    t1, t2 = parse_time(start, "--from"), parse_time(end, "--to")
    query = {"env": env, "from": t1.isoformat(), "to": t2.isoformat()}
    with reporting_errors():
        check_window(t1, t2)
        answer = local_or_remote(
            db,
            api,
            "/v1/diff?" + urlencode(query),
            lambda r: diff_query(r, env, t1, t2).model_dump(mode="json"),
            paged="changes",
        )
    if json_out:
        print_json(answer)
    else:
        print_diff(answer)


def _shown(aspect: str, value: Any) -> str:
    """One side of a change, with images and content hashes shortened."""
    if value is None:
        return "-"
    if aspect == "deployment":
        return short_image(value)
    if aspect == "mutation":
        return short_digest(value)
    if aspect == "partial":  # "<image> (updated/total)"
        image, _, fleet = value.partition(" ")
        return f"{short_image(image)} {fleet}"
    return str(value)


def print_diff(answer: dict[str, Any]) -> None:
    grid = table(
        "service",
        "what",
        "key",
        "before",
        "after",
        title=f"{answer['environment']}: {answer['from']} → {answer['to']}",
    )
    for c in answer["changes"]:
        grid.add_row(
            c["service"],
            c["aspect"],
            c["key"],
            _shown(c["aspect"], c["before"]),
            _shown(c["aspect"], c["after"]),
        )
    out.print(grid)
    console.print(f"{len(answer['changes'])} change(s)")


def timeline(
    service: Service,
    env: Env,
    start: Annotated[str | None, typer.Option("--from", help="From this instant.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Up to this instant.")] = None,
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    json_out: JsonFlag = False,
) -> None:
    """The ordered history of a service in an environment.

    Example: `ledger timeline --service checkout --env prod --from '1 week ago'`"""
    from ledger.store.query import timeline as timeline_query

    t1 = parse_time(start, "--from") if start else None
    t2 = parse_time(end, "--to") if end else None
    with reporting_errors():
        check_window(t1, t2)
    query = (
        {"service": service, "env": env}
        | ({"from": t1.isoformat()} if t1 else {})
        | ({"to": t2.isoformat()} if t2 else {})
    )
    answer, note = _ask(
        db, api, "/v1/timeline?" + urlencode(query),
        lambda r: [e.model_dump(mode="json") for e in timeline_query(r, service, env, t1, t2)],
        lambda a: not a, env, service, paged="seq",
    )  # fmt: skip
    if json_out:
        print_json(answer)
    else:
        print_timeline(answer, title=f"{service} in {env}")
    _note(note)


def print_timeline(entries: list[dict[str, Any]], title: str) -> None:
    grid = table("time", "seq", "type", "actor", "what", title=title)
    for e in entries:
        d = e["data"]
        what = (
            short_image(d.get("image"))
            if "image" in d and e["type"].startswith("deployment")
            else f"{d.get('target_kind')}:{d.get('target')}"
            if e["type"] == "mutation.applied"
            else d.get("change_ref") or d.get("model") or ""
        )
        when = short_time(e["time"]) + _recorded_later(e)
        if e.get("compromised_since"):
            what += f"\nkey {e['key_id']} compromised since {short_time(e['compromised_since'])}"
        grid.add_row(when, str(e["seq"]), e["type"], e["actor"], what)
    out.print(grid)


def _recorded_later(entry: dict[str, Any]) -> str:
    """A second line under an entry's time when the ledger witnessed it a minute or more
    after the time it claims: a late arrival, or a back-dated one, is visible."""
    witnessed = entry.get("witnessed_at")
    if witnessed is None:
        return ""
    lag = datetime.fromisoformat(witnessed) - datetime.fromisoformat(entry["time"])
    minutes = int(lag.total_seconds() // 60)
    if minutes < 1:
        return ""
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes and not days else "",
    ]
    return "\nrecorded +" + " ".join(p for p in parts if p)


def search(
    image: Annotated[
        str | None,
        typer.Option(
            help="Digest or its first hex digits (sha256:4f1c…, 4f1c2b3a), optionally "
            "after the repository (checkout@4f1c2b3a) or a whole reference."
        ),
    ] = None,
    commit: Annotated[str | None, typer.Option(help="Commit SHA (or a prefix).")] = None,
    change_ref: Annotated[str | None, typer.Option("--change-ref", help="Change ref.")] = None,
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    json_out: JsonFlag = False,
) -> None:
    """Where and when an image ran, a commit was deployed, or a change ref was used.

    Example: `ledger search --change-ref CHG-1042`"""
    from ledger.store.query import search as search_query

    given = {
        k: v
        for k, v in (("image", image), ("commit", commit), ("change_ref", change_ref))
        if v is not None
    }
    with reporting_errors():
        terms = search_terms(image, commit, change_ref)
        hits = local_or_remote(
            db,
            api,
            "/v1/search?" + urlencode(given),
            lambda reader: [h.model_dump(mode="json") for h in search_query(reader, terms)],
            paged="seq",
        )
    if json_out:
        print_json(hits)
        return
    grid = table("time", "service", "env", "type", "actor", "change", "seq")
    for h in hits:
        grid.add_row(
            short_time(h["time"]),
            h["service"],
            h["environment"],
            h["type"],
            h["actor"],
            h["change_ref"] or "",
            str(h["seq"]),
        )
    out.print(grid)
    console.print(f"{len(hits)} entr{'y' if len(hits) == 1 else 'ies'}")
