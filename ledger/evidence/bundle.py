"""Evidence bundles: one self-contained file that proves a ledger answer offline (pure).

A bundle is an in-toto Statement v1 in a DSSE JSON envelope signed by the ledger key. Its
predicate carries the question, the answer, every entry the answer rests on (exact signed
envelope bytes with the chain inputs), an RFC 9162 inclusion proof of each against one
signed checkpoint, that checkpoint, the keyring records of the ledger those entries were
judged under (entries too, proven alike), and the keyring entries of the producers that
signed any entry judged under no record. :func:`verify_bundle` needs nothing else: no
ledger, no Kafka, no network.

Verification checklist (docs/formats.md §9); the first failure raises
:class:`~ledger.errors.EvidenceError` whose ``check`` names it:

1. ``envelope_signature``: the DSSE envelope is signed by the ledger key over
   ``PAE(payloadType, payload)`` (the trusted key if given, else the key the bundle
   carries, reported as untrusted);
2. ``checkpoint``: the checkpoint note is signed by the same key, for the bundle's origin;
3. ``inclusion``: each entry's chain hash, recomputed from its exact bytes, is leaf
   ``seq - 1`` of the checkpoint's tree (its inclusion path leads to the signed root);
4. ``keyring`` / ``producer_signature`` / ``authorization``: each event's envelope
   verifies exactly as the consumer checked it (signature over the payload, and the key's
   authorization for the event's type and source when the ledger witnessed it; an entry
   of format 1: at the time the event claims) under the auditor's own keyring when given;
   else under the keyring record it commits to, which the bundle must carry, proven in the
   log before it; else (format 1, or judged under no record) under the carried keyring,
   which is the ledger operator's statement;
5. ``scope`` / ``answer``: every event belongs to the question (service, environment,
   time; a revocation may claim a later time, the ledger's order placing it), every
   keyring record to an event carried, and the
   answer re-derived from the decoded entries by the point-in-time rules of the version the
   bundle names (1 when it names none), over the checkpoint's ledger size, equals the
   carried answer exactly;
6. ``subjects``: the statement's subjects are the image digests the answer names.

A bundle proves that each carried entry is in the log at the checkpoint and that the answer
follows from them. It does not prove that no other entry exists (an omitted approval, a
later deployment): that needs the whole ledger and ``ledger verify``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from ledger.errors import (
    AuthorizationError,
    CheckpointError,
    EvidenceError,
    LedgerError,
    ProofError,
    RejectedMessage,
)
from ledger.log.chain import ALGORITHM, ALGORITHMS, NO_KEYRING, Origin
from ledger.log.checkpoint import Checkpoint, TrustedKey, open_checkpoint, parse_verifier_key
from ledger.log.merkle import verify_inclusion
from ledger.log.proof import Blob, Hash, StoredEntry, b64
from ledger.rules.answers import TimelineEntry
from ledger.rules.pointintime import RULES_VERSION, AsOf, Fact, reconstruct
from ledger.wire.codec import decode_event
from ledger.wire.envelope import Envelope, pae
from ledger.wire.events import Event, unit_reference
from ledger.wire.keyring import Keyring, Signer, ed25519_verify
from ledger.wire.records import open_keyring_record
from ledger.wire.verify import VerifiedEvent, verify_message

__all__ = [
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "AsOfQuery",
    "BundleReport",
    "EntryProof",
    "LedgerInfo",
    "Predicate",
    "Statement",
    "Subject",
    "TimelineAnswer",
    "TimelineQuery",
    "VerifiedEntry",
    "derive_answer",
    "is_record",
    "open_entries",
    "recorded_keyrings",
    "sign_statement",
    "subjects_of",
    "verify_bundle",
]

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "https://deploy-ledger.dev/evidence/v1"

_IMAGE = re.compile(r"^(?P<name>[^@]+)@sha256:(?P<hex>[0-9a-f]{64})$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, validate_by_name=True, serialize_by_alias=True
    )


# --- the format ------------------------------------------------------------------------------


class AsOfQuery(_Strict):
    """``ledger asof --service S --env E --at T``."""

    kind: Literal["asof"]
    service: str
    environment: str
    at: AwareDatetime


class TimelineQuery(_Strict):
    """``ledger evidence --from T1 --to T2``: the state at T1, then the timeline T1..T2."""

    kind: Literal["timeline"]
    service: str
    environment: str
    from_: AwareDatetime = Field(alias="from")
    to: AwareDatetime


Query = Annotated[AsOfQuery | TimelineQuery, Field(discriminator="kind")]


class TimelineAnswer(_Strict):
    state: AsOf
    timeline: list[TimelineEntry]


class EntryProof(_Strict):
    """Inclusion of one carried entry (same position in ``proofs`` as in ``entries``) in
    the checkpoint's tree, whose size and root the checkpoint note gives."""

    leaf_index: int = Field(ge=0)
    inclusion_path: list[Hash]


