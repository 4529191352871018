"""Signed checkpoints: C2SP ``tlog-checkpoint`` bodies in C2SP ``signed-note`` form (pure).

A checkpoint commits the ledger's operator to one tree size and root::

    deploy-ledger/0b6c…            <- origin: names this ledger
    1234                            <- tree size, decimal
    p4Gp5l1w…=                      <- base64 of the RFC 9162 root hash
                                    <- blank line
    — ledger-main AbCd…             <- em dash, key name, base64(key hash || signature)

The Ed25519 signature covers the exact body bytes (the first three lines, each ending in a
newline); the 4-byte key hash is ``SHA-256(name || "\\n" || 0x01 || public key)[:4]``, so
any signed-note implementation (e.g. Go's ``golang.org/x/mod/sumdb/note``) checks it with
the verifier key from :func:`verifier_key`. Checking opens the note with the trusted key
first and parses only the bytes that signature covers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from ledger.errors import CheckpointError
from ledger.wire.keyring import Signer, ed25519_verify

__all__ = [
    "Checkpoint",
    "TrustedKey",
    "open_checkpoint",
    "open_note",
    "parse_verifier_key",
    "sign_checkpoint",
    "sign_note",
    "split_notes",
    "verifier_key",
]

_ED25519 = b"\x01"
_DASH = "\u2014 "
_SIGNATURE_LINE = re.compile(r"^\u2014 (\S+) ([A-Za-z0-9+/]+=*)$")
_SIZE = re.compile(r"^(0|[1-9][0-9]{0,19})$")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> bytes:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n".encode()


def _key_hash(name: str, public_raw: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public_raw).digest()[:4]


def verifier_key(name: str, public_raw: bytes) -> str:
    """The signed-note verifier key string: ``name+hexkeyhash+base64(0x01 || key)``."""
    encoded = base64.b64encode(_ED25519 + public_raw).decode()
    return f"{name}+{_key_hash(name, public_raw).hex()}+{encoded}"


def parse_verifier_key(vkey: str) -> tuple[str, bytes]:
    """(name, raw Ed25519 public key) of a verifier key string, checking its key hash."""
    parts = vkey.split("+", 2)
    try:
        name, key_hash, encoded = parts
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        raise CheckpointError(f"{vkey!r} is not a verifier key", check="malformed") from None
    if len(raw) != 33 or raw[:1] != _ED25519 or _key_hash(name, raw[1:]).hex() != key_hash:
        raise CheckpointError(
            f"{vkey!r} is not an Ed25519 verifier key with a matching key hash",
            check="malformed",
        )
    return name, raw[1:]


def sign_note(body: bytes, signer: Signer) -> str:
    """A signed note over ``body`` (non-empty lines, ending in a newline), named by key id."""
    if not body.endswith(b"\n") or b"\n\n" in body or body.startswith(b"\n"):
        raise ValueError("a note body is non-empty lines, each ending in a newline")
    signature = _key_hash(signer.key_id, signer.public_raw) + signer.sign(body)
    line = f"{_DASH}{signer.key_id} {base64.b64encode(signature).decode()}\n"
    return body.decode() + "\n" + line


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    if not checkpoint.origin or any(c.isspace() for c in checkpoint.origin):
        raise ValueError(f"checkpoint origin {checkpoint.origin!r} must be one word")
    return sign_note(checkpoint.body(), signer)


def split_notes(text: str) -> list[str]:
    """The signed notes of a witness file, in order: each ends with its last signature line."""
    notes: list[str] = []
    block: list[str] = []
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        block.append(line)
        following = lines[i + 1] if i + 1 < len(lines) else None
        if line.startswith(_DASH) and (following is None or not following.startswith(_DASH)):
            notes.append("".join(block))
            block = []
    if "".join(block).strip():
        raise CheckpointError("witness file ends with an unsigned note", check="malformed")
    return notes


def open_note(note: str, name: str, public_raw: bytes) -> bytes:
    """The body of ``note``, once a signature by key ``name``/``public_raw`` verifies over it.

    Checks, in order: 1. the note splits into body and signature lines; 2. a signature
    line names the key and carries its key hash; 3. that signature verifies over the exact
    body bytes.
    """
    # 1.
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise CheckpointError(
            "not a signed note: no blank line before signatures", check="malformed"
        )
    body, signature_lines = note[: cut + 1].encode(), note[cut + 2 :].splitlines()
    # 2.
    expected_hash = _key_hash(name, public_raw)
    candidates: list[bytes] = []
    for line in signature_lines:
        match = _SIGNATURE_LINE.match(line)
        if match is None:
            raise CheckpointError(f"malformed signature line {line!r}", check="malformed")
        if match.group(1) != name:
            continue
        try:
            raw = base64.b64decode(match.group(2), validate=True)
        except binascii.Error:
            raise CheckpointError(
                f"signature line {line!r} is not base64", check="malformed"
            ) from None
        if len(raw) == 68 and raw[:4] == expected_hash:
            candidates.append(raw[4:])
    if not candidates:
        signers = ", ".join(repr(line.split(" ")[1]) for line in signature_lines if " " in line)
        raise CheckpointError(
            f"note carries no signature by key {name!r} (signed by {signers or 'nobody'})",
            check="unknown_key",
        )
    # 3.
    if not any(ed25519_verify(public_raw, body, sig) for sig in candidates):
        raise CheckpointError(
            f"signature by key {name!r} does not verify over the note's text",
            check="bad_signature",
        )
    return body


def open_checkpoint(
    note: str, name: str, public_raw: bytes, origin: str | None = None
) -> Checkpoint:
    """Verify the note (:func:`open_note`), then 4. parse its body as a checkpoint (origin,
    decimal size, base64 32-byte root) and 5. check the origin, when one is expected."""
    body = open_note(note, name, public_raw)
    # 4.
    lines = body.decode().split("\n")[:-1]
    if len(lines) < 3:
        raise CheckpointError("checkpoint body has fewer than 3 lines", check="malformed")
    origin_line, size_line, root_line = lines[:3]
    if not _SIZE.match(size_line):
        raise CheckpointError(
            f"checkpoint size {size_line!r} is not a decimal number", check="malformed"
        )
    try:
        root = base64.b64decode(root_line, validate=True)
    except binascii.Error:
        root = b""
    if len(root) != 32:
        raise CheckpointError(
            f"checkpoint root {root_line!r} is not a base64 SHA-256 hash", check="malformed"
        )
    # 5.
    if origin is not None and origin_line != origin:
        raise CheckpointError(
            f"checkpoint is for log {origin_line!r}, not {origin!r}", check="origin_mismatch"
        )
    return Checkpoint(origin_line, int(size_line), root)


@dataclass(frozen=True)
class TrustedKey:
    """The ledger's public key as the verifier knows it: signed-note key name and raw key."""

    name: str
    public_raw: bytes
