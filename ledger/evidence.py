"""Building evidence bundles from the ledger (the format and its verification: ledger.bundle).

The answer is the one ``ledger asof`` / ``ledger timeline`` give. The entries carried are
exactly the candidate facts the point-in-time rules consume, chosen here by the same
narrowing ledger.query applies in SQL (latest deployment, failures after it, latest
mutation per target, latest classification, the grants and revocations of the live
changes' refs), so a verifier re-derives the answer from them and nothing else. The answer
is re-derived from the decoded envelopes before signing and must equal the query's: a
ledger whose decoded columns were edited cannot produce a bundle.

All entries are proven against one checkpoint of the ledger size the question saw: the
stored one of that size when the ledger key signed it (published, so witnessed), else a
fresh one over the stored tree's root at that size, signed with the ledger key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ledger.bundle import (
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
from ledger.chain import ALGORITHM
from ledger.checkpoint import Checkpoint, sign_checkpoint, verifier_key
from ledger.errors import EvidenceError
from ledger.keys import Keyring, Signer
from ledger.merkle import inclusion_proof, root_at
from ledger.pointintime import INSTANCE_LOCAL_KINDS, AsOf, Fact
from ledger.proofs import TrustedKey, b64, ledger_origin, snapshot, stored_entries
from ledger.query import asof, timeline
from ledger.store import LedgerReader

__all__ = ["build_bundle", "candidates"]

_DEPLOYED = ("deployment.succeeded", "deployment.rolled_back")
_APPROVALS = ("approval.granted", "approval.revoked")


def candidates(facts: Iterable[Fact], at: datetime) -> list[Fact]:
    """The facts of one service/environment the rules can depend on at ``at``, in seq order:
    what ledger.query's SQL narrows to, for one service. The latest deployment, failures
    after it, the latest mutation per target unless a later deployment wiped it (instance-
    local kinds), the latest classification, and the grants and revocations of the refs of
    the deployment and those mutations."""
    base = sorted((f for f in facts if f.time <= at), key=lambda f: f.order)
    live = next((f for f in reversed(base) if f.type in _DEPLOYED), None)
    latest: dict[tuple[str, str, str | None], Fact] = {}
    classified = None
    for fact in base:
        if fact.type == "mutation.applied":
            d = fact.data
            latest[(d["target_kind"], d["target"], d.get("instance"))] = fact
        elif fact.type == "service.classified":
            classified = fact
    changes = [
        f
        for f in latest.values()
        if live is None or f.data["target_kind"] not in INSTANCE_LOCAL_KINDS or f.order > live.order
    ]
    chosen = [*changes, *([live] if live is not None else [])]
    refs = {f.data.get("change_ref") for f in chosen} - {None}
    chosen += [
        f for f in base if f.type == "deployment.failed" and (live is None or f.order > live.order)
    ]
    chosen += [f for f in base if f.type in _APPROVALS and f.data["change_ref"] in refs]
    if classified is not None:
        chosen.append(classified)
    return sorted(chosen, key=lambda f: f.seq)


def _data(raw: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    if data.get("valid_until") is not None:
        data["valid_until"] = datetime.fromisoformat(data["valid_until"])
    return data


def _candidate_seqs(
    reader: LedgerReader, service: str, environment: str, at: datetime, ledger_size: int
) -> set[int]:
    rows = reader.con.execute(
        "SELECT seq, event_id, type, time, actor, data FROM entries "
        "WHERE service = $service AND environment = $env AND time <= $at AND seq <= $size",
        {"service": service, "env": environment, "at": at, "size": ledger_size},
    ).fetchall()
    facts = [
        Fact(seq, event_id, kind, time, actor, _data(data))
        for seq, event_id, kind, time, actor, data in rows
    ]
    return {f.seq for f in candidates(facts, at)}


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
        answer = asof(reader, query.service, query.environment, query.at)
        return answer, answer, set()
    state = asof(reader, query.service, query.environment, query.from_)
    window = timeline(reader, query.service, query.environment, query.from_, query.to)
    return TimelineAnswer(state=state, timeline=window), state, {e.seq for e in window}


def build_bundle(
    reader: LedgerReader, query: AsOfQuery | TimelineQuery, keyring: Keyring, signer: Signer
) -> tuple[bytes, BundleReport]:
    """The signed bundle file for ``query``, and its verification under ``signer``'s key
    (every bundle is checked as an auditor would before it is handed out)."""
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
    seqs = _candidate_seqs(reader, query.service, query.environment, start, size) | window
    entries = stored_entries(reader, seqs)
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
    key_ids = sorted({item.verified.key_id for item in opened})
    return Statement(
        type_=STATEMENT_TYPE,
        subject=subjects,
        predicate_type=PREDICATE_TYPE,
        predicate=Predicate(
            query=query,
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
