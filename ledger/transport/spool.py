"""The producers' spool: signed events that Kafka did not acknowledge, kept on local disk
until `ledger spool flush` sends them (docs/reliability.md#spool).

A spool is a directory. Each command that spools writes one file of its own,
``spool-<UTC time>-<pid>-<random>.jsonl``: JSON Lines, one event a line, ASCII only::

    {"v":1,"event_id":"…","type":"deployment.succeeded","topic":"ledger.events",
     "key":"<base64>","envelope":"<base64>","spooled_at":"2026-12-06T14:03:00Z"}

``envelope`` is the exact signed message value (:func:`ledger.transport.producer.seal`),
``key`` the exact Kafka key; nothing else on the line is sent. A file is written under a
hidden name, locked (``flock``), renamed into place, filled, ``fsync``'d (then its
directory), and only then unlocked: a reader that gets the lock sees a whole file, or
the file of a writer that died. A line cut by a crash (or a disk that filled) is named,
with its file and line number, and every other line is kept. A file is removed only once
the broker acknowledged every event in it; a file with an unreadable line is renamed
``….jsonl.damaged`` instead, kept for a person to look at.

No Kafka client is loaded here: :func:`flush` is given a function that connects.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ledger.errors import LedgerError, TransportError

if TYPE_CHECKING:
    from ledger.transport.producer import Delivery
    from ledger.wire.events import Event

__all__ = [
    "FORMAT_VERSION",
    "FlushResult",
    "Sender",
    "SpoolFile",
    "Spooled",
    "Unreadable",
    "append",
    "damaged",
    "flush",
    "pending",
    "summary",
]

FORMAT_VERSION = 1
_PREFIX = "spool-"
_SUFFIX = ".jsonl"
DAMAGED_SUFFIX = ".damaged"
"""Appended to a file's name once every readable event in it was acknowledged, when some
line of it could not be read: kept for inspection, never sent again."""


@dataclass(frozen=True)
class Spooled:
    """One spooled event: the exact signed bytes, and where they were going."""

    file: Path
    line: int
    event: Event
    envelope: bytes
    topic: str
    spooled_at: datetime


@dataclass(frozen=True)
class Unreadable:
    """A line of a spool file that holds no whole event: that event is lost."""

    file: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class SpoolFile:
    """What one spool file holds; ``in_use``: another process holds it (writing or
    flushing it), so it was not read."""

    path: Path
    events: tuple[Spooled, ...] = ()
    unreadable: tuple[Unreadable, ...] = ()
    in_use: bool = False


class Sender(Protocol):
    """What :func:`flush` sends with: :class:`~ledger.transport.producer.LedgerProducer`."""

    def send_sealed(self, event: Event, envelope: bytes, topic: str | None = None) -> None: ...

    def flush(self, timeout: float = ...) -> list[Delivery]: ...


# --- writing ---------------------------------------------------------------------------------


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _line(event: Event, envelope: bytes, topic: str, spooled_at: str) -> bytes:
    record = {
        "v": FORMAT_VERSION,
        "event_id": event.id,
        "type": event.type,
        "topic": topic,
        "key": base64.b64encode(event.partition_key).decode("ascii"),
        "envelope": base64.b64encode(envelope).decode("ascii"),
        "spooled_at": spooled_at,
    }
    return json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append(
    directory: Path, topic: str, sealed: Sequence[tuple[Event, bytes]], now: datetime | None = None
) -> Path:
    """Write ``sealed`` (each event and its exact envelope) to a new file of the spool
    ``directory`` (made if missing, mode 0700), on disk (``fsync``) when this returns; the
    file's path. Raises :class:`OSError` when the disk would not take them, leaving no file."""
    now = now or datetime.now(UTC)
    spooled_at = _stamp(now)
    data = b"".join(_line(event, envelope, topic, spooled_at) for event, envelope in sealed)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"{_PREFIX}{now.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{os.getpid()}-{secrets.token_hex(4)}"
    path = directory / (name + _SUFFIX)
    hidden = directory / f".{name}{_SUFFIX}.new"
    fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until the file is whole: readers wait or skip
        try:
            os.rename(hidden, path)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            _fsync_directory(directory)
        except OSError:
            for leftover in (hidden, path):  # nothing half-spooled: the caller says so
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
            raise
    finally:
        os.close(fd)
    return path


# --- reading ---------------------------------------------------------------------------------


def _files(directory: Path) -> list[Path]:
    """The spool's files, oldest first (their names begin with the time they were made)."""
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.name.startswith(_PREFIX) and p.name.endswith(_SUFFIX)
    )


