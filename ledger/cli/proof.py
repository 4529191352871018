"""`ledger proof inclusion|consistency|verify`: RFC 9162 proofs a third party can check."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.cli._common import (
    DEFAULT_DB,
    DbPath,
    JsonFlag,
    console,
    fail,
    out,
    print_json,
    reporting_errors,
)
from ledger.errors import CheckpointError, ProofError
from ledger.log.checkpoint import TrustedKey
from ledger.log.proof import ConsistencyProof, InclusionProof, ProofResult, b64, verify_proof
from ledger.store.prove import build_consistency, build_inclusion
from ledger.store.reader import LedgerReader
from ledger.wire.keyring import load_public_key

app = typer.Typer(
    help="Inclusion and consistency proofs of the ledger's Merkle tree (RFC 9162).",
    no_args_is_help=True,
)

Out = Annotated[
    Path | None, typer.Option("--out", help="Write the proof JSON to this file, not stdout.")
]
ProofJson = Annotated[
    bool,
    typer.Option(
        "--json/--text", help="Print the proof JSON (default), or a one-line summary of it."
    ),
]
TrustedKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--trusted-key",
        envvar="LEDGER_TRUSTED_KEY",
        show_envvar=True,
        help="The ledger's public key (PEM); its name is the file's stem.",
    ),
]


def trusted_key(path: Path | None) -> TrustedKey | None:
    """The ledger key a verifier trusts: signed-note key name = the .pub file's stem."""
    return TrustedKey(path.stem, load_public_key(path)) if path is not None else None


@contextmanager
def _failed_checks() -> Iterator[None]:
    """A ledger whose tree disagrees with its entries or checkpoints fails a check: exit 1."""
    try:
        yield
    except (ProofError, CheckpointError) as exc:
        fail(f"({exc.check}) {exc.message}", code=1)


def _summary(proof: InclusionProof | ConsistencyProof) -> str:
    if isinstance(proof, InclusionProof):
        signed = "signed checkpoint" if proof.checkpoint else "UNSIGNED root (no checkpoint)"
        return (
            f"entry {proof.entry.seq} (leaf {proof.leaf_index}) in the tree of size "
            f"{proof.tree_size}, root {b64(proof.root_hash)}: "
            f"{len(proof.inclusion_path)} hashes, {signed}"
        )
    notes = proof.checkpoints
    signed = ", ".join(
        f"{name} {'signed' if note else 'UNSIGNED'}"
        for name, note in (("first", notes.first), ("second", notes.second))
    )
    return (
        f"tree size {proof.second} extends size {proof.first}: "
        f"{len(proof.consistency_path)} hashes ({signed})"
    )


def _emit(proof: InclusionProof | ConsistencyProof, out_path: Path | None, as_json: bool) -> None:
    text = proof.model_dump_json(indent=2) + "\n"
    if out_path is not None:
        out_path.write_text(text, encoding="utf-8")
        console.print(f"wrote {out_path}: {_summary(proof)}")
    elif as_json:
        sys.stdout.write(text)
    else:
        out.print(_summary(proof))
    unsigned = (
        proof.checkpoint is None
        if isinstance(proof, InclusionProof)
        else proof.checkpoints.second is None
    )
    if unsigned:
        console.print(
            "[yellow]the root is unsigned: no checkpoint of that size is stored, so "
            "the proof shows membership in a root nobody vouched for[/yellow]"
        )


def _prove(
    db: Path,
    build: Callable[[LedgerReader], InclusionProof | ConsistencyProof],
    out_path: Path | None,
    as_json: bool,
) -> None:
    """Build a proof from the ledger file (closed before it is written out), then emit it."""
    with reporting_errors(), _failed_checks():
        reader = LedgerReader(db)
        try:
            proof = build(reader)
        finally:
            reader.close()
    _emit(proof, out_path, as_json)


@app.command()
def inclusion(
    seq: Annotated[int, typer.Option("--seq", min=1, help="The entry's sequence number.")],
    size: Annotated[
        int | None,
        typer.Option("--size", min=1, help="Tree size; default: the latest checkpoint's."),
    ] = None,
    db: DbPath = DEFAULT_DB,
    out_path: Out = None,
    as_json: ProofJson = True,
) -> None:
    """Prove that entry SEQ is in the tree of SIZE entries, with the signed checkpoint."""
    _prove(db, lambda reader: build_inclusion(reader, seq, size), out_path, as_json)


@app.command()
def consistency(
    first: Annotated[int, typer.Option("--from", min=0, help="The older tree size.")],
    second: Annotated[
        int | None,
        typer.Option("--to", min=0, help="The newer tree size; default: the latest checkpoint's."),
    ] = None,
    db: DbPath = DEFAULT_DB,
    out_path: Out = None,
    as_json: ProofJson = True,
) -> None:
    """Prove that the tree of --to entries extends the tree of --from entries."""
    _prove(db, lambda reader: build_consistency(reader, first, second), out_path, as_json)


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="A proof written by `ledger proof`.")],
    trusted: TrustedKeyOption = None,
    json_out: JsonFlag = False,
) -> None:
    """Check a proof offline: checkpoint signature, the leaf from the entry's bytes, the path.

    Exit 0 when it holds, 1 when a check fails (named), 2 when the file cannot be read.
    """
    with reporting_errors():
        key = trusted_key(trusted)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {file}: {exc}")
        try:
            document = json.loads(text)
        except ValueError as exc:
            fail(f"{file} is not a proof (the JSON `ledger proof inclusion|consistency` "
                 f"writes): {exc}")
    try:
        result = verify_proof(document, key)
    except (ProofError, CheckpointError) as exc:
        if json_out:
            print_json({"ok": False, "check": exc.check, "reason": exc.message})
        else:
            console.print(f"[red]FAILED[/red] ({exc.check}): {exc.message}")
        raise typer.Exit(1) from None
    _print_result(result, key, json_out)


def _print_result(result: ProofResult, key: TrustedKey | None, json_out: bool) -> None:
    if json_out:
        report: dict[str, Any] = {
            "ok": True,
            "type": result.kind,
            "tree_sizes": list(result.sizes),
            "roots": [b64(r) for r in result.roots],
            "authenticated": result.authenticated,
            "key": key.name if key else None,
        }
        if result.seq is not None:
            report["seq"] = result.seq
        print_json(report)
        return
    if result.kind == "inclusion":
        what = f"entry {result.seq} is in the tree of size {result.sizes[0]}"
    else:
        what = f"the tree of size {result.sizes[1]} extends the tree of size {result.sizes[0]}"
    console.print(f"[green]OK[/green] {what}")
    if result.authenticated and key is not None:
        console.print(f"root(s) signed by trusted key {key.name!r}")
    else:
        console.print(
            "[yellow]root(s) unauthenticated: pass --trusted-key (or set "
            "LEDGER_TRUSTED_KEY) to check the checkpoint signature[/yellow]"
        )
