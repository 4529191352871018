"""Sensitive values as keyed digests: never the value, never a digest anyone can guess.

A plain SHA-256 of a password, a token or a connection string is no secret: whoever reads
the ledger hashes a dictionary of likely values and compares. So every integration records
a sensitive value (Terraform's sensitive attributes; later secret stores and key-value
stores) as HMAC-SHA-256 under a key that the producers and observers of one organisation
share and no one else holds: they can tell that two records name the same value, or that a
value observed in a system is the one recorded, and a reader without the key learns
nothing (docs/integrations.md, "The HMAC key").

Pure: the key's bytes come in (the command line reads the file named by
``--hmac-key-file`` or ``LEDGER_HMAC_KEY_FILE``), digests come out.

- The key is the file's content, surrounding whitespace (a trailing newline) removed,
  used as it is (no decoding): at least :data:`MIN_KEY_BYTES` bytes. ``openssl rand -hex 32``
  makes one.
- What is digested (:func:`value_bytes`): a string's UTF-8 bytes, so a secret store's
  ``SecretString`` and a Terraform attribute holding the same text agree; any other JSON
  value as canonical JSON (sorted keys, no spaces, UTF-8).
- The digest is written ``hmac-sha256:<64 lowercase hex>`` (:data:`PREFIX`): never
  mistaken for a plain ``sha256:`` digest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from ledger.errors import ConfigurationError

__all__ = [
    "ENV_VAR",
    "MIN_KEY_BYTES",
    "PREFIX",
    "HmacKey",
    "HmacKeyError",
    "key_from_bytes",
    "value_bytes",
]

ENV_VAR = "LEDGER_HMAC_KEY_FILE"
"""The variable naming the key file, when ``--hmac-key-file`` is not given."""

MIN_KEY_BYTES = 32
"""HMAC-SHA-256's block of security: a shorter key could be guessed."""

PREFIX = "hmac-sha256:"


class HmacKeyError(ConfigurationError):
    """A key file that is no usable HMAC key (empty, too short, not readable)."""

    reason = "bad_hmac_key"


class HmacKey:
    """The organisation's HMAC key. Its ``repr`` shows a fingerprint, never the key."""

    __slots__ = ("_key", "fingerprint")

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise HmacKeyError(f"an HMAC key needs at least {MIN_KEY_BYTES} bytes, not {len(key)}")
        self._key = key
        self.fingerprint = hmac.new(key, b"deploy-ledger/hmac-key-fingerprint/v1",
                                    hashlib.sha256).hexdigest()[:16]  # fmt: skip
        """Names the key (which key made a digest) without revealing it."""

    def __repr__(self) -> str:
        return f"HmacKey(fingerprint={self.fingerprint!r})"

    def hexdigest(self, data: bytes) -> str:
        """HMAC-SHA-256 of ``data``: 64 lowercase hex digits."""
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def digest(self, data: bytes) -> str:
        """``hmac-sha256:<64 hex>`` of ``data``."""
        return PREFIX + self.hexdigest(data)

    def digest_value(self, value: Any) -> str:
        """``hmac-sha256:<64 hex>`` of a JSON value (:func:`value_bytes`)."""
        return self.digest(value_bytes(value))


def value_bytes(value: Any) -> bytes:
    """The bytes a value is digested as: a string's UTF-8, else canonical JSON."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def key_from_bytes(data: bytes, source: str) -> HmacKey:
    """The key a key file holds (``source`` names it in a refusal)."""
    key = data.strip()
    if len(key) < MIN_KEY_BYTES:
        raise HmacKeyError(
            f"{source}: {'empty' if not key else f'{len(key)} bytes'}, not an HMAC key; expected "
            f"at least {MIN_KEY_BYTES} bytes (make one with `openssl rand -hex 32 > {source}`)"
        )
    return HmacKey(key)
