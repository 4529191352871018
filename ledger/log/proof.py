"""Inclusion and consistency proofs over the ledger, as JSON any RFC 9162 client can check.

A proof is built from a :class:`~ledger.store.reader.LedgerReader` (the stored tree answers with
O(log n) lookups) and verified from the parsed JSON alone, with no I/O, so an auditor
checks it without the ledger. Hashes are base64, as in C2SP checkpoints and Certificate
Transparency. An inclusion proof carries the entry's exact stored bytes, so the verifier
recomputes the leaf instead of trusting a leaf hash; the root is authenticated only by the
signed checkpoint it carries, under a key the verifier already trusts.

Verification of an inclusion proof (docs/formats.md §8):

1. the checkpoint note opens under the trusted key and signs this origin, size and root
   (skipped without a trusted key: the root is then unauthenticated);
2. the leaf index is the entry's ``seq - 1`` and its hash, recomputed from the entry's
   bytes (chain hash, then RFC 9162 leaf hash), equals ``leaf_hash``;
3. the inclusion path leads from that leaf to the root (RFC 9162 §2.1.3.2).

A consistency proof: 1. both checkpoints, as above; 2. the path shows the second tree
extends the first (RFC 9162 §2.1.4.2).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, NewType

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
)

from ledger.errors import ConfigurationError, InconsistentCheckpointError, ProofError
from ledger.log.chain import entry_hash, micros
from ledger.log.checkpoint import open_checkpoint
from ledger.log.merkle import (
    HASH_SIZE,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_at,
    verify_consistency,
    verify_inclusion,
)

if TYPE_CHECKING:
    from ledger.store.reader import LedgerReader

__all__ = [
    "Base64",
    "ConsistencyProof",
    "InclusionProof",
    "ProofResult",
    "StoredEntry",
    "TrustedKey",
    "b64",
    "build_consistency",
    "build_inclusion",
    "ledger_origin",
    "parse_proof",
    "snapshot",
    "stored_entries",
    "verify_proof",
]

Base64 = NewType("Base64", str)
"""Standard base64 with padding, canonical (the only encoding that decodes to the bytes)."""


def b64(data: bytes) -> Base64:
    return Base64(base64.b64encode(data).decode("ascii"))


def _from_b64(value: object) -> bytes:
    """Strict and canonical: a bundle edited by re-encoding the same bytes differently (or by
    adding characters a lenient decoder skips) is refused, not silently normalised."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    if b64(raw) != value:
        raise ValueError("not canonical base64")
    return raw


def _hash_size(value: bytes) -> bytes:
    if len(value) != HASH_SIZE:
        raise ValueError(f"a hash is {HASH_SIZE} bytes, not {len(value)}")
    return value


Blob = Annotated[bytes, BeforeValidator(_from_b64), PlainSerializer(b64, return_type=str)]
"""Bytes carried as base64 in JSON."""
Hash = Annotated[
    bytes,
    BeforeValidator(_from_b64),
    AfterValidator(_hash_size),
    PlainSerializer(b64, return_type=str),
]
"""A 32-byte SHA-256 hash carried as base64 in JSON."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class StoredEntry(_Strict):
    """One ledger entry exactly as stored: what its chain hash, and so its leaf, is made of."""

    seq: int = Field(ge=1)
    ingested_at_us: int
    prev_hash: Hash
    envelope: Blob

    def entry_hash(self) -> bytes:
        return entry_hash(self.seq, self.ingested_at_us, self.prev_hash, self.envelope)

    def leaf_hash(self) -> bytes:
        """Leaf ``seq - 1`` of the RFC 9162 tree: the leaf hash of the entry's chain hash."""
        return leaf_hash(self.entry_hash())


class InclusionProof(_Strict):
    type: Literal["inclusion"]
    origin: str
    leaf_index: int = Field(ge=0)
    tree_size: int = Field(ge=1)
    leaf_hash: Hash
    root_hash: Hash
    inclusion_path: list[Hash]
    entry: StoredEntry
    checkpoint: str | None


class ConsistencyCheckpoints(_Strict):
    first: str | None
    second: str | None


class ConsistencyProof(_Strict):
    type: Literal["consistency"]
    origin: str
    first: int = Field(ge=0)
    second: int = Field(ge=0)
    first_root: Hash
    second_root: Hash
    consistency_path: list[Hash]
    checkpoints: ConsistencyCheckpoints


_PROOF: TypeAdapter[InclusionProof | ConsistencyProof] = TypeAdapter(
    Annotated[InclusionProof | ConsistencyProof, Field(discriminator="type")]
)


