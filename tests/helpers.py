"""Values and builders any test module may use: images, digests, valid events, and the
command line's command tree (commands are loaded as running them would load them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from ledger.cli import COMMANDS
from ledger.wire.events import Event, event_from_mapping

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
IMAGE_A = "registry.example/checkout@" + DIGEST_A
IMAGE_B = "registry.example/checkout@" + DIGEST_B


def make_event(kind: str = "deployment.succeeded", **overrides: Any) -> Event:
    """A valid event of ``kind``; keyword arguments override top-level fields or ``data``."""
    data_by_kind: dict[str, dict[str, Any]] = {
        "deployment.started": {"image": IMAGE_A},
        "deployment.succeeded": {"image": IMAGE_A, "instances": {"total": 3, "updated": 3}},
        "deployment.failed": {"image": IMAGE_B, "instances": {"total": 4, "updated": 1}},
        "deployment.rolled_back": {"image": IMAGE_A, "from_image": IMAGE_B},
        "mutation.applied": {
            "target_kind": "config",
            "target": "nginx.conf",
            "hash": DIGEST_A,
            "tool": "ansible",
            "method": "pipeline",
        },
        "approval.granted": {"change_ref": "CHG-1", "approver": "carol", "image": IMAGE_A},
        "approval.revoked": {"change_ref": "CHG-1", "reason": "superseded"},
        "service.classified": {"state": "stateless", "criticality": "high", "model": "immutable"},
        "policy.recorded": {"digest": DIGEST_A, "preprod": ["staging"]},
    }
    source = "cab/servicenow" if kind.startswith("approval.") else "ci/github/acme/checkout"
    raw: dict[str, Any] = {
        "type": kind,
        "time": datetime(2026, 11, 20, 14, 3, tzinfo=UTC),
        "source": source,
        "actor": "alice",
        "service": "checkout",
        "environment": "prod",
        "data": dict(data_by_kind[kind]),
    }
    for name, value in overrides.items():
        if name in raw:
            raw[name] = value
        else:
            raw["data"][name] = value
    return event_from_mapping(raw)


_Data = TypeVar("_Data", bound=BaseModel)


def data_of(event: Event, kind: type[_Data]) -> _Data:
    """``event.data`` as the model ``kind`` that the test knows the event carries (a typed
    view of the union; the test fails here if the event carries another kind of data)."""
    data = event.data
    assert isinstance(data, kind), f"{event.type} carries {type(data).__name__}, not {kind}"
    return data


def cli_command(*path: str) -> Any:
    """The click command of ``ledger <path…>``."""
    command = next(c for c in COMMANDS if c.name == path[0]).load()
    for part in path[1:]:
        command = command.commands[part]
    return command


def cli_paths() -> list[str]:
    """Every command of the command line, as ``ledger emit deployment``, groups included."""
    found: list[str] = []

    def walk(command: Any, path: str) -> None:
        found.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, f"{path} {name}")

    for registered in COMMANDS:
        walk(registered.load(), f"ledger {registered.name}")
    return found


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 60) -> None:
    """Wait until ``predicate()`` holds; fail naming ``what`` after ``timeout`` seconds (a
    bound for a stuck test, never a measure: tests wait on conditions, not on the clock)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def strictly_after(moment: datetime) -> datetime:
    """The clock's first reading later than ``moment`` (UTC)."""
    while (now := datetime.now(UTC)) <= moment:
        time.sleep(0.001)
    return now