class LedgerInfo(_Strict):
    origin: str
    hash_algorithm: str
    verifier_key: str  # the ledger key, as a signed-note verifier key (name+hash+key)


class Predicate(_Strict):
    query: Query
    rules: Literal[1, 2] = Field(default=1, exclude_if=lambda value: value == 1)
    """The version of the point-in-time rules the answer was computed under (a bundle
    written before versions were named has no such key: version 1)."""
    answer: dict[str, Any]
    entries: list[StoredEntry] = Field(min_length=1)
    proofs: list[EntryProof]
    checkpoint: str
    keyring: Keyring
    ledger: LedgerInfo


class DigestSet(_Strict):
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Subject(_Strict):
    name: str
    digest: DigestSet


class Statement(_Strict):
    type_: Literal["https://in-toto.io/Statement/v1"] = Field(alias="_type")
    subject: list[Subject] = Field(min_length=1)
    predicate_type: Literal["https://deploy-ledger.dev/evidence/v1"] = Field(alias="predicateType")
    predicate: Predicate


class _DsseSignature(_Strict):
    keyid: str
    sig: Blob


class _Dsse(_Strict):
    payload_type: str = Field(alias="payloadType")
    payload: Blob
    signatures: list[_DsseSignature] = Field(min_length=1)


@dataclass(frozen=True)
class VerifiedEntry:
    """A carried entry whose producer signature and authorization have been checked."""

    entry: StoredEntry
    verified: VerifiedEvent

    @property
    def event(self) -> Event:
        return self.verified.event


@dataclass(frozen=True)
class BundleReport:
    """What a verified bundle establishes, for printing."""

    query: AsOfQuery | TimelineQuery
    answer: dict[str, Any]
    subjects: list[str]
    entries: list[int]
    keyring_records: list[int]  # the ledger's records of the keyrings events were judged under
    checkpoint: Checkpoint
    key_name: str
    trusted: bool  # False: checked against the key the bundle itself carries
    own_keyring: bool  # False: producer keys from the keyring the bundle carries
    rules: int  # the version of the point-in-time rules the answer was checked under


# --- deriving the answer ---------------------------------------------------------------------


def _fact(entry: StoredEntry, event: Event) -> Fact:
    """The rules' view of an entry: its event data, as decoded from the signed payload."""
    data: dict[str, Any] = event.data.model_dump(mode="json")
    if data.get("artifact") is not None:  # the rules read the unit's reference as its image
        data["image"] = unit_reference(event.data)
    if data.get("valid_until") is not None:
        data["valid_until"] = datetime.fromisoformat(data["valid_until"])
    recorded = _EPOCH + timedelta(microseconds=entry.ingested_at_us)
    return Fact(entry.seq, event.id, event.type, event.time, event.actor, data, recorded)


def _timeline_entry(item: VerifiedEntry) -> TimelineEntry:
    event = item.event
    return TimelineEntry(
        seq=item.entry.seq,
        event_id=event.id,
        type=event.type,
        time=event.time,
        ingested_at=_EPOCH + timedelta(microseconds=item.entry.ingested_at_us),
        actor=event.actor,
        source=event.source,
        key_id=item.verified.key_id,
        data=event.data.model_dump(mode="json"),
        witnessed_at=item.entry.witnessed_at(),
    )


def derive_answer(
    query: AsOfQuery | TimelineQuery,
    entries: Iterable[VerifiedEntry],
    ledger_size: int,
    rules: int = RULES_VERSION,
) -> AsOf | TimelineAnswer:
    """The answer the point-in-time rules (of version ``rules``) give over these entries
    (those of the query's service and environment; the rules keep those that count at the
    instant)."""
    mine = [
        e
        for e in entries
        if e.event.service == query.service and e.event.environment == query.environment
    ]
    facts = [_fact(e.entry, e.event) for e in mine]
    if isinstance(query, AsOfQuery):
        return reconstruct(
            query.service, query.environment, query.at, facts, ledger_size, rules=rules
        )
    state = reconstruct(
        query.service, query.environment, query.from_, facts, ledger_size, rules=rules
    )
    window = sorted(
        (e for e in mine if query.from_ <= e.event.time <= query.to),
        key=lambda e: (e.event.time, e.entry.seq),
    )
    return TimelineAnswer(state=state, timeline=[_timeline_entry(e) for e in window])