def damaged(directory: Path) -> list[Path]:
    """Files kept after a flush because some line of theirs could not be read."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(_SUFFIX + DAMAGED_SUFFIX))


def _decode(path: Path, number: int, raw: bytes) -> Spooled:
    """One line as an event; :class:`ValueError` naming what is wrong with it."""
    from ledger.wire.codec import decode_event
    from ledger.wire.envelope import Envelope

    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("not a whole JSON line") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if record.get("v") != FORMAT_VERSION:
        raise ValueError(f"spool format {record.get('v')!r}, expected {FORMAT_VERSION}")
    fields = ("event_id", "type", "topic", "key", "envelope", "spooled_at")
    missing = [name for name in fields if not isinstance(record.get(name), str)]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    try:
        key = base64.b64decode(record["key"], validate=True)
        envelope = base64.b64decode(record["envelope"], validate=True)
    except binascii.Error:
        raise ValueError("key or envelope is not base64") from None
    try:
        spooled_at = datetime.fromisoformat(record["spooled_at"])
    except ValueError:
        raise ValueError(f"spooled_at {record['spooled_at']!r} is not a time") from None
    if spooled_at.tzinfo is None:
        raise ValueError(f"spooled_at {record['spooled_at']!r} has no offset")
    try:
        event = decode_event(Envelope.from_bytes(envelope).payload)
    except LedgerError as exc:
        raise ValueError(f"the envelope holds no event: {exc.message}") from None
    if (event.id, event.type, event.partition_key) != (record["event_id"], record["type"], key):
        raise ValueError("event_id, type or key differ from the signed event's")
    return Spooled(path, number, event, envelope, record["topic"], spooled_at)


def _parse(path: Path, data: bytes) -> SpoolFile:
    events: list[Spooled] = []
    unreadable: list[Unreadable] = []
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            events.append(_decode(path, number, raw))
        except ValueError as exc:
            cut = number == len(lines)  # no end of line: the write stopped there
            reason = f"cut short by a crash or a full disk ({exc})" if cut else str(exc)
            unreadable.append(Unreadable(path, number, f"event lost: {reason}"))
    return SpoolFile(path, tuple(events), tuple(unreadable))


@contextlib.contextmanager
def _opened(path: Path, *, exclusive: bool) -> Iterator[int | None]:
    """The file's descriptor, locked; None when another process holds it. Raises
    :class:`FileNotFoundError` when it went (another flush took it) before it was locked."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        if os.stat(path).st_ino != os.fstat(fd).st_ino:  # renamed or replaced meanwhile
            raise FileNotFoundError(path)
        yield fd
    finally:
        os.close(fd)


def _read(path: Path, fd: int) -> SpoolFile:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return _parse(path, b"".join(chunks))


def pending(directory: Path) -> list[SpoolFile]:
    """Every file of the spool, oldest first, as it stands; a file another process holds
    is listed ``in_use``, unread."""
    found = []
    for path in _files(directory):
        with contextlib.suppress(FileNotFoundError), _opened(path, exclusive=False) as fd:
            found.append(SpoolFile(path, in_use=True) if fd is None else _read(path, fd))
    return found


# --- flushing --------------------------------------------------------------------------------


@dataclass
class FlushResult:
    """What a flush did: ``failure`` is the broker's refusal that stopped it (the files
    from the one it was sending on are kept whole, to be sent again)."""

    delivered: list[Delivery] = field(default_factory=list)
    sent_files: list[Path] = field(default_factory=list)
    damaged_files: list[Path] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    in_use: list[Path] = field(default_factory=list)
    failure: str | None = None
    still_spooled: int = 0


def flush(
    directory: Path, connect: Callable[[], Sender], timeout: float, topic: str | None = None
) -> FlushResult:
    """Send every spooled event, file by file (oldest first), to its topic (or ``topic``),
    each file's events confirmed before the file is removed (renamed ``.damaged`` when a
    line of it was unreadable). ``connect`` is called once, when there is something to send.
    Stops at the first file the broker did not take whole, keeping it and those after it:
    sending them again is safe, the ledger records an event id once."""
    result = FlushResult()
    sender: Sender | None = None
    files = _files(directory)
    for index, path in enumerate(files):
        try:
            with _opened(path, exclusive=True) as fd:
                if fd is None:
                    result.in_use.append(path)
                    continue
                spooled = _read(path, fd)
                try:
                    delivered: list[Delivery] = []
                    if spooled.events:
                        sender = sender or connect()
                        for item in spooled.events:
                            sender.send_sealed(item.event, item.envelope, topic or item.topic)
                        delivered = sender.flush(timeout)
                except TransportError as exc:
                    result.delivered += getattr(exc, "delivered", [])
                    result.failure = exc.message
                    result.still_spooled = len(spooled.events) + sum(
                        len(f.events) for f in _unsent(files[index + 1 :])
                    )
                    return result
                result.delivered += delivered
                result.unreadable += spooled.unreadable
                if spooled.unreadable:
                    kept = path.with_name(path.name + DAMAGED_SUFFIX)
                    os.rename(path, kept)
                    result.damaged_files.append(kept)
                else:
                    os.unlink(path)
                _fsync_directory(directory)
                result.sent_files.append(path)
        except FileNotFoundError:  # another flush took it meanwhile
            continue
    return result


def _unsent(paths: list[Path]) -> list[SpoolFile]:
    found = []
    for path in paths:
        with contextlib.suppress(FileNotFoundError), _opened(path, exclusive=False) as fd:
            if fd is not None:
                found.append(_read(path, fd))
    return found


def summary(files: list[SpoolFile], now: datetime | None = None) -> dict[str, Any]:
    """What is pending, as `ledger spool status --json` prints it."""
    now = now or datetime.now(UTC)
    times = [e.spooled_at for f in files for e in f.events]
    oldest, newest = (min(times), max(times)) if times else (None, None)
    return {
        "files": len(files),
        "events": sum(len(f.events) for f in files),
        "oldest": _stamp(oldest) if oldest else None,
        "newest": _stamp(newest) if newest else None,
        "age_seconds": int((now - oldest).total_seconds()) if oldest else None,
        "in_use": [str(f.path) for f in files if f.in_use],
        "unreadable": [
            {"file": str(u.file), "line": u.line, "reason": u.reason}
            for f in files
            for u in f.unreadable
        ],
        "by_file": [
            {
                "file": str(f.path),
                "events": len(f.events),
                "oldest": _stamp(min(e.spooled_at for e in f.events)) if f.events else None,
                "newest": _stamp(max(e.spooled_at for e in f.events)) if f.events else None,
                "unreadable": len(f.unreadable),
                "in_use": f.in_use,
            }
            for f in files
        ],
    }
