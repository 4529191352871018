"""The witness file: an append-only text file of signed checkpoint notes, oldest first.

It is the copy an operator keeps away from the ledger (another disk, a WORM bucket, a
colleague's machine): `ledger verify --checkpoint FILE` proves the ledger still extends
every checkpoint in it. Appending the note already at the end is a no-op, so publishing
again after a restart does not repeat it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["append_note"]


def append_note(path: Path, note: str) -> None:
    """Append ``note`` and flush it to disk, unless it is already the last one."""
    data = note.encode()
    try:
        with path.open("rb") as existing:
            existing.seek(0, os.SEEK_END)
            size = existing.tell()
            existing.seek(max(0, size - len(data)))
            if existing.read() == data:
                return
    except FileNotFoundError:
        pass
    with path.open("ab") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