def subjects_of(answer: Any) -> list[Subject]:
    """Every unit the answer names (``image``, ``from_image``), one subject each: an image or
    an artifact by its content digest; an AMI, which has none, by the SHA-256 of its
    reference (``ami:ami-…``), its id being its identity (docs/formats.md §9)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("image", "from_image") and isinstance(item, str):
                    found.add(item)
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(answer)
    subjects = []
    for reference in sorted(found):
        match = _IMAGE.match(reference)  # an image, or an artifact with a content digest
        if match is not None:
            subjects.append(Subject(name=reference, digest=DigestSet(sha256=match.group("hex"))))
        elif reference.startswith("ami:"):  # no content digest: the id is the identity
            named = hashlib.sha256(reference.encode()).hexdigest()
            subjects.append(Subject(name=reference, digest=DigestSet(sha256=named)))
    return subjects


def _canonical(value: Any) -> str:
    """Exact comparison of JSON values: 2 and 2.0, or 1 and true, are different answers."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- signing ---------------------------------------------------------------------------------


def sign_statement(statement: Statement, signer: Signer) -> bytes:
    """The bundle file: the statement in a DSSE JSON envelope signed by the ledger key."""
    payload = statement.model_dump_json().encode()
    envelope = {
        "payloadType": PAYLOAD_TYPE,
        "payload": b64(payload),
        "signatures": [
            {"keyid": signer.key_id, "sig": b64(signer.sign(pae(PAYLOAD_TYPE, payload)))}
        ],
    }
    return (json.dumps(envelope, indent=2) + "\n").encode()


# --- verification ----------------------------------------------------------------------------


def _validation(exc: ValidationError, what: str) -> EvidenceError:
    first = exc.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in first["loc"])
    return EvidenceError(
        f"not an evidence bundle: {what}{' ' + loc if loc else ''}: {first['msg']}",
        check="malformed",
    )


def _parse(data: bytes) -> tuple[_Dsse, Statement]:
    try:
        envelope = _Dsse.model_validate_json(data)
    except ValidationError as exc:
        raise _validation(exc, "envelope") from None
    if envelope.payload_type != PAYLOAD_TYPE:
        raise EvidenceError(
            f"payloadType is {envelope.payload_type!r}, not {PAYLOAD_TYPE!r}", check="malformed"
        )
    try:
        statement = Statement.model_validate_json(envelope.payload)
    except ValidationError as exc:
        raise _validation(exc, "statement") from None
    return envelope, statement


def _ledger_key(statement: Statement, trusted: TrustedKey | None) -> TrustedKey:
    if trusted is not None:
        return trusted
    try:
        name, raw = parse_verifier_key(statement.predicate.ledger.verifier_key)
    except CheckpointError as exc:
        raise EvidenceError(f"the carried ledger key: {exc.message}", check="malformed") from None
    return TrustedKey(name, raw)


def _check_envelope(envelope: _Dsse, key: TrustedKey) -> None:
    """Step 1."""
    message = pae(envelope.payload_type, envelope.payload)
    mine = [s for s in envelope.signatures if s.keyid == key.name]
    if not mine:
        signers = ", ".join(repr(s.keyid) for s in envelope.signatures)
        raise EvidenceError(
            f"the bundle is not signed by ledger key {key.name!r} (signed by {signers})",
            check="envelope_signature",
        )
    if not any(ed25519_verify(key.public_raw, message, s.sig) for s in mine):
        raise EvidenceError(
            f"the bundle's signature by {key.name!r} does not verify: the statement was "
            "altered, or signed by another key of that name",
            check="envelope_signature",
        )


def _check_checkpoint(predicate: Predicate, key: TrustedKey) -> Checkpoint:
    """Step 2."""
    try:
        return open_checkpoint(
            predicate.checkpoint, key.name, key.public_raw, predicate.ledger.origin
        )
    except CheckpointError as exc:
        raise EvidenceError(
            f"checkpoint ({exc.check}): {exc.message}", check="checkpoint"
        ) from None


