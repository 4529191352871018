"""deploy-ledger: signed deployment, mutation and approval events in a hash-chained ledger.

The public API is re-exported here lazily (PEP 562), so that importing one small module
(a verification worker imports only the pure core) does not load Kafka, DuckDB or Arrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger.codec import (
        decode_event,
        encode_event,
    )
    from ledger.envelope import (
        PAYLOAD_TYPE,
        Envelope,
        Signature,
    )
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
    from ledger.events import (
        EVENT_TYPES,
        Event,
        event_from_json,
        event_from_mapping,
        new_event_id,
    )
    from ledger.integrity import (
        LedgerReport,
        verify_ledger,
    )
    from ledger.kafka import (
        KafkaSettings,
    )
    from ledger.keys import (
        Keyring,
        KeyringEntry,
        Signer,
    )
    from ledger.producer import (
        Delivery,
        LedgerProducer,
        seal,
    )
    from ledger.store import (
        LedgerReader,
        LedgerWriter,
    )
    from ledger.verify import (
        VerifiedEvent,
        verify_message,
    )

_EXPORTS: dict[str, str] = {
    "AuthorizationError": "ledger.errors",
    "ChainBrokenError": "ledger.errors",
    "ConfigurationError": "ledger.errors",
    "Delivery": "ledger.producer",
    "EVENT_TYPES": "ledger.events",
    "Envelope": "ledger.envelope",
    "Event": "ledger.events",
    "InvalidEventError": "ledger.errors",
    "KafkaSettings": "ledger.kafka",
    "Keyring": "ledger.keys",
    "KeyringEntry": "ledger.keys",
    "LedgerError": "ledger.errors",
    "LedgerProducer": "ledger.producer",
    "LedgerReader": "ledger.store",
    "LedgerReport": "ledger.integrity",
    "LedgerWriter": "ledger.store",
    "PAYLOAD_TYPE": "ledger.envelope",
    "RejectedMessage": "ledger.errors",
    "Signature": "ledger.envelope",
    "SignatureError": "ledger.errors",
    "Signer": "ledger.keys",
    "TransportError": "ledger.errors",
    "UnpinnedImageError": "ledger.errors",
    "VerifiedEvent": "ledger.verify",
    "decode_event": "ledger.codec",
    "encode_event": "ledger.codec",
    "event_from_json": "ledger.events",
    "event_from_mapping": "ledger.events",
    "new_event_id": "ledger.events",
    "seal": "ledger.producer",
    "verify_ledger": "ledger.integrity",
    "verify_message": "ledger.verify",
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
