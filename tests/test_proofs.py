"""Inclusion and consistency proofs over a real ledger file: built from the stored tree, equal
to the proofs over the entry hashes recomputed independently, verified from their JSON alone,
and refused with the failed check named once anything in them is changed."""

from __future__ import annotations

import base64
import copy
import json
import shutil
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import duckdb
import pytest
from attack_helpers import row_hash
from consumer_helpers import entries, ledger_cli
from helpers import make_event
from ledger_builders import entry_hashes, signers, write_ledger

from ledger.errors import (
    CheckpointError,
    ConfigurationError,
    InconsistentCheckpointError,
    ProofError,
)
from ledger.log.chain import GENESIS
from ledger.log.checkpoint import TrustedKey
from ledger.log.merkle import LeafHashes, consistency_proof, inclusion_proof, leaf_hash, root
from ledger.log.proof import verify_proof
from ledger.store.prove import build_consistency, build_inclusion
from ledger.store.reader import LedgerReader
from ledger.transport.producer import seal
from ledger.wire.keyring import Signer

BATCHES = [1, 2, 3, 5, 8, 13, 2]  # checkpoints at 1, 3, 6, 11, 19, 32, 34; then 3 unsigned
SIZE = 37
CHECKPOINTS = [1, 3, 6, 11, 19, 32, 34]


@pytest.fixture(scope="module")
def ledger_key() -> Signer:
    return Signer.generate("ledger")


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory, ledger_key: Signer) -> Path:
    ci, _, ring = signers()
    values = [seal(make_event(actor=f"user-{i}"), ci) for i in range(SIZE)]
    path = tmp_path_factory.mktemp("proofs") / "ledger.duckdb"
    write_ledger(path, values[:34], ring, ledger_key, BATCHES)
    write_ledger(path, values[34:], ring, ledger_key, [], checkpoint=False)
    return path


@pytest.fixture(scope="module")
def leaves(ledger: Path) -> list[bytes]:
    """Leaf hashes recomputed from each row's stored inputs, not read from the tree."""
    hashes: list[bytes] = []
    for row in entries(ledger):
        hashes.append(row_hash(row, hashes[-1] if hashes else GENESIS))
    assert hashes == entry_hashes(ledger)
    return [leaf_hash(h) for h in hashes]


@pytest.fixture
def reader(ledger: Path) -> Iterator[LedgerReader]:
    with LedgerReader(ledger) as opened:
        yield opened


@pytest.fixture
def trusted(ledger_key: Signer) -> TrustedKey:
    return TrustedKey("ledger", ledger_key.public_raw)


