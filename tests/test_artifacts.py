"""Deployable units beyond OCI images (schema v3): an AMI, a Lambda version, an ECS task
definition, a generic unit. Each stands in every answer by its reference, so the
point-in-time rules, search, check, gate and evidence bundles understand them; every event
written before v3 decodes as it did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from consumer_helpers import ledger_cli
from ledger_builders import write_ledger
from test_check import END, T0, at, build, classify, deploy, digest, event, policy, signers

from ledger.errors import InvalidEventError
from ledger.evidence.build import build_bundle
from ledger.evidence.bundle import AsOfQuery, verify_bundle
from ledger.log.checkpoint import TrustedKey
from ledger.rules.questions import search_terms
from ledger.store.check import check
from ledger.store.gate import ProposedChange, gate
from ledger.store.query import asof, search
from ledger.store.reader import LedgerReader
from ledger.transport.producer import seal
from ledger.wire.codec import decode_event, encode_event
from ledger.wire.events import Artifact, Event, event_from_mapping
from ledger.wire.keyring import Signer

AMI = {"kind": "ami", "id": "ami-0abc1234def567890"}
AMI_REF = "ami:ami-0abc1234def567890"
LAMBDA = {"kind": "lambda", "id": "payments-api:7", "digest": digest("7")}
WEB = f"registry.example/web@sha256:{'1' * 64}"
SIDE = f"registry.example/envoy@sha256:{'2' * 64}"
ECS: dict[str, Any] = {"kind": "ecs-task-definition", "id": "checkout:12",
       "containers": [{"name": "web", "image": WEB}, {"name": "envoy", "image": SIDE}]}  # fmt: skip


def unit(kind: str, service: str, when: Any, artifact: dict[str, Any], env: str = "prod",
         **data: Any) -> Event:  # fmt: skip
    return event(kind, service, when, env, artifact=artifact, **data)


def test_each_kind_has_a_reference_that_names_its_identity() -> None:
    refs = {kind: Artifact.model_validate(spec).reference for kind, spec in
            (("ami", AMI), ("lambda", LAMBDA), ("ecs", ECS))}  # fmt: skip
    assert refs["ami"] == AMI_REF
    assert refs["lambda"] == f"lambda:payments-api:7@{digest('7')}"
    assert refs["ecs"].startswith("ecs-task-definition:checkout:12@sha256:")
    # the task definition's identity is its containers', whatever order they are listed in
    swapped = ECS | {"containers": list(reversed(ECS["containers"]))}
    assert Artifact.model_validate(swapped).reference == refs["ecs"]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"kind": "ami", "id": "ami-xyz"}, "AMI id"),
        ({"kind": "lambda", "id": "f:1"}, "needs the digest"),
        (AMI | {"digest": digest("1")}, "takes no digest"),
        ({"kind": "ecs-task-definition", "id": "c:1"}, "needs one"),
        (ECS | {"containers": ECS["containers"] * 2}, "share a name"),
        ({"kind": "generic", "id": "a@b", "digest": digest("1")}, "id"),
        ({"kind": "oci", "id": "x", "digest": digest("1")}, "kind"),
    ],
)
def test_an_artifact_that_does_not_fit_its_kind_is_refused(spec: dict[str, Any], says: str) -> None:
    raw = {"type": "deployment.succeeded", "time": "2026-11-20T10:00:00Z", "source": "ci/x",
           "actor": "a", "service": "s", "environment": "prod",
           "data": {"artifact": spec}}  # fmt: skip
    with pytest.raises(InvalidEventError) as refused:
        event_from_mapping(raw)
    assert says in refused.value.message and "artifact" in (refused.value.field or "")


def test_a_deployment_names_an_image_or_an_artifact_never_both() -> None:
    for data in ({}, {"image": WEB, "artifact": AMI}):
        with pytest.raises(InvalidEventError, match="artifact"):
            event_from_mapping({"type": "deployment.succeeded", "time": "2026-11-20T10:00:00Z",
                                "source": "ci/x", "actor": "a", "service": "s",
                                "environment": "prod", "data": data})  # fmt: skip


def test_an_artifact_deployment_round_trips_and_an_image_one_keeps_its_form() -> None:
    made = unit("deployment.succeeded", "web", at(1), ECS, change_ref="CHG-1")
    assert decode_event(encode_event(made)) == made
    plain = deploy("web", at(1), WEB)
    assert "artifact" not in plain.to_json_dict()["data"]  # its JSON form as before v3


HISTORY = [
    policy(["staging"]),
    classify("fleet", "stateless", "high", "immutable"),
    unit("deployment.succeeded", "fleet", at(-3), AMI, env="staging"),
    event("approval.granted", "fleet", at(-2), actor="carol", change_ref="CHG-1",
          approver="carol", artifact=AMI),
    unit("deployment.succeeded", "fleet", at(1), AMI, change_ref="CHG-1"),  # promoted
    unit("deployment.succeeded", "fleet", at(5), LAMBDA | {"id": "fleet:9"}, change_ref="CHG-2"),
]  # fmt: skip


def test_the_rules_check_and_search_read_an_artifact_as_they_read_an_image(
    tmp_path: Path,
) -> None:
    db = build(tmp_path / "ledger.duckdb", HISTORY)
    with LedgerReader(db) as reader:
        live = asof(reader, "fleet", "prod", at(2)).deployment
        report = check(reader, "prod", T0, END)
        hits = search(reader, search_terms(image=AMI_REF))
        gated = gate(reader, ProposedChange("fleet", "prod", "alice", "CHG-1", image=AMI_REF))
    assert live is not None and (live.image, live.approved) == (AMI_REF, True)
    found = {(f.rule, f.entries[0].seq) for f in report.findings if f.rule != "late_arrival"}
    # the AMI was seen in staging first and approved; the Lambda version was neither
    assert found == {("promotion_skipped", 6), ("unapproved_change", 6)}
    assert [h.seq for h in hits] == [3, 4, 5]  # run in staging, approved, run in prod
    assert gated.allowed, gated.reasons


def test_an_evidence_bundle_re_derives_an_artifact_answer(tmp_path: Path) -> None:
    ci, cab, ring = signers()
    ledger_key = Signer.generate("ledger")
    values = [seal(e, cab if e.type.startswith("approval.") else ci) for e in HISTORY]
    db = tmp_path / "ledger.duckdb"
    write_ledger(db, values, ring, ledger_key, [], record_keyring=True)
    with LedgerReader(db) as reader:
        query = AsOfQuery(kind="asof", service="fleet", environment="prod", at=at(2))
        data, _ = build_bundle(reader, query, ring, ledger_key)
    report = verify_bundle(data, TrustedKey("ledger", ledger_key.public_raw))
    assert report.answer["deployment"]["image"] == AMI_REF


def test_emit_takes_an_artifact_as_answers_show_it(tmp_path: Path) -> None:
    """`--dry-run`-free: `emit` refuses before sending, so a bad spec is exit 2 with no
    broker; a good one is checked against a keyring and refused only for want of a broker."""
    base = ("emit", "deployment", "--service", "fleet", "--env", "prod", "--key", "missing.key")
    both = ledger_cli(*base, "--image", WEB, "--artifact", AMI_REF)
    assert both.returncode == 2 and "--image, or --artifact" in both.stderr
    bad = ledger_cli(*base, "--artifact", "ami")
    assert bad.returncode == 2 and "KIND:ID" in bad.stderr
    loose = ledger_cli(*base, "--image", WEB, "--container", f"web={WEB}")
    assert loose.returncode == 2 and "--container belongs" in loose.stderr
