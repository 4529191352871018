"""deploy-ledger: signed deployment, mutation and approval events in a hash-chained ledger."""

from ledger.codec import decode_event, encode_event
from ledger.envelope import PAYLOAD_TYPE, Envelope, Signature
from ledger.errors import (
    AuthorizationError,
    ChainBrokenError,
    ConfigurationError,
    InvalidEventError,
    LedgerError,
    RejectedMessage,
    SignatureError,
    TransportError,
    UnpinnedImageError,
)
from ledger.events import EVENT_TYPES, Event, event_from_json, event_from_mapping, new_event_id
from ledger.integrity import ChainReport, verify_chain
from ledger.kafka import KafkaSettings
from ledger.keys import Keyring, KeyringEntry, Signer
from ledger.producer import Delivery, LedgerProducer, seal
from ledger.store import LedgerReader, LedgerWriter
from ledger.verify import VerifiedEvent, verify_message

__all__ = [
    "EVENT_TYPES",
    "PAYLOAD_TYPE",
    "AuthorizationError",
    "ChainBrokenError",
    "ChainReport",
    "ConfigurationError",
    "Delivery",
    "Envelope",
    "Event",
    "InvalidEventError",
    "KafkaSettings",
    "Keyring",
    "KeyringEntry",
    "LedgerError",
    "LedgerProducer",
    "LedgerReader",
    "LedgerWriter",
    "RejectedMessage",
    "Signature",
    "SignatureError",
    "Signer",
    "TransportError",
    "UnpinnedImageError",
    "VerifiedEvent",
    "decode_event",
    "encode_event",
    "event_from_json",
    "event_from_mapping",
    "new_event_id",
    "seal",
    "verify_chain",
    "verify_message",
]