def _b64(values: list[bytes]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


def _json(proof: Any) -> dict[str, Any]:
    """What a third party reads: the proof as JSON text, parsed again."""
    document: dict[str, Any] = json.loads(proof.model_dump_json())
    return document


def test_stored_checkpoints_are_where_the_batches_ended(reader: LedgerReader) -> None:
    assert [size for size, _, _, _ in reader.checkpoints()] == CHECKPOINTS
    assert reader.size() == SIZE


def test_inclusion_round_trips_at_every_size_and_index(
    reader: LedgerReader, leaves: list[bytes], trusted: TrustedKey
) -> None:
    reference = LeafHashes(leaves)
    for size in range(1, SIZE + 1):
        for seq in range(1, size + 1):
            document = _json(build_inclusion(reader, seq, size))
            assert document["leaf_index"] == seq - 1
            assert document["tree_size"] == size
            assert document["root_hash"] == _b64([root(leaves[:size])])[0]
            assert document["leaf_hash"] == _b64([leaves[seq - 1]])[0]
            assert document["inclusion_path"] == _b64(inclusion_proof(reference, seq - 1, size))
            signed = size in CHECKPOINTS
            assert (document["checkpoint"] is not None) == signed
            result = verify_proof(document, trusted if signed else None)
            assert (result.seq, result.sizes, result.authenticated) == (seq, (size,), signed)


def test_default_size_is_the_latest_checkpoint_and_its_note_is_carried(
    reader: LedgerReader, trusted: TrustedKey
) -> None:
    document = _json(build_inclusion(reader, 5))
    assert document["tree_size"] == CHECKPOINTS[-1]
    assert document["checkpoint"] == reader.checkpoints()[-1][2]
    assert document["entry"]["seq"] == 5
    assert verify_proof(document, trusted).authenticated


def test_an_entry_newer_than_the_latest_checkpoint_needs_an_explicit_size(
    reader: LedgerReader,
) -> None:
    with pytest.raises(ConfigurationError, match="newer than the latest checkpoint"):
        build_inclusion(reader, 35)
    with pytest.raises(ConfigurationError, match="not within the 37 entries"):
        build_inclusion(reader, 3, 38)


def test_an_unsigned_root_verifies_only_without_a_trusted_key(
    reader: LedgerReader, trusted: TrustedKey
) -> None:
    document = _json(build_inclusion(reader, 35, SIZE))
    assert document["checkpoint"] is None
    assert not verify_proof(document, None).authenticated
    with pytest.raises(ProofError) as caught:
        verify_proof(document, trusted)
    assert caught.value.check == "unsigned"


def test_consistency_between_every_pair_of_checkpoints(
    reader: LedgerReader, leaves: list[bytes], trusted: TrustedKey
) -> None:
    reference = LeafHashes(leaves)
    for first, second in combinations([0, *CHECKPOINTS], 2):
        document = _json(build_consistency(reader, first, second))
        assert document["consistency_path"] == _b64(consistency_proof(reference, first, second))
        assert document["first_root"] == _b64([root(leaves[:first])])[0]
        result = verify_proof(document, trusted)
        assert result.authenticated and result.sizes == (first, second)


def test_consistency_from_every_size(reader: LedgerReader, leaves: list[bytes]) -> None:
    reference = LeafHashes(leaves)
    for first in range(SIZE + 1):
        for second in sorted({first, min(first + 1, SIZE), min(2 * first + 3, SIZE), SIZE}):
            document = _json(build_consistency(reader, first, second))
            assert document["consistency_path"] == _b64(consistency_proof(reference, first, second))
            verify_proof(document, None)


def test_consistency_defaults_to_the_latest_checkpoint(reader: LedgerReader) -> None:
    document = _json(build_consistency(reader, 3))
    assert (document["first"], document["second"]) == (3, CHECKPOINTS[-1])
    assert document["checkpoints"]["first"] is not None


# --- tampering ---------------------------------------------------------------------------------


def _flip_b64(value: str) -> str:
    raw = bytearray(base64.b64decode(value))
    raw[0] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.fixture
def inclusion(reader: LedgerReader) -> dict[str, Any]:
    return _json(build_inclusion(reader, 7, 19))


def _refused(document: dict[str, Any], trusted: TrustedKey | None) -> ProofError | CheckpointError:
    with pytest.raises((ProofError, CheckpointError)) as caught:
        verify_proof(document, trusted)
    assert isinstance(caught.value, ProofError | CheckpointError)
    return caught.value


@pytest.mark.parametrize(
    ("edit", "check"),
    [
        (lambda d: d["entry"].update(envelope=_flip_b64(d["entry"]["envelope"])), "leaf_hash"),
        (lambda d: d["entry"].update(ingested_at_us=d["entry"]["ingested_at_us"] + 1), "leaf_hash"),
        (lambda d: d["entry"].update(prev_hash=_flip_b64(d["entry"]["prev_hash"])), "leaf_hash"),
        (lambda d: d.update(leaf_hash=_flip_b64(d["leaf_hash"])), "leaf_hash"),
        (lambda d: d.update(leaf_index=7), "leaf_index"),
        (
            lambda d: d["inclusion_path"].__setitem__(1, _flip_b64(d["inclusion_path"][1])),
            "root_mismatch",
        ),
        (lambda d: d["inclusion_path"].pop(), "proof_length"),
        (lambda d: d.update(root_hash=_flip_b64(d["root_hash"])), "checkpoint_mismatch"),
        (lambda d: d.update(tree_size=18), "checkpoint_mismatch"),
        (lambda d: d.update(origin="deploy-ledger/other"), "origin_mismatch"),
        (
            lambda d: d.update(checkpoint=d["checkpoint"].replace("\n19\n", "\n20\n")),
            "bad_signature",
        ),
        (lambda d: d.update(extra=1), "malformed"),
        (lambda d: d.update(root_hash=d["root_hash"].rstrip("=")), "malformed"),
        (lambda d: d.update(leaf_index="6"), "malformed"),
    ],
)
def test_tampered_inclusion_proof_is_refused(
    inclusion: dict[str, Any], trusted: TrustedKey, edit: Any, check: str
) -> None:
    document = copy.deepcopy(inclusion)
    edit(document)
    assert _refused(document, trusted).check == check


def test_inclusion_proof_under_another_key_is_refused(inclusion: dict[str, Any]) -> None:
    impostor = TrustedKey("ledger", Signer.generate("ledger").public_raw)
    assert _refused(inclusion, impostor).check == "unknown_key"


def test_tampered_consistency_proof_is_refused(reader: LedgerReader, trusted: TrustedKey) -> None:
    document = _json(build_consistency(reader, 11, 32))
    path = copy.deepcopy(document)
    path["consistency_path"][0] = _flip_b64(path["consistency_path"][0])
    assert _refused(path, trusted).check in ("old_root_mismatch", "new_root_mismatch")
    swapped = copy.deepcopy(document)
    swapped["checkpoints"]["first"] = document["checkpoints"]["second"]
    assert _refused(swapped, trusted).check == "checkpoint_mismatch"
    older = copy.deepcopy(document)
    older.update(first=6, first_root=_json(build_consistency(reader, 6, 32))["first_root"])
    assert _refused(older, trusted).check == "checkpoint_mismatch"
    assert _refused(older, None).check in ("proof_length", "old_root_mismatch")


# --- the command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pub(tmp_path_factory: pytest.TempPathFactory, ledger_key: Signer) -> Path:
    path = tmp_path_factory.mktemp("keys") / "ledger.pub"
    path.write_bytes(ledger_key.public_pem())
    return path


def test_cli_inclusion_round_trip_and_exit_codes(ledger: Path, pub: Path, tmp_path: Path) -> None:
    proof = tmp_path / "proof.json"
    built = ledger_cli("proof", "inclusion", "--db", str(ledger), "--seq", "4", "--out", str(proof))
    assert built.returncode == 0, built.stderr
    assert json.loads(proof.read_text())["tree_size"] == CHECKPOINTS[-1]
    summary = ledger_cli("proof", "inclusion", "--db", str(ledger), "--seq", "4")
    assert summary.returncode == 0, summary.stderr  # text by default, as every command prints
    assert summary.stdout.startswith(f"entry 4 (leaf 3) in the tree of size {CHECKPOINTS[-1]}")

    ok = ledger_cli("proof", "verify", str(proof), "--trusted-key", str(pub), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {
        "ok": True,
        "type": "inclusion",
        "tree_sizes": [34],
        "authenticated": True,
        "key": "ledger",
        "seq": 4,
        "roots": [json.loads(proof.read_text())["root_hash"]],
    }
    unauthenticated = ledger_cli("proof", "verify", str(proof))
    assert unauthenticated.returncode == 4  # it holds, but nothing vouches for its root
    assert "NOT VERIFIED" in unauthenticated.stderr and "--trusted-key" in unauthenticated.stderr
    assert json.loads(ledger_cli("proof", "verify", str(proof), "--json").stdout)["ok"] is False

    document = json.loads(proof.read_text())
    document["entry"]["ingested_at_us"] += 1
    proof.write_text(json.dumps(document))
    failed = ledger_cli("proof", "verify", str(proof), "--trusted-key", str(pub))
    assert failed.returncode == 1
    assert "FAILED (leaf_hash)" in failed.stderr

    assert ledger_cli("proof", "inclusion", "--db", str(ledger), "--seq", "99").returncode == 2
    missing = ledger_cli("proof", "verify", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    (tmp_path / "witness").write_text("deploy-ledger/x\n1\nAAAA\n")  # a note, not a proof
    wrong = ledger_cli("proof", "verify", str(tmp_path / "witness"))
    assert wrong.returncode == 2 and "is not a proof" in wrong.stderr


def test_cli_consistency_to_stdout(ledger: Path, pub: Path, tmp_path: Path) -> None:
    built = ledger_cli(
        "proof", "consistency", "--db", str(ledger), "--from", "6", "--to", "19", "--json"
    )
    assert built.returncode == 0, built.stderr
    document = json.loads(built.stdout)
    assert (document["type"], document["first"], document["second"]) == ("consistency", 6, 19)
    path = tmp_path / "consistency.json"
    path.write_text(built.stdout)
    result = ledger_cli("proof", "verify", str(path), "--json", LEDGER_TRUSTED_KEY=str(pub))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["authenticated"] is True
    other = tmp_path / "ledger.pub"
    other.write_bytes(Signer.generate("ledger").public_pem())
    refused = ledger_cli("proof", "verify", str(path), "--trusted-key", str(other))
    assert refused.returncode == 1
    assert "unknown_key" in refused.stderr


def test_a_ledger_whose_tree_or_checkpoint_disagrees_yields_no_proof(
    ledger: Path, tmp_path: Path
) -> None:
    """The builder checks what it hands out: an edited tree node or stored checkpoint root is
    a failed check (exit 1), not a proof that would fail in the auditor's hands."""
    edited = tmp_path / "edited.duckdb"
    shutil.copy(ledger, edited)
    con = duckdb.connect(str(edited))
    try:
        con.execute("UPDATE tree_nodes SET hash = ? WHERE level = 0 AND last = 7", [bytes(32)])
        con.execute("UPDATE checkpoints SET root = ? WHERE size = 11", [bytes(32)])
    finally:
        con.close()
    with LedgerReader(edited) as reader:
        with pytest.raises(ProofError) as tree:
            build_inclusion(reader, 7, 8)
        with pytest.raises(InconsistentCheckpointError) as checkpoint:
            build_inclusion(reader, 1, 11)
    assert tree.value.check == "root_mismatch"
    assert checkpoint.value.check == "root_mismatch"
    result = ledger_cli("proof", "inclusion", "--db", str(edited), "--seq", "1", "--size", "11")
    assert result.returncode == 1
    assert "root_mismatch" in result.stderr
