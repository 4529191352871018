"""The timeline chart of one service over a period, as geometry (pure: values in, values out).

Time maps to x linearly over the period (:func:`x_of`). Each image is a horizontal band
from the deployment (or rollback) that made it live to the next; a failed deployment that
left some instances on a new image and the rest on the old is a hatched band over it until
a deployment or a rollback resolves it. Below the bands, three lanes of marks: changes
(deployments, failures, rollbacks, mutations; manual ones amber), approvals, and the
findings (by severity). A change the rules found unapproved is drawn red, with a red rule
across the whole chart, and its band outlined red. Marks closer than a few pixels in one
lane are merged (their titles list what they hold), so a busy service stays readable and
the number of elements stays bounded by the chart's width. The template draws exactly
this: no geometry is computed in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "COUNTED",
    "HEIGHT",
    "LANES",
    "WIDTH",
    "Band",
    "Chart",
    "Mark",
    "Tick",
    "chart",
    "counts",
    "parse_time",
    "short_image",
    "ticks",
    "unapproved_entries",
    "x_of",
]

WIDTH = 1000.0
"""The chart's own units (its viewBox): the page scales it to the width it has."""
LEFT = 96.0
"""Where the period starts: the lanes' names are to the left of it."""
RIGHT = 14.0
BAND_Y, BAND_H = 6.0, 24.0
LANES: dict[str, float] = {"changes": 44.0, "approvals": 62.0, "findings": 80.0}
"""Each lane of marks, by the y of its middle."""
AXIS_Y = 92.0
HEIGHT = 110.0
RIGHT_EDGE = WIDTH - RIGHT
MIXED_MIN = 5.0
"""A mixed fleet is drawn at least this wide, however short (its title says how long)."""
MERGE_PX = 3.0
"""Marks of one kind closer than this in one lane are drawn as one."""

PALETTE = (
    "#93c5fd",
    "#a7f3d0",
    "#fde68a",
    "#c4b5fd",
    "#fbcfe8",
    "#99f6e4",
    "#fed7aa",
    "#bef264",
    "#e9d5ff",
    "#bae6fd",
)
"""Band colours, given in turn to a service's images as they first appear: neighbouring
bands differ, and an image rolled back to keeps its colour."""

_STEPS = [timedelta(hours=h) for h in (1, 3, 6, 12)] + [
    timedelta(days=d) for d in (1, 2, 7, 14, 30, 91)
]
_MAX_TICKS = 12


@dataclass(frozen=True)
class Band:
    x: float
    width: float
    image: str
    colour: str
    label: str
    seq: int | None
    title: str
    classes: str


@dataclass(frozen=True)
class Mark:
    lane: str
    x: float
    y: float
    shape: str
    """``circle`` (cx=x, cy=y, r=size), else a polygon whose ``points`` are given."""
    size: float
    points: str
    classes: str
    seqs: tuple[int, ...]
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    label: str
    anchor: str = "middle"


@dataclass(frozen=True)
class Chart:
    service: str
    width: float
    height: float
    left: float
    right: float
    axis_y: float
    bands: list[Band]
    mixed: list[Band]
    marks: list[Mark]
    alarms: list[Mark]
    """The red rules across the chart, one per unapproved change (x, seqs, title)."""
    ticks: list[Tick]
    lanes: dict[str, float] = field(default_factory=lambda: dict(LANES))
    counts: dict[str, int] = field(default_factory=dict)


