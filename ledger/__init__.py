"""deploy-ledger: signed deployment, mutation and approval events in a hash-chained ledger.

The public API is re-exported here lazily (PEP 562), so that importing one small module
(a verification worker imports only the pure core) does not load Kafka, DuckDB or Arrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from ledger.store.integrity import (
        LedgerReport,
        verify_ledger,
    )
    from ledger.store.reader import LedgerReader
    from ledger.store.writer import LedgerWriter
    from ledger.transport.producer import (
        Delivery,
        LedgerProducer,
        seal,
    )
    from ledger.transport.settings import KafkaSettings
    from ledger.wire.codec import (
        decode_event,
        encode_event,
    )
    from ledger.wire.envelope import (
        PAYLOAD_TYPE,
        Envelope,
        Signature,
    )
    from ledger.wire.events import (
        EVENT_TYPES,
        Event,
        event_from_json,
        event_from_mapping,
        new_event_id,
    )
    from ledger.wire.keyring import (
        Keyring,
        KeyringEntry,
        Signer,
    )
    from ledger.wire.verify import (
        VerifiedEvent,
        verify_message,
    )

_EXPORTS: dict[str, str] = {
    "AuthorizationError": "ledger.errors",
    "ChainBrokenError": "ledger.errors",
    "ConfigurationError": "ledger.errors",
    "Delivery": "ledger.transport.producer",
    "EVENT_TYPES": "ledger.wire.events",
    "Envelope": "ledger.wire.envelope",
    "Event": "ledger.wire.events",
    "InvalidEventError": "ledger.errors",
    "KafkaSettings": "ledger.transport.settings",
    "Keyring": "ledger.wire.keyring",
    "KeyringEntry": "ledger.wire.keyring",
    "LedgerError": "ledger.errors",
    "LedgerProducer": "ledger.transport.producer",
    "LedgerReader": "ledger.store.reader",
    "LedgerReport": "ledger.store.integrity",
    "LedgerWriter": "ledger.store.writer",
    "PAYLOAD_TYPE": "ledger.wire.envelope",
    "RejectedMessage": "ledger.errors",
    "Signature": "ledger.wire.envelope",
    "SignatureError": "ledger.errors",
    "Signer": "ledger.wire.keyring",
    "TransportError": "ledger.errors",
    "UnpinnedImageError": "ledger.errors",
    "VerifiedEvent": "ledger.wire.verify",
    "decode_event": "ledger.wire.codec",
    "encode_event": "ledger.wire.codec",
    "event_from_json": "ledger.wire.events",
    "event_from_mapping": "ledger.wire.events",
    "new_event_id": "ledger.wire.events",
    "seal": "ledger.transport.producer",
    "verify_ledger": "ledger.store.integrity",
    "verify_message": "ledger.wire.verify",
}

__all__ = [
    "EVENT_TYPES",
    "PAYLOAD_TYPE",
    "AuthorizationError",
    "ChainBrokenError",
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
    "LedgerReport",
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
    "verify_ledger",
    "verify_message",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ledger' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
