"""Evidence bundles under attack, each test named after the attack: `verify_bundle` (and
`ledger verify-bundle`) must refuse every edit and name the check that caught it.

The ledger is the demo's three weeks of history written by the consumer's own path with
signed checkpoints (no Kafka). Attacks on what is inside the statement re-sign the outer
DSSE envelope with the real ledger key: they model an insider who holds the ledger key but
not the producers' keys, and show that the inner checks still catch the edit.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from attack_helpers import Statement, resigned, signed_statement, statement_of
from consumer_helpers import ledger_cli
from helpers import DIGEST_A, IMAGE_A, IMAGE_B, make_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_builders import DEMO_END, entry_hashes, signers, write_demo_ledger, write_ledger

from ledger.demo import build_history
from ledger.errors import EvidenceError, ForeignLedgerKeyError
from ledger.evidence.build import build_bundle
from ledger.evidence.bundle import (
    AsOfQuery,
    TimelineQuery,
    derive_answer,
    open_entries,
    verify_bundle,
)
from ledger.log.checkpoint import (
    Checkpoint,
    TrustedKey,
    open_checkpoint,
    sign_checkpoint,
    verifier_key,
)
from ledger.log.merkle import LeafHashes, inclusion_proof, leaf_hash, root, root_at
from ledger.log.proof import StoredEntry
from ledger.rules.pointintime import Fact, reconstruct
from ledger.store.prove import stored_entries
from ledger.store.query import asof, candidates, timeline
from ledger.store.reader import LedgerReader
from ledger.transport.producer import seal
from ledger.wire.envelope import Envelope
from ledger.wire.keyring import Keyring, Signer

MOMENT = (DEMO_END - timedelta(days=2)).replace(hour=14, minute=3)  # the demo's question
PAYMENTS = AsOfQuery(kind="asof", service="payments", environment="prod", at=MOMENT)

SERVICES = sorted({event.service for _, event in build_history(DEMO_END).events
                   if event.type != "policy.recorded"})  # fmt: skip
"""Every service of the demo history."""


@pytest.fixture(scope="module")
def ledger_key() -> Signer:
    return Signer.generate("ledger")


@pytest.fixture(scope="module")
def trusted(ledger_key: Signer) -> TrustedKey:
    return TrustedKey("ledger", ledger_key.public_raw)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, ledger_key: Signer) -> tuple[Path, Keyring]:
    path = tmp_path_factory.mktemp("evidence") / "ledger.duckdb"
    return path, write_demo_ledger(path, ledger_key)


@pytest.fixture
def reader(demo: tuple[Path, Keyring]) -> Iterator[LedgerReader]:
    with LedgerReader(demo[0]) as opened:
        yield opened


@pytest.fixture(scope="module")
def bundle(demo: tuple[Path, Keyring], ledger_key: Signer) -> bytes:
    """What was live for payments in prod at the demo's instant, as a signed bundle."""
    with LedgerReader(demo[0]) as opened:
        return build_bundle(opened, PAYMENTS, demo[1], ledger_key)[0]


def _caught(data: bytes, trusted: TrustedKey | None) -> EvidenceError:
    with pytest.raises(EvidenceError) as caught:
        verify_bundle(data, trusted)
    return caught.value


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _entry(statement: Statement, seq: int) -> dict[str, Any]:
    entry: dict[str, Any] = next(e for e in statement["predicate"]["entries"] if e["seq"] == seq)
    return entry


def _tampered_envelope(envelope_b64: str, old: bytes, new: bytes) -> str:
    """The same envelope and producer signature over a payload with ``old`` replaced."""
    envelope = Envelope.from_bytes(base64.b64decode(envelope_b64))
    assert old in envelope.payload and len(old) == len(new)
    payload = envelope.payload.replace(old, new)
    return _b64(Envelope(envelope.payload_type, payload, envelope.signatures).to_bytes())


def _deployment_seq(statement: Statement) -> int:
    seq: int = statement["predicate"]["answer"]["deployment"]["seq"]
    return seq


# --- untampered --------------------------------------------------------------------------------