def parse_time(value: str) -> datetime:
    """An instant of the document's JSON (``...Z``) as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def x_of(
    moment: datetime,
    start: datetime,
    end: datetime,
    left: float = LEFT,
    right: float = WIDTH - RIGHT,
) -> float:
    """Where ``moment`` falls between ``left`` (the period's start) and ``right`` (its end),
    clamped to the period; a period of no length maps everything to ``left``."""
    span = (end - start).total_seconds()
    if span <= 0:
        return left
    share = (moment - start).total_seconds() / span
    return round(left + (right - left) * min(max(share, 0.0), 1.0), 2)


def ticks(start: datetime, end: datetime,
          left: float = LEFT, right: float = WIDTH - RIGHT) -> list[Tick]:  # fmt: skip
    """At most twelve ticks on round instants (midnight UTC, or whole hours), labelled by day
    at midnight and by time of day otherwise; the labels at the edges stay inside."""
    span = end - start
    step = next((s for s in _STEPS if span / s <= _MAX_TICKS), _STEPS[-1])
    first = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while first < start:
        first += step
    found: list[Tick] = []
    at = first
    while at <= end and len(found) <= _MAX_TICKS:
        x = x_of(at, start, end, left, right)
        label = at.strftime("%H:%M") if at.hour or at.minute else at.strftime("%b %d")
        anchor = "end" if x > right - 30 else "start" if x < left + 30 else "middle"
        found.append(Tick(x, label, anchor))
        at += step
    return found


def short_image(image: str | None) -> str:
    """``registry/path/name@sha256:<hex>`` as ``name@<12 hex>`` (the tables' form)."""
    if not image:
        return "-"
    name, _, digest = image.partition("@")
    return f"{name.rsplit('/', 1)[-1]}@{digest.partition(':')[2][:12] or digest}"


def _when(value: str) -> str:
    return parse_time(value).strftime("%Y-%m-%d %H:%M UTC")


def _describe(entry: Mapping[str, Any]) -> str:
    """One line about an entry: what a mark's title says of it."""
    what = entry["type"]
    if entry.get("image"):
        what += f" {entry['image']}"
    if entry.get("target_kind"):
        what += f" {entry['target_kind']} {entry.get('target', '')}"
        if entry.get("instance"):
            what += f" on {entry['instance']}"
        if entry.get("method"):
            what += f" ({entry['method']})"
    if entry.get("total"):
        what += f", {entry.get('updated', 0)} of {entry['total']} instances updated"
    if entry.get("change_ref"):
        what += f", change ref {entry['change_ref']}"
    return f"entry {entry['seq']}: {what}, {_when(entry['time'])}, by {entry['actor']}"


def _polygon(shape: str, x: float, y: float, size: float) -> str:
    if shape == "diamond":
        corners = [(x, y - size), (x + size, y), (x, y + size), (x - size, y)]
    elif shape == "triangle":
        corners = [(x, y - size), (x + size, y + size * 0.8), (x - size, y + size * 0.8)]
    elif shape == "down":
        corners = [(x - size, y - size * 0.8), (x + size, y - size * 0.8), (x, y + size)]
    else:  # a square
        corners = [
            (x - size, y - size),
            (x + size, y - size),
            (x + size, y + size),
            (x - size, y + size),
        ]
    return " ".join(f"{round(cx, 2)},{round(cy, 2)}" for cx, cy in corners)


def _mark(
    lane: str, x: float, shape: str, size: float, classes: str, seqs: Sequence[int], title: str
) -> Mark:
    y = LANES[lane]
    points = "" if shape == "circle" else _polygon(shape, x, y, size)
    return Mark(lane, x, y, shape, size, points, classes, tuple(seqs), title)


def _merged(marks: Iterable[Mark]) -> list[Mark]:
    """Marks of one lane and kind within :data:`MERGE_PX` of each other, as one; the most
    alarming kinds are drawn last (on top)."""
    groups: dict[tuple[str, str, int], list[Mark]] = {}
    for mark in marks:
        groups.setdefault((mark.lane, mark.classes, int(mark.x // MERGE_PX)), []).append(mark)
    merged = []
    for group in groups.values():
        first = group[0]
        if len(group) == 1:
            merged.append(first)
            continue
        lines = [m.title for m in group[:5]]
        if len(group) > 5:
            lines.append(f"... and {len(group) - 5} more")
        merged.append(
            Mark(
                first.lane,
                first.x,
                first.y,
                first.shape,
                first.size,
                first.points,
                first.classes,
                tuple(s for m in group for s in m.seqs),
                f"{len(group)} entries:\n" + "\n".join(lines),
            )
        )
    return sorted(merged, key=lambda m: ("unapproved" in m.classes, m.classes, m.x))


def unapproved_entries(findings: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """The entries ``unapproved_change`` findings are about, with their reasons."""
    return {
        f["entries"][0]["seq"]: f["details"].get("reason") or "unapproved"
        for f in findings
        if f["rule"] == "unapproved_change" and f["entries"]
    }


def counts(timeline: Mapping[str, Any], findings: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """What one service's timeline holds, by kind: the row of the report's services table."""
    unapproved = unapproved_entries(findings)
    found = dict.fromkeys(COUNTED, 0)
    for entry in timeline["entries"]:
        kind = _COUNTED_AS.get(entry["type"])
        if kind is not None:
            found[kind] += 1
        found["manual"] += entry["type"] == "mutation.applied" and entry.get("method") == "manual"
        found["unapproved"] += entry["seq"] in unapproved
    return found


COUNTED = ("deployments", "failures", "rollbacks", "mutations", "manual", "approvals",
           "unapproved")  # fmt: skip
_COUNTED_AS = {
    "deployment.succeeded": "deployments", "deployment.failed": "failures",
    "deployment.rolled_back": "rollbacks", "mutation.applied": "mutations",
    "approval.granted": "approvals",
}  # fmt: skip


def chart(
    timeline: Mapping[str, Any],
    findings: Sequence[Mapping[str, Any]],
    start: datetime,
    end: datetime,
) -> Chart:
    """The chart of one service's ``timeline`` (an entry of the document's ``timelines``)
    over [start, end], with its ``findings`` (the check's, of this service)."""

    def x(value: str) -> float:
        return x_of(parse_time(value), start, end)

    unapproved = unapproved_entries(findings)
    colours: dict[str, str] = {}

    def colour(image: str) -> str:
        return colours.setdefault(image, PALETTE[len(colours) % len(PALETTE)])

    entries = list(timeline["entries"])
    bands: list[Band] = []
    mixed: list[Band] = []
    live = timeline.get("live_at_start")
    current: tuple[float, str, int | None, str, bool] | None = None
    if live is not None:
        current = (
            LEFT,
            live["image"],
            live["seq"],
            f"entry {live['seq']}: {live['image']} live since {_when(live['time'])} "
            f"(deployed by {live['actor']})",
            False,
        )
    open_mixed: tuple[float, Mapping[str, Any]] | None = None
    at_start = timeline.get("mixed_at_start")
    if at_start is not None:
        open_mixed = (LEFT, at_start)

    def close_band(until: float) -> None:
        if current is None:
            return
        x0, image, seq, title, flagged = current
        bands.append(
            Band(
                x0,
                max(until - x0, 0.6),
                image,
                colour(image),
                _label(image, until - x0),
                seq,
                title,
                "band unapproved" if flagged else "band",
            )
        )

    def close_mixed(until: float, resolved_by: Mapping[str, Any] | None) -> None:
        if open_mixed is None:
            return
        x0, failed = open_mixed
        how = (
            f"until entry {resolved_by['seq']} ({resolved_by['type']}, "
            f"{_when(resolved_by['time'])})"
            if resolved_by is not None
            else "unresolved at the end of the period"
        )
        title = (
            f"mixed fleet: {failed['updated']} of {failed['total']} instances on "
            f"{failed['image']} after entry {failed['seq']} (failed, "
            f"{_when(failed['time'])}), {how}"
        )
        mixed.append(
            Band(
                min(x0, RIGHT_EDGE - MIXED_MIN),
                max(until - x0, MIXED_MIN),
                failed["image"] or "",
                "",
                "",
                failed["seq"],
                title,
                "mixed",
            )
        )

    marks: list[Mark] = []
    alarms: list[Mark] = []
    for entry in entries:
        kind, seq, at = entry["type"], entry["seq"], x(entry["time"])
        title = _describe(entry)
        flagged = seq in unapproved
        if flagged:
            title += f" - UNAPPROVED ({unapproved[seq]})"
            alarms.append(_mark("changes", at, "circle", 0, "alarm", [seq], title))
        red = " unapproved" if flagged else ""
        if kind in ("deployment.succeeded", "deployment.rolled_back"):
            close_band(at)
            close_mixed(at, entry)
            open_mixed = None
            current = (at, entry.get("image") or "", seq, title, flagged)
            if kind == "deployment.rolled_back":
                marks.append(_mark("changes", at, "circle", 5.5, "rollback" + red, [seq], title))
            else:
                marks.append(_mark("changes", at, "triangle", 5.5, "deploy" + red, [seq], title))
        elif kind == "deployment.failed":
            marks.append(_mark("changes", at, "down", 6.5, "failed" + red, [seq], title))
            total, updated = entry.get("total") or 0, entry.get("updated") or 0
            if total and 0 < updated < total:
                close_mixed(at, entry)
                open_mixed = (at, entry)
        elif kind == "mutation.applied":
            manual = entry.get("method") == "manual"
            classes = "mutation" + (" manual" if manual else "") + red
            marks.append(_mark("changes", at, "diamond", 5.5, classes, [seq], title))
        elif kind == "approval.granted":
            marks.append(_mark("approvals", at, "circle", 4.5, "approval", [seq], title))
        elif kind == "approval.revoked":
            marks.append(_mark("approvals", at, "square", 4.0, "revoked", [seq], title))
    close_band(WIDTH - RIGHT)
    close_mixed(WIDTH - RIGHT, None)
    for f in findings:
        seqs = [c["seq"] for c in f["entries"]]
        marks.append(
            _mark(
                "findings",
                x(f["time"]),
                "square",
                4.0,
                f"finding sev-{f['severity']}",
                seqs,
                f"{f['severity']}: {f['rule']}: {f['message']}"
                + (f" (entries {', '.join(map(str, seqs))})" if seqs else ""),
            )
        )
    return Chart(
        service=timeline["service"],
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        right=WIDTH - RIGHT,
        axis_y=AXIS_Y,
        bands=[b for b in bands if b.x < WIDTH - RIGHT],
        mixed=mixed,
        marks=_merged(marks),
        alarms=_merged(alarms),
        ticks=ticks(start, end),
        counts=counts(timeline, findings),
    )


def _label(image: str, width: float) -> str:
    """The band's label: as much of the image's name as fits (about 6.2 units a letter)."""
    for text in (short_image(image), short_image(image).partition("@")[2]):
        if len(text) * 6.2 + 8 <= width:
            return text
    return ""