@dataclass(frozen=True)
class TrustedKey:
    """The ledger's public key as the verifier knows it: signed-note key name and raw key."""

    name: str
    public_raw: bytes


@dataclass(frozen=True)
class ProofResult:
    """What a verified proof established; ``authenticated`` when a trusted key signed the
    root(s), otherwise the proof holds only against roots nobody vouched for."""

    kind: Literal["inclusion", "consistency"]
    sizes: tuple[int, ...]
    roots: tuple[bytes, ...]
    authenticated: bool
    seq: int | None = None


# --- building --------------------------------------------------------------------------------


@contextmanager
def snapshot(reader: LedgerReader) -> Iterator[None]:
    """One consistent view for the several reads a proof takes, even through a cursor of
    the running consumer's connection (DuckDB MVCC)."""
    reader.con.execute("BEGIN TRANSACTION")
    try:
        yield
    finally:
        reader.con.execute("ROLLBACK")


def ledger_origin(reader: LedgerReader) -> str:
    """The checkpoint origin that names this ledger."""
    origin = reader.meta().get("origin")
    if origin is None:
        raise ConfigurationError(
            "the ledger has no origin yet: open it once with this version's consumer"
        )
    return origin


def stored_entries(reader: LedgerReader, seqs: Iterable[int]) -> list[StoredEntry]:
    """The entries of these sequence numbers as stored, in seq order."""
    rows = reader.con.execute(
        "SELECT seq, ingested_at, prev_hash, envelope FROM entries "
        "WHERE seq IN (SELECT unnest($seqs)) ORDER BY seq",
        {"seqs": sorted(seqs)},
    ).fetchall()
    return [
        StoredEntry(
            seq=seq, ingested_at_us=micros(ingested), prev_hash=bytes(prev), envelope=bytes(env)
        )
        for seq, ingested, prev, env in rows
    ]


def _latest_checkpoint_size(reader: LedgerReader) -> int:
    sizes = [size for size, _, _, _ in reader.checkpoints()]
    if not sizes:
        raise ConfigurationError(
            "the ledger has no signed checkpoint (run the consumer with --checkpoint-key); "
            "pass --size for a proof against an unsigned root"
        )
    return max(sizes)


def _note_at(reader: LedgerReader, size: int, root: bytes) -> str | None:
    """The newest stored checkpoint of ``size``, once its root is the stored tree's."""
    notes = [(r, note) for s, r, note, _ in reader.checkpoints() if s == size]
    if not notes:
        return None
    signed_root, note = notes[-1]
    if signed_root != root:
        raise InconsistentCheckpointError(
            f"the checkpoint of size {size} signs root {b64(signed_root)}, but the stored tree "
            f"has {b64(root)} at that size; run `ledger verify`",
            check="root_mismatch",
            size=size,
            checkpoint_root=signed_root,
            ledger_root=root,
        )
    return note


def _check_size(reader: LedgerReader, size: int, what: str) -> None:
    stored = reader.size()
    if not 0 <= size <= stored:
        raise ConfigurationError(f"{what} {size} is not within the {stored} entries stored")


def build_inclusion(reader: LedgerReader, seq: int, size: int | None = None) -> InclusionProof:
    """Entry ``seq`` in the tree of ``size`` entries (default: the latest checkpoint's)."""
    with snapshot(reader):
        return _inclusion(reader, seq, size)


def _inclusion(reader: LedgerReader, seq: int, size: int | None) -> InclusionProof:
    if size is None:
        size = _latest_checkpoint_size(reader)
        if seq > size:
            raise ConfigurationError(
                f"entry {seq} is newer than the latest checkpoint (size {size}): wait for the "
                "next one, or pass --size for a proof against an unsigned root"
            )
    _check_size(reader, size, "tree size")
    if not 1 <= seq <= size:
        raise ConfigurationError(f"entry {seq} is not in a tree of size {size}")
    tree = reader.tree()
    root = root_at(tree, size)
    (entry,) = stored_entries(reader, [seq])
    proof = InclusionProof(
        type="inclusion",
        origin=ledger_origin(reader),
        leaf_index=seq - 1,
        tree_size=size,
        leaf_hash=entry.leaf_hash(),
        root_hash=root,
        inclusion_path=inclusion_proof(tree, seq - 1, size),
        entry=entry,
        checkpoint=_note_at(reader, size, root),
    )
    _verify_inclusion(proof, None)  # the stored tree must agree with the stored entry
    return proof