def test_untampered_bundle_verifies_and_rederives_the_same_answer(
    bundle: bytes, reader: LedgerReader, trusted: TrustedKey
) -> None:
    report = verify_bundle(bundle, trusted)
    expected = asof(reader, "payments", "prod", MOMENT)
    assert report.answer == expected.model_dump(mode="json")
    assert report.trusted and report.key_name == "ledger"
    assert report.checkpoint.size == reader.size() == expected.evidence.ledger_size
    assert set(expected.evidence.entries) <= set(report.entries)
    assert expected.deployment is not None
    assert report.subjects == [expected.deployment.image]
    statement = statement_of(bundle)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://deploy-ledger.dev/evidence/v1"
    assert statement["subject"][0]["digest"]["sha256"] == report.subjects[0].split(":")[-1]
    # Only the producers that signed the carried entries are in the carried keyring.
    assert sorted(statement["predicate"]["keyring"]["keys"]) == [
        "change-board", "ci-github", "config-mgmt", "ops-break-glass",
    ]  # fmt: skip
    # Without a trusted key the carried ledger key is used, and said to be untrusted.
    assert verify_bundle(bundle, None).trusted is False


def test_every_service_instant_and_timeline_round_trips(
    demo: tuple[Path, Keyring], reader: LedgerReader, ledger_key: Signer, trusted: TrustedKey
) -> None:
    built = 0
    for service in SERVICES:
        for env in ("prod", "staging"):
            for days in (15, 7, 2, 0):
                at = DEMO_END - timedelta(days=days)
                expected = asof(reader, service, env, at)
                if expected.deployment is None:
                    continue
                query = AsOfQuery(kind="asof", service=service, environment=env, at=at)
                data, _ = build_bundle(reader, query, demo[1], ledger_key)
                assert verify_bundle(data, trusted).answer == expected.model_dump(mode="json")
                span = TimelineQuery(kind="timeline", service=service, environment=env,
                                     from_=at - timedelta(days=5), to=at)  # fmt: skip
                data, _ = build_bundle(reader, span, demo[1], ledger_key)
                answer = verify_bundle(data, trusted).answer
                assert answer["timeline"] == [
                    e.model_dump(mode="json")
                    for e in timeline(reader, service, env, span.from_, span.to)
                ]  # fmt: skip
                assert answer["state"] == asof(reader, service, env, span.from_).model_dump(
                    mode="json"
                )
                built += 2
    assert built >= 30


def test_bundle_carries_exactly_the_candidate_facts(tmp_path: Path, ledger_key: Signer) -> None:
    """More than the entries the answer names, fewer than the service's history: a
    self-approval beside a valid grant, a failure with no instance updated, a removed config,
    a started deployment, another service's entry, and a file patched (with its grant) before
    the deployment replaced the instances."""
    ci, cab, ring = signers()
    t0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
    story = [
        (ci, make_event("service.classified", time=t0)),                                  # 1
        (cab, make_event("approval.granted", time=t0 + timedelta(minutes=1))),            # 2
        (cab, make_event("approval.granted", time=t0 + timedelta(minutes=2),
                         approver="alice")),                                              # 3
        (ci, make_event("deployment.started", time=t0 + timedelta(minutes=3))),           # 4
        (ci, make_event("deployment.succeeded", time=t0 + timedelta(minutes=4),
                        change_ref="CHG-1")),                                             # 5
        (ci, make_event("deployment.failed", time=t0 + timedelta(minutes=5),
                        instances={"total": 4, "updated": 0})),                           # 6
        (ci, make_event("mutation.applied", time=t0 + timedelta(minutes=6))),             # 7
        (ci, make_event("mutation.applied", time=t0 + timedelta(minutes=7), hash=None)),  # 8
        (ci, make_event("deployment.succeeded", time=t0 + timedelta(minutes=8),
                        service="billing", image=IMAGE_B)),                               # 9
        (cab, make_event("approval.granted", time=t0, change_ref="CHG-9", image=None,
                         hash=DIGEST_A)),                                                 # 10
        (ci, make_event("mutation.applied", time=t0 + timedelta(minutes=2), target_kind="file",
                        target="/etc/motd", change_ref="CHG-9")),                         # 11
    ]  # fmt: skip
    path = tmp_path / "ledger.duckdb"
    write_ledger(path, [seal(e, s) for s, e in story], ring, ledger_key, [4])
    at = t0 + timedelta(hours=1)
    with LedgerReader(path) as reader:
        expected = asof(reader, "checkout", "prod", at)
        data, report = build_bundle(
            reader, AsOfQuery(kind="asof", service="checkout", environment="prod", at=at),
            ring, ledger_key,
        )  # fmt: skip
    assert expected.evidence.entries == [1, 2, 5]
    assert report.entries == [1, 2, 3, 5, 6, 8]
    assert report.subjects == [IMAGE_A]
    assert verify_bundle(data, TrustedKey("ledger", ledger_key.public_raw)).entries == [
        1, 2, 3, 5, 6, 8,
    ]  # fmt: skip


