"""The Merkle tree over ledger entries, as RFC 9162 (and RFC 6962 before it) defines it (pure).

``leaf = SHA-256(0x00 || data)``, ``node = SHA-256(0x01 || left || right)``, and the root of
``n > 1`` leaves splits them at the largest power of two ``k < n``:
``MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n]))``. The empty tree's root is SHA-256 of the
empty string. The prefixes keep a leaf from passing for a node (second preimages), and
following the RFC exactly means any RFC 9162 / Certificate Transparency client can check
our roots and proofs without trusting this code.

:class:`CompactRange` is what the consumer keeps as entries are appended: the roots of the
perfect subtrees that make up the tree so far, at most one per bit of the size, so appending
is amortised O(1), the root costs O(log n) and the state is a few hundred bytes to store.

Proofs need only the roots of perfect (power-of-two, aligned) subtrees, asked of a
:class:`Tree`: the store answers from the nodes it keeps (O(log n) lookups per proof), and
:class:`LeafHashes` computes them from a list of leaf hashes (for tests and small trees).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

from ledger.errors import ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "LeafHashes",
    "Tree",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "root_at",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF = b"\x00"
_NODE = b"\x01"
_SIZE_BYTES = 8


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


class CompactRange:
    """The perfect-subtree roots covering leaves ``[0, size)``, largest (leftmost) first.

    Serialised as ``u64be(size) || hash_1 || ... || hash_k`` with ``k = popcount(size)``.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> list[bytes]:
        """Add one leaf *hash* (see :func:`leaf_hash`), merging equal-sized subtrees.

        Returns the perfect subtrees this leaf completes, the leaf itself first: the one at
        position ``i`` is the root of level ``i``, index ``(size - 1) >> i``.
        """
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, not {len(leaf)}")
        hashes = self._hashes
        hashes.append(leaf)
        completed = [leaf]
        # Each trailing one bit of the old size is a subtree the new leaf now completes.
        size = self._size
        while size & 1:
            right = hashes.pop()
            hashes[-1] = node_hash(hashes[-1], right)
            completed.append(hashes[-1])
            size >>= 1
        self._size += 1
        return completed

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """MTH of the leaves so far: fold the subtree roots from the right."""
        if not self._hashes:
            return EMPTY_ROOT
        result = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            result = node_hash(left, result)
        return result

    def copy(self) -> CompactRange:
        return CompactRange.from_hashes(self._size, self._hashes)

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Resume from stored subtree roots; their count must be ``popcount(size)``."""
        if size < 0:
            raise ValueError(f"a tree size cannot be negative ({size})")
        if len(hashes) != size.bit_count():
            raise ValueError(
                f"a tree of size {size} has {size.bit_count()} subtree roots, not {len(hashes)}"
            )
        for hash_ in hashes:
            if len(hash_) != HASH_SIZE:
                raise ValueError(f"a subtree root is {HASH_SIZE} bytes, not {len(hash_)}")
        state = cls()
        state._size = size
        state._hashes = [bytes(hash_) for hash_ in hashes]
        return state

    @classmethod
    def from_tree(cls, tree: Tree, size: int) -> CompactRange:
        """Resume from a store that keeps perfect subtree roots (one lookup per set bit)."""
        hashes, position = [], 0
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                hashes.append(tree.perfect_root(level, position >> level))
                position += 1 << level
        return cls.from_hashes(size, hashes)

    def to_bytes(self) -> bytes:
        return self._size.to_bytes(_SIZE_BYTES, "big") + b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> CompactRange:
        if len(data) < _SIZE_BYTES or (len(data) - _SIZE_BYTES) % HASH_SIZE:
            raise ValueError(f"{len(data)} bytes is not a serialised compact range")
        size = int.from_bytes(data[:_SIZE_BYTES], "big")
        body = data[_SIZE_BYTES:]
        hashes = [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)]
        return cls.from_hashes(size, hashes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    def __hash__(self) -> int:
        return hash((self._size, tuple(self._hashes)))

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"


class Tree(Protocol):
    """Where proofs read the roots of perfect subtrees: level ``l``, index ``i`` is the root
    of leaves ``[i * 2**l, (i + 1) * 2**l)``."""

    @property
    def size(self) -> int: ...

    def perfect_root(self, level: int, index: int) -> bytes: ...


class LeafHashes:
    """A :class:`Tree` over an in-memory list of leaf hashes (computes each subtree)."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self._leaves = leaf_hashes

    @property
    def size(self) -> int:
        return len(self._leaves)

    def perfect_root(self, level: int, index: int) -> bytes:
        state = CompactRange()
        state.extend(self._leaves[index << level : (index + 1) << level])
        return state.root()


def _range_root(tree: Tree, start: int, end: int) -> bytes:
    """MTH of leaves ``[start, end)``, where ``start`` is a multiple of the largest power of
    two not above ``end - start`` (true of every range a proof asks for): the range splits
    into aligned perfect subtrees, largest first, folded from the right."""
    parts: list[bytes] = []
    position = start
    for level in reversed(range((end - start).bit_length())):
        if (end - start) >> level & 1:
            parts.append(tree.perfect_root(level, position >> level))
            position += 1 << level
    if not parts:
        return EMPTY_ROOT
    result = parts[-1]
    for left in reversed(parts[:-1]):
        result = node_hash(left, result)
    return result


