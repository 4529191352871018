"""Fuzz targets: every parser of untrusted bytes, fed mutations of valid seeds.

Random bytes die at the first check, so each target mutates valid inputs, and where a
signature guards what follows, some mutations are signed again with a key the target
trusts (or one it knows in a narrower role), so that the checks behind the signature are
reached too. A run of a target returns its outcome: ``ok`` or the reason of the domain
error it raised (a quarantine reason, a check's name); any other exception is a finding.
Used by tests/test_fuzz_attacks.py (hypothesis, a few hundred inputs a target) and by
bench/fuzz.py (a million and more).
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from attack_helpers import LEDGER_KEY, resigned, statement_of, witnessed_ledger
from helpers import DIGEST_A, make_event

from ledger.errors import LedgerError
from ledger.evidence.build import build_bundle, evidence_query
from ledger.log.checkpoint import TrustedKey, open_checkpoint, sign_note, split_notes
from ledger.log.proof import verify_proof
from ledger.store.prove import build_consistency, build_inclusion
from ledger.store.reader import LedgerReader
from ledger.wire.avro import default_schemas
from ledger.wire.codec import decode_event
from ledger.wire.envelope import PAYLOAD_TYPE, Envelope
from ledger.wire.keyring import Keyring, Signer
from ledger.wire.verify import verify_message

__all__ = ["Target", "build_targets", "mutate"]

WITNESSED_AT = datetime(2026, 11, 21, tzinfo=UTC)
"""When the message target's messages are witnessed (make_event's events are dated the day
before)."""


@dataclass(frozen=True)
class Target:
    name: str
    generate: Callable[[random.Random], bytes | None]
    run: Callable[[bytes | None], str]


def outcome(call: Callable[[], object]) -> str:
    """``ok``, or the domain error's reason (its check, when it names one)."""
    try:
        call()
    except LedgerError as exc:
        return str(getattr(exc, "check", None) or exc.reason)
    return "ok"


# --- mutations -------------------------------------------------------------------------------