def test_candidates_are_enough_for_the_rules(reader: LedgerReader) -> None:
    """The narrowing never changes an answer: the rules over the candidates equal the rules
    over every fact of the service (the demo history, each service, every day)."""
    rows = reader.con.execute(
        "SELECT seq, event_id, type, time, actor, service, environment, data, ingested_at "
        "FROM entries"
    ).fetchall()
    for service in SERVICES:
        for env in ("prod", "staging"):
            facts = [
                Fact(seq, event_id, kind, time, actor, json.loads(data), recorded)
                for seq, event_id, kind, time, actor, svc, e, data, recorded in rows
                if (svc, e) == (service, env)
            ]  # fmt: skip
            for day in range(22):
                at = DEMO_END - timedelta(days=day)
                narrowed = candidates(reader, service, env, at)
                assert reconstruct(service, env, at, narrowed, 1) == reconstruct(
                    service, env, at, facts, 1
                )
                assert {f.seq for f in narrowed} >= set(
                    reconstruct(service, env, at, facts, 1).evidence.entries
                )


def test_stored_checkpoint_is_used_and_a_fresh_one_signed_when_the_ledger_grew(
    demo: tuple[Path, Keyring],
    bundle: bytes,
    ledger_key: Signer,
    tmp_path: Path,
) -> None:
    path, ring = demo
    with LedgerReader(path) as stored:
        assert statement_of(bundle)["predicate"]["checkpoint"] == stored.checkpoints()[-1][2]
    grown = tmp_path / "grown.duckdb"
    shutil.copy(path, grown)
    ci = Signer.generate("ci-main")
    ring = ring.model_copy(deep=True)
    ring.trust(ci.key_id, ci.public_raw, types=["deployment.*"], sources=["ci/*"])
    later = make_event(service="payments", environment="prod", time=DEMO_END, image=IMAGE_B)
    write_ledger(grown, [seal(later, ci)], ring, ledger_key, [], checkpoint=False)
    with LedgerReader(grown) as reader:
        data, report = build_bundle(reader, PAYMENTS, ring, ledger_key)
        grown_size = len(build_history(DEMO_END).events) + 1
        assert report.checkpoint.size == reader.size() == grown_size
        assert report.checkpoint.root == root_at(reader.tree(), grown_size)
        assert max(size for size, _, _, _ in reader.checkpoints()) == grown_size - 1  # stored
    note = statement_of(data)["predicate"]["checkpoint"]
    assert open_checkpoint(note, "ledger", ledger_key.public_raw).size == grown_size
    # Another key does not sign for this ledger at all: only the pinned one does.
    other = Signer.generate("ledger-2")
    with LedgerReader(path) as reader, pytest.raises(ForeignLedgerKeyError):
        build_bundle(reader, PAYMENTS, demo[1], other)


def test_answer_without_an_image_is_refused(
    reader: LedgerReader, demo: tuple[Path, Keyring], ledger_key: Signer
) -> None:
    query = AsOfQuery(kind="asof", service="payments", environment="staging", at=DEMO_END)
    with pytest.raises(EvidenceError) as caught:
        build_bundle(reader, query, demo[1], ledger_key)
    assert caught.value.check == "subjects"


