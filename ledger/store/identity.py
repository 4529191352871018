"""The ledger's identity: the key that signs as the ledger, pinned in the ledger itself.

The first ledger key that signs for a ledger (a checkpoint, when the consumer starts with
``--ledger-key``) is pinned in its ``meta`` table; a ledger written before pinning is
pinned to the key that signed its first stored checkpoint. From then on no other key may
sign as the ledger: given any other private key, the consumer and ``ledger evidence``
refuse before signing anything (a producer's key handed over by mistake once signed a
checkpoint into the ledger, its witness file and its topic).

The key changes only by a **rotation**: a key rotation record in the chain (ledger.wire.
records), signed by the key in force, naming its successor. The ledger's keys are then a
sequence, each in force from the entry after which it was named: a checkpoint of size ``n``
is signed by the key in force at entry ``n``, and the pin is the last key named.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from ledger.errors import CheckpointError, ConfigurationError, ForeignLedgerKeyError, LedgerError
from ledger.log.chain import Origin
from ledger.log.checkpoint import parse_verifier_key, verifier_key
from ledger.wire.envelope import Envelope
from ledger.wire.keyring import Signer, key_fingerprint
from ledger.wire.records import KEY_ROTATION_RECORD, RESTORE_RECORD, open_key_rotation, open_restore

__all__ = [
    "LedgerKey",
    "Restore",
    "check_ledger_key",
    "key_in_force",
    "ledger_keys",
    "pin_ledger_key",
    "pinned_ledger_key",
    "restores",
]


_PIN = "ledger_key"  # the meta key: the first ledger key, as a signed-note verifier key


@dataclass(frozen=True)
class LedgerKey:
    """A key that signs as the ledger (a verifier key), in force from entry ``since`` (1:
    the first key; else the rotation record that named it)."""

    since: int
    vkey: str

    @property
    def name(self) -> str:
        return self.vkey.split("+")[0]


def ledger_keys(con: duckdb.DuckDBPyConnection) -> list[LedgerKey]:
    """The ledger's keys in order: the first one pinned, then each rotation's successor.
    A rotation record not signed by the key in force before it breaks the sequence:
    :class:`CheckpointError` names it (check ``checkpoint``)."""
    first = _first_key(con)
    rows = con.execute(
        "SELECT seq, envelope FROM entries WHERE type = $type AND origin = $origin ORDER BY seq",
        {"type": KEY_ROTATION_RECORD, "origin": int(Origin.LEDGER)},
    ).fetchall()
    keys = [LedgerKey(1, first)] if first is not None else []
    for seq, envelope in rows:
        try:
            rotation = open_key_rotation(Envelope.from_bytes(bytes(envelope)))
        except LedgerError as exc:
            raise CheckpointError(f"entry {seq}: {exc.message}", check="checkpoint") from None
        in_force = keys[-1].vkey if keys else None
        if rotation.old_key != in_force:
            raise CheckpointError(
                f"entry {seq} hands the ledger key to {rotation.new_key.split('+')[0]!r} on "
                f"behalf of {rotation.old_key.split('+')[0]!r}, which was not the key in force "
                f"({in_force.split('+')[0] if in_force else 'none'!r})",
                check="checkpoint",
            )
        keys.append(LedgerKey(int(seq), rotation.new_key))
    return keys


@dataclass(frozen=True)
class Restore:
    """A restore the ledger key stated at entry ``seq``: of a backup of ``size`` entries."""

    seq: int
    size: int


def restores(con: duckdb.DuckDBPyConnection, keys: list[LedgerKey]) -> list[Restore]:
    """The ledger's restores, in order. Each must be signed by the ledger key in force, come
    right after the entries it restored, and name the hash of the last of them; one that
    does not is :class:`CheckpointError` (check ``checkpoint``)."""
    rows = con.execute(
        "SELECT r.seq, r.envelope, e.hash FROM entries r LEFT JOIN entries e ON e.seq = r.seq - 1 "
        "WHERE r.type = $type AND r.origin = $origin ORDER BY r.seq",
        {"type": RESTORE_RECORD, "origin": int(Origin.LEDGER)},
    ).fetchall()
    found = []
    for seq, envelope, head in rows:
        try:
            restore = open_restore(Envelope.from_bytes(bytes(envelope)))
        except LedgerError as exc:
            raise CheckpointError(f"entry {seq}: {exc.message}", check="checkpoint") from None
        in_force = key_in_force(keys, seq)
        if in_force is None or restore.key != in_force.vkey:
            raise CheckpointError(
                f"entry {seq} states a restore signed by {restore.key.split('+')[0]!r}, not by "
                "the ledger key in force",
                check="checkpoint",
            )
        if restore.size != seq - 1 or head is None or restore.head != bytes(head).hex():
            raise CheckpointError(
                f"entry {seq} states a restore at size {restore.size}, which is not the "
                f"{seq - 1} entries before it",
                check="checkpoint",
            )
        found.append(Restore(int(seq), restore.size))
    return found


def key_in_force(keys: list[LedgerKey], size: int) -> LedgerKey | None:
    """The key that signs a checkpoint of ``size`` entries: the last one named by then."""
    found = None
    for key in keys:
        if key.since <= max(size, 1):
            found = key
    return found


def _first_key(con: duckdb.DuckDBPyConnection) -> str | None:
    rows = con.execute("SELECT value FROM meta WHERE key = ?", [_PIN]).fetchall()
    if rows:
        return str(rows[0][0])
    rows = con.execute("SELECT vkey FROM checkpoints ORDER BY signed_at, size LIMIT 1").fetchall()
    return str(rows[0][0]) if rows else None


def pinned_ledger_key(con: duckdb.DuckDBPyConnection) -> str | None:
    """The ledger key in force now (a verifier key string), or None when none ever signed."""
    try:
        keys = ledger_keys(con)
    except CheckpointError as exc:
        raise ConfigurationError(f"the ledger's key is in doubt: {exc.message}") from None
    return keys[-1].vkey if keys else None


def pin_ledger_key(con: duckdb.DuckDBPyConnection, signer: Signer) -> str:
    """Pin ``signer`` as the ledger key if none is pinned yet (the writer's connection);
    refuse it if another key is in force. The key in force."""
    pinned = pinned_ledger_key(con)
    check_ledger_key(pinned, signer)
    if not con.execute("SELECT 1 FROM meta WHERE key = ?", [_PIN]).fetchall():
        pinned = pinned or verifier_key(signer.key_id, signer.public_raw)
        con.execute("INSERT INTO meta VALUES (?, ?)", [_PIN, pinned])
    return pinned or verifier_key(signer.key_id, signer.public_raw)


def check_ledger_key(pinned: str | None, signer: Signer) -> None:
    """Refuse ``signer`` unless it is the pinned ledger key (or none is pinned)."""
    if pinned is None or pinned == verifier_key(signer.key_id, signer.public_raw):
        return
    try:
        name, raw = parse_verifier_key(pinned)
    except CheckpointError:  # a damaged pin: refuse all the same, naming it
        raise ConfigurationError(f"the ledger's pinned key {pinned!r} is unreadable") from None
    raise ForeignLedgerKeyError(
        f"{signer.key_id!r} ({key_fingerprint(signer.public_raw)}) is not this ledger's key: "
        f"the ledger key is {name!r} ({key_fingerprint(raw)}), pinned when it first signed "
        "for the ledger or named by a rotation since; give that key (a producer's key never "
        "signs as the ledger; a new ledger key comes by `ledger keys rotate-ledger`)"
    )