def mutate(data: bytes, rng: random.Random, others: list[bytes] | None = None) -> bytes:
    """One to four edits: a bit flipped, a byte set, bytes inserted, a range deleted or
    repeated, the tail cut, a splice with another seed."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        edit = rng.randrange(7)
        if edit == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif edit == 1 and out:
            out[min(at, len(out) - 1)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif edit == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif edit == 3:
            del out[at : at + rng.randint(1, 64)]
        elif edit == 4:
            out[at:at] = out[at : at + rng.randint(1, 64)]
        elif edit == 5:
            del out[at:]
        elif others:
            other = rng.choice(others)
            out[at:] = other[rng.randrange(len(other) + 1) :]
    return bytes(out)


def _mutate_json(value: Any, rng: random.Random) -> Any:
    """The JSON value with one node replaced: another type, a number at an edge, a string
    cut or grown, a list or object emptied."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        return {**value, key: _mutate_json(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return [*value[:i], _mutate_json(value[i], rng), *value[i + 1 :]]
    return rng.choice([
        None, True, 0, -1, 2**63, 2**64, 1.5, "", "x" * rng.randint(1, 300), [], {},
        value[: len(value) // 2] if isinstance(value, str | list) else value,
        value * 2 if isinstance(value, str) else value,
    ])  # fmt: skip


# --- the targets -----------------------------------------------------------------------------


def _signers() -> tuple[list[Signer], Keyring]:
    """Keys the message target trusts in different roles, and one it does not know."""
    ci, cab, old, expired, future, retired, stranger = (
        Signer.generate(n) for n in ("ci-main", "change-board", "ci-old", "ci-expired",
                                     "ci-next", "ci-retired", "stranger")
    )  # fmt: skip
    ring = Keyring()
    ring.trust(ci.key_id, ci.public_raw,
               types=["deployment.*", "mutation.*", "service.*", "policy.*"],
               sources=["ci/*"])  # fmt: skip
    ring.trust(cab.key_id, cab.public_raw, types=["approval.*"], sources=["cab/*"])
    month = timedelta(days=30)
    windows = {old: {}, retired: {}, expired: {"not_after": WITNESSED_AT - month},
               future: {"not_before": WITNESSED_AT + month}}  # fmt: skip
    for signer, window in windows.items():
        ring.trust(signer.key_id, signer.public_raw, types=["deployment.*"], sources=["ci/*"],
                   **window)  # fmt: skip
    ring.revoke(old.key_id, WITNESSED_AT - timedelta(days=1))
    ring.retire(retired.key_id, WITNESSED_AT - month)  # long past its grace
    return [ci, cab, old, expired, future, retired, stranger], ring


_KINDS = ["deployment.succeeded", "deployment.failed", "mutation.applied", "approval.granted",
          "approval.revoked", "service.classified", "policy.recorded"]  # fmt: skip


_POLICY = {"services": [{"match": "pay*", "preprod": ["staging", "qa"]}],
           "severity": {"rollback": "low"}, "thresholds": {"late_after": 7200}}  # fmt: skip
"""A policy record's arrays, nested records and maps, for the decoder to meet mutated."""


def _event_record(rng: random.Random) -> dict[str, Any]:
    """The Avro record of a valid event of any kind, some of its fields then pushed out of
    the event contract."""
    kind = rng.choice(_KINDS)
    source = "cab/servicenow" if kind.startswith("approval.") else "ci/github/acme"
    event = make_event(kind, source=rng.choice([source, source, "laptop/alice"]),
                       **(_POLICY if kind == "policy.recorded" else {}))  # fmt: skip
    record: dict[str, Any] = event.model_dump(mode="python")
    record["data"] = (f"dev.ledger.{type(event.data).__name__}", record["data"])
    roll = rng.random()
    if roll < 0.1:
        record["time"] = WITNESSED_AT + timedelta(days=rng.randint(1, 400))  # the future
    elif roll < 0.2 and "image" in record["data"][1]:
        record["data"][1]["image"] = rng.choice(["nginx:1.25", "Registry/X@" + DIGEST_A])
    elif roll < 0.3:
        record["environment"] = rng.choice(["prod/eu", "", "-x", "p" * 200])
    elif roll < 0.35:
        record["actor"] = "x" * rng.choice([50_000, 70_000])  # over the payload/message limit
    return record


def _message_target() -> Target:
    signers, ring = _signers()
    schemas = default_schemas()
    seeds = [Envelope.sign(schemas.encode("Event", _event_record(random.Random(i))),
                           signers[0]).to_bytes() for i in range(20)]  # fmt: skip

    def generate(rng: random.Random) -> bytes | None:
        roll = rng.random()
        if roll < 0.03:
            return None  # a tombstone
        if roll < 0.3:
            return mutate(rng.choice(seeds), rng, seeds)
        payload = schemas.encode("Event", _event_record(rng))
        if roll < 0.55:  # the payload edited, then signed again: past the signature
            payload = mutate(payload, rng)
        signer = rng.choice(signers)
        payload_type = PAYLOAD_TYPE if rng.random() < 0.95 else "application/json"
        envelope = Envelope.sign(payload, signer, payload_type)
        if rng.random() < 0.05:
            envelope = Envelope(envelope.payload_type, envelope.payload, ())  # unsigned
        return envelope.to_bytes()

    def run(data: bytes | None) -> str:
        return outcome(lambda: verify_message(data, ring, WITNESSED_AT))

    return Target("kafka_value", generate, run)


def _bytes_target(name: str, seeds: list[bytes], parse: Callable[[bytes], object]) -> Target:
    def generate(rng: random.Random) -> bytes:
        return mutate(rng.choice(seeds), rng, seeds)

    def run(data: bytes | None) -> str:
        assert data is not None
        return outcome(lambda: parse(data))

    return Target(name, generate, run)


def _note_targets(home: Path) -> list[Target]:
    """The checkpoint note, and the witness file (notes one after another)."""
    home.mkdir(parents=True, exist_ok=True)
    witnessed = witnessed_ledger(home)
    key = witnessed.ledger_key
    origin = witnessed.notes[0].splitlines()[0]
    notes = [n.encode() for n in witnessed.notes]

    def resign(rng: random.Random) -> bytes:
        """A body pushed out of shape and signed again by the ledger key."""
        size = rng.choice(["0", "12", "13", str(2**64), "-1", "1e3", "\u0661\u0662", "012"])
        root = base64.b64encode(rng.randbytes(rng.choice([1, 31, 32, 33]))).decode()
        lines = [rng.choice([origin, "other"]), size, rng.choice([root, "!!", root + "="])]
        body = "".join(f"{line}\n" for line in lines + ["extension"] * rng.randint(0, 2))
        note = sign_note(body.encode(), key).encode()
        return mutate(note, rng) if rng.random() < 0.5 else note

    def generate_note(rng: random.Random) -> bytes:
        return resign(rng) if rng.random() < 0.3 else mutate(rng.choice(notes), rng, notes)

    def open_note(data: bytes | None) -> str:
        assert data is not None
        text = data.decode("utf-8", "replace")
        return outcome(lambda: open_checkpoint(text, LEDGER_KEY, key.public_raw, origin))

    witness = b"".join(notes)

    def generate_witness(rng: random.Random) -> bytes:
        return mutate(witness, rng, notes) if rng.random() < 0.7 else witness + resign(rng)

    def open_witness(data: bytes | None) -> str:
        assert data is not None

        def check() -> None:
            for note in split_notes(data.decode("utf-8", "replace")):
                open_checkpoint(note, LEDGER_KEY, key.public_raw, origin)

        return outcome(check)

    return [Target("checkpoint_note", generate_note, open_note),
            Target("witness_file", generate_witness, open_witness)]  # fmt: skip


def _document_targets(home: Path) -> list[Target]:
    """Proofs and evidence bundles of a real ledger, edited as bytes and as JSON (a bundle
    edited as JSON is signed again by the ledger key: past its signature)."""
    home.mkdir(parents=True, exist_ok=True)
    witnessed = witnessed_ledger(home)
    trusted = TrustedKey(LEDGER_KEY, witnessed.ledger_key.public_raw)
    with LedgerReader(witnessed.db) as reader:
        proofs = [build_inclusion(reader, seq).model_dump_json().encode() for seq in (1, 5, 12)]
        proofs += [build_consistency(reader, 3, 12).model_dump_json().encode()]
        query = evidence_query("checkout", "prod", WITNESSED_AT, None, None)
        bundle, _ = build_bundle(reader, query, witnessed.ring, witnessed.ledger_key)

    def generate_proof(rng: random.Random) -> bytes:
        seed = rng.choice(proofs)
        if rng.random() < 0.5:
            return mutate(seed, rng, proofs)
        return json.dumps(_mutate_json(json.loads(seed), rng)).encode()

    def check_proof(data: bytes | None) -> str:
        assert data is not None
        try:
            document = json.loads(data)
        except ValueError:
            return "not_json"  # the CLI names it: `… is not a proof`
        return outcome(lambda: verify_proof(document, trusted))

    def generate_bundle(rng: random.Random) -> bytes:
        if rng.random() < 0.4:
            return mutate(bundle, rng)
        edited = _mutate_json(statement_of(bundle), rng)
        if not isinstance(edited, dict):
            edited = {"statement": edited}

        def edit(statement: dict[str, Any]) -> None:
            statement.clear()
            statement.update(edited)

        return resigned(bundle, edit, witnessed.ledger_key)

    def check_bundle(data: bytes | None) -> str:
        from ledger.evidence.bundle import verify_bundle

        assert data is not None
        return outcome(lambda: verify_bundle(data, trusted))

    return [Target("proof", generate_proof, check_proof),
            Target("evidence_bundle", generate_bundle, check_bundle)]  # fmt: skip


def build_targets(home: Path) -> list[Target]:
    """Every target, its seeds built under ``home`` (real ledgers, proofs and bundles)."""
    signers, ring = _signers()
    schemas = default_schemas()
    envelopes = [Envelope.sign(schemas.encode("Event", _event_record(random.Random(i))),
                               signers[i % 2]).to_bytes() for i in range(20)]  # fmt: skip
    payloads = [Envelope.from_bytes(e).payload for e in envelopes]
    keyring = json.dumps(ring.model_dump(mode="json")).encode()
    return [
        _message_target(),
        _bytes_target("envelope", envelopes, Envelope.from_bytes),
        _bytes_target("avro_payload", payloads, decode_event),
        _bytes_target("keyring_file", [keyring], lambda d: Keyring.from_json(d, "fuzz")),
        *_note_targets(home / "notes"),
        *_document_targets(home / "documents"),
    ]


def b64(data: bytes | None) -> str:
    """A finding's input, as the report prints it."""
    return "null" if data is None else base64.b64encode(data).decode()
