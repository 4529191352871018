"""The Merkle tree against the published RFC 6962 / Certificate Transparency vectors, against a
recursive implementation written straight from the RFC text, and under tampering."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import LedgerError, ProofError
from ledger.log.merkle import (
    EMPTY_ROOT,
    CompactRange,
    LeafHashes,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    root_at,
    verify_consistency,
    verify_inclusion,
)

# --- published vectors ---------------------------------------------------------------------
# Copied from transparency-dev/merkle, proof/verify_test.go (commit 02194e9afb6c), the Go
# successor of the certificate-transparency C++/Go merkle tests: `leaves`, `roots`,
# `inclusionProofs` (leaf numbers there are 1-based) and `consistencyProofs`.

CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    bytes.fromhex(h)
    for h in (  # MTH of the first 1..8 leaves
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
CT_EMPTY_ROOT = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
CT_SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _hexes(*values: str) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


CT_INCLUSION = [  # (0-based index, size, proof)
    (0, 1, []),
    (
        0,
        8,
        _hexes(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        5,
        8,
        _hexes(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (2, 3, _hexes("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        1,
        5,
        _hexes(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]

CT_CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (
        1,
        8,
        _hexes(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        _hexes(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        _hexes(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        _hexes(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
]

CT_LEAF_HASHES = [leaf_hash(leaf) for leaf in CT_LEAVES]


# --- an independent implementation, straight from the RFC 9162 text ---------------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(d: Sequence[bytes]) -> bytes:
    """MTH over leaf *data*, recursing on slices exactly as §2.1.1 writes it."""
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_shape(m: int, n: int) -> list[bool]:
    """Which side each PATH(m, D[n]) sibling is on (True: left), leaf upwards."""
    if n == 1:
        return []
    k = _k(n)
    return [*ref_shape(m, k), False] if m < k else [*ref_shape(m - k, n - k), True]


DATA = [f"entry {i}".encode() for i in range(70)]  # distinct leaves
HASHES = [leaf_hash(d) for d in DATA]
ROOTS = [root(HASHES[:n]) for n in range(len(HASHES) + 1)]


class CountingTree:
    """A store stand-in: perfect subtree roots by (level, index), counting the lookups."""

    def __init__(self, hashes: list[bytes]) -> None:
        self._tree = LeafHashes(hashes)
        self.lookups: list[tuple[int, int]] = []

    @property
    def size(self) -> int:
        return self._tree.size

    def perfect_root(self, level: int, index: int) -> bytes:
        self.lookups.append((level, index))
        return self._tree.perfect_root(level, index)


def _flip(value: bytes, position: int, bit: int = 0) -> bytes:
    out = bytearray(value)
    out[position] ^= 1 << bit
    return bytes(out)


# --- published vectors -------------------------------------------------------------------------


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT == CT_EMPTY_ROOT == root([]) == CompactRange().root()


def test_roots_match_the_ct_vectors_for_every_size() -> None:
    assert CT_LEAF_HASHES[0] == CT_ROOTS[0]  # a one-leaf tree's root is its leaf hash
    state = CompactRange()
    for size in range(1, 9):
        state.append(CT_LEAF_HASHES[size - 1])
        assert root(CT_LEAF_HASHES[:size]) == CT_ROOTS[size - 1]
        assert state.root() == CT_ROOTS[size - 1]
        assert ref_mth(CT_LEAVES[:size]) == CT_ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_inclusion_proofs_match_the_ct_vectors(index: int, size: int, proof: list[bytes]) -> None:
    assert inclusion_proof(LeafHashes(CT_LEAF_HASHES), index, size) == proof
    verify_inclusion(CT_LEAF_HASHES[index], index, size, proof, CT_ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_consistency_proofs_match_the_ct_vectors(old: int, new: int, proof: list[bytes]) -> None:
    assert consistency_proof(LeafHashes(CT_LEAF_HASHES), old, new) == proof
    verify_consistency(old, new, CT_ROOTS[old - 1], CT_ROOTS[new - 1], proof)


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION[1:])
def test_ct_inclusion_corruptions_are_refused(index: int, size: int, proof: list[bytes]) -> None:
    """The probes of corruptInclusionProof in transparency-dev/merkle proof/verify_test.go."""
    leaf, good = CT_LEAF_HASHES[index], CT_ROOTS[size - 1]
    probes: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (index - 1, size, good, leaf, proof),
        (index + 1, size, good, leaf, proof),
        (index ^ 2, size, good, leaf, proof),
        (index, size * 2, good, leaf, proof),
        (index, size // 2, good, leaf, proof),
        (index, size, good, b"WrongLeaf", proof),
        (index, size, CT_EMPTY_ROOT, leaf, proof),
        (index, size, CT_SOME_HASH, leaf, proof),
        (index, size, good, leaf, [*proof, b""]),
        (index, size, good, leaf, [*proof, good]),
        (index, size, good, leaf, [b"", *proof]),
        (index, size, good, leaf, [good, *proof]),
        (index, size, good, leaf, proof[:-1]),
        (index, size, good, leaf, [proof[0], CT_SOME_HASH, *proof[1:]]),
    ]
    probes += [
        (index, size, good, leaf, [_flip(p, 0, 3) if j == i else p for j, p in enumerate(proof)])
        for i in range(len(proof))
    ]
    for p_index, p_size, p_root, p_leaf, p_proof in probes:
        with pytest.raises(ProofError):
            verify_inclusion(p_leaf, p_index, p_size, p_proof, p_root)


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY[1:])
def test_ct_consistency_corruptions_are_refused(old: int, new: int, proof: list[bytes]) -> None:
    """The probes of corruptConsistencyProof in transparency-dev/merkle proof/verify_test.go."""
    r1, r2 = CT_ROOTS[old - 1], CT_ROOTS[new - 1]
    probes: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (old - 1, new, r1, r2, proof),
        (old + 1, new, r1, r2, proof),
        (old ^ 2, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new // 2, r1, r2, proof),
        (old, new, b"WrongRoot", r2, proof),
        (old, new, r1, b"WrongRoot", proof),
        (old, new, r2, r1, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*proof, b""]),
        (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [*proof, r2]),
        (old, new, r1, r2, [b"", *proof]),
        (old, new, r1, r2, [r1, *proof]),
        (old, new, r1, r2, [r2, *proof]),
        (old, new, r1, r2, [proof[0], *proof]),
        (old, new, r1, r2, proof[:-1]),
    ]
    probes += [
        (old, new, r1, r2, [_flip(p, 0, 4) if j == i else p for j, p in enumerate(proof)])
        for i in range(len(proof))
    ]
    for p_old, p_new, p_r1, p_r2, p_proof in probes:
        with pytest.raises(ProofError):
            verify_consistency(p_old, p_new, p_r1, p_r2, p_proof)


def test_ct_consistency_edge_cases() -> None:
    """TestVerifyConsistency's table, with real hashes: we also insist a size-0 tree has
    the empty root, where the Go code accepts any bytes."""
    a, b = CT_ROOTS[0], CT_ROOTS[1]
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 1, EMPTY_ROOT, a, [])
    verify_consistency(1, 1, b, b, [])
    refused: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (0, 0, a, b, []),
        (1, 1, a, b, []),
        (1, 0, a, b, []),  # time travel to the past
        (2, 1, a, b, []),
        (1, 2, a, b, []),  # empty proof
        (0, 0, EMPTY_ROOT, b, []),
        (1, 1, EMPTY_ROOT, b, []),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),  # roots match, proof not empty
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),
        (0, 1, a, b, []),  # ours: a size-0 tree has the empty root
    ]
    for old, new, r1, r2, proof in refused:
        with pytest.raises(ProofError):
            verify_consistency(old, new, r1, r2, proof)


def test_ct_inclusion_edge_cases() -> None:
    """TestVerifyInclusion and TestVerifyInclusionSingleEntry."""
    for index, size in ((0, 0), (0, 1), (1, 0), (2, 1)):
        for leaf, good in (
            (CT_SOME_HASH, b""),
            (b"", CT_EMPTY_ROOT),
            (CT_SOME_HASH, CT_EMPTY_ROOT),
        ):
            with pytest.raises(ProofError):
                verify_inclusion(leaf, index, size, [], good)
    single = leaf_hash(b"data")
    verify_inclusion(single, 0, 1, [], single)
    for leaf, good in ((single, b""), (b"", single), (b"", b"")):
        with pytest.raises(ProofError):
            verify_inclusion(leaf, 0, 1, [], good)


# --- every proof of every small tree -------------------------------------------------------------


def test_every_inclusion_proof_up_to_64_leaves_matches_the_rfc_and_verifies() -> None:
    for size in range(1, 65):
        assert ROOTS[size] == ref_mth(DATA[:size])
        for index in range(size):
            proof = inclusion_proof(LeafHashes(HASHES), index, size)
            assert proof == ref_path(index, DATA[:size])
            verify_inclusion(HASHES[index], index, size, proof, ROOTS[size])


def test_every_consistency_proof_up_to_64_leaves_matches_the_rfc_and_verifies() -> None:
    for new in range(1, 65):
        for old in range(0, new + 1):
            proof = consistency_proof(LeafHashes(HASHES), old, new)
            expected = [] if old in (0, new) else ref_subproof(old, DATA[:new], True)
            assert proof == expected
            verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


def test_proofs_need_only_logarithmically_many_stored_subtree_roots() -> None:
    tree = CountingTree(HASHES[:64])
    proof = inclusion_proof(tree, 37, 50)
    # One stored root per hash of the path, top down; no leaf is read to recompute a subtree.
    assert tree.lookups == [(5, 0), (1, 24), (3, 5), (2, 8), (1, 19), (0, 36)]
    verify_inclusion(HASHES[37], 37, 50, proof, ROOTS[50])
    tree.lookups.clear()
    verify_consistency(21, 64, ROOTS[21], ROOTS[64], consistency_proof(tree, 21, 64))
    assert len(tree.lookups) <= 2 * (64).bit_length()
    assert root_at(tree, 50) == ROOTS[50]


def test_generation_refuses_impossible_requests() -> None:
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof(LeafHashes(HASHES), 8, 8)
    with pytest.raises(ValueError, match="not within"):
        inclusion_proof(LeafHashes(HASHES), 0, len(HASHES) + 1)
    with pytest.raises(ValueError, match="old size"):
        consistency_proof(LeafHashes(HASHES), 9, 8)
    with pytest.raises(ValueError, match="not within"):
        consistency_proof(LeafHashes(HASHES), 1, len(HASHES) + 1)


# --- tampering ------------------------------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=64)


@settings(max_examples=300, deadline=None)
@given(size=sizes, data=st.data())
def test_any_flipped_proof_or_root_byte_fails_inclusion(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(LeafHashes(HASHES), index, size)
    position, bit = data.draw(st.integers(0, 31)), data.draw(st.integers(0, 7))
    with pytest.raises(ProofError) as caught:
        verify_inclusion(HASHES[index], index, size, proof, _flip(ROOTS[size], position, bit))
    assert caught.value.check == "root_mismatch"
    with pytest.raises(ProofError):
        verify_inclusion(_flip(HASHES[index], position, bit), index, size, proof, ROOTS[size])
    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        bad = [_flip(p, position, bit) if i == which else p for i, p in enumerate(proof)]
        with pytest.raises(ProofError) as caught:
            verify_inclusion(HASHES[index], index, size, bad, ROOTS[size])
        assert caught.value.check == "root_mismatch"


@settings(max_examples=300, deadline=None)
@given(size=sizes, data=st.data())
def test_a_wrong_index_fails_inclusion(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1))
    other = data.draw(st.integers(-2, size + 2).filter(lambda i: i != index))
    proof = inclusion_proof(LeafHashes(HASHES), index, size)
    with pytest.raises(ProofError):
        verify_inclusion(HASHES[index], other, size, proof, ROOTS[size])


@settings(max_examples=300, deadline=None)
@given(size=sizes, data=st.data())
def test_a_wrong_size_fails_inclusion_unless_the_path_has_the_same_shape(
    size: int, data: st.DataObject
) -> None:
    """The proof does not bind the size: RFC 9162 verification only walks the path. Where
    another size gives the same path shape the proof verifies, which is why a size must
    come from a signed checkpoint together with its root."""
    index = data.draw(st.integers(0, size - 1))
    other = data.draw(st.integers(0, 70).filter(lambda n: n != size))
    proof = inclusion_proof(LeafHashes(HASHES), index, size)
    if index < other and ref_shape(index, other) == ref_shape(index, size):
        verify_inclusion(HASHES[index], index, other, proof, ROOTS[size])
    else:
        with pytest.raises(ProofError):
            verify_inclusion(HASHES[index], index, other, proof, ROOTS[size])


def test_sizes_are_bound_by_the_checkpoint_not_the_proof() -> None:
    """Known RFC 9162 behaviour, kept visible: (0, 5) and (0, 8) share a path shape."""
    verify_inclusion(HASHES[0], 0, 5, inclusion_proof(LeafHashes(HASHES), 0, 8), ROOTS[8])
    verify_consistency(1, 4, ROOTS[1], ROOTS[3], consistency_proof(LeafHashes(HASHES), 1, 3))


@settings(max_examples=300, deadline=None)
@given(new=st.integers(2, 64), data=st.data())
def test_any_flipped_byte_or_wrong_old_size_fails_consistency(
    new: int, data: st.DataObject
) -> None:
    old = data.draw(st.integers(1, new - 1))
    proof = consistency_proof(LeafHashes(HASHES), old, new)
    position, bit = data.draw(st.integers(0, 31)), data.draw(st.integers(0, 7))
    which = data.draw(st.integers(0, len(proof) - 1))
    bad = [_flip(p, position, bit) if i == which else p for i, p in enumerate(proof)]
    with pytest.raises(ProofError) as caught:
        verify_consistency(old, new, ROOTS[old], ROOTS[new], bad)
    assert caught.value.check in ("old_root_mismatch", "new_root_mismatch")
    with pytest.raises(ProofError):
        verify_consistency(old, new, _flip(ROOTS[old], position, bit), ROOTS[new], proof)
    with pytest.raises(ProofError) as caught:
        verify_consistency(old, new, ROOTS[old], _flip(ROOTS[new], position, bit), proof)
    assert caught.value.check == "new_root_mismatch"
    other = data.draw(st.integers(-1, new + 1).filter(lambda m: m != old))
    with pytest.raises(ProofError):
        verify_consistency(other, new, ROOTS[old], ROOTS[new], proof)


@settings(max_examples=300, deadline=None)
@given(new=st.integers(2, 64), data=st.data())
def test_a_wrong_new_size_with_another_proof_length_fails_consistency(
    new: int, data: st.DataObject
) -> None:
    old = data.draw(st.integers(1, new - 1))
    other = data.draw(st.integers(old + 1, 70).filter(lambda n: n != new))
    proof = consistency_proof(LeafHashes(HASHES), old, new)
    if len(consistency_proof(LeafHashes(HASHES), old, other)) != len(proof):
        with pytest.raises(ProofError) as caught:
            verify_consistency(old, other, ROOTS[old], ROOTS[new], proof)
        assert caught.value.check == "proof_length"


def test_errors_name_what_failed() -> None:
    proof = inclusion_proof(LeafHashes(HASHES), 5, 8)
    with pytest.raises(ProofError, match="out of range") as caught:
        verify_inclusion(HASHES[5], 8, 8, proof, ROOTS[8])
    assert caught.value.reason == "bad_proof"
    assert isinstance(caught.value, LedgerError)
    assert caught.value.check == "index_range"
    with pytest.raises(ProofError, match="has 2 hashes, expected 3") as caught:
        verify_inclusion(HASHES[5], 5, 8, proof[:2], ROOTS[8])
    assert caught.value.check == "proof_length"
    with pytest.raises(ProofError, match="root") as caught:
        verify_inclusion(HASHES[4], 5, 8, proof, ROOTS[8])
    assert caught.value.check == "root_mismatch"
    with pytest.raises(ProofError, match="31 bytes") as caught:
        verify_inclusion(HASHES[5], 5, 8, [proof[0][:31], *proof[1:]], ROOTS[8])
    assert caught.value.check == "hash_length"
    with pytest.raises(ProofError, match="old root") as caught:
        verify_consistency(3, 8, ROOTS[4], ROOTS[8], consistency_proof(LeafHashes(HASHES), 3, 8))
    assert caught.value.check == "old_root_mismatch"
    with pytest.raises(ProofError, match="out of range") as caught:
        verify_consistency(9, 8, ROOTS[8], ROOTS[8], [])
    assert caught.value.check == "size_range"


# --- the incremental state ------------------------------------------------------------------------


def test_compact_range_root_equals_mth_at_every_size_and_survives_a_round_trip() -> None:
    state = CompactRange()
    for size in range(len(HASHES) + 1):
        if size:
            state.append(HASHES[size - 1])
        assert state.size == size
        assert len(state.hashes) == size.bit_count()
        assert state.root() == ROOTS[size]
        encoded = state.to_bytes()
        assert len(encoded) == 8 + 32 * size.bit_count()
        for resumed in (
            CompactRange.from_bytes(encoded),
            CompactRange.from_hashes(size, state.hashes),
        ):
            assert resumed == state
            assert resumed.root() == ROOTS[size]
        copy = state.copy()
        copy.append(HASHES[0])
        assert copy != state
        assert state.root() == ROOTS[size]  # the copy shares nothing


@settings(max_examples=100, deadline=None)
@given(leaves=st.lists(st.binary(max_size=40), max_size=300), cut=st.integers(0, 300))
def test_a_resumed_compact_range_continues_like_one_never_stored(
    leaves: list[bytes], cut: int
) -> None:
    hashes = [leaf_hash(leaf) for leaf in leaves]
    cut = min(cut, len(hashes))
    first = CompactRange()
    first.extend(hashes[:cut])
    resumed = CompactRange.from_bytes(first.to_bytes())
    resumed.extend(hashes[cut:])
    assert resumed.root() == root(hashes) == ref_mth(leaves)


def test_malformed_compact_ranges_are_refused() -> None:
    state = CompactRange()
    state.extend(HASHES[:5])
    encoded = state.to_bytes()
    for bad in (
        b"",
        encoded[:7],
        encoded[:-1],
        encoded + bytes(32),
        (7).to_bytes(8, "big") + encoded[8:],
    ):
        with pytest.raises(ValueError, match=r"compact range|subtree roots"):
            CompactRange.from_bytes(bad)
    with pytest.raises(ValueError, match="negative"):
        CompactRange.from_hashes(-1, [])
    with pytest.raises(ValueError, match="bytes"):
        CompactRange.from_hashes(1, [b"short"])
    with pytest.raises(ValueError, match="32 bytes"):
        state.append(b"not a hash")