def test_edited_ledger_columns_cannot_produce_a_bundle(
    demo: tuple[Path, Keyring], bundle: bytes, ledger_key: Signer, tmp_path: Path
) -> None:
    """The answer is re-derived from the signed envelopes, not from the queried columns."""
    copied = tmp_path / "edited.duckdb"
    shutil.copy(demo[0], copied)
    con = duckdb.connect(str(copied))
    try:
        con.execute("UPDATE entries SET actor = 'mallory' WHERE seq = ?",
                    [_deployment_seq(statement_of(bundle))])  # fmt: skip
    finally:
        con.close()
    with LedgerReader(copied) as reader, pytest.raises(EvidenceError) as caught:
        build_bundle(reader, PAYMENTS, demo[1], ledger_key)
    assert caught.value.check == "answer"


# --- attacks -----------------------------------------------------------------------------------


def test_tampered_entry(bundle: bytes, ledger_key: Signer, trusted: TrustedKey) -> None:
    """The deployed image swapped inside the stored envelope: the leaf no longer matches."""
    seq = _deployment_seq(statement_of(bundle))
    image = statement_of(bundle)["predicate"]["answer"]["deployment"]["image"].encode()

    def edit(statement: Statement) -> None:
        entry = _entry(statement, seq)
        entry["envelope"] = _tampered_envelope(entry["envelope"], image[-64:], b"c" * 64)

    error = _caught(resigned(bundle, edit, ledger_key), trusted)
    assert (error.check, error.seq) == ("inclusion", seq)
    assert "root_mismatch" in error.message


def test_tampered_entry_in_a_forged_tree(
    bundle: bytes, demo: tuple[Path, Keyring], ledger_key: Signer, trusted: TrustedKey
) -> None:
    """The insider also rebuilds the tree around the edited entry and signs a checkpoint of
    it with the ledger key: proofs hold, but the producer's signature does not."""
    statement = statement_of(bundle)
    seq = _deployment_seq(statement)
    image = statement["predicate"]["answer"]["deployment"]["image"].encode()
    entry = _entry(statement, seq)
    entry["envelope"] = _tampered_envelope(entry["envelope"], image[-64:], b"c" * 64)
    _in_forged_tree(statement, demo[0], [entry], ledger_key)
    error = _caught(signed_statement(statement, ledger_key), trusted)
    assert (error.check, error.seq) == ("producer_signature", seq)
    assert "bad_signature" in error.message


def _in_forged_tree(
    statement: Statement, db: Path, edited: list[dict[str, Any]], key: Signer
) -> None:
    """Rebuild the tree around edited entries, prove every carried entry in it and sign a
    checkpoint of it with the ledger key: what an insider holding that key can do."""
    leaves = [leaf_hash(h) for h in entry_hashes(db)]
    for entry in edited:
        leaves[entry["seq"] - 1] = StoredEntry.model_validate(entry).leaf_hash()
    size = len(leaves)
    predicate = statement["predicate"]
    predicate["proofs"] = [
        {"leaf_index": e["seq"] - 1,
         "inclusion_path": [_b64(h) for h in inclusion_proof(LeafHashes(leaves), e["seq"] - 1,
                                                               size)]}
        for e in predicate["entries"]
    ]  # fmt: skip
    origin = predicate["ledger"]["origin"]
    predicate["checkpoint"] = sign_checkpoint(Checkpoint(origin, size, root(leaves)), key)


