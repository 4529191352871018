"""One error root with precise subclasses.

Every refusal carries a stable machine ``reason`` (stored in the quarantine table and
printed in JSON output) and a sentence a person can act on. Verification failures are
never generic: each check of the verification checklist has its own class.
"""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    """Root of every error this library raises on purpose."""

    reason: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(LedgerError):
    """A missing or unusable setting, file or argument."""

    reason = "configuration"


class QueryError(ConfigurationError):
    """A question that cannot be asked: a window that ends before it starts, search terms
    that are not one image digest, commit or change ref."""

    reason = "invalid_query"


class PolicyFileError(ConfigurationError):
    """A horizon policy file that cannot be applied: bad TOML, an unknown key, a missing
    ``why``, a bad value. The message names the file and the line (``source``, ``line``)."""

    reason = "bad_policy"

    def __init__(self, message: str, source: str, line: int) -> None:
        super().__init__(message)
        self.source = source
        self.line = line


class ForeignLedgerKeyError(ConfigurationError):
    """A key other than the ledger's pinned key was given to sign as the ledger."""

    reason = "foreign_ledger_key"


class TransportError(LedgerError):
    """Kafka could not be reached, or did not acknowledge a message."""

    reason = "transport"


class PartialDeliveryError(TransportError):
    """Some events were acknowledged and some were not: both are named (event ids), so a
    producer knows exactly what to send again."""

    reason = "partial_delivery"

    def __init__(self, message: str, delivered: list[Any], failed: list[str]) -> None:
        super().__init__(message)
        self.delivered = delivered
        self.failed = failed


class LocalBrokerUnavailable(ConfigurationError):
    """No bootstrap server is configured and the bundled broker is not installed."""

    reason = "no_local_broker"


# --- events and their encoding ------------------------------------------------------------


class RejectedMessage(LedgerError):
    """A message that must not enter the chain; it is quarantined with this reason."""

    reason = "rejected"


class OversizeError(RejectedMessage):
    reason = "oversize"


class MalformedEnvelopeError(RejectedMessage):
    """The bytes are not an envelope this ledger can read."""

    reason = "malformed_envelope"


class NullValueError(MalformedEnvelopeError):
    """A record with no value at all (a Kafka tombstone): there is nothing to verify."""

    reason = "null_value"


class UnknownSchemaError(RejectedMessage):
    """Single-object encoding names a schema fingerprint this build does not know."""

    reason = "unknown_schema"


class MalformedPayloadError(RejectedMessage):
    """The signed payload does not decode with its writer schema."""

    reason = "malformed_payload"


class InvalidEventError(RejectedMessage):
    """The event decodes but breaks the event contract; ``field`` names the culprit."""

    reason = "invalid_event"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class FutureEventError(RejectedMessage):
    """The event claims a time ahead of the one the ledger witnessed it at (beyond skew)."""

    reason = "future_event"


class UnpinnedImageError(InvalidEventError):
    """An image given by tag rather than by digest: a tag is not evidence."""

    reason = "unpinned_image"


# --- signatures ----------------------------------------------------------------------------


class SignatureError(RejectedMessage):
    """Root of signature failures."""

    reason = "signature"

    def __init__(self, message: str, key_id: str | None = None) -> None:
        super().__init__(message)
        self.key_id = key_id


class UnsignedError(SignatureError):
    reason = "unsigned"


class WrongPayloadTypeError(SignatureError):
    reason = "wrong_payload_type"


class UnknownKeyError(SignatureError):
    reason = "unknown_key"


class BadSignatureError(SignatureError):
    reason = "bad_signature"


# --- authorization of a valid signature -----------------------------------------------------


class AuthorizationError(SignatureError):
    """The signature is genuine but the key may not vouch for this event."""

    reason = "unauthorized"


class KeyNotAllowedForTypeError(AuthorizationError):
    reason = "key_not_allowed_type"


class KeyNotAllowedForSourceError(AuthorizationError):
    reason = "key_not_allowed_source"


class KeyNotYetValidError(AuthorizationError):
    reason = "key_not_yet_valid"


class KeyExpiredError(AuthorizationError):
    reason = "key_expired"


class KeyRevokedError(AuthorizationError):
    reason = "key_revoked"


class KeyRetiredError(AuthorizationError):
    """A retired key, past its grace: it signed after its retirement, or arrived too late."""

    reason = "key_retired"


# --- the ledger ------------------------------------------------------------------------------


class ConflictingDuplicateError(RejectedMessage):
    """An event id already chained, arriving again with different signed content."""

    reason = "conflicting_duplicate"


class DamagedLedgerError(ConfigurationError):
    """The ledger file cannot be read as the database it says it is: cut short or altered."""

    reason = "damaged_ledger"

    def __init__(self, path: object, what: str) -> None:
        super().__init__(
            f"{path} is damaged: {what}. Restore it from a backup (or a copy taken while the "
            "consumer was stopped), then run `ledger verify` on it"
        )


class LedgerLockedError(LedgerError):
    """Another process holds the ledger file for writing."""

    reason = "locked"


class ChainBrokenError(LedgerError):
    """Verification of the stored chain failed; carries the evidence."""

    reason = "chain_broken"

    def __init__(self, message: str, seq: int, check: str) -> None:
        super().__init__(message)
        self.seq = seq
        self.check = check


# --- Merkle proofs ---------------------------------------------------------------------------


class ProofError(LedgerError):
    """An inclusion or consistency proof does not check out; ``check`` names the step."""

    reason = "bad_proof"

    def __init__(self, message: str, check: str) -> None:
        super().__init__(message)
        self.check = check


# --- checkpoints -----------------------------------------------------------------------------


class CheckpointError(LedgerError):
    """A signed checkpoint is malformed, unsigned by the expected key, or forged."""

    reason = "bad_checkpoint"

    def __init__(self, message: str, check: str) -> None:
        super().__init__(message)
        self.check = check


class InconsistentCheckpointError(CheckpointError):
    """The ledger does not extend a signed checkpoint: truncated, rolled back or rewritten.

    Carries the evidence: the checkpoint's size and root and what the ledger has instead.
    """

    reason = "checkpoint_inconsistent"

    def __init__(
        self,
        message: str,
        check: str,
        size: int,
        checkpoint_root: bytes,
        ledger_root: bytes | None,
    ) -> None:
        super().__init__(message, check)
        self.size = size
        self.checkpoint_root = checkpoint_root
        self.ledger_root = ledger_root


# --- evidence bundles ------------------------------------------------------------------------


class EvidenceError(LedgerError):
    """An evidence bundle cannot be built, or fails a step of its offline verification;
    ``check`` names the step (see docs/formats.md), ``seq`` the entry when there is one."""

    reason = "bad_evidence"

    def __init__(self, message: str, check: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.check = check
        self.seq = seq
