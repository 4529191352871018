"""Ed25519 keys and the keyring that says what each key may sign.

A keyring entry binds a key id to a public key and to what it is authorized for: event
type patterns, source patterns, a validity window and a revocation time. A valid
signature from a key that may not vouch for an event is still a refusal: authorization
is part of verification. Patterns are shell-style (``deployment.*``, ``ci/github/*``).

Keyring file (JSON, ``version`` 1)::

    {"version": 1,
     "keys": {"ci-main": {"public_key": "<base64 of the 32 raw Ed25519 bytes>",
                          "types": ["deployment.*"], "sources": ["ci/*"],
                          "not_before": null, "not_after": "2027-01-01T00:00:00Z",
                          "revoked_at": null, "added_at": "2026-11-20T09:00:00Z"}}}

Two ways to stop trusting a key. *Retiring* it (rotation: its owner moved to a new key)
leaves its events still in flight a bounded grace: one it signed before the retirement
(claimed time) that the ledger witnesses within :data:`RETIRED_KEY_GRACE` after it is
accepted. *Revoking* it (compromise) leaves none: nothing witnessed from the revocation
on is accepted, whatever it claims.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import Annotated, NewType

import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ledger.errors import (
    BadSignatureError,
    ConfigurationError,
    KeyExpiredError,
    KeyNotAllowedForSourceError,
    KeyNotAllowedForTypeError,
    KeyNotYetValidError,
    KeyRetiredError,
    KeyRevokedError,
    UnknownKeyError,
)

__all__ = [
    "RETIRED_KEY_GRACE",
    "KeyId",
    "Keyring",
    "KeyringEntry",
    "Keyrings",
    "Signer",
    "ed25519_verify",
    "generate_key_files",
    "iso_utc",
    "load_public_key",
]

RETIRED_KEY_GRACE = timedelta(hours=72)
"""How long after a key's retirement the ledger still accepts what it signed before it: a
spool drained or a backlog consumed after an outage. A constant of the rules, so that two
readers of one ledger never judge an entry differently."""

KeyId = NewType("KeyId", str)
KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_Base64Key = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+/]{43}=$")]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_fingerprint(raw_public: bytes) -> str:
    """SHA-256 of the raw public key: what to compare out of band."""
    return "sha256:" + hashlib.sha256(raw_public).hexdigest()


class Signer:
    """An Ed25519 private key with the id verifiers know it by."""

    def __init__(self, key_id: str, private_key: Ed25519PrivateKey) -> None:
        self.key_id = KeyId(key_id)
        self._private = private_key

    @classmethod
    def generate(cls, key_id: str) -> Signer:
        return cls(key_id, Ed25519PrivateKey.generate())

    @classmethod
    def from_file(cls, path: Path, key_id: str | None = None) -> Signer:
        """Load a PEM (PKCS#8) private key; the id defaults to the file name (``ID.key``)."""
        try:
            _check_private(path)
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise ConfigurationError(f"private key {path} does not exist") from None
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"{path} is not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"{path} is not an Ed25519 key")
        return cls(key_id or path.stem, key)

    @property
    def public_raw(self) -> bytes:
        return _raw_public(self._private.public_key())

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def private_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        return self._private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def save(self, path: Path) -> None:
        """Write the private key (PKCS#8 PEM) readable by its owner only; never overwrite."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            message = f"{path} already exists; refusing to overwrite a key"
            raise ConfigurationError(message) from None
        with os.fdopen(fd, "wb") as out:
            out.write(self.private_pem())


def _check_private(path: Path) -> None:
    """Refuse a private key that others may read or replace, as ssh does: whoever can read
    it signs as its owner, whoever can write it chooses the key."""
    mode = path.stat().st_mode & 0o777
    if os.name == "posix" and mode & 0o077:
        raise ConfigurationError(
            f"private key {path} is open to others (mode {mode:04o}): whoever can read it "
            f"signs as its owner; chmod 600 {path}"
        )


def generate_key_files(key_id: str, out_dir: Path) -> tuple[Path, Path]:
    """Write ``ID.key`` (PKCS#8 PEM, mode 0600) and ``ID.pub``; never overwrite a key."""
    signer = Signer.generate(key_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out_dir / f"{key_id}.key", out_dir / f"{key_id}.pub"
    if pub_path.exists():
        raise ConfigurationError(f"{pub_path} already exists; refusing to overwrite a key")
    signer.save(key_path)
    pub_path.write_bytes(signer.public_pem())
    return key_path, pub_path


def load_public_key(path: Path) -> bytes:
    """Raw 32-byte Ed25519 public key from a PEM file."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise ConfigurationError(f"public key {path} does not exist") from None
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"{path} is not an Ed25519 public key")
    return _raw_public(key)


@lru_cache(maxsize=4096)
def _verify_key(raw_public: bytes) -> nacl.signing.VerifyKey:
    """Verification uses libsodium (PyNaCl): twice OpenSSL's Ed25519 rate on the consumer's
    hot path. Keys are still made, stored and used for signing with `cryptography`."""
    return nacl.signing.VerifyKey(raw_public)


def ed25519_verify(raw_public: bytes, message: bytes, sig: bytes) -> bool:
    """Does ``sig`` verify over the exact ``message`` bytes under this raw public key?"""
    try:
        _verify_key(raw_public).verify(message, sig)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        return False
    return True


def iso_utc(moment: datetime) -> str:
    """An instant as the messages name it: ISO 8601 in UTC with a ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class KeyringEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    public_key: _Base64Key
    types: list[str] = Field(min_length=1)
    sources: list[str] = Field(min_length=1)
    not_before: AwareDatetime | None = None
    not_after: AwareDatetime | None = None
    revoked_at: AwareDatetime | None = None
    added_at: AwareDatetime | None = None
    retired_at: AwareDatetime | None = Field(default=None, exclude_if=lambda value: value is None)
    """Absent until retired, so a keyring that retires nothing keeps the bytes (and the
    digest, which recorded entries commit to) it had before retirement existed."""

    @property
    def public_raw(self) -> bytes:
        return base64.b64decode(self.public_key)

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.public_raw)


class Keyring(BaseModel):
    """Trusted keys and their authorization. Loaded once; verification does no I/O."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = 1
    keys: dict[Annotated[str, StringConstraints(pattern=KEY_ID_PATTERN)], KeyringEntry] = {}

    # --- file I/O ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigurationError(
                f"keyring {path} does not exist (create it with `ledger keys trust`)"
            ) from None
        except OSError as exc:
            raise ConfigurationError(f"cannot read keyring {path}: {exc}") from None
        return cls.from_json(data, str(path))

    @classmethod
    def from_json(cls, data: bytes, source: str) -> Keyring:
        """A keyring file's bytes, strictly parsed; errors name ``source`` and the field."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"cannot read keyring {source}: {exc}") from None
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in first["loc"])
            where = f"{loc}: " if loc else ""  # the document itself: no location to name
            raise ConfigurationError(f"keyring {source}: {where}{first['msg']}") from None

    @classmethod
    def load_or_new(cls, path: Path) -> Keyring:
        return cls.load(path) if path.exists() else cls()

    def save(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a keyring."""
        text = json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    def canonical(self) -> bytes:
        """The keyring as canonical JSON (sorted keys, no white space): the bytes the ledger
        records, and whose SHA-256 (:meth:`digest`) each entry judged under it commits to."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
        ).encode()

    def digest(self) -> bytes:
        return hashlib.sha256(self.canonical()).digest()

    # --- changes ----------------------------------------------------------------------------

    def trust(
        self,
        key_id: str,
        public_raw: bytes,
        *,
        types: list[str],
        sources: list[str],
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> KeyringEntry:
        existing = self.keys.get(key_id)
        if existing is not None and existing.public_raw != public_raw:
            raise ConfigurationError(
                f"key id {key_id!r} is already trusted with another public key "
                f"({existing.fingerprint}); revoke it and use a new id"
            )
        if existing is not None and existing.revoked_at is not None:
            raise ConfigurationError(f"key {key_id!r} was revoked; a revoked key stays revoked")
        if existing is not None and existing.retired_at is not None:
            raise ConfigurationError(f"key {key_id!r} was retired; trust its successor instead")
        entry = KeyringEntry(
            public_key=base64.b64encode(public_raw).decode("ascii"),
            types=types,
            sources=sources,
            not_before=not_before,
            not_after=not_after,
            added_at=existing.added_at if existing else datetime.now(UTC),
        )
        self.keys[key_id] = entry
        return entry

    def revoke(self, key_id: str, at: datetime) -> KeyringEntry:
        return self._stamp(key_id, "revoked_at", at)

    def retire(self, key_id: str, at: datetime) -> KeyringEntry:
        """Stop trusting a key that was not compromised (its owner moved to a new one): what
        it signed before ``at`` is still accepted for :data:`RETIRED_KEY_GRACE` after."""
        if (entry := self.keys.get(key_id)) is not None and entry.revoked_at is not None:
            raise ConfigurationError(f"key {key_id!r} was revoked; a revoked key stays revoked")
        return self._stamp(key_id, "retired_at", at)

    def _stamp(self, key_id: str, field: str, at: datetime) -> KeyringEntry:
        """Set a key's ``revoked_at`` or ``retired_at`` to ``at``, unless it is earlier."""
        entry = self.keys.get(key_id)
        if entry is None:
            raise ConfigurationError(f"key {key_id!r} is not in the keyring")
        earlier = getattr(entry, field)
        if earlier is not None and earlier <= at:
            return entry
        stamped = entry.model_copy(update={field: at})
        self.keys[key_id] = stamped
        return stamped

    def changes_from(self, old: Keyring) -> list[str]:
        """What differs from ``old``, key by key, in words: for the log of a reload."""
        said = []
        for key_id in sorted(old.keys.keys() | self.keys.keys()):
            was, now = old.keys.get(key_id), self.keys.get(key_id)
            if was == now:
                continue
            if now is None:
                said.append(f"no longer lists {key_id}")
            elif was is None:
                said.append(f"trusts {key_id} for {', '.join(now.types)} from "
                            f"{', '.join(now.sources)}")  # fmt: skip
            elif now.revoked_at is not None and was.revoked_at != now.revoked_at:
                said.append(f"revokes {key_id} from {iso_utc(now.revoked_at)}")
            elif now.retired_at is not None and was.retired_at != now.retired_at:
                said.append(f"retires {key_id} from {iso_utc(now.retired_at)}")
            else:
                fields = [f for f in type(now).model_fields if getattr(was, f) != getattr(now, f)]
                said.append(f"changes {key_id}: {', '.join(fields)}")
        return said

    # --- verification (pure) ----------------------------------------------------------------

    def check_signature(self, key_id: str, message: bytes, sig: bytes) -> None:
        entry = self.keys.get(key_id)
        if entry is None:
            raise UnknownKeyError(f"key {key_id!r} is not in the keyring", key_id=key_id)
        if not ed25519_verify(entry.public_raw, message, sig):
            raise BadSignatureError(
                f"signature by key {key_id!r} does not match the payload", key_id=key_id
            )

    def authorize(
        self, key_id: str, event_type: str, source: str, at: datetime, claimed: datetime
    ) -> None:
        """May ``key_id`` vouch for an event of this type and source, judged at ``at`` (the
        time the ledger witnessed it; ledger.wire.verify)? ``claimed``, the time the event
        claims, only ever narrows: it decides nothing but a retired key's grace."""
        entry = self.keys[key_id]
        if entry.revoked_at is not None and at >= entry.revoked_at:
            raise KeyRevokedError(
                f"key {key_id!r} was revoked at {iso_utc(entry.revoked_at)}; "
                f"the event is judged at {iso_utc(at)}",
                key_id=key_id,
            )
        if entry.retired_at is not None and at >= entry.retired_at:
            _check_grace(key_id, entry.retired_at, at, claimed)
        if entry.not_before is not None and at < entry.not_before:
            raise KeyNotYetValidError(
                f"key {key_id!r} is valid from {iso_utc(entry.not_before)}; "
                f"the event is judged at {iso_utc(at)}",
                key_id=key_id,
            )
        if entry.not_after is not None and at > entry.not_after:
            raise KeyExpiredError(
                f"key {key_id!r} expired at {iso_utc(entry.not_after)}; "
                f"the event is judged at {iso_utc(at)}",
                key_id=key_id,
            )
        if not any(fnmatchcase(event_type, p) for p in entry.types):
            raise KeyNotAllowedForTypeError(
                f"key {key_id!r} may sign {', '.join(entry.types)}, not {event_type}",
                key_id=key_id,
            )
        if not any(fnmatchcase(source, p) for p in entry.sources):
            raise KeyNotAllowedForSourceError(
                f"key {key_id!r} may sign for sources {', '.join(entry.sources)}, not {source!r}",
                key_id=key_id,
            )


def _check_grace(key_id: str, retired_at: datetime, at: datetime, claimed: datetime) -> None:
    """A retired key's grace: signed before its retirement (by the time the event claims),
    and witnessed within :data:`RETIRED_KEY_GRACE` of it."""
    when = f"retired at {iso_utc(retired_at)}"
    if claimed >= retired_at:
        raise KeyRetiredError(
            f"key {key_id!r} was {when}; the event claims {iso_utc(claimed)}, not before it",
            key_id=key_id,
        )
    if at >= retired_at + RETIRED_KEY_GRACE:
        raise KeyRetiredError(
            f"key {key_id!r} was {when}; what it signed before then is accepted until "
            f"{iso_utc(retired_at + RETIRED_KEY_GRACE)}, and the ledger witnessed this event "
            f"at {iso_utc(at)}",
            key_id=key_id,
        )


class Keyrings(BaseModel):
    """The keyrings entries were judged under: those the ledger recorded, by digest (hex),
    and the one judged entries of format 1 (which name none) are checked under, if any."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    recorded: dict[str, Keyring] = {}
    default: Keyring | None = None
