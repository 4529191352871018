"""`ledger keys`: generate signing keys and manage the keyring that authorizes them."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from ledger.cli._common import (
    DEFAULT_DB,
    DEFAULT_KEYRING,
    DbPath,
    JsonFlag,
    KeyringPath,
    LedgerKeyPath,
    console,
    fail,
    new_app,
    out,
    parse_time,
    print_json,
    reporting_errors,
)
from ledger.cli._terminal import styled, table
from ledger.wire.keyring import (
    KEY_ID_PATTERN,
    RETIRED_KEY_GRACE,
    Keyring,
    KeyringEntry,
    generate_key_files,
    iso_utc,
    key_fingerprint,
    load_public_key,
)

app = new_app("Generate signing keys and manage the keyring that authorizes them.")


def _patterns(value: str, option: str) -> list[str]:
    items = [p.strip() for p in value.split(",") if p.strip()]
    if not items:
        fail(f"{option} needs at least one pattern")
    return items


def _check_id(key_id: str) -> None:
    if not re.fullmatch(KEY_ID_PATTERN, key_id):
        fail(f"--id {key_id!r}: use 1-64 letters, digits, '.', '_' or '-'")


@app.command()
def generate(
    key_id: Annotated[str, typer.Option("--id", help="Key id verifiers will know it by.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for ID.key and ID.pub.")] = Path(
        "keys"
    ),
    json_out: JsonFlag = False,
) -> None:
    """Write a new Ed25519 key pair: OUT/ID.key (private, mode 0600) and OUT/ID.pub.

    Example: `ledger keys generate --id ci-github --out keys`"""
    _check_id(key_id)
    with reporting_errors():
        key_path, pub_path = generate_key_files(key_id, out)
    fingerprint = key_fingerprint(load_public_key(pub_path))
    if json_out:
        print_json(
            {
                "id": key_id,
                "private_key": str(key_path),
                "public_key": str(pub_path),
                "fingerprint": fingerprint,
            }
        )
    else:
        console.print(f"wrote {key_path} (private, 0600) and {pub_path}\nfingerprint {fingerprint}")


@app.command()
def trust(
    pub: Annotated[Path, typer.Option("--pub", help="Public key file (PEM), e.g. keys/ci.pub.")],
    keyring: KeyringPath = DEFAULT_KEYRING,
    key_id: Annotated[
        str | None, typer.Option("--id", help="Key id; defaults to the file name (ID.pub).")
    ] = None,
    types: Annotated[
        str, typer.Option(help="Event types it may sign, comma-separated patterns.")
    ] = "*",
    sources: Annotated[
        str, typer.Option(help="Sources it may claim, comma-separated patterns.")
    ] = "*",
    not_before: Annotated[str | None, typer.Option(help="Valid from (RFC 3339).")] = None,
    not_after: Annotated[str | None, typer.Option(help="Valid until (RFC 3339).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Trust a public key for the event types and sources it may sign.

    Example: `ledger keys trust --pub keys/ci-github.pub --types 'deployment.*' --sources
    'ci/github/*'`"""
    kid = key_id or pub.stem
    _check_id(kid)
    type_patterns = _patterns(types, "--types")
    source_patterns = _patterns(sources, "--sources")
    start = parse_time(not_before, "--not-before") if not_before else None
    end = parse_time(not_after, "--not-after") if not_after else None
    with reporting_errors():
        raw = load_public_key(pub)
        ring = Keyring.load_or_new(keyring)
        entry = ring.trust(
            kid, raw, types=type_patterns, sources=source_patterns, not_before=start, not_after=end
        )
        ring.save(keyring)
    if json_out:
        print_json({"id": kid, **entry.model_dump(mode="json"), "fingerprint": entry.fingerprint})
        return
    console.print(
        f"trusted {kid} ({entry.fingerprint}) in {keyring}: "
        f"types {', '.join(type_patterns)}; sources {', '.join(source_patterns)}"
    )
    if type_patterns == ["*"] or source_patterns == ["*"]:
        console.print(
            styled(
                ("note:", "yellow"),
                " this key may sign any "
                + ("type" if type_patterns == ["*"] else "source")
                + "; narrow it with --types/--sources (a CI key should not sign approvals)",
            )
        )


@app.command()
def revoke(
    key_id: Annotated[str, typer.Option("--id", help="Key id to revoke.")],
    keyring: KeyringPath = DEFAULT_KEYRING,
    at: Annotated[
        str,
        typer.Option(help="Revocation time (RFC 3339): when the compromise began, or now."),
    ] = "now",
    json_out: JsonFlag = False,
) -> None:
    """Revoke a compromised key: nothing the ledger witnesses from --at on is accepted.

    An --at in the past (when the compromise began) accepts nothing more and marks what
    the key signed since as signed by a compromised key, in answers and in verify. A key
    that was not compromised is retired instead (`ledger keys retire`).

    Example: `ledger keys revoke --id ci-github --at 2026-11-20T09:00:00Z`"""
    entry = _stamped(keyring, key_id, at, Keyring.revoke)
    if json_out:
        print_json({"id": key_id, **entry.model_dump(mode="json")})
    else:
        console.print(f"revoked {key_id} from {entry.revoked_at:%Y-%m-%dT%H:%M:%SZ} in {keyring}")