def test_forged_producer_key_in_the_carried_keyring(
    bundle: bytes,
    demo: tuple[Path, Keyring],
    ledger_key: Signer,
    trusted: TrustedKey,
    tmp_path: Path,
) -> None:
    """The insider also swaps the CI key in the carried keyring for one of their own and
    re-signs an edited deployment with it: every check under the carried keyring passes;
    the auditor's own keyring (--keyring) catches it."""
    insider = Signer.generate("ci-github")
    statement = statement_of(bundle)
    predicate = statement["predicate"]
    seq = _deployment_seq(statement)
    image = predicate["answer"]["deployment"]["image"]
    forged = image[:-64] + "c" * 64
    resigned = []  # every entry the CI key signed, re-signed by the insider's key
    for entry in predicate["entries"]:
        original = Envelope.from_bytes(base64.b64decode(entry["envelope"]))
        if original.signatures[0].keyid != "ci-github":
            continue
        payload = original.payload.replace(image.encode(), forged.encode())
        entry["envelope"] = _b64(Envelope.sign(payload, insider).to_bytes())
        resigned.append(entry)
    assert seq in [e["seq"] for e in resigned]
    _in_forged_tree(statement, demo[0], resigned, ledger_key)
    predicate["keyring"]["keys"]["ci-github"]["public_key"] = _b64(insider.public_raw)
    # The answer the rules give over the forged entries (the real approval, signed by the
    # change board for the real image, no longer matches: the insider cannot re-sign it).
    carried_keyring = Keyring.model_validate_json(json.dumps(predicate["keyring"]))
    opened = open_entries(
        [StoredEntry.model_validate(e) for e in predicate["entries"]], carried_keyring
    )
    size = len(entry_hashes(demo[0]))
    predicate["answer"] = derive_answer(PAYMENTS, opened, size).model_dump(mode="json")
    assert predicate["answer"]["deployment"]["image"] == forged
    statement["subject"] = [
        s if s["name"] != image else {**s, "name": forged, "digest": {"sha256": "c" * 64}}
        for s in statement["subject"]
    ]
    data = signed_statement(statement, ledger_key)

    assert verify_bundle(data, trusted).answer["deployment"]["image"] == forged
    error = _caught_with(data, trusted, demo[1])
    assert (error.check, error.seq) == ("producer_signature", resigned[0]["seq"])
    assert "bad_signature" in error.message

    bundle_file, keyring_file = tmp_path / "bundle.json", tmp_path / "keyring.json"
    bundle_file.write_bytes(data)
    demo[1].save(keyring_file)
    pub = tmp_path / "ledger.pub"
    pub.write_bytes(ledger_key.public_pem())
    carried = ledger_cli("verify-bundle", str(bundle_file), "--trusted-key", str(pub))
    assert carried.returncode == 0 and "keyring the bundle carries" in carried.stderr
    own = ledger_cli("verify-bundle", str(bundle_file), "--trusted-key", str(pub),
                     "--keyring", str(keyring_file))  # fmt: skip
    assert own.returncode == 1 and "producer_signature" in own.stderr


def _caught_with(data: bytes, trusted: TrustedKey, keyring: Keyring) -> EvidenceError:
    with pytest.raises(EvidenceError) as caught:
        verify_bundle(data, trusted, keyring)
    return caught.value


def test_tampered_proof(bundle: bytes, ledger_key: Signer, trusted: TrustedKey) -> None:
    def edit(statement: Statement) -> None:
        path = statement["predicate"]["proofs"][2]["inclusion_path"]
        path[-1] = _b64(bytes(32))

    error = _caught(resigned(bundle, edit, ledger_key), trusted)
    assert error.check == "inclusion"
    assert error.seq == statement_of(bundle)["predicate"]["entries"][2]["seq"]


def test_tampered_proof_for_another_leaf(
    bundle: bytes, ledger_key: Signer, trusted: TrustedKey
) -> None:
    def edit(statement: Statement) -> None:
        proofs = statement["predicate"]["proofs"]
        proofs[0], proofs[1] = proofs[1], proofs[0]

    assert _caught(resigned(bundle, edit, ledger_key), trusted).check == "inclusion"


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda a: a["deployment"].update(approved=False), id="approval-flipped"),
        pytest.param(lambda a: a["deployment"].update(actor="erin"), id="actor-changed"),
        pytest.param(lambda a: a["mutations"].pop(), id="mutation-hidden"),
        pytest.param(lambda a: a["evidence"].update(ledger_size=116), id="size-changed"),
        pytest.param(lambda a: a["evidence"].update(ledger_size=117.0), id="number-retyped"),
        pytest.param(lambda a: a.update(partial={"image": IMAGE_B, "updated": 1, "total": 2,
                                                 "event_id": "x", "seq": 1}),
                     id="partial-invented"),
    ],
)  # fmt: skip
def test_tampered_answer(
    bundle: bytes, ledger_key: Signer, trusted: TrustedKey, edit: Callable[[Any], object]
) -> None:
    data = resigned(bundle, lambda s: edit(s["predicate"]["answer"]), ledger_key)
    assert _caught(data, trusted).check == "answer"