def _check_inclusion(predicate: Predicate, checkpoint: Checkpoint) -> None:
    """Step 3."""
    algorithm = predicate.ledger.hash_algorithm
    if algorithm not in ALGORITHMS:
        raise EvidenceError(
            f"hash algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}",
            check="inclusion",
        )
    if algorithm != ALGORITHM and any(e.witnessed is not None for e in predicate.entries):
        raise EvidenceError(
            f"an entry of format 2 under hash algorithm {algorithm!r}", check="inclusion"
        )
    entries, proofs = predicate.entries, predicate.proofs
    if len(proofs) != len(entries):
        raise EvidenceError(
            f"{len(entries)} entries but {len(proofs)} inclusion proofs", check="inclusion"
        )
    seqs = [e.seq for e in entries]
    if seqs != sorted(set(seqs)):
        raise EvidenceError("entries are not in increasing seq order, each once", check="malformed")
    for entry, proof in zip(entries, proofs, strict=True):
        if proof.leaf_index != entry.seq - 1:
            raise EvidenceError(
                f"entry {entry.seq}: its proof is for leaf {proof.leaf_index}, not {entry.seq - 1}",
                check="inclusion",
                seq=entry.seq,
            )
        try:
            verify_inclusion(
                entry.leaf_hash(),
                proof.leaf_index,
                checkpoint.size,
                proof.inclusion_path,
                checkpoint.root,
            )
        except ProofError as exc:
            raise EvidenceError(
                f"entry {entry.seq} is not proven in the checkpoint of size {checkpoint.size} "
                f"({exc.check}): {exc.message}",
                check="inclusion",
                seq=entry.seq,
            ) from None


def _judged_at(entry: StoredEntry) -> datetime:
    """When the entry's authority is judged: when the ledger witnessed it; an entry of
    format 1 (before witnessed times) at the time its event claims."""
    witnessed = entry.witnessed_at()
    if witnessed is not None:
        return witnessed
    try:
        return decode_event(Envelope.from_bytes(entry.envelope).payload).time
    except RejectedMessage:
        return _EPOCH  # undecodable: verify_message names what is wrong with it


def is_record(entry: StoredEntry) -> bool:
    """Whether the entry is one the ledger wrote itself (a keyring record), not an event."""
    return entry.witnessed is not None and entry.witnessed.origin == int(Origin.LEDGER)


def recorded_keyrings(entries: Iterable[StoredEntry]) -> dict[bytes, tuple[int, Keyring]]:
    """Step 4a: the keyring records among ``entries``, one per keyring: digest -> (seq,
    keyring)."""
    found: dict[bytes, tuple[int, Keyring]] = {}
    for entry in filter(is_record, entries):
        try:
            keyring = open_keyring_record(Envelope.from_bytes(entry.envelope)).keyring
        except LedgerError as exc:
            raise EvidenceError(
                f"entry {entry.seq}: not a keyring record the ledger wrote: {exc.message}",
                check="keyring",
                seq=entry.seq,
            ) from None
        digest = keyring.digest()
        if digest in found:
            raise EvidenceError(
                f"entries {found[digest][0]} and {entry.seq} record the same keyring",
                check="malformed",
                seq=entry.seq,
            )
        found[digest] = (entry.seq, keyring)
    return found


def _judging(
    entry: StoredEntry, recorded: dict[bytes, tuple[int, Keyring]], carried: Keyring
) -> Keyring:
    """Step 4b: the keyring an event was judged under: the record it commits to, else (it
    names none) the carried one."""
    if entry.witnessed is None or entry.witnessed.keyring == NO_KEYRING:
        return carried
    digest = entry.witnessed.keyring
    seq, keyring = recorded.get(digest, (None, None))
    if seq is None or keyring is None:
        raise EvidenceError(
            f"entry {entry.seq} was judged under keyring {digest.hex()[:16]}…, whose record "
            "the bundle does not carry",
            check="keyring",
            seq=entry.seq,
        )
    if seq > entry.seq:
        raise EvidenceError(
            f"entry {entry.seq} was judged under the keyring recorded at entry {seq}, after it",
            check="keyring",
            seq=entry.seq,
        )
    return keyring


