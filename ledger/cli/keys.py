"""`ledger keys`: generate signing keys and manage the keyring that authorizes them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from ledger.cli._common import (
    DEFAULT_KEYRING,
    JsonFlag,
    KeyringPath,
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
    """Write a new Ed25519 key pair: OUT/ID.key (private, mode 0600) and OUT/ID.pub."""
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
    """Trust a public key for the event types and sources it may sign."""
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
    that was not compromised is retired instead (`ledger keys retire`)."""
    moment = parse_time(at, "--at")
    with reporting_errors():
        ring = Keyring.load(keyring)
        entry = ring.revoke(key_id, moment)
        ring.save(keyring)
    if json_out:
        print_json({"id": key_id, **entry.model_dump(mode="json")})
    else:
        console.print(f"revoked {key_id} from {entry.revoked_at:%Y-%m-%dT%H:%M:%SZ} in {keyring}")


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
    accepted (a spool draining); nothing else. A compromised key is revoked instead."""
    moment = parse_time(at, "--at")
    with reporting_errors():
        ring = Keyring.load(keyring)
        entry = ring.retire(key_id, moment)
        ring.save(keyring)
    if json_out:
        print_json({"id": key_id, **entry.model_dump(mode="json")})
    else:
        retired = entry.retired_at or moment
        console.print(
            f"retired {key_id} from {iso_utc(retired)} in {keyring}; what it signed before "
            f"then is accepted until {iso_utc(retired + RETIRED_KEY_GRACE)}"
        )


@app.command("list")
def list_keys(keyring: KeyringPath = DEFAULT_KEYRING, json_out: JsonFlag = False) -> None:
    """Show the keyring: each key, what it may sign, and its validity."""
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