def test_tampered_answer_image_with_matching_subject(
    bundle: bytes, ledger_key: Signer, trusted: TrustedKey
) -> None:
    """The insider claims another image was live and makes the subjects agree."""

    def edit(statement: Statement) -> None:
        statement["predicate"]["answer"]["deployment"]["image"] = IMAGE_A
        statement["subject"] = [{"name": IMAGE_A, "digest": {"sha256": IMAGE_A[-64:]}}]

    error = _caught(resigned(bundle, edit, ledger_key), trusted)
    assert error.check == "answer"
    assert "deployment" in error.message


def test_dropped_entry_changes_the_rederived_answer(
    bundle: bytes, ledger_key: Signer, trusted: TrustedKey
) -> None:
    """Leaving out the grant that approved the deployment: the rules now say `missing`."""
    grant = statement_of(bundle)["predicate"]["answer"]["deployment"]["approval"]["seq"]

    def edit(statement: Statement) -> None:
        predicate = statement["predicate"]
        index = next(i for i, e in enumerate(predicate["entries"]) if e["seq"] == grant)
        del predicate["entries"][index], predicate["proofs"][index]

    assert _caught(resigned(bundle, edit, ledger_key), trusted).check == "answer"


def test_padded_with_another_services_entry(
    bundle: bytes, reader: LedgerReader, ledger_key: Signer, trusted: TrustedKey
) -> None:
    """A genuine, provable entry about another service slipped in."""
    row = reader.one(
        "SELECT seq FROM entries "
        "WHERE service = 'checkout' AND type = 'deployment.succeeded' ORDER BY seq LIMIT 1"
    )
    assert row is not None
    seq = row[0]
    (extra,) = stored_entries(reader, [seq])
    path = inclusion_proof(reader.tree(), seq - 1, reader.size())

    def edit(statement: Statement) -> None:
        predicate = statement["predicate"]
        index = sum(1 for e in predicate["entries"] if e["seq"] < seq)
        predicate["entries"].insert(index, json.loads(extra.model_dump_json()))
        predicate["proofs"].insert(
            index, {"leaf_index": seq - 1, "inclusion_path": [_b64(h) for h in path]}
        )

    error = _caught(resigned(bundle, edit, ledger_key), trusted)
    assert (error.check, error.seq) == ("scope", seq)


def test_tampered_key_keyring_entry_swapped(
    bundle: bytes, ledger_key: Signer, trusted: TrustedKey
) -> None:
    """The change board's public key replaced by the insider's own."""
    insider = Signer.generate("change-board")

    def edit(statement: Statement) -> None:
        keys = statement["predicate"]["keyring"]["keys"]
        keys["change-board"]["public_key"] = _b64(insider.public_raw)

    error = _caught(resigned(bundle, edit, ledger_key), trusted)
    assert error.check == "producer_signature"
    assert "bad_signature" in error.message and "change-board" in error.message


def test_tampered_key_keyring_entry_removed(
    bundle: bytes, ledger_key: Signer, trusted: TrustedKey
) -> None:
    error = _caught(
        resigned(bundle, lambda s: s["predicate"]["keyring"]["keys"].pop("config-mgmt"),
                  ledger_key),
        trusted,
    )  # fmt: skip
    assert error.check == "producer_signature" and "unknown_key" in error.message


def test_tampered_key_keyring_entry_revoked_before_the_event(
    bundle: bytes, ledger_key: Signer, trusted: TrustedKey
) -> None:
    def edit(statement: Statement) -> None:
        keys = statement["predicate"]["keyring"]["keys"]
        keys["ci-github"]["revoked_at"] = "2020-01-01T00:00:00Z"

    error = _caught(resigned(bundle, edit, ledger_key), trusted)
    assert error.check == "authorization" and "key_revoked" in error.message


def test_tampered_checkpoint(bundle: bytes, ledger_key: Signer, trusted: TrustedKey) -> None:
    """The note's size edited without the ledger key's signature."""

    def edit(statement: Statement) -> None:
        origin, size, rest = statement["predicate"]["checkpoint"].split("\n", 2)
        statement["predicate"]["checkpoint"] = f"{origin}\n{int(size) - 1}\n{rest}"

    error = _caught(resigned(bundle, edit, ledger_key), trusted)
    assert error.check == "checkpoint" and "bad_signature" in error.message