def open_entries(
    entries: Iterable[StoredEntry], keyring: Keyring, own: Keyring | None = None
) -> list[VerifiedEntry]:
    """Step 4: each event's envelope verified as the consumer verified it, under ``own``
    when given, else the keyring it was judged under (:func:`_judging`)."""
    entries = list(entries)
    recorded = recorded_keyrings(entries)
    opened = []
    for entry in entries:
        if is_record(entry):
            continue
        judging = own if own is not None else _judging(entry, recorded, keyring)
        try:
            verified = verify_message(entry.envelope, judging, _judged_at(entry))
        except RejectedMessage as exc:  # an AuthorizationError is one too
            check = "authorization" if isinstance(exc, AuthorizationError) else "producer_signature"
            raise EvidenceError(
                f"entry {entry.seq} ({exc.reason}): {exc.message}", check=check, seq=entry.seq
            ) from None
        opened.append(VerifiedEntry(entry, verified))
    return opened


def _check_scope(
    query: AsOfQuery | TimelineQuery,
    entries: list[VerifiedEntry],
    records: dict[bytes, tuple[int, Keyring]],
    rules: int,
) -> None:
    """Step 5a: nothing carried from another service, environment or later time (but a
    revocation, which version 2 places by the ledger's order), and no keyring record that
    no carried event was judged under."""
    committed = {e.entry.witnessed.keyring for e in entries if e.entry.witnessed is not None}
    for digest, (seq, _keyring) in records.items():
        if digest not in committed:
            raise EvidenceError(
                f"entry {seq} is a keyring record no carried event was judged under",
                check="scope",
                seq=seq,
            )
    until = query.at if isinstance(query, AsOfQuery) else query.to
    for item in entries:
        event = item.event
        placed_by_the_ledger = rules >= 2 and event.type == "approval.revoked"
        if (event.service, event.environment) != (query.service, query.environment):
            raise EvidenceError(
                f"entry {item.entry.seq} is about {event.service}/{event.environment}, "
                f"not {query.service}/{query.environment}",
                check="scope",
                seq=item.entry.seq,
            )
        if event.time > until and not placed_by_the_ledger:
            raise EvidenceError(
                f"entry {item.entry.seq} is dated {event.time.isoformat()}, after the "
                f"question's {until.isoformat()}",
                check="scope",
                seq=item.entry.seq,
            )


def verify_bundle(
    data: bytes, trusted: TrustedKey | None = None, keyring: Keyring | None = None
) -> BundleReport:
    """Run the checklist over a bundle file's bytes; raises :class:`EvidenceError`.

    ``trusted`` pins the ledger key, ``keyring`` the producers' keys (else the keyrings
    the bundle carries are used, which whoever holds the ledger key could have written)."""
    envelope, statement = _parse(data)
    predicate = statement.predicate
    key = _ledger_key(statement, trusted)
    # 1.
    _check_envelope(envelope, key)
    # 2.
    checkpoint = _check_checkpoint(predicate, key)
    # 3.
    _check_inclusion(predicate, checkpoint)
    # 4.
    entries = open_entries(predicate.entries, predicate.keyring, own=keyring)
    # 5.
    records = recorded_keyrings(predicate.entries)
    _check_scope(predicate.query, entries, records, predicate.rules)
    derived = derive_answer(predicate.query, entries, checkpoint.size, predicate.rules).model_dump(
        mode="json"
    )
    if _canonical(derived) != _canonical(predicate.answer):
        differing = sorted(
            k
            for k in derived.keys() | predicate.answer.keys()
            if _canonical(derived.get(k)) != _canonical(predicate.answer.get(k))
        )
        raise EvidenceError(
            "the carried answer is not what the rules give over the carried entries at "
            f"ledger size {checkpoint.size} (differs in: {', '.join(differing)})",
            check="answer",
        )
    # 6.
    expected = subjects_of(predicate.answer)
    if statement.subject != expected:
        names = ", ".join(s.name for s in expected) or "none"
        raise EvidenceError(f"the subjects are not the answer's images ({names})", check="subjects")
    return BundleReport(
        query=predicate.query,
        answer=predicate.answer,
        subjects=[s.name for s in statement.subject],
        entries=[e.entry.seq for e in entries],
        keyring_records=sorted(seq for seq, _ in records.values()),
        checkpoint=checkpoint,
        key_name=key.name,
        trusted=trusted is not None,
        own_keyring=keyring is not None,
        rules=predicate.rules,
    )
