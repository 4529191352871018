"""Fuzzing every parser of untrusted bytes (tests/fuzz_targets.py), at a small size: no
input ends in anything but a domain error, and the message fuzzer reaches every reason
the consumer quarantines for. bench/fuzz.py runs the same targets a million times each.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from fuzz_targets import Target, build_targets
from helpers import make_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_builders import signers, write_ledger

from ledger.errors import (
    AuthorizationError,
    ConflictingDuplicateError,
    ProofError,
    RejectedMessage,
    SignatureError,
)
from ledger.log.checkpoint import TrustedKey
from ledger.log.proof import verify_proof
from ledger.store.prove import build_inclusion
from ledger.store.reader import LedgerReader
from ledger.transport.producer import seal
from ledger.wire.keyring import Signer

NAMES = ["kafka_value", "envelope", "avro_payload", "keyring_file", "checkpoint_note",
         "witness_file", "proof", "evidence_bundle"]  # fmt: skip


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Target]:
    return {t.name: t for t in build_targets(tmp_path_factory.mktemp("fuzz"))}


def test_every_parser_has_a_target(targets: dict[str, Target]) -> None:
    assert sorted(targets) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_no_mutated_input_crashes_the_parser(targets: dict[str, Target], name: str) -> None:
    target = targets[name]

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(st.randoms(use_true_random=False))
    def parse(rng: random.Random) -> None:
        target.run(target.generate(rng))  # anything but a domain error fails the test

    parse()


def _reasons(cls: type[RejectedMessage]) -> set[str]:
    return {sub.reason for sub in cls.__subclasses__()} | {
        r for sub in cls.__subclasses__() for r in _reasons(sub)
    }


def test_the_message_fuzzer_reaches_every_quarantine_reason(targets: dict[str, Target]) -> None:
    """Past the signature too: a fuzzer that stops at the envelope tests nothing behind it."""
    target, rng = targets["kafka_value"], random.Random(20261206)
    reached = {target.run(target.generate(rng)) for _ in range(3000)}
    consumer_only = {ConflictingDuplicateError.reason}  # needs the ledger: test_consume_kafka
    roots = {SignatureError.reason, AuthorizationError.reason}  # never raised themselves
    assert _reasons(RejectedMessage) - consumer_only - roots <= reached
    assert "ok" in reached


def _inclusion_document(tmp_path: Path) -> tuple[dict[str, object], TrustedKey]:
    ci, _, ring = signers()
    ledger_key = Signer.generate("ledger")
    db = tmp_path / "ledger.duckdb"
    write_ledger(db, [seal(make_event(), ci)], ring, ledger_key, [1])
    with LedgerReader(db) as reader:
        document = json.loads(build_inclusion(reader, 1).model_dump_json())
    return document, TrustedKey("ledger", ledger_key.public_raw)


@pytest.mark.parametrize(
    ("where", "value"),
    [(("entry", "ingested_at_us"), 2**64), (("entry", "witnessed", "partition"), 2**40),
     (("entry", "witnessed", "at_us"), 2**62), (("entry", "seq"), 2**64)],
)  # fmt: skip
def test_a_proof_with_an_integer_past_its_width_is_malformed(
    tmp_path: Path, where: tuple[str, ...], value: int
) -> None:
    """Found by the fuzzer: such a proof ended in OverflowError while hashing its entry."""
    document, trusted = _inclusion_document(tmp_path)
    node: dict[str, object] = document
    for key in where[:-1]:
        node = node[key]  # type: ignore[assignment]
    node[where[-1]] = value
    with pytest.raises(ProofError) as caught:
        verify_proof(document, trusted)
    assert caught.value.check == "malformed"