def test_tampered_checkpoint_resigned_over_another_root(
    bundle: bytes, ledger_key: Signer, trusted: TrustedKey
) -> None:
    def edit(statement: Statement) -> None:
        origin = statement["predicate"]["ledger"]["origin"]
        size = int(statement["predicate"]["checkpoint"].split("\n")[1])
        fake = sign_checkpoint(Checkpoint(origin, size, bytes(32)), ledger_key)
        statement["predicate"]["checkpoint"] = fake

    assert _caught(resigned(bundle, edit, ledger_key), trusted).check == "inclusion"


def test_tampered_checkpoint_of_another_log(
    bundle: bytes, ledger_key: Signer, trusted: TrustedKey
) -> None:
    def edit(statement: Statement) -> None:
        statement["predicate"]["ledger"]["origin"] = "deploy-ledger/another"

    error = _caught(resigned(bundle, edit, ledger_key), trusted)
    assert error.check == "checkpoint" and "origin_mismatch" in error.message


def test_bundle_resigned_by_another_key(bundle: bytes, trusted: TrustedKey) -> None:
    """Someone else's key named `ledger` re-signs everything and carries its own public key:
    it verifies only against the key it carries, and fails against the trusted one."""
    forger = Signer.generate("ledger")

    def edit(statement: Statement) -> None:
        predicate = statement["predicate"]
        opened = open_checkpoint(predicate["checkpoint"], "ledger", trusted.public_raw)
        predicate["checkpoint"] = sign_checkpoint(opened, forger)
        predicate["ledger"]["verifier_key"] = verifier_key("ledger", forger.public_raw)

    forged = resigned(bundle, edit, forger)
    report = verify_bundle(forged, None)
    assert report.trusted is False
    assert _caught(forged, trusted).check == "envelope_signature"


@pytest.mark.parametrize("position", [12, 400, 2000, -40])
def test_any_edit_of_the_signed_payload(bundle: bytes, trusted: TrustedKey, position: int) -> None:
    envelope = json.loads(bundle)
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[position] ^= 0x01
    envelope["payload"] = _b64(bytes(payload))
    assert _caught(json.dumps(envelope).encode(), trusted).check in (
        "envelope_signature", "malformed",
    )  # fmt: skip


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_flipped_bit_of_the_bundle_file(
    bundle: bytes, trusted: TrustedKey, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(bundle) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    flipped = bytearray(bundle)
    flipped[position] ^= 1 << bit
    with pytest.raises(EvidenceError):
        verify_bundle(bytes(flipped), trusted)


def test_a_file_that_is_no_bundle_is_named_so(trusted: TrustedKey) -> None:
    error = _caught(b"deploy-ledger/x\n1\nAAAA\n", trusted)  # a witness file, say
    assert error.check == "malformed"
    assert error.message.startswith("not an evidence bundle: envelope: Invalid JSON")


def test_outer_envelope_edits(bundle: bytes, trusted: TrustedKey) -> None:
    envelope = json.loads(bundle)
    signature = copy.deepcopy(envelope)
    sig = bytearray(base64.b64decode(signature["signatures"][0]["sig"]))
    sig[0] ^= 0x01
    signature["signatures"][0]["sig"] = _b64(bytes(sig))
    assert _caught(json.dumps(signature).encode(), trusted).check == "envelope_signature"
    renamed = copy.deepcopy(envelope)
    renamed["signatures"][0]["keyid"] = "other"
    assert _caught(json.dumps(renamed).encode(), trusted).check == "envelope_signature"
    retyped = copy.deepcopy(envelope)
    retyped["payloadType"] = "application/json"
    assert _caught(json.dumps(retyped).encode(), trusted).check == "malformed"
    padded = copy.deepcopy(envelope)
    padded["payload"] = " " + padded["payload"]
    assert _caught(json.dumps(padded).encode(), trusted).check == "malformed"


def test_unknown_field_in_the_statement(
    bundle: bytes, ledger_key: Signer, trusted: TrustedKey
) -> None:
    data = resigned(bundle, lambda s: s["predicate"].update(note="trust me"), ledger_key)
    assert _caught(data, trusted).check == "malformed"


def test_tampered_subjects(bundle: bytes, ledger_key: Signer, trusted: TrustedKey) -> None:
    def edit(statement: Statement) -> None:
        statement["subject"].append({"name": IMAGE_B, "digest": {"sha256": IMAGE_B[-64:]}})

    assert _caught(resigned(bundle, edit, ledger_key), trusted).check == "subjects"


# --- the command line ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_files(
    tmp_path_factory: pytest.TempPathFactory, demo: tuple[Path, Keyring], ledger_key: Signer
) -> tuple[Path, Path, Path]:
    directory = tmp_path_factory.mktemp("keys")
    ledger_key.save(directory / "ledger.key")
    (directory / "ledger.pub").write_bytes(ledger_key.public_pem())
    demo[1].save(directory / "keyring.json")
    return directory / "ledger.key", directory / "ledger.pub", directory / "keyring.json"


