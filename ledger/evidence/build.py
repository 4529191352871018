"""Building evidence bundles from the ledger (their format and check: ledger.evidence.bundle).

The answer is the one ``ledger asof`` / ``ledger timeline`` give. The entries carried are
exactly the candidate facts the point-in-time rules consume (``ledger.store.query.candidates``,
the narrowing ``asof`` itself uses: latest deployment, failures after it, latest mutation
per target unless a later deployment wiped it, latest classification, the grants and
revocations of the live changes' refs), so a verifier re-derives the answer from them and
nothing else. The answer
is re-derived from the decoded envelopes before signing and must equal the query's: a
ledger whose decoded columns were edited cannot produce a bundle.

All entries are proven against one checkpoint of the ledger size the question saw: the
stored one of that size when the ledger key signed it (published, so witnessed), else a
fresh one over the stored tree's root at that size, signed with the ledger key.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ledger.errors import ConfigurationError, EvidenceError
from ledger.evidence.bundle import (
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    AsOfQuery,
    BundleReport,
    EntryProof,
    LedgerInfo,
    Predicate,
    Statement,
    TimelineAnswer,
    TimelineQuery,
    derive_answer,
    open_entries,
    sign_statement,
    subjects_of,
    verify_bundle,
)
from ledger.log.chain import ALGORITHM, NO_KEYRING
from ledger.log.checkpoint import Checkpoint, TrustedKey, sign_checkpoint, verifier_key
from ledger.log.merkle import inclusion_proof, root_at
from ledger.log.proof import b64
from ledger.rules.pointintime import RULES_VERSION, AsOf
from ledger.rules.questions import check_window
from ledger.store.identity import check_ledger_key
from ledger.store.prove import keyring_records, ledger_origin, snapshot, stored_entries
from ledger.store.query import asof, candidates, timeline
from ledger.store.reader import LedgerReader
from ledger.wire.keyring import Keyring, Signer

__all__ = ["build_bundle", "evidence_query"]


def evidence_query(
    service: str,
    environment: str,
    at: datetime | None,
    start: datetime | None,
    end: datetime | None,
) -> AsOfQuery | TimelineQuery:
    """The question a bundle answers: what was live ``at`` an instant, or the state at
    ``start`` and the timeline up to ``end`` (default: now). Same for the CLI and the API
    (whose parameters are named as the options, without dashes)."""
    if (at is None) == (start is None):
        raise ConfigurationError(
            "give either --at (what was live) or --from, optionally with --to (a timeline)"
        )
    if at is not None:
        if end is not None:
            raise ConfigurationError("--to goes with --from, not with --at")
        return AsOfQuery(kind="asof", service=service, environment=environment, at=at)
    assert start is not None
    query = TimelineQuery(
        kind="timeline", service=service, environment=environment, from_=start,
        to=end or datetime.now(UTC),
    )  # fmt: skip
    check_window(query.from_, query.to)
    return query


def _checkpoint(reader: LedgerReader, origin: str, size: int, signer: Signer) -> str:
    """The ledger key's checkpoint of ``size``: the stored one, or a fresh one."""
    root = root_at(reader.tree(), size)
    vkey = verifier_key(signer.key_id, signer.public_raw)
    for stored_size, stored_root, note, stored_vkey in reversed(reader.checkpoints()):
        if stored_size == size and stored_vkey == vkey:
            if stored_root != root:
                raise EvidenceError(
                    f"the stored checkpoint of size {size} signs root {b64(stored_root)}, but "
                    f"the stored tree has {b64(root)}; run `ledger verify`",
                    check="checkpoint",
                )
            return note
    return sign_checkpoint(Checkpoint(origin, size, root), signer)


def _answer(
    reader: LedgerReader, query: AsOfQuery | TimelineQuery
) -> tuple[AsOf | TimelineAnswer, AsOf, set[int]]:
    """The query's own answer, its state at the first instant, and the timeline's seqs."""
    if isinstance(query, AsOfQuery):
        answer = asof(reader, query.service, query.environment, query.at, marks=False)
        return answer, answer, set()
    state = asof(reader, query.service, query.environment, query.from_, marks=False)
    window = timeline(reader, query.service, query.environment, query.from_, query.to, marks=False)
    return TimelineAnswer(state=state, timeline=window), state, {e.seq for e in window}


def build_bundle(
    reader: LedgerReader, query: AsOfQuery | TimelineQuery, keyring: Keyring, signer: Signer
) -> tuple[bytes, BundleReport]:
    """The signed bundle file for ``query``, and its verification under ``signer``'s key
    (every bundle is checked as an auditor would before it is handed out). Only the
    ledger's pinned key signs for it."""
    pinned = reader.ledger_key()
    if pinned is None:
        raise ConfigurationError(
            "no ledger key has signed for this ledger yet: start the consumer once with "
            "--ledger-key (its checkpoints pin the key that signs bundles)"
        )
    check_ledger_key(pinned, signer)
    with snapshot(reader):
        statement = _statement(reader, query, keyring, signer)
    data = sign_statement(statement, signer)
    return data, verify_bundle(data, TrustedKey(signer.key_id, signer.public_raw))


def _statement(
    reader: LedgerReader, query: AsOfQuery | TimelineQuery, keyring: Keyring, signer: Signer
) -> Statement:
    origin = ledger_origin(reader)
    expected, state, window = _answer(reader, query)
    size = state.evidence.ledger_size
    start = query.at if isinstance(query, AsOfQuery) else query.from_
    facts = candidates(reader, query.service, query.environment, start)
    seqs = {f.seq for f in facts} | window
    events = stored_entries(reader, seqs)
    entries = stored_entries(reader, seqs | keyring_records(reader, events))
    opened = open_entries(entries, keyring)
    answer = derive_answer(query, opened, size)
    if answer != expected:
        raise EvidenceError(
            "the answer re-derived from the stored envelopes differs from the query's: the "
            "decoded columns disagree with the signed bytes; run `ledger verify`",
            check="answer",
        )
    answer_json = answer.model_dump(mode="json")
    subjects = subjects_of(answer_json)
    if not subjects:
        raise EvidenceError(
            "the answer names no image, and an in-toto statement needs a subject",
            check="subjects",
        )
    tree = reader.tree()
    # The producers' keys the bundle carries: those of events judged under no keyring record.
    key_ids = sorted({
        item.verified.key_id for item in opened
        if item.entry.witnessed is None or item.entry.witnessed.keyring == NO_KEYRING
    })  # fmt: skip
    return Statement(
        type_=STATEMENT_TYPE,
        subject=subjects,
        predicate_type=PREDICATE_TYPE,
        predicate=Predicate(
            query=query,
            rules=RULES_VERSION,
            answer=answer_json,
            entries=entries,
            proofs=[
                EntryProof(
                    leaf_index=e.seq - 1, inclusion_path=inclusion_proof(tree, e.seq - 1, size)
                )
                for e in entries
            ],
            checkpoint=_checkpoint(reader, origin, size, signer),
            keyring=Keyring(keys={k: keyring.keys[k] for k in key_ids}),
            ledger=LedgerInfo(
                origin=origin,
                hash_algorithm=ALGORITHM,
                verifier_key=verifier_key(signer.key_id, signer.public_raw),
            ),
        ),
    )
