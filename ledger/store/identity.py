"""The ledger's identity: the key that signs as the ledger, pinned in the ledger itself.

The first ledger key that signs for a ledger (a checkpoint, when the consumer starts with
``--ledger-key``) is pinned in its ``meta`` table; a ledger written before pinning is
pinned to the key that signed its first stored checkpoint. From then on no other key may
sign as the ledger: given any other private key, the consumer and ``ledger evidence``
refuse before signing anything (a producer's key handed over by mistake once signed a
checkpoint into the ledger, its witness file and its topic).
"""

from __future__ import annotations

import duckdb

from ledger.errors import CheckpointError, ConfigurationError, ForeignLedgerKeyError
from ledger.log.checkpoint import parse_verifier_key, verifier_key
from ledger.wire.keyring import Signer, key_fingerprint

__all__ = ["check_ledger_key", "pin_ledger_key", "pinned_ledger_key"]

_PIN = "ledger_key"  # the meta key: the pinned key as a signed-note verifier key


def pinned_ledger_key(con: duckdb.DuckDBPyConnection) -> str | None:
    """The pinned ledger key (a verifier key string), or None when none ever signed."""
    rows = con.execute("SELECT value FROM meta WHERE key = ?", [_PIN]).fetchall()
    if rows:
        return str(rows[0][0])
    rows = con.execute("SELECT vkey FROM checkpoints ORDER BY signed_at, size LIMIT 1").fetchall()
    return str(rows[0][0]) if rows else None


def pin_ledger_key(con: duckdb.DuckDBPyConnection, signer: Signer) -> str:
    """Pin ``signer`` as the ledger key if none is pinned yet (the writer's connection);
    refuse it if another is. The pinned key."""
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
        "for the ledger; give that key (a producer's key never signs as the ledger)"
    )