def test_cli_evidence_and_verify_bundle(
    demo: tuple[Path, Keyring],
    key_files: tuple[Path, Path, Path],
    tmp_path: Path,
    reader: LedgerReader,
) -> None:
    key, pub, keyring = key_files
    out = tmp_path / "bundle.json"
    built = ledger_cli("evidence", "--db", str(demo[0]), "--service", "payments", "--env",
                       "prod", "--at", MOMENT.isoformat(), "--keyring", str(keyring),
                       "--out", str(out), LEDGER_LEDGER_KEY=str(key))  # fmt: skip
    assert built.returncode == 0, built.stderr
    checked = ledger_cli("verify-bundle", str(out), "--trusted-key", str(pub), "--json")
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] and report["trusted"] and report["key"] == "ledger"
    assert report["answer"] == asof(reader, "payments", "prod", MOMENT).model_dump(mode="json")
    untrusted = ledger_cli("verify-bundle", str(out))
    assert untrusted.returncode == 4 and "nothing vouches for" in untrusted.stderr
    assert "NOT VERIFIED" in untrusted.stderr and "OK" not in untrusted.stderr
    # Read by a person, it prints what the bundle says, as `ledger asof` would.
    answer = report["answer"]
    assert f"deployment: {answer['deployment']['image']}" in untrusted.stdout
    assert f"of a ledger of {answer['evidence']['ledger_size']}" in untrusted.stdout

    envelope = json.loads(out.read_bytes())
    envelope["signatures"][0]["sig"] = _b64(bytes(64))
    out.write_text(json.dumps(envelope))
    failed = ledger_cli("verify-bundle", str(out), "--trusted-key", str(pub))
    assert failed.returncode == 1
    assert "FAILED (envelope_signature)" in failed.stderr


def test_cli_timeline_bundle_and_usage_errors(
    demo: tuple[Path, Keyring], key_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    key, pub, keyring = key_files
    common = ["evidence", "--db", str(demo[0]), "--service", "search", "--env", "prod",
              "--keyring", str(keyring), "--ledger-key", str(key)]  # fmt: skip
    built = ledger_cli(*common, "--from", (DEMO_END - timedelta(days=7)).isoformat(),
                       "--to", DEMO_END.isoformat())  # fmt: skip
    assert built.returncode == 0, built.stderr
    path = tmp_path / "timeline.json"
    path.write_text(built.stdout)
    checked = ledger_cli("verify-bundle", str(path), "--json", LEDGER_TRUSTED_KEY=str(pub))
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["query"]["kind"] == "timeline"
    shown = ledger_cli("verify-bundle", str(path), LEDGER_TRUSTED_KEY=str(pub))
    assert shown.returncode == 0, shown.stderr
    assert f"search in prod at {report['answer']['state']['at']}" in shown.stdout
    for entry in report["answer"]["timeline"]:  # the timeline, a row per entry
        assert re.search(
            rf"^{entry['time'][:10]} \S+ +{entry['seq']} +{entry['type']} ",
            shown.stdout,
            flags=re.M,
        ), entry
    both = ledger_cli(*common, "--at", "now", "--from", "1 week ago")
    assert both.returncode == 2 and "either --at" in both.stderr
    assert ledger_cli("verify-bundle", str(tmp_path / "missing.json")).returncode == 2
