"""The signed envelope: DSSE (Dead Simple Signing Envelope) carried as an Avro record.

A signature covers ``PAE(payloadType, payload)`` where ``payload`` is the exact event
bytes; those bytes travel inside the envelope and are what the ledger stores, so no
one ever needs to re-serialise an event to check it. The same signature verifies in a
standard JSON DSSE envelope (:meth:`Envelope.to_dsse_json`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ledger.errors import MalformedEnvelopeError, MalformedPayloadError
from ledger.wire.avro import SchemaSet, default_schemas

if TYPE_CHECKING:
    from ledger.wire.keyring import Signer

__all__ = ["PAYLOAD_TYPE", "Envelope", "Signature", "pae"]

PAYLOAD_TYPE = "application/vnd.deploy-ledger.event+avro"
"""The payload is a ``dev.ledger.Event`` in Avro single-object encoding."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what a signature actually covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    @classmethod
    def sign(cls, payload: bytes, signer: Signer, payload_type: str = PAYLOAD_TYPE) -> Envelope:
        """Sign the exact payload bytes; they travel unchanged inside the envelope."""
        sig = signer.sign(pae(payload_type, payload))
        return cls(payload_type, payload, (Signature(signer.key_id, sig),))

    def to_bytes(self, schemas: SchemaSet | None = None) -> bytes:
        record = {
            "payloadType": self.payload_type,
            "payload": self.payload,
            "signatures": [{"keyid": s.keyid, "sig": s.sig} for s in self.signatures],
        }
        return (schemas or default_schemas()).encode("Envelope", record)

    @classmethod
    def from_bytes(cls, data: bytes, schemas: SchemaSet | None = None) -> Envelope:
        try:
            record = (schemas or default_schemas()).decode("Envelope", data)
        except MalformedPayloadError as exc:
            raise MalformedEnvelopeError(f"envelope: {exc.message}") from None
        return cls(
            payload_type=record["payloadType"],
            payload=record["payload"],
            signatures=tuple(Signature(s["keyid"], s["sig"]) for s in record["signatures"]),
        )

    def to_dsse_json(self) -> dict[str, Any]:
        """The standard DSSE JSON form (base64 payload and signatures)."""
        return {
            "payloadType": self.payload_type,
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }
