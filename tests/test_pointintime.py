"""The point-in-time rules (issue 4, "Semantics (fixed)") over hand-built facts.

Every expected answer is computed by hand from the rules. Sequence numbers are often
deliberately out of time order: they model late or out-of-order arrival, and the rules
place facts by valid ``time`` (ties by sequence number), never by arrival.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.rules.pointintime import (
    Approval,
    AsOf,
    Classification,
    Deployment,
    Fact,
    LiveMutation,
    Partial,
    reconstruct,
)

T0 = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
IMAGE_A = "registry.example/checkout@sha256:" + "a" * 64
IMAGE_B = "registry.example/checkout@sha256:" + "b" * 64
IMAGE_C = "registry.example/checkout@sha256:" + "c" * 64
IMAGE_D = "registry.example/checkout@sha256:" + "d" * 64
H1 = "sha256:" + "1" * 64
H2 = "sha256:" + "2" * 64
H3 = "sha256:" + "3" * 64
SERVICE, ENV = "checkout", "prod"
AT = 1000  # default instant asked about, in minutes after T0


def t(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def fact(
    seq: int, type_: str, minute: int, actor: str, data: dict[str, Any], event_id: str | None = None
) -> Fact:
    return Fact(
        seq=seq,
        event_id=event_id or f"e{seq}",
        type=type_,
        time=t(minute),
        actor=actor,
        data=data,
        recorded=t(minute),
    )


def deployed(
    seq: int,
    minute: int,
    image: str,
    *,
    change_ref: str | None = None,
    actor: str = "ci",
    type_: str = "deployment.succeeded",
) -> Fact:
    data: dict[str, Any] = {"image": image, "change_ref": change_ref}
    if type_ == "deployment.rolled_back":
        data["from_image"] = None
    return fact(seq, type_, minute, actor, data)


def rolled_back(seq: int, minute: int, image: str, **kw: Any) -> Fact:
    return deployed(seq, minute, image, type_="deployment.rolled_back", **kw)


def failed(
    seq: int,
    minute: int,
    image: str,
    updated: int | None = None,
    total: int | None = None,
    *,
    actor: str = "ci",
) -> Fact:
    instances = None if total is None else {"updated": updated, "total": total}
    return fact(
        seq,
        "deployment.failed",
        minute,
        actor,
        {"image": image, "change_ref": None, "reason": "boom", "instances": instances},
    )


def mutation(
    seq: int,
    minute: int,
    kind: str,
    target: str,
    hash_: str | None,
    *,
    instance: str | None = None,
    change_ref: str | None = None,
    actor: str = "ops",
    tool: str = "kubectl",
    method: str = "manual",
) -> Fact:
    return fact(
        seq,
        "mutation.applied",
        minute,
        actor,
        {
            "target_kind": kind,
            "target": target,
            "hash": hash_,
            "previous_hash": None,
            "tool": tool,
            "method": method,
            "instance": instance,
            "change_ref": change_ref,
        },
    )


def grant(
    seq: int,
    minute: int,
    ref: str,
    approver: str = "alice",
    *,
    image: str | None = None,
    hash_: str | None = None,
    valid_until: int | None = None,
) -> Fact:
    return fact(
        seq,
        "approval.granted",
        minute,
        approver,
        {
            "change_ref": ref,
            "approver": approver,
            "image": image,
            "hash": hash_,
            "valid_until": None if valid_until is None else t(valid_until),
        },
    )


def revoke(seq: int, minute: int, ref: str) -> Fact:
    return fact(seq, "approval.revoked", minute, "alice", {"change_ref": ref, "reason": "no"})


def classified(seq: int, minute: int, state: str, criticality: str, model: str) -> Fact:
    return fact(
        seq,
        "service.classified",
        minute,
        "platform",
        {"state": state, "criticality": criticality, "model": model},
    )


def asof(facts: list[Fact], at: int = AT, ledger_size: int = 100, **kw: Any) -> AsOf:
    return reconstruct(SERVICE, ENV, t(at), facts, ledger_size, **kw)


def live_keys(answer: AsOf) -> set[tuple[str, str, str | None, str]]:
    return {(m.target_kind, m.target, m.instance, m.hash) for m in answer.mutations}


def unapproved(
    seq: int,
    minute: int,
    image: str,
    reason: str,
    *,
    actor: str = "ci",
    change_ref: str | None = "CR-1",
    type_: str = "deployment.succeeded",
) -> Deployment:
    return Deployment(
        image=image,
        time=t(minute),
        event_id=f"e{seq}",
        seq=seq,
        actor=actor,
        change_ref=change_ref,
        approved=False,
        unapproved_reason=reason,
        approval=None,
    )


# --- 1. deployment -----------------------------------------------------------------------


def test_latest_succeeded_is_live_with_every_field() -> None:
    answer = asof([deployed(1, 10, IMAGE_A), deployed(2, 20, IMAGE_B)])
    assert answer.deployment == Deployment(
        image=IMAGE_B,
        time=t(20),
        event_id="e2",
        seq=2,
        actor="ci",
        change_ref=None,
        approved=False,
        unapproved_reason="missing",
        approval=None,
    )
    assert (answer.service, answer.environment, answer.at) == (SERVICE, ENV, t(AT))


def test_late_arrival_is_placed_by_valid_time_not_by_seq() -> None:
    # The 10:20 deployment arrived first (seq 1); the older 10:10 one arrived late (seq 2).
    answer = asof([deployed(2, 10, IMAGE_A), deployed(1, 20, IMAGE_B)])
    assert answer.deployment is not None
    assert (answer.deployment.image, answer.deployment.seq) == (IMAGE_B, 1)


def test_rollback_is_live_and_a_later_success_replaces_it() -> None:
    history = [deployed(1, 10, IMAGE_B), rolled_back(2, 20, IMAGE_A, actor="sre")]
    answer = asof(history)
    assert answer.deployment == unapproved(2, 20, IMAGE_A, "missing", actor="sre", change_ref=None)
    # A success dated after the rollback, arriving late with a lower seq... (seq 0)
    answer = asof([*history, deployed(0, 30, IMAGE_C)])
    assert answer.deployment is not None
    assert (answer.deployment.image, answer.deployment.seq) == (IMAGE_C, 0)


@pytest.mark.parametrize(("seq_a", "seq_b", "expected"), [(5, 3, IMAGE_A), (3, 5, IMAGE_B)])
def test_ties_on_time_are_broken_by_seq(seq_a: int, seq_b: int, expected: str) -> None:
    answer = asof([deployed(seq_a, 10, IMAGE_A), deployed(seq_b, 10, IMAGE_B)])
    assert answer.deployment is not None
    assert answer.deployment.image == expected
    assert answer.deployment.seq == max(seq_a, seq_b)


def test_tie_between_success_and_rollback_is_broken_by_seq() -> None:
    answer = asof([rolled_back(7, 10, IMAGE_A), deployed(4, 10, IMAGE_B)])
    assert answer.deployment is not None
    assert (answer.deployment.image, answer.deployment.seq) == (IMAGE_A, 7)


def test_no_deployment_is_null() -> None:
    answer = asof([])
    assert answer.deployment is None
    assert answer.partial is None
    assert answer.mutations == []
    assert answer.classification is None
    assert answer.evidence.entries == []


def test_started_and_failed_are_not_live() -> None:
    only_attempts = [
        deployed(1, 10, IMAGE_A, type_="deployment.started"),
        failed(2, 11, IMAGE_A),
    ]
    assert asof(only_attempts).deployment is None
    answer = asof(
        [
            deployed(1, 10, IMAGE_A),
            deployed(2, 20, IMAGE_B, type_="deployment.started"),
            failed(3, 21, IMAGE_B),
        ]
    )
    assert answer.deployment is not None
    assert (answer.deployment.image, answer.deployment.seq) == (IMAGE_A, 1)
    assert answer.partial is None


def test_events_after_the_instant_are_ignored() -> None:
    history = [deployed(1, 10, IMAGE_A), deployed(2, 30, IMAGE_B)]
    before = asof(history, at=25)
    assert before.deployment is not None
    assert before.deployment.image == IMAGE_A
    assert before.evidence.entries == [1]
    assert asof(history, at=9).deployment is None
    exactly = asof(history, at=30)  # time <= T: the instant itself counts
    assert exactly.deployment is not None
    assert exactly.deployment.image == IMAGE_B


def test_known_at_and_ledger_size_are_passed_through() -> None:
    answer = asof([deployed(1, 10, IMAGE_A)], ledger_size=77, known_at=t(500))
    assert answer.known_at == t(500)
    assert answer.evidence.ledger_size == 77
    assert asof([]).known_at is None


def test_duplicate_input_facts_do_not_change_the_answer() -> None:
    history = [
        deployed(1, 10, IMAGE_A, change_ref="CR-1"),
        grant(2, 5, "CR-1"),
        mutation(3, 12, "config", "db.url", H1),
        failed(4, 13, IMAGE_B, 1, 3),
        classified(5, 1, "stateless", "high", "immutable"),
    ]
    assert asof(history + history) == asof(history)


# --- 2. partial --------------------------------------------------------------------------


def test_failed_after_live_with_some_updated_is_partial() -> None:
    answer = asof([deployed(1, 10, IMAGE_A), failed(2, 20, IMAGE_B, 2, 5)])
    assert answer.partial == Partial(image=IMAGE_B, updated=2, total=5, event_id="e2", seq=2)
    assert answer.deployment is not None
    assert answer.deployment.image == IMAGE_A  # the live deployment is still the last success
    assert answer.evidence.entries == [1, 2]


@pytest.mark.parametrize(("updated", "total"), [(0, 5), (5, 5), (None, None)])
def test_failed_with_none_or_all_updated_is_not_partial(
    updated: int | None, total: int | None
) -> None:
    answer = asof([deployed(1, 10, IMAGE_A), failed(2, 20, IMAGE_B, updated, total)])
    assert answer.partial is None
    assert answer.evidence.entries == [1]


@pytest.mark.parametrize("ender", [deployed, rolled_back])
def test_later_success_or_rollback_ends_the_partial(ender: Any) -> None:
    history = [deployed(1, 10, IMAGE_A), failed(2, 20, IMAGE_B, 2, 5), ender(3, 30, IMAGE_C)]
    answer = asof(history)
    assert answer.partial is None
    assert answer.deployment is not None
    assert answer.deployment.image == IMAGE_C
    # ...but not before it happened.
    assert asof(history, at=25).partial == Partial(
        image=IMAGE_B, updated=2, total=5, event_id="e2", seq=2
    )


def test_failed_before_the_live_deployment_is_ignored_even_if_it_arrived_later() -> None:
    answer = asof([deployed(1, 10, IMAGE_A), failed(2, 5, IMAGE_B, 2, 5)])
    assert answer.partial is None
    assert answer.evidence.entries == [1]


def test_failed_tied_with_the_live_deployment_is_placed_by_seq() -> None:
    assert asof([deployed(5, 10, IMAGE_A), failed(4, 10, IMAGE_B, 1, 3)]).partial is None
    assert asof([deployed(5, 10, IMAGE_A), failed(6, 10, IMAGE_B, 1, 3)]).partial == Partial(
        image=IMAGE_B, updated=1, total=3, event_id="e6", seq=6
    )


def test_latest_of_several_partial_failures_is_reported() -> None:
    answer = asof(
        [deployed(1, 10, IMAGE_A), failed(3, 30, IMAGE_C, 3, 4), failed(2, 20, IMAGE_B, 1, 4)]
    )
    assert answer.partial == Partial(image=IMAGE_C, updated=3, total=4, event_id="e3", seq=3)


# --- 3. mutations ------------------------------------------------------------------------


def test_latest_mutation_per_target_with_every_field() -> None:
    answer = asof(
        [
            mutation(1, 10, "config", "db.url", H1),
            mutation(
                2,
                20,
                "config",
                "db.url",
                H2,
                actor="bob",
                tool="ansible",
                method="pipeline",
                change_ref="CR-7",
            ),
        ]
    )
    assert answer.mutations == [
        LiveMutation(
            target_kind="config",
            target="db.url",
            instance=None,
            hash=H2,
            time=t(20),
            event_id="e2",
            seq=2,
            actor="bob",
            tool="ansible",
            method="pipeline",
            change_ref="CR-7",
            approved=False,
            unapproved_reason="missing",
            approval=None,
        )
    ]
    assert answer.evidence.entries == [2]


def test_latest_mutation_is_by_valid_time_not_arrival() -> None:
    answer = asof(
        [mutation(1, 20, "config", "db.url", H2), mutation(2, 10, "config", "db.url", H1)]
    )
    assert [(m.hash, m.seq) for m in answer.mutations] == [(H2, 1)]


@pytest.mark.parametrize("kind", ["file", "package", "patch"])
@pytest.mark.parametrize("wiper", [deployed, rolled_back])
def test_instance_local_mutations_are_wiped_by_a_later_deployment(kind: str, wiper: Any) -> None:
    history = [
        deployed(1, 5, IMAGE_A),
        mutation(2, 10, kind, "/etc/app.conf", H1, instance="i-1"),
        wiper(3, 20, IMAGE_B),
    ]
    assert asof(history).mutations == []
    assert asof(history).evidence.entries == [3]
    # Before the wiping deployment the mutation was live.
    assert live_keys(asof(history, at=15)) == {(kind, "/etc/app.conf", "i-1", H1)}


@pytest.mark.parametrize("kind", ["config", "flag", "secret", "infra"])
def test_external_mutations_persist_across_deployments(kind: str) -> None:
    answer = asof(
        [
            deployed(1, 5, IMAGE_A),
            mutation(2, 10, kind, "db.url", H1, instance="i-1"),
            deployed(3, 20, IMAGE_B),
            rolled_back(4, 30, IMAGE_A),
        ]
    )
    assert live_keys(answer) == {(kind, "db.url", "i-1", H1)}
    assert answer.evidence.entries == [2, 4]


def test_instance_local_mutation_after_the_deployment_is_live() -> None:
    answer = asof(
        [deployed(1, 10, IMAGE_A), mutation(2, 20, "package", "openssl", H1, instance="i-1")]
    )
    assert live_keys(answer) == {("package", "openssl", "i-1", H1)}


def test_null_hash_removes_the_target() -> None:
    history = [mutation(1, 10, "secret", "api-key", H1), mutation(2, 20, "secret", "api-key", None)]
    answer = asof(history)
    assert answer.mutations == []
    assert answer.evidence.entries == []
    # Set again after the removal: live again.
    answer = asof([*history, mutation(3, 30, "secret", "api-key", H3)])
    assert [(m.hash, m.seq) for m in answer.mutations] == [(H3, 3)]


def test_removal_dated_before_the_change_does_not_remove_it() -> None:
    # The removal arrived late (seq 2) but is dated before the set (10:20).
    answer = asof(
        [mutation(1, 20, "flag", "new-cart", H1), mutation(2, 10, "flag", "new-cart", None)]
    )
    assert [(m.hash, m.seq) for m in answer.mutations] == [(H1, 1)]


def test_same_target_on_two_instances_is_two_live_mutations() -> None:
    answer = asof(
        [
            deployed(1, 5, IMAGE_A),
            mutation(2, 10, "file", "/etc/app.conf", H1, instance="i-1"),
            mutation(3, 11, "file", "/etc/app.conf", H2, instance="i-2"),
            mutation(4, 12, "file", "/etc/app.conf", None, instance="i-3"),
        ]
    )
    assert live_keys(answer) == {
        ("file", "/etc/app.conf", "i-1", H1),
        ("file", "/etc/app.conf", "i-2", H2),
    }
    assert answer.evidence.entries == [1, 2, 3]


def test_kind_target_and_instance_each_distinguish_a_mutation() -> None:
    answer = asof(
        [
            mutation(1, 10, "config", "x", H1),
            mutation(2, 11, "config", "x", H2, instance="i-1"),
            mutation(3, 12, "flag", "x", H3),
            mutation(4, 13, "config", "y", H1),
        ]
    )
    assert live_keys(answer) == {
        ("config", "x", None, H1),
        ("config", "x", "i-1", H2),
        ("flag", "x", None, H3),
        ("config", "y", None, H1),
    }


def test_mutation_dated_before_a_deployment_but_arriving_later_is_still_wiped() -> None:
    answer = asof(
        [
            deployed(1, 20, IMAGE_A),
            mutation(2, 10, "file", "/etc/app.conf", H1, instance="i-1"),  # late: seq 2, 10:10
            mutation(3, 10, "config", "db.url", H2),  # late too, but external: persists
        ]
    )
    assert live_keys(answer) == {("config", "db.url", None, H2)}
    assert answer.evidence.entries == [1, 3]


@pytest.mark.parametrize(("mutation_seq", "live"), [(4, False), (6, True)])
def test_mutation_tied_with_the_deployment_is_placed_by_seq(mutation_seq: int, live: bool) -> None:
    answer = asof(
        [
            deployed(5, 10, IMAGE_A),
            mutation(mutation_seq, 10, "patch", "hotfix-1", H1, instance="i-1"),
        ]
    )
    expected = {("patch", "hotfix-1", "i-1", H1)} if live else set()
    assert live_keys(answer) == expected


def test_mutation_after_the_instant_is_ignored() -> None:
    history = [mutation(1, 10, "config", "db.url", H1), mutation(2, 30, "config", "db.url", H2)]
    assert live_keys(asof(history, at=20)) == {("config", "db.url", None, H1)}


# --- 4. approvals ------------------------------------------------------------------------


@pytest.mark.parametrize("rules", [1, 2])
def test_approved_deployment_names_its_grant(rules: int) -> None:
    history = [grant(3, 5, "CR-1", image=IMAGE_A), deployed(7, 10, IMAGE_A, change_ref="CR-1")]
    answer = asof(history, rules=rules)
    assert answer.deployment == Deployment(
        image=IMAGE_A,
        time=t(10),
        event_id="e7",
        seq=7,
        actor="ci",
        change_ref="CR-1",
        approved=True,
        unapproved_reason=None,
        approval=Approval(change_ref="CR-1", approver="alice", event_id="e3", seq=3),
    )
    assert answer.evidence.entries == [3, 7]


def test_unscoped_grant_approves_any_image() -> None:
    answer = asof([grant(1, 5, "CR-1"), deployed(2, 10, IMAGE_B, change_ref="CR-1")])
    assert answer.deployment is not None
    assert (answer.deployment.approved, answer.deployment.unapproved_reason) == (True, None)


def test_grant_at_the_same_time_as_the_change_counts() -> None:
    answer = asof([grant(1, 10, "CR-1"), deployed(2, 10, IMAGE_A, change_ref="CR-1")])
    assert answer.deployment is not None
    assert answer.deployment.approval == Approval(
        change_ref="CR-1", approver="alice", event_id="e1", seq=1
    )


def test_v1_grant_at_the_same_time_as_the_change_counts_whatever_the_arrival() -> None:
    # Version 1: time <= C's time, whatever the arrival order of the two.
    for grant_seq, deploy_seq in [(1, 2), (2, 1)]:
        answer = asof(
            [grant(grant_seq, 10, "CR-1"), deployed(deploy_seq, 10, IMAGE_A, change_ref="CR-1")],
            rules=1,
        )
        assert answer.deployment is not None
        assert answer.deployment.approval == Approval(
            change_ref="CR-1", approver="alice", event_id=f"e{grant_seq}", seq=grant_seq
        )


def test_missing_without_change_ref() -> None:
    answer = asof([grant(1, 5, "CR-1"), deployed(2, 10, IMAGE_A)])
    assert answer.deployment == unapproved(2, 10, IMAGE_A, "missing", change_ref=None)
    assert answer.evidence.entries == [2]


def test_missing_without_a_grant() -> None:
    answer = asof([deployed(2, 10, IMAGE_A, change_ref="CR-1")])
    assert answer.deployment == unapproved(2, 10, IMAGE_A, "missing")


def test_grant_for_another_change_ref_does_not_count() -> None:
    answer = asof([grant(1, 5, "CR-2"), deployed(2, 10, IMAGE_A, change_ref="CR-1")])
    assert answer.deployment == unapproved(2, 10, IMAGE_A, "missing")
    assert answer.evidence.entries == [2]


def test_self_approved() -> None:
    answer = asof([grant(1, 5, "CR-1", approver="ci"), deployed(2, 10, IMAGE_A, change_ref="CR-1")])
    assert answer.deployment == unapproved(2, 10, IMAGE_A, "self_approved")


def test_expired() -> None:
    answer = asof([grant(1, 5, "CR-1", valid_until=8), deployed(2, 10, IMAGE_A, change_ref="CR-1")])
    assert answer.deployment == unapproved(2, 10, IMAGE_A, "expired")


def test_valid_until_is_inclusive() -> None:
    answer = asof(
        [grant(1, 5, "CR-1", valid_until=10), deployed(2, 10, IMAGE_A, change_ref="CR-1")]
    )
    assert answer.deployment is not None
    assert (answer.deployment.approved, answer.deployment.unapproved_reason) == (True, None)


def test_expiry_after_the_change_does_not_unapprove_it() -> None:
    answer = asof(
        [grant(1, 5, "CR-1", valid_until=12), deployed(2, 10, IMAGE_A, change_ref="CR-1")], at=50
    )
    assert answer.deployment is not None
    assert answer.deployment.approved is True


def test_revoked_between_grant_and_change() -> None:
    answer = asof(
        [grant(1, 5, "CR-1"), revoke(2, 7, "CR-1"), deployed(3, 10, IMAGE_A, change_ref="CR-1")]
    )
    assert answer.deployment == unapproved(3, 10, IMAGE_A, "revoked")


def test_v1_revoked_between_grant_and_change_by_the_times_claimed() -> None:
    # Version 1: the revocation arrived last (seq 9) but is dated between the two.
    answer = asof(
        [grant(1, 5, "CR-1"), deployed(2, 10, IMAGE_A, change_ref="CR-1"), revoke(9, 7, "CR-1")],
        rules=1,
    )
    assert answer.deployment == unapproved(2, 10, IMAGE_A, "revoked")


def test_revocation_after_the_change_does_not_unapprove_it() -> None:
    answer = asof(
        [grant(1, 5, "CR-1"), deployed(2, 10, IMAGE_A, change_ref="CR-1"), revoke(3, 12, "CR-1")],
        at=20,
    )
    assert answer.deployment is not None
    assert answer.deployment.approval == Approval(
        change_ref="CR-1", approver="alice", event_id="e1", seq=1
    )
    assert answer.deployment.unapproved_reason is None


def test_revocation_before_the_grant_or_of_another_ref_does_not_count() -> None:
    answer = asof(
        [
            revoke(1, 3, "CR-1"),
            grant(2, 5, "CR-1"),
            revoke(3, 7, "CR-2"),
            deployed(4, 10, IMAGE_A, change_ref="CR-1"),
        ]
    )
    assert answer.deployment is not None
    assert (answer.deployment.approved, answer.deployment.approval) == (
        True,
        Approval(change_ref="CR-1", approver="alice", event_id="e2", seq=2),
    )


def test_regrant_after_a_revocation_approves() -> None:
    answer = asof(
        [
            grant(1, 3, "CR-1"),
            revoke(2, 4, "CR-1"),
            grant(3, 6, "CR-1", "bob"),
            deployed(4, 10, IMAGE_A, change_ref="CR-1"),
        ]
    )
    assert answer.deployment is not None
    assert answer.deployment.approval == Approval(
        change_ref="CR-1", approver="bob", event_id="e3", seq=3
    )


@pytest.mark.parametrize(("revoke_seq", "reason"), [(1, "revoked"), (3, None)])
def test_revocation_tied_with_the_change_is_placed_by_seq(
    revoke_seq: int, reason: str | None
) -> None:
    # Same time as the change: seq decides whether it came before (revoked) or after.
    answer = asof(
        [
            grant(0, 5, "CR-1"),
            deployed(2, 10, IMAGE_A, change_ref="CR-1"),
            revoke(revoke_seq, 10, "CR-1"),
        ]
    )
    assert answer.deployment is not None
    assert answer.deployment.unapproved_reason == reason


@pytest.mark.parametrize(("revoke_seq", "reason"), [(1, None), (3, "revoked")])
def test_revocation_tied_with_the_grant_is_placed_by_seq(
    revoke_seq: int, reason: str | None
) -> None:
    # Same time as the grant: seq decides whether it came before the grant or after it.
    answer = asof(
        [
            grant(2, 5, "CR-1"),
            deployed(9, 10, IMAGE_A, change_ref="CR-1"),
            revoke(revoke_seq, 5, "CR-1"),
        ]
    )
    assert answer.deployment is not None
    assert answer.deployment.unapproved_reason == reason


def test_after_change() -> None:
    # Recorded first, but dated after the change it names: it claims not to cover it.
    history = [grant(1, 15, "CR-1"), deployed(2, 10, IMAGE_A, change_ref="CR-1")]
    assert asof(history, at=20).deployment == unapproved(2, 10, IMAGE_A, "after_change")
    # Before the grant's own time, it was simply missing.
    assert asof(history, at=12).deployment == unapproved(2, 10, IMAGE_A, "missing")


def test_v1_after_change() -> None:
    history = [deployed(1, 10, IMAGE_A, change_ref="CR-1"), grant(2, 15, "CR-1")]
    assert asof(history, at=20, rules=1).deployment == unapproved(1, 10, IMAGE_A, "after_change")
    assert asof(history, at=12, rules=1).deployment == unapproved(1, 10, IMAGE_A, "missing")


def test_scope_mismatch_on_image() -> None:
    answer = asof([grant(1, 5, "CR-1", image=IMAGE_B), deployed(2, 10, IMAGE_A, change_ref="CR-1")])
    assert answer.deployment == unapproved(2, 10, IMAGE_A, "scope_mismatch")


def test_scope_mismatch_on_a_grant_with_a_hash_for_a_deployment() -> None:
    answer = asof([grant(1, 5, "CR-1", hash_=H1), deployed(2, 10, IMAGE_A, change_ref="CR-1")])
    assert answer.deployment == unapproved(2, 10, IMAGE_A, "scope_mismatch")


def test_rollback_is_judged_on_its_own_image() -> None:
    answer = asof(
        [
            grant(1, 5, "CR-1", image=IMAGE_A),
            rolled_back(2, 10, IMAGE_A, change_ref="CR-1", actor="sre"),
        ]
    )
    assert answer.deployment is not None
    assert answer.deployment.approved is True
    answer = asof(
        [
            grant(1, 5, "CR-1", image=IMAGE_B),
            rolled_back(2, 10, IMAGE_A, change_ref="CR-1", actor="sre"),
        ]
    )
    assert answer.deployment is not None
    assert answer.deployment.unapproved_reason == "scope_mismatch"


def test_mutation_approved_by_a_grant_for_its_hash() -> None:
    answer = asof(
        [
            grant(1, 5, "CR-2", "carol", hash_=H1),
            mutation(2, 10, "config", "db.url", H1, change_ref="CR-2"),
        ]
    )
    assert answer.mutations == [
        LiveMutation(
            target_kind="config",
            target="db.url",
            instance=None,
            hash=H1,
            time=t(10),
            event_id="e2",
            seq=2,
            actor="ops",
            tool="kubectl",
            method="manual",
            change_ref="CR-2",
            approved=True,
            unapproved_reason=None,
            approval=Approval(change_ref="CR-2", approver="carol", event_id="e1", seq=1),
        )
    ]
    assert answer.evidence.entries == [1, 2]


@pytest.mark.parametrize(
    ("the_grant", "reason"),
    [
        (grant(1, 5, "CR-2", hash_=H2), "scope_mismatch"),
        (grant(1, 5, "CR-2", image=IMAGE_A), "scope_mismatch"),
        (grant(1, 5, "CR-2", "ops", hash_=H1), "self_approved"),
        (grant(1, 5, "CR-2", hash_=H1, valid_until=9), "expired"),
        (grant(1, 15, "CR-2", hash_=H1), "after_change"),
        (grant(1, 5, "CR-3", hash_=H1), "missing"),
    ],
)
def test_mutation_unapproved_reasons(the_grant: Fact, reason: str) -> None:
    answer = asof([the_grant, mutation(2, 10, "config", "db.url", H1, change_ref="CR-2")])
    assert [(m.approved, m.unapproved_reason, m.approval) for m in answer.mutations] == [
        (False, reason, None)
    ]


@pytest.mark.parametrize(("rules", "revoke_seq", "mutation_seq"), [(1, 3, 2), (2, 2, 3)])
def test_mutation_revoked(rules: int, revoke_seq: int, mutation_seq: int) -> None:
    answer = asof(
        [
            grant(1, 5, "CR-2", hash_=H1),
            revoke(revoke_seq, 8, "CR-2"),
            mutation(mutation_seq, 10, "flag", "f", H1, change_ref="CR-2"),
        ],
        rules=rules,
    )
    assert [(m.approved, m.unapproved_reason) for m in answer.mutations] == [(False, "revoked")]


def test_a_grant_approves_the_change_it_scopes_not_the_superseding_one() -> None:
    # The grant is for H1; the value now live is H2 under the same change_ref.
    answer = asof(
        [
            grant(1, 5, "CR-2", hash_=H1),
            mutation(2, 10, "config", "db.url", H1, change_ref="CR-2"),
            mutation(3, 11, "config", "db.url", H2, change_ref="CR-2"),
        ]
    )
    assert [(m.hash, m.unapproved_reason) for m in answer.mutations] == [(H2, "scope_mismatch")]


def test_one_valid_grant_among_invalid_ones_approves() -> None:
    answer = asof(
        [
            grant(1, 2, "CR-1", "ci"),  # self-approved
            grant(2, 3, "CR-1", "bob", image=IMAGE_A),  # valid
            grant(3, 4, "CR-1", "carol", image=IMAGE_B),  # wrong image
            grant(4, 6, "CR-1", "dave", valid_until=8),  # expired
            revoke(5, 7, "CR-9"),  # another ref
            grant(6, 15, "CR-1", "erin"),  # after the change
            deployed(7, 10, IMAGE_A, change_ref="CR-1"),
        ]
    )
    assert answer.deployment is not None
    assert answer.deployment.approved is True
    assert answer.deployment.approval == Approval(
        change_ref="CR-1", approver="bob", event_id="e2", seq=2
    )
    assert answer.evidence.entries == [2, 7]


def test_unapproved_reasons_cite_the_grant_and_revocation_they_rest_on() -> None:
    answer = asof(
        [
            grant(1, 5, "CR-1"),
            revoke(2, 7, "CR-1"),
            deployed(3, 10, IMAGE_A, change_ref="CR-1"),
            revoke(4, 8, "CR-1"),  # recorded after the change: it revokes nothing of it
        ]
    )
    assert answer.evidence.entries == [1, 2, 3]


def test_v1_unapproved_reasons_cite_the_grant_and_revocation_they_rest_on() -> None:
    answer = asof(
        [
            grant(1, 5, "CR-1"),
            revoke(2, 7, "CR-1"),
            revoke(3, 12, "CR-1"),
            deployed(4, 10, IMAGE_A, change_ref="CR-1"),
        ],
        rules=1,
    )
    assert answer.evidence.entries == [1, 2, 4]


# --- 5. classification -------------------------------------------------------------------


def test_latest_classification_wins_by_valid_time() -> None:
    answer = asof(
        [
            classified(2, 10, "stateless", "low", "immutable"),
            classified(1, 20, "stateful", "high", "mutable"),
            classified(3, 5, "stateless", "medium", "immutable"),
        ]
    )
    assert answer.classification == Classification(
        state="stateful", criticality="high", model="mutable"
    )
    assert answer.evidence.entries == [1]
    assert asof([classified(1, 20, "stateful", "high", "mutable")], at=10).classification is None


def test_classification_tie_is_broken_by_seq() -> None:
    answer = asof(
        [
            classified(4, 10, "stateful", "high", "mutable"),
            classified(3, 10, "stateless", "low", "immutable"),
        ]
    )
    assert answer.classification == Classification(
        state="stateful", criticality="high", model="mutable"
    )


# --- 6. evidence -------------------------------------------------------------------------


def evidence_history() -> list[Fact]:
    return [
        classified(1, 1, "stateless", "low", "immutable"),  # superseded by 10
        deployed(2, 2, IMAGE_A, change_ref="CR-0"),  # superseded by 4
        grant(3, 3, "CR-1", "alice", image=IMAGE_B),  # approves 4
        deployed(4, 5, IMAGE_B, change_ref="CR-1"),  # live
        mutation(5, 4, "file", "/etc/x", H1, instance="i-1"),  # wiped by 4
        mutation(6, 6, "config", "db.url", H1),  # superseded by 8
        grant(7, 6, "CR-3", "bob", hash_=H2),  # approves 8
        mutation(8, 7, "config", "db.url", H2, change_ref="CR-3"),  # live
        failed(9, 8, IMAGE_C, 2, 4),  # partial
        classified(10, 9, "stateful", "high", "mutable"),  # latest classification
        mutation(11, 9, "flag", "f", H3),  # live, no change_ref
        deployed(12, 50, IMAGE_D),  # after the instant
        grant(13, 10, "CR-9"),  # for nothing live
        mutation(14, 10, "config", "y", H1),  # removed by 15
        mutation(15, 11, "config", "y", None),
        failed(16, 3, IMAGE_C, 1, 4),  # before the live deployment
    ]


def test_evidence_lists_exactly_the_entries_the_answer_rests_on() -> None:
    history = evidence_history()
    answer = asof(history, at=40, ledger_size=42)
    assert answer.evidence.entries == [3, 4, 7, 8, 9, 10, 11]
    assert answer.evidence.ledger_size == 42
    shuffled = history[:]
    random.Random(4).shuffle(shuffled)
    assert asof(shuffled, at=40, ledger_size=42) == answer


# --- 7. JSON shape -----------------------------------------------------------------------

DEPLOYMENT_KEYS = {
    "image",
    "time",
    "event_id",
    "seq",
    "actor",
    "change_ref",
    "approved",
    "unapproved_reason",
    "approval",
}
APPROVAL_KEYS = {"change_ref", "approver", "event_id", "seq"}
PARTIAL_KEYS = {"image", "updated", "total", "event_id", "seq"}
MUTATION_KEYS = {
    "target_kind",
    "target",
    "instance",
    "hash",
    "time",
    "event_id",
    "seq",
    "actor",
    "tool",
    "method",
    "change_ref",
    "approved",
    "unapproved_reason",
    "approval",
}
TOP_KEYS = {
    "service",
    "environment",
    "at",
    "deployment",
    "partial",
    "mutations",
    "classification",
    "evidence",
}


def test_json_shape_matches_the_issue() -> None:
    doc = asof(evidence_history(), at=40, ledger_size=42).model_dump(mode="json")
    assert set(doc) >= TOP_KEYS
    assert set(doc) - TOP_KEYS <= {"known_at", "rules"}
    assert doc["rules"] == 2
    assert (doc["service"], doc["environment"], doc["at"]) == (SERVICE, ENV, "2026-11-20T14:40:00Z")
    assert doc["deployment"] == {
        "image": IMAGE_B,
        "time": "2026-11-20T14:05:00Z",
        "event_id": "e4",
        "seq": 4,
        "actor": "ci",
        "change_ref": "CR-1",
        "approved": True,
        "unapproved_reason": None,
        "approval": {"change_ref": "CR-1", "approver": "alice", "event_id": "e3", "seq": 3},
    }
    assert set(doc["deployment"]) == DEPLOYMENT_KEYS
    assert set(doc["deployment"]["approval"]) == APPROVAL_KEYS
    assert doc["partial"] == {
        "image": IMAGE_C,
        "updated": 2,
        "total": 4,
        "event_id": "e9",
        "seq": 9,
    }
    assert len(doc["mutations"]) == 2
    for m in doc["mutations"]:
        assert set(m) == MUTATION_KEYS
    by_target = {m["target"]: m for m in doc["mutations"]}
    assert by_target["db.url"] == {
        "target_kind": "config",
        "target": "db.url",
        "instance": None,
        "hash": H2,
        "time": "2026-11-20T14:07:00Z",
        "event_id": "e8",
        "seq": 8,
        "actor": "ops",
        "tool": "kubectl",
        "method": "manual",
        "change_ref": "CR-3",
        "approved": True,
        "unapproved_reason": None,
        "approval": {"change_ref": "CR-3", "approver": "bob", "event_id": "e7", "seq": 7},
    }
    assert by_target["f"]["approval"] is None
    assert by_target["f"]["unapproved_reason"] == "missing"
    assert doc["classification"] == {"state": "stateful", "criticality": "high", "model": "mutable"}
    assert doc["evidence"] == {"ledger_size": 42, "entries": [3, 4, 7, 8, 9, 10, 11]}


def test_json_shape_when_nothing_is_known() -> None:
    doc = asof([], ledger_size=0).model_dump(mode="json")
    assert {k: doc[k] for k in TOP_KEYS - {"service", "environment", "at"}} == {
        "deployment": None,
        "partial": None,
        "mutations": [],
        "classification": None,
        "evidence": {"ledger_size": 0, "entries": []},
    }


# --- 8. properties -----------------------------------------------------------------------

IMAGES = [IMAGE_A, IMAGE_B, IMAGE_C]
HASHES = [None, H1, H2]
REFS = [None, "CR-1", "CR-2", "CR-3"]
ACTORS = ["ci", "alice", "bob"]
KINDS = ["config", "flag", "secret", "infra", "file", "package", "patch"]
HORIZON = 20  # history minutes are 0..HORIZON


@st.composite
def event_payloads(draw: st.DrawFn) -> tuple[str, str, dict[str, Any]]:
    """(type, actor, data) of one event; times are attached separately."""
    kind = draw(
        st.sampled_from(
            [
                "deploy",
                "deploy",
                "failed",
                "mutation",
                "mutation",
                "grant",
                "grant",
                "revoke",
                "classified",
            ]
        )
    )
    actor = draw(st.sampled_from(ACTORS))
    if kind == "deploy":
        type_ = draw(
            st.sampled_from(
                ["deployment.started", "deployment.succeeded", "deployment.rolled_back"]
            )
        )
        return (
            type_,
            actor,
            {"image": draw(st.sampled_from(IMAGES)), "change_ref": draw(st.sampled_from(REFS))},
        )
    if kind == "failed":
        total = draw(st.integers(1, 4))
        updated = draw(st.integers(0, total))
        return (
            "deployment.failed",
            actor,
            {
                "image": draw(st.sampled_from(IMAGES)),
                "instances": {"updated": updated, "total": total},
            },
        )
    if kind == "mutation":
        return (
            "mutation.applied",
            actor,
            {
                "target_kind": draw(st.sampled_from(KINDS)),
                "target": draw(st.sampled_from(["a", "b"])),
                "instance": draw(st.sampled_from([None, "i-1", "i-2"])),
                "hash": draw(st.sampled_from(HASHES)),
                "tool": "kubectl",
                "method": draw(st.sampled_from(["manual", "pipeline"])),
                "change_ref": draw(st.sampled_from(REFS)),
            },
        )
    if kind == "grant":
        until = draw(st.none() | st.integers(0, HORIZON + 5))
        return (
            "approval.granted",
            actor,
            {
                "change_ref": draw(st.sampled_from(REFS[1:])),
                "approver": draw(st.sampled_from(ACTORS)),
                "image": draw(st.sampled_from([None, *IMAGES])),
                "hash": draw(st.sampled_from(HASHES)),
                "valid_until": None if until is None else t(until),
            },
        )
    if kind == "revoke":
        return "approval.revoked", actor, {"change_ref": draw(st.sampled_from(REFS[1:]))}
    return (
        "service.classified",
        actor,
        {
            "state": draw(st.sampled_from(["stateless", "stateful"])),
            "criticality": draw(st.sampled_from(["low", "medium", "high"])),
            "model": draw(st.sampled_from(["immutable", "mutable"])),
        },
    )


@st.composite
def histories(draw: st.DrawFn, distinct_times: bool = False) -> list[Fact]:
    payloads = draw(st.lists(event_payloads(), max_size=HORIZON + 1))
    n = len(payloads)
    if distinct_times:
        minutes = draw(st.lists(st.integers(0, HORIZON), min_size=n, max_size=n, unique=True))
    else:
        minutes = draw(st.lists(st.integers(0, HORIZON // 3), min_size=n, max_size=n))
    seqs = draw(st.permutations(range(1, n + 1)))
    return [
        Fact(
            seq=seq,
            event_id=f"ev{i}",
            type=type_,
            time=t(minute),
            actor=actor,
            data=data,
            recorded=t(minute),
        )
        for i, ((type_, actor, data), minute, seq) in enumerate(
            zip(payloads, minutes, seqs, strict=True)
        )
    ]


def normalized(answer: AsOf, facts: list[Fact]) -> dict[str, Any]:
    """The answer with sequence numbers replaced by the event ids they stand for."""
    ids = {f.seq: f.event_id for f in facts}

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "seq"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    doc = answer.model_dump(mode="json")
    entries = doc.pop("evidence")["entries"]
    out: dict[str, Any] = strip(doc)
    out["evidence"] = sorted(ids[s] for s in entries)
    return out


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(0, HORIZON), st.randoms(use_true_random=False))
def test_answer_does_not_depend_on_input_order(
    facts: list[Fact], at: int, rnd: random.Random
) -> None:
    shuffled = facts[:]
    rnd.shuffle(shuffled)
    assert asof(shuffled, at=at) == asof(facts, at=at)


@settings(max_examples=150, deadline=None)
@given(histories(distinct_times=True), st.integers(0, HORIZON), st.data())
def test_v1_answer_does_not_depend_on_arrival_order_when_times_are_distinct(
    facts: list[Fact], at: int, data: st.DataObject
) -> None:
    # Another arrival order: the same events (same valid times) got other sequence numbers.
    new_seqs = data.draw(st.permutations([f.seq for f in facts]))
    rearrived = [
        Fact(
            seq=s,
            event_id=f.event_id,
            type=f.type,
            time=f.time,
            actor=f.actor,
            data=f.data,
            recorded=f.recorded,
        )
        for f, s in zip(facts, new_seqs, strict=True)
    ]
    data.draw(st.randoms(use_true_random=False)).shuffle(rearrived)
    assert normalized(asof(rearrived, at=at, rules=1), rearrived) == normalized(
        asof(facts, at=at, rules=1), facts
    )


@settings(max_examples=150, deadline=None)
@given(histories(), st.integers(0, HORIZON), st.data())
def test_facts_dated_after_the_instant_never_change_the_answer_but_revocations(
    facts: list[Fact], at: int, data: st.DataObject
) -> None:
    later = data.draw(st.lists(event_payloads(), max_size=8))
    minutes = data.draw(
        st.lists(st.integers(at + 1, HORIZON + 10), min_size=len(later), max_size=len(later))
    )
    # Interleave their sequence numbers with the history's: some arrived before, some after.
    n = len(facts) + len(later)
    seqs = data.draw(st.permutations(range(1, n + 1)))
    renumber = dict(zip([f.seq for f in facts], seqs[: len(facts)], strict=True))
    base = [
        Fact(
            seq=renumber[f.seq],
            event_id=f.event_id,
            type=f.type,
            time=f.time,
            actor=f.actor,
            data=f.data,
            recorded=f.recorded,
        )
        for f in facts
    ]
    extra = [
        Fact(
            seq=seq,
            event_id=f"late{i}",
            type=type_,
            time=t(minute),
            actor=actor,
            data=payload,
            recorded=t(minute),
        )
        for i, ((type_, actor, payload), minute, seq) in enumerate(
            zip(later, minutes, seqs[len(facts) :], strict=True)
        )
    ]
    assert asof(base + extra, at=at, rules=1) == asof(base, at=at, rules=1)
    # Version 2 places a revocation by the ledger's order, whatever time it claims.
    grants_only = [f for f in extra if f.type != "approval.revoked"]
    assert asof(base + grants_only, at=at) == asof(base, at=at)


@settings(max_examples=200, deadline=None)
@given(histories(distinct_times=True), st.integers(0, HORIZON))
def test_honest_histories_get_the_same_answer_under_both_versions(
    facts: list[Fact], at: int
) -> None:
    """Recorded in the order they happened, each as it happened: version 2, which judges
    approvals by what the ledger witnessed, agrees with version 1 (only ``rules`` differs)."""
    in_order = sorted(facts, key=lambda f: f.time)
    honest = [replace(f, seq=n) for n, f in enumerate(in_order, 1)]
    v1 = asof(honest, at=at, rules=1).model_dump(mode="json")
    v2 = asof(honest, at=at).model_dump(mode="json")
    assert v2.pop("rules") == 2
    assert v2 == v1