def root_at(tree: Tree, size: int) -> bytes:
    """MTH(D[size]): the root the tree had when it held ``size`` leaves."""
    if not 0 <= size <= tree.size:
        raise ValueError(f"tree size {size} is not within the {tree.size} leaves stored")
    return _range_root(tree, 0, size)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of all the given leaf hashes."""
    return root_at(LeafHashes(leaf_hashes), len(leaf_hashes))


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n > 1``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_sizes(tree: Tree, size: int) -> None:
    if not 0 <= size <= tree.size:
        raise ValueError(f"tree size {size} is not within the {tree.size} leaves stored")


def inclusion_proof(tree: Tree, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1: sibling subtree roots, leaf upwards."""
    _check_sizes(tree, size)
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    top_down: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            top_down.append(_range_root(tree, start + k, end))
            end = start + k
        else:
            top_down.append(_range_root(tree, start, start + k))
            start += k
    top_down.reverse()
    return top_down


def consistency_proof(tree: Tree, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1 (SUBPROOF with b = true).

    Empty when ``old_size`` is 0 or equals ``new_size``: nothing needs proving.
    """
    _check_sizes(tree, new_size)
    if not 0 <= old_size <= new_size:
        raise ValueError(f"old size {old_size} is not between 0 and new size {new_size}")
    if old_size in (0, new_size):
        return []
    top_down: list[bytes] = []
    m, start, end, complete = old_size, 0, new_size, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            top_down.append(_range_root(tree, start + k, end))
            end = start + k
        else:
            top_down.append(_range_root(tree, start, start + k))
            m -= k
            start += k
            complete = False
    if not complete:
        # The old tree is not a subtree already known to the verifier: give its root.
        top_down.append(_range_root(tree, start, end))
    top_down.reverse()
    return top_down


# --- verification --------------------------------------------------------------------------


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}", check="hash_length")


def _check_proof_hashes(kind: str, proof: Sequence[bytes]) -> None:
    for i, value in enumerate(proof):
        _check_hash(f"{kind} proof hash {i}", value)


def _inclusion_length(index: int, size: int) -> int:
    """Hashes in PATH(index, D[size]): levels where the paths to ``index`` and the last leaf
    part (each has a sibling), plus the one bits above them (left siblings on the border)."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2: raise :class:`ProofError` unless ``proof`` shows that leaf ``index``
    of the tree of ``size`` leaves with ``root`` is ``leaf_hash``."""
    if not 0 <= index < size:
        raise ProofError(
            f"inclusion proof: leaf index {index} is out of range for tree size {size}",
            check="index_range",
        )
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root", root)
    _check_proof_hashes("inclusion", proof)
    expected = _inclusion_length(index, size)
    if len(proof) != expected:
        raise ProofError(
            f"inclusion proof has {len(proof)} hashes, expected {expected} "
            f"for leaf {index} of a tree of size {size}",
            check="proof_length",
        )
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path", check="proof_length")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path", check="proof_length")
    if r != root:
        raise ProofError(
            f"inclusion proof for leaf {index} yields root {r.hex()}, "
            f"not the expected {root.hex()} for tree size {size}",
            check="root_mismatch",
        )


def _consistency_length(old_size: int, new_size: int) -> int:
    """Hashes in PROOF(old_size, D[new_size]) for ``0 < old_size < new_size``."""
    shift = (old_size & -old_size).bit_length() - 1  # trailing zero bits of old_size
    seed = 0 if old_size == 1 << shift else 1  # the old root itself, unless a perfect subtree
    return seed + _inclusion_length(old_size - 1, new_size) - shift


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 §2.1.4.2: raise :class:`ProofError` unless ``proof`` shows the tree of
    ``new_size`` with ``new_root`` extends the tree of ``old_size`` with ``old_root``.

    Outside the RFC's ``0 < old_size < new_size``: equal sizes need equal roots and an
    empty proof; an empty old tree needs the empty root and an empty proof.
    """
    if not 0 <= old_size <= new_size:
        raise ProofError(
            f"consistency proof: old size {old_size} is out of range for new size {new_size}",
            check="size_range",
        )
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    _check_proof_hashes("consistency", proof)
    if old_size in (0, new_size):
        if proof:
            raise ProofError(
                f"consistency proof from size {old_size} to {new_size} must be empty, "
                f"it has {len(proof)} hashes",
                check="proof_length",
            )
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise ProofError(
                f"old root {old_root.hex()} is not the empty tree's root",
                check="root_mismatch",
            )
        if old_size == new_size and old_root != new_root:
            raise ProofError(
                f"roots differ for the same tree size {old_size}: "
                f"{old_root.hex()} != {new_root.hex()}",
                check="root_mismatch",
            )
        return
    expected = _consistency_length(old_size, new_size)
    if len(proof) != expected:
        raise ProofError(
            f"consistency proof has {len(proof)} hashes, expected {expected} "
            f"from size {old_size} to {new_size}",
            check="proof_length",
        )
    # 1-2. An empty path fails; a power-of-two old size starts from the old root itself.
    path = list(proof)
    if not path:
        raise ProofError("consistency proof is empty", check="proof_length")
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # 3-4.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5-6.
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the path", check="proof_length")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    if sn != 0:
        raise ProofError("consistency proof is shorter than the path", check="proof_length")
    if fr != old_root:
        raise ProofError(
            f"consistency proof yields old root {fr.hex()} for size {old_size}, "
            f"not the expected {old_root.hex()}",
            check="old_root_mismatch",
        )
    if sr != new_root:
        raise ProofError(
            f"consistency proof yields new root {sr.hex()} for size {new_size}, "
            f"not the expected {new_root.hex()}",
            check="new_root_mismatch",
        )
