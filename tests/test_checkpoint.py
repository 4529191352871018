"""Signed checkpoints (C2SP tlog-checkpoint in signed-note form): the reference vector of the
Go implementation, and every way a note can fail to open."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.errors import CheckpointError
from ledger.log.checkpoint import (
    Checkpoint,
    open_checkpoint,
    open_note,
    parse_verifier_key,
    sign_checkpoint,
    sign_note,
    split_notes,
    verifier_key,
)
from ledger.wire.keyring import Signer

# golang.org/x/mod/sumdb/note's own example: key, text and the note it signs.
GO_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT.decode()
    + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqf"
    "qdngotpRZb6KE6RyyBwJnAM=\n"
)
ROOT = hashlib.sha256(b"root").digest()


@pytest.fixture
def ledger_key() -> Signer:
    return Signer.generate("ledger-main")


def test_signs_the_go_reference_note_byte_for_byte() -> None:
    signer = Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(GO_SEED))
    assert verifier_key("PeterNeumann", signer.public_raw) == GO_VKEY
    assert sign_note(GO_TEXT, signer) == GO_NOTE
    name, public = parse_verifier_key(GO_VKEY)
    assert open_note(GO_NOTE, name, public) == GO_TEXT


def test_checkpoint_round_trip(ledger_key: Signer) -> None:
    checkpoint = Checkpoint("deploy-ledger/abc", 1234, ROOT)
    note = sign_checkpoint(checkpoint, ledger_key)
    assert note.startswith(f"deploy-ledger/abc\n1234\n{base64.b64encode(ROOT).decode()}\n\n")
    opened = open_checkpoint(note, "ledger-main", ledger_key.public_raw, "deploy-ledger/abc")
    assert opened == checkpoint


def test_forged_checkpoint_fails_its_signature(ledger_key: Signer) -> None:
    note = sign_checkpoint(Checkpoint("deploy-ledger/abc", 1234, ROOT), ledger_key)
    forged = note.replace("\n1234\n", "\n1233\n")  # an attacker's smaller tree size
    with pytest.raises(CheckpointError) as caught:
        open_checkpoint(forged, "ledger-main", ledger_key.public_raw)
    assert caught.value.check == "bad_signature"


def test_checkpoint_signed_by_another_key_is_refused(ledger_key: Signer) -> None:
    impostor = Signer("ledger-main", Ed25519PrivateKey.generate())  # same name, other key
    note = sign_checkpoint(Checkpoint("deploy-ledger/abc", 5, ROOT), impostor)
    with pytest.raises(CheckpointError) as caught:
        open_checkpoint(note, "ledger-main", ledger_key.public_raw)
    assert caught.value.check == "unknown_key"  # the key hash names another key


def test_checkpoint_of_another_log_is_refused(ledger_key: Signer) -> None:
    note = sign_checkpoint(Checkpoint("deploy-ledger/other", 5, ROOT), ledger_key)
    with pytest.raises(CheckpointError) as caught:
        open_checkpoint(note, "ledger-main", ledger_key.public_raw, "deploy-ledger/abc")
    assert caught.value.check == "origin_mismatch"


@pytest.mark.parametrize(
    "body",
    [
        b"deploy-ledger/abc\n12x\nAAAA\n",
        b"deploy-ledger/abc\n5\n",
        b"deploy-ledger/abc\n05\n" + base64.b64encode(ROOT) + b"\n",
        b"deploy-ledger/abc\n5\nAAAA\n",
    ],
    ids=["size-not-decimal", "no-root", "leading-zero", "short-root"],
)
def test_malformed_checkpoint_bodies_are_refused_after_the_signature(
    ledger_key: Signer, body: bytes
) -> None:
    note = sign_note(body, ledger_key)
    with pytest.raises(CheckpointError) as caught:
        open_checkpoint(note, "ledger-main", ledger_key.public_raw)
    assert caught.value.check == "malformed"


@pytest.mark.parametrize(
    "note",
    ["no signature block\n", "body\n\nnot a signature line\n", "body\n\n\u2014 k !!!\n"],
)
def test_malformed_notes_are_refused(ledger_key: Signer, note: str) -> None:
    with pytest.raises(CheckpointError) as caught:
        open_note(note, "ledger-main", ledger_key.public_raw)
    assert caught.value.check == "malformed"


def test_witness_file_splits_into_its_notes(ledger_key: Signer) -> None:
    notes = [
        sign_checkpoint(Checkpoint("deploy-ledger/abc", n, ROOT), ledger_key) for n in (1, 2, 3)
    ]
    assert split_notes("".join(notes)) == notes
    with pytest.raises(CheckpointError):
        split_notes("".join(notes) + "deploy-ledger/abc\n4\n")


def test_verifier_key_with_a_wrong_key_hash_is_refused() -> None:
    with pytest.raises(CheckpointError):
        parse_verifier_key(GO_VKEY.replace("c74f20a3", "c74f20a4"))