def _stamped(
    keyring: Path, key_id: str, at: str, change: Callable[[Keyring, str, datetime], KeyringEntry]
) -> KeyringEntry:
    """Revoke or retire a key in the keyring file, from --at; the key's entry after."""
    moment = parse_time(at, "--at")
    with reporting_errors():
        ring = Keyring.load(keyring)
        entry = change(ring, key_id, moment)
        ring.save(keyring)
    return entry


@app.command()
def retire(
    key_id: Annotated[str, typer.Option("--id", help="Key id to retire.")],
    keyring: KeyringPath = DEFAULT_KEYRING,
    at: Annotated[str, typer.Option(help="Retirement time (RFC 3339).")] = "now",
    json_out: JsonFlag = False,
) -> None:
    """Retire a key its owner no longer uses (rotation): no longer trusted from --at, with a
    grace for its events in flight.

    What it signed before --at and the ledger witnesses within 72 hours of --at is still
    accepted (a spool draining); nothing else. A compromised key is revoked instead.

    Example: `ledger keys retire --id ci-github`"""
    entry = _stamped(keyring, key_id, at, Keyring.retire)
    if json_out:
        print_json({"id": key_id, **entry.model_dump(mode="json")})
    else:
        retired = entry.retired_at or parse_time(at, "--at")
        console.print(
            f"retired {key_id} from {iso_utc(retired)} in {keyring}; what it signed before "
            f"then is accepted until {iso_utc(retired + RETIRED_KEY_GRACE)}"
        )


@app.command("rotate-ledger")
def rotate_ledger(
    new_key: Annotated[
        Path,
        typer.Option("--new-key", help="The successor's private key (PEM), e.g. ledger-2027.key."),
    ],
    ledger_key: LedgerKeyPath = None,
    db: DbPath = DEFAULT_DB,
    witness: Annotated[
        Path | None,
        typer.Option(
            help="Append the new checkpoint to this witness file (as `consume --witness`)."
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Hand the ledger key to a successor: a rotation record signed by the key in force
    (--ledger-key), then a checkpoint signed by the new one. Stop the consumer first.

    Verification follows the rotation: `ledger verify --trusted-key OLD.pub` accepts the
    checkpoints the new key signs after it. Restart the consumer with --ledger-key NEW.

    Example: `ledger keys rotate-ledger --ledger-key ledger.key --new-key ledger-2027.key`"""
    if ledger_key is None:
        fail("--ledger-key (LEDGER_LEDGER_KEY): the key in force signs the rotation")
    if not db.exists():
        fail(f"{db} does not exist")
    from ledger.log.checkpoint import verifier_key
    from ledger.store.reader import LedgerReader
    from ledger.store.writer import LedgerWriter
    from ledger.transport.witness import append_note
    from ledger.wire.keyring import Signer

    with reporting_errors():
        old, new = Signer.from_file(ledger_key), Signer.from_file(new_key)
        with LedgerReader(db) as reader:
            if reader.ledger_key() is None:
                fail("no ledger key has signed for this ledger yet: there is nothing to rotate "
                     "(start the consumer with --ledger-key NEW instead)")  # fmt: skip
        writer = LedgerWriter(db, checkpoint_signer=old)
        try:
            seq, note = writer.record_key_rotation(new)
        finally:
            writer.close()
        if witness is not None:
            append_note(witness, note)
    old_print = f"{old.key_id} ({key_fingerprint(old.public_raw)})"
    new_print = f"{new.key_id} ({key_fingerprint(new.public_raw)})"
    if json_out:
        old_key, new_key_v = (verifier_key(k.key_id, k.public_raw) for k in (old, new))
        print_json({"seq": seq, "old_key": old_key, "new_key": new_key_v, "checkpoint": note})
        return
    console.print(
        f"the ledger key of {db} is now {new_print}, named at entry {seq} by {old_print}, "
        f"which signs nothing more; restart the consumer with --ledger-key {new_key}"
    )


@app.command("list")
def list_keys(keyring: KeyringPath = DEFAULT_KEYRING, json_out: JsonFlag = False) -> None:
    """Show the keyring: each key, what it may sign, and its validity.

    Example: `ledger keys list --keyring keyring.json`"""
    with reporting_errors():
        ring = Keyring.load(keyring)
    if json_out:
        print_json(
            {
                kid: {
                    **e.model_dump(mode="json"),
                    "retired_at": e.retired_at and iso_utc(e.retired_at),
                    "fingerprint": e.fingerprint,
                }
                for kid, e in ring.keys.items()
            }
        )
        return
    grid = table("id", "types", "sources", "valid", "revoked", "retired", "fingerprint")
    for kid, e in sorted(ring.keys.items()):
        valid = f"{e.not_before or '-'} .. {e.not_after or '-'}"
        grid.add_row(
            kid,
            ", ".join(e.types),
            ", ".join(e.sources),
            valid,
            str(e.revoked_at or ""),
            str(e.retired_at or ""),
            e.fingerprint,
        )
    out.print(grid)