def build_consistency(
    reader: LedgerReader, first: int, second: int | None = None
) -> ConsistencyProof:
    """The tree of ``second`` entries (default: the latest checkpoint's) extends ``first``."""
    with snapshot(reader):
        return _consistency(reader, first, second)


def _consistency(reader: LedgerReader, first: int, second: int | None) -> ConsistencyProof:
    if second is None:
        second = _latest_checkpoint_size(reader)
    _check_size(reader, second, "tree size")
    if not 0 <= first <= second:
        raise ConfigurationError(f"--from {first} must be between 0 and --to {second}")
    tree = reader.tree()
    first_root, second_root = root_at(tree, first), root_at(tree, second)
    return ConsistencyProof(
        type="consistency",
        origin=ledger_origin(reader),
        first=first,
        second=second,
        first_root=first_root,
        second_root=second_root,
        consistency_path=consistency_proof(tree, first, second),
        checkpoints=ConsistencyCheckpoints(
            first=_note_at(reader, first, first_root),
            second=_note_at(reader, second, second_root),
        ),
    )


# --- verification (pure) -------------------------------------------------------------------


def parse_proof(document: Mapping[str, Any]) -> InclusionProof | ConsistencyProof:
    """The proof JSON, parsed strictly (unknown fields, non-canonical base64 are refused)."""
    try:
        return _PROOF.validate_python(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "proof"
        raise ProofError(
            f"not a ledger proof: {where}: {first['msg']}", check="malformed"
        ) from None


def _authenticate(
    origin: str, note: str | None, size: int, root: bytes, trusted: TrustedKey | None
) -> bool:
    """Step 1: the root is the one the trusted key signed for this log and size."""
    if trusted is None:
        return False
    if note is None:
        raise ProofError(
            f"no signed checkpoint at tree size {size}: the root is unsigned", check="unsigned"
        )
    checkpoint = open_checkpoint(note, trusted.name, trusted.public_raw, origin)
    if checkpoint.size != size or checkpoint.root != root:
        raise ProofError(
            f"the checkpoint signs size {checkpoint.size} with root {b64(checkpoint.root)}, "
            f"not size {size} with root {b64(root)}",
            check="checkpoint_mismatch",
        )
    return True


def _verify_inclusion(proof: InclusionProof, trusted: TrustedKey | None) -> ProofResult:
    # 1.
    authenticated = _authenticate(
        proof.origin, proof.checkpoint, proof.tree_size, proof.root_hash, trusted
    )
    # 2.
    seq = proof.entry.seq
    if proof.leaf_index != seq - 1:
        raise ProofError(
            f"leaf index {proof.leaf_index} is not entry {seq}'s (leaf {seq - 1})",
            check="leaf_index",
        )
    leaf = proof.entry.leaf_hash()
    if leaf != proof.leaf_hash:
        raise ProofError(
            f"entry {seq}'s bytes hash to leaf {b64(leaf)}, not {b64(proof.leaf_hash)}",
            check="leaf_hash",
        )
    # 3.
    verify_inclusion(leaf, proof.leaf_index, proof.tree_size, proof.inclusion_path, proof.root_hash)
    return ProofResult("inclusion", (proof.tree_size,), (proof.root_hash,), authenticated, seq)


def _verify_consistency(proof: ConsistencyProof, trusted: TrustedKey | None) -> ProofResult:
    # 1. (The empty tree needs no signature: step 2 checks its root is SHA-256 of "".)
    empty = proof.first == 0 and proof.checkpoints.first is None
    first = empty or _authenticate(
        proof.origin, proof.checkpoints.first, proof.first, proof.first_root, trusted
    )
    second = _authenticate(
        proof.origin, proof.checkpoints.second, proof.second, proof.second_root, trusted
    )
    # 2.
    verify_consistency(
        proof.first, proof.second, proof.first_root, proof.second_root, proof.consistency_path
    )
    return ProofResult(
        "consistency",
        (proof.first, proof.second),
        (proof.first_root, proof.second_root),
        first and second,
    )


def verify_proof(document: Mapping[str, Any], trusted: TrustedKey | None) -> ProofResult:
    """Check a proof document; raises :class:`ProofError` or :class:`CheckpointError`
    (``check`` names the failed step). Without ``trusted`` the roots are unauthenticated."""
    proof = parse_proof(document)
    if isinstance(proof, InclusionProof):
        return _verify_inclusion(proof, trusted)
    return _verify_consistency(proof, trusted)
