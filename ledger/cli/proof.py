"""`ledger proof inclusion|consistency|verify`: RFC 9162 proofs a third party can check."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledger.cli._common import (
    DEFAULT_DB,
    DbPath,
    Exit,
    JsonFlag,
    TrustedKeyPath,
    console,
    fail,
    new_app,
    out,
    print_json,
    read_input,
    reporting_errors,
    trusted_key,
)
from ledger.cli._terminal import styled
from ledger.errors import CheckpointError, ProofError
from ledger.log.proof import (
    ConsistencyProof,
    InclusionProof,
    ProofResult,
    b64,
    verify_proof,
)

if TYPE_CHECKING:
    from ledger.log.checkpoint import TrustedKey
    from ledger.store.reader import LedgerReader

app = new_app("Inclusion and consistency proofs of the ledger's Merkle tree (RFC 9162).")

Out = Annotated[Path | None, typer.Option("--out", help="Write the proof JSON to this file.")]
ProofJson = Annotated[
    bool, typer.Option("--json", help="Print the proof JSON itself (what --out writes).")
]


@contextmanager
def _failed_checks() -> Iterator[None]:
    """A ledger whose tree disagrees with its entries or checkpoints fails a check: exit 1."""
    try:
        yield
    except (ProofError, CheckpointError) as exc:
        fail(f"({exc.check}) {exc.message}", Exit.CHECK_FAILED)


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
    if as_json:
        sys.stdout.write(text)
    elif out_path is None:
        out.print(_summary(proof))
        console.print("the proof itself: --json (standard output) or --out FILE")
    unsigned = (
        proof.checkpoint is None
        if isinstance(proof, InclusionProof)
        else proof.checkpoints.second is None
    )
    if unsigned:
        console.print(
            "the root is unsigned: no checkpoint of that size is stored, so "
            "the proof shows membership in a root nobody vouched for",
            style="yellow",
        )


def _prove(
    db: Path,
    build: Callable[[LedgerReader], InclusionProof | ConsistencyProof],
    out_path: Path | None,
    as_json: bool,
) -> None:
    """Build a proof from the ledger file (closed before it is written out), then emit it."""
    from ledger.store.reader import LedgerReader

    with reporting_errors(), _failed_checks(), LedgerReader(db) as reader:
        proof = build(reader)
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
    as_json: ProofJson = False,
) -> None:
    """Prove that entry SEQ is in the tree of SIZE entries, with the signed checkpoint.

    Example: `ledger proof inclusion --seq 42 --out proof-42.json`"""
    from ledger.store.prove import build_inclusion

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
    as_json: ProofJson = False,
) -> None:
    """Prove that the tree of --to entries extends the tree of --from entries.

    Example: `ledger proof consistency --from 1000 --out consistency.json`"""
    from ledger.store.prove import build_consistency

    _prove(db, lambda reader: build_consistency(reader, first, second), out_path, as_json)


@app.command()
def verify(
    file: Annotated[
        Path, typer.Argument(metavar="FILE|-", help="A proof written by `ledger proof`.")
    ],
    trusted: TrustedKeyPath = None,
    json_out: JsonFlag = False,
) -> None:
    """Check a proof offline: checkpoint signature, the leaf from the entry's bytes, the path.

    Exit 0 when it holds under the trusted key, 1 when a check fails (named), 2 when the
    file cannot be read, 4 when it holds but no --trusted-key vouches for its root.

    Example: `ledger proof verify proof-42.json --trusted-key ledger.pub`"""
    with reporting_errors():
        key = trusted_key(trusted)
        data = read_input(file)
        try:
            document = json.loads(data)
        except ValueError as exc:
            fail(
                f"{file} is not a proof (the JSON `ledger proof inclusion|consistency` "
                f"writes): {exc}"
            )
    try:
        result = verify_proof(document, key)
    except (ProofError, CheckpointError) as exc:
        if json_out:
            print_json({"ok": False, "check": exc.check, "reason": exc.message})
        else:
            console.print(styled(("FAILED", "red"), f" ({exc.check}): {exc.message}"))
        raise typer.Exit(Exit.CHECK_FAILED) from None
    _print_result(result, key, json_out)
    if not result.authenticated:
        raise typer.Exit(Exit.NO_TRUST_ROOT)


def _print_result(result: ProofResult, key: TrustedKey | None, json_out: bool) -> None:
    if json_out:
        report: dict[str, Any] = {
            "ok": result.authenticated,
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
    if result.authenticated and key is not None:
        console.print(styled(("OK", "green"), f" {what}"))
        console.print(f"root(s) signed by trusted key {key.name!r}")
    else:
        console.print(
            styled(("NOT VERIFIED", "yellow"), f": {what}, but nothing vouches for the root(s): "
                   "pass --trusted-key (or set LEDGER_TRUSTED_KEY) to check the checkpoint "
                   "signature")
        )  # fmt: skip
