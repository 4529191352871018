"""What can be asked: a time window, the terms of a search (pure; refusals are errors).

The CLI, the HTTP API and evidence bundles ask through these, so a question is refused
the same way wherever it comes from; parameters are named as the command line's options,
which the API's follow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ledger.errors import QueryError

__all__ = ["EARLIEST", "LATEST", "ImagePattern", "SearchTerms", "check_window", "instant",
           "search_terms"]  # fmt: skip

EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
"""The instants a question may name: what Python's datetime holds, a day inside its ends,
so that no arithmetic on them (a tolerance, a window) overflows."""


def instant(moment: datetime, name: str) -> datetime:
    """``moment`` in UTC; refused when it carries no offset or lies outside
    [:data:`EARLIEST`, :data:`LATEST`]. ``name`` is the option or parameter that gave it."""
    if moment.tzinfo is None:
        raise QueryError(f"{name}: {moment.isoformat()} needs an explicit UTC offset")
    try:
        utc: datetime | None = moment.astimezone(UTC)
    except OverflowError:  # off the ends of the calendar
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise QueryError(
            f"{name}: {moment.isoformat()} is outside the times a question can name "
            f"({EARLIEST.date()} to {LATEST.date()}, UTC)"
        )
    return utc


_RELATIVE = re.compile(r"^(\d+)\s*(second|minute|hour|day|week)s?\s+ago$")


def parse_instant(value: str, name: str, now: datetime) -> datetime:
    """What a question's time may be, on the command line and over HTTP alike: RFC 3339
    with an explicit offset, ``now``, or ``N seconds|minutes|hours|days|weeks ago`` (from
    ``now``). ``name`` is the option or parameter that gave it, named in every refusal."""
    text = value.strip().lower()
    if text == "now":
        return now
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = int(relative[1]), relative[2]
        try:
            return instant(now - timedelta(**{unit + "s": amount}), name)
        except (OverflowError, QueryError):
            raise QueryError(
                f"{name}: {value!r} is before {EARLIEST.date()}, the earliest time a question "
                "can name"
            ) from None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(
            f"{name}: {value!r} is not a time: use RFC 3339 (2026-11-20T14:03:00Z), 'now' or "
            "'3 weeks ago'"
        ) from None
    if moment.tzinfo is None:
        raise QueryError(
            f"{name}: {value!r} needs an explicit UTC offset, e.g. 2026-11-20T14:03:00Z"
        )
    return instant(moment, name)


def check_window(start: datetime | None, end: datetime | None) -> None:
    """Refuse a window that ends before it starts: no instant lies in it."""
    if start is not None and end is not None and end < start:
        raise QueryError("--to is earlier than --from")


@dataclass(frozen=True)
class ImagePattern:
    """A digest prefix, with its algorithm when given, optionally after a repository."""

    repo: str | None
    digest: str
    algorithm: bool


@dataclass(frozen=True)
class SearchTerms:
    """Exactly one of: an image pattern, an artifact reference, a commit prefix, a change
    ref."""

    image: ImagePattern | None = None
    commit: str | None = None
    change_ref: str | None = None
    artifact: str | None = None
    """``kind:id``, with or without its ``@digest``: as answers show the unit."""


_ARTIFACT_KINDS = ("ami:", "lambda:", "ecs-task-definition:", "generic:")


_DIGEST_PREFIX = re.compile(r"^(?:[a-z0-9]+:)?[0-9a-f]+$")


def _image_pattern(image: str) -> ImagePattern:
    """A digest or its first hex digits, with or without the algorithm (``sha256:4f1c…``,
    ``4f1c2b3a``), optionally after a repository and ``@`` (``checkout@4f1c2b3a``, or a
    whole reference): what the tables print."""
    repo, at, digest = image.strip().rpartition("@")
    digest = digest.lower()
    if not _DIGEST_PREFIX.match(digest):
        raise QueryError(
            f"--image {image!r}: give a digest or its first hex digits (sha256:4f1c…, "
            "4f1c2b3a), optionally after the repository and '@' (checkout@4f1c2b3a), or an "
            "artifact as answers show it (ami:ami-0abc…); tags are not evidence"
        )
    return ImagePattern(repo=(repo or None) if at else None, digest=digest, algorithm=":" in digest)


def search_terms(
    image: str | None = None, commit: str | None = None, change_ref: str | None = None
) -> SearchTerms:
    """The terms of a search, or :class:`QueryError` naming what is wrong with them."""
    if sum(term is not None for term in (image, commit, change_ref)) != 1:
        raise QueryError("give exactly one of --image, --commit or --change-ref")
    if image is not None and image.strip().startswith(_ARTIFACT_KINDS):
        return SearchTerms(artifact=image.strip())
    if image is not None:
        return SearchTerms(image=_image_pattern(image))
    if commit is not None:
        return SearchTerms(commit=commit.lower())
    return SearchTerms(change_ref=change_ref)
