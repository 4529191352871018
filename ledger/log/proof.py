"""Inclusion and consistency proofs over the ledger, as JSON any RFC 9162 client can check.

A proof is built from the stored tree (ledger.store.prove) and verified here from the
parsed JSON alone, with no I/O, so an auditor checks it without the ledger. Hashes are
base64, as in C2SP checkpoints and Certificate Transparency. An inclusion proof carries the
entry's exact stored bytes, so the verifier recomputes the leaf instead of trusting a leaf
hash; the root is authenticated only by the signed checkpoint it carries, under a key the
verifier already trusts.

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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NewType

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

from ledger.errors import ProofError
from ledger.log.chain import Origin, Witness, Witnessed, entry_hash, entry_hash_v2
from ledger.log.checkpoint import TrustedKey, open_checkpoint
from ledger.log.merkle import (
    HASH_SIZE,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "Base64",
    "ConsistencyProof",
    "EntryWitness",
    "InclusionProof",
    "ProofResult",
    "StoredEntry",
    "b64",
    "check_consistency",
    "check_inclusion",
    "parse_proof",
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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Micros = Annotated[
    int,
    Field(ge=(datetime.min.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1),
          le=(datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)),
]  # fmt: skip
"""A time as microseconds since the epoch, within the calendar (and so within 64 bits)."""
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class EntryWitness(_Strict):
    """What an entry of format 2 records besides its bytes, all of it under its hash: when
    the ledger witnessed it and by whose clock, how it came, the keyring it was judged
    under, where it was read (ledger.log.chain)."""

    at_us: Micros
    witness: Literal[0, 1]
    origin: Literal[0, 1, 2]
    keyring: Hash
    topic: str
    partition: Int32
    offset: Int64

    def chain(self) -> Witnessed:
        return Witnessed(self.at_us, Witness(self.witness), Origin(self.origin), self.keyring,
                         self.topic, self.partition, self.offset)  # fmt: skip


class StoredEntry(_Strict):
    """One ledger entry exactly as stored: what its chain hash, and so its leaf, is made of.
    An entry of format 1 has no ``witnessed`` (and its JSON no such key)."""

    seq: int = Field(ge=1, le=2**63 - 1)
    ingested_at_us: Micros
    prev_hash: Hash
    envelope: Blob
    witnessed: EntryWitness | None = Field(default=None, exclude_if=lambda value: value is None)

    def entry_hash(self) -> bytes:
        if self.witnessed is None:
            return entry_hash(self.seq, self.ingested_at_us, self.prev_hash, self.envelope)
        return entry_hash_v2(
            self.seq, self.ingested_at_us, self.prev_hash, self.envelope, self.witnessed.chain()
        )

    def witnessed_at(self) -> datetime | None:
        """When the ledger witnessed it (None: format 1, judged at its claimed time)."""
        if self.witnessed is None:
            return None
        return _EPOCH + timedelta(microseconds=self.witnessed.at_us)

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
class ProofResult:
    """What a verified proof established; ``authenticated`` when a trusted key signed the
    root(s), otherwise the proof holds only against roots nobody vouched for."""

    kind: Literal["inclusion", "consistency"]
    sizes: tuple[int, ...]
    roots: tuple[bytes, ...]
    authenticated: bool
    seq: int | None = None


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


def check_inclusion(proof: InclusionProof, trusted: TrustedKey | None) -> ProofResult:
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


def check_consistency(proof: ConsistencyProof, trusted: TrustedKey | None) -> ProofResult:
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
        return check_inclusion(proof, trusted)
    return check_consistency(proof, trusted)
