"""`ledger demo`: a few weeks of realistic history, end to end on a real broker and ledger.

Services in prod and staging, as teams really run them, under a horizon policy that says
where each sits and why (:data:`DEMO_POLICY`): immutable services deployed by CI with
change-board approvals, a failed partial rollout and its late rollback, mutable services
changed in place by Ansible (canary first, but once), Puppet and Consul, a manual hotfix
nobody approved, a file copied into a running container, a flag flipped apart from any
release, a self-approved change, a service nobody classified, and two forged messages
that the consumer must refuse: something for each rule of ``ledger check``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from ledger.rules.policy import POLICY_SERVICE, parse_policy, policy_digest
from ledger.store.gate import ProposedChange
from ledger.transport.producer import LedgerProducer
from ledger.transport.settings import KafkaSettings
from ledger.wire.codec import encode_event
from ledger.wire.envelope import Envelope
from ledger.wire.events import Event, event_from_mapping
from ledger.wire.keyring import Keyring, Signer, generate_key_files

__all__ = [
    "DEMO_POLICY",
    "GATED",
    "LEDGER_KEY_ID",
    "DemoHistory",
    "build_history",
    "demo_keyring",
    "emit_history",
    "forged_messages",
    "ledger_key",
]

# Signing identities and what the keyring lets each of them sign.
KEY_POLICIES: dict[str, tuple[list[str], list[str]]] = {
    "ci-github": (["deployment.*", "service.classified", "policy.recorded"], ["ci/github/*"]),
    "config-mgmt": (["mutation.applied"], ["ansible/*", "puppet/*", "consul/*"]),
    "ops-break-glass": (["mutation.applied"], ["manual/*"]),
    "change-board": (["approval.*"], ["cab/*"]),
}

DEMO_POLICY = """\
# Where each service sits between immutable and mutable, and why (docs/horizon.md).
environment = "prod"
preprod = ["staging"]

[[service]]
name = "checkout"
state = "stateless"
criticality = "high"
why = "Sessions live in Redis: nothing local to lose, so every release replaces the pods."

[[service]]
name = "search"
state = "stateless"
criticality = "medium"
why = "Rebuilds its index from the catalogue at start-up: replace, never patch."

[[service]]
name = "inventory"
state = "stateless"
criticality = "low"
why = "The pilot of the immutable pipeline: measured before the others moved."

[[service]]
name = "payments"
state = "stateful"
criticality = "high"
why = "Holds in-flight authorisations locally; draining costs minutes: in place, canary first."

[[service]]
name = "sessions"
state = "stateful"
criticality = "medium"
model = "mutable"
why = "A warm Redis cache: replacing it drains the cache and spikes latency."
"""
"""The demo's horizon policy: ``ledger horizon apply --policy`` would record the same."""


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _image(service: str, version: str) -> str:
    return f"registry.acme.example/{service}@{_digest(service + version)}"


GATED = ProposedChange("inventory", "prod", "erin", "CHG-1121",
                       image=_image("inventory", "2.0.0"))  # fmt: skip
"""A release about to go out: never approved, never run in staging, so the gate refuses."""


@dataclass(frozen=True)
class DemoHistory:
    events: list[tuple[str, Event]]  # (signing key id, event), in time order
    start: datetime
    end: datetime


class _Builder:
    def __init__(self, start: datetime, rng: random.Random) -> None:
        self.start = start
        self.rng = rng
        self.events: list[tuple[str, Event]] = []

    def add(
        self,
        key: str,
        at: datetime,
        kind: str,
        service: str,
        env: str,
        source: str,
        actor: str,
        data: dict[str, Any],
    ) -> None:
        event = event_from_mapping(
            {
                "type": kind,
                "time": at,
                "source": source,
                "actor": actor,
                "service": service,
                "environment": env,
                "data": data,
            }
        )
        self.events.append((key, event))

    def deploy(
        self,
        at: datetime,
        service: str,
        env: str,
        version: str,
        actor: str,
        change_ref: str | None,
        *,
        total: int = 4,
        approve: str | None = "carol",
        strategy: str = "rolling",
    ) -> None:
        """A CI deployment, with its approval granted shortly before (unless approve=None)."""
        image = _image(service, version)
        if change_ref and approve:
            self.add(
                "change-board",
                at - timedelta(minutes=self.rng.randint(20, 240)),
                "approval.granted",
                service,
                env,
                "cab/servicenow",
                approve,
                {"change_ref": change_ref, "approver": approve, "image": image},
            )
        source = f"ci/github/acme/{service}"
        commit = hashlib.sha1(f"{service}{version}".encode()).hexdigest()
        run_id = self.rng.randint(10**9, 10**10)
        run_url = f"https://github.com/acme/{service}/actions/runs/{run_id}"
        common = {
            "image": image,
            "change_ref": change_ref,
            "commit": commit,
            "run_url": run_url,
            "strategy": strategy,
        }
        self.add("ci-github", at, "deployment.started", service, env, source, actor, common)
        self.add(
            "ci-github",
            at + timedelta(minutes=self.rng.randint(3, 12)),
            "deployment.succeeded",
            service,
            env,
            source,
            actor,
            common | {"instances": {"total": total, "updated": total}},
        )


def build_history(end: datetime, seed: int = 7, days: int = 21) -> DemoHistory:
    """Deterministic for a given ``end`` and ``seed``; every event is valid."""
    rng = random.Random(seed)
    end = end.astimezone(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=days)
    b = _Builder(start, rng)

    def day(n: float, hour: int = 10, minute: int = 0) -> datetime:
        return (start + timedelta(days=n)).replace(
            hour=hour, minute=minute, second=0, microsecond=0
        )

    policy = parse_policy(DEMO_POLICY, "demo-horizon.toml")
    b.add("ci-github", start + timedelta(minutes=4), "policy.recorded", POLICY_SERVICE, "prod",
          "ci/github/acme/platform", "platform-bot",
          policy.policy_data(policy_digest(DEMO_POLICY.encode())))  # fmt: skip
    for entry in policy.services:
        for env in ("staging", "prod"):
            b.add("ci-github", start + timedelta(minutes=5), "service.classified", entry.entry,
                  env, f"ci/github/acme/{entry.entry}", "platform-bot",
                  entry.classification.as_dict())  # fmt: skip

    # Immutable services: regular releases, staging first, then prod with approval.
    change = 1040
    for service, releases in (("checkout", 6), ("search", 4), ("inventory", 3)):
        for r in range(releases):
            version = f"1.{r + 3}.0"
            when = day(1 + r * (days - 3) / releases + rng.random(), rng.randint(9, 16))
            b.deploy(when, service, "staging", version, "github-actions", None, approve=None)
            change += 1
            b.deploy(
                when + timedelta(hours=rng.randint(2, 20)),
                service,
                "prod",
                version,
                rng.choice(["alice", "bob", "erin"]),
                f"CHG-{change}",
            )

    # search: a canary to 5 instances fails after 2, then is rolled back.
    bad = _image("search", "2.0.0")
    good = _image("search", "1.6.0")
    t = day(days - 4, 14, 10)
    b.add(
        "change-board",
        t - timedelta(hours=1),
        "approval.granted",
        "search",
        "prod",
        "cab/servicenow",
        "carol",
        {"change_ref": "CHG-1101", "approver": "carol", "image": bad},
    )
    b.add(
        "ci-github",
        t,
        "deployment.started",
        "search",
        "prod",
        "ci/github/acme/search",
        "bob",
        {"image": bad, "change_ref": "CHG-1101", "strategy": "canary"},
    )
    b.add(
        "ci-github",
        t + timedelta(minutes=9),
        "deployment.failed",
        "search",
        "prod",
        "ci/github/acme/search",
        "bob",
        {
            "image": bad,
            "change_ref": "CHG-1101",
            "reason": "readiness probe failed",
            "instances": {"total": 5, "updated": 2},
        },
    )
    b.add(  # the on-call engineer was paged at last: a mixed fleet for over an hour
        "ci-github",
        t + timedelta(minutes=101),
        "deployment.rolled_back",
        "search",
        "prod",
        "ci/github/acme/search",
        "bob",
        {
            "image": good,
            "from_image": bad,
            "change_ref": "CHG-1101",
            "reason": "canary failed health checks",
        },
    )

    # inventory: a prod deploy nobody approved, of an image staging never ran.
    b.deploy(day(days - 2, 17, 45), "inventory", "prod", "1.9.1", "erin", "CHG-1120", approve=None)
    # checkout (immutable): a debug file copied into one running pod, which the next release
    # replaced; and a feature flag flipped at night, apart from any release.
    b.add("ops-break-glass", day(days - 6, 15, 20), "mutation.applied", "checkout", "prod",
          "manual/kubectl", "dave",
          {"target_kind": "file", "target": "/app/debug.py", "hash": _digest("debug.py"),
           "tool": "kubectl", "method": "manual", "instance": "checkout-7d9f-2"})  # fmt: skip
    flag = _digest("one-click:on")
    b.add("change-board", day(days - 5, 1, 0), "approval.granted", "checkout", "prod",
          "cab/servicenow", "carol", {"change_ref": "CHG-1150", "approver": "carol",
                                      "hash": flag})  # fmt: skip
    b.add("config-mgmt", day(days - 5, 3, 0), "mutation.applied", "checkout", "prod",
          "consul/kv/checkout", "bob",
          {"target_kind": "flag", "target": "features/one-click-buy",
           "hash": flag, "tool": "consul", "method": "pipeline",
           "change_ref": "CHG-1150"})  # fmt: skip
    # reports: a new service, released through staging with approval, never classified.
    b.deploy(day(days - 3, 10), "reports", "staging", "0.1.0", "github-actions", None,
             approve=None)  # fmt: skip
    b.deploy(day(days - 3, 15), "reports", "prod", "0.1.0", "erin", "CHG-1160")

    # Mutable services: deployed rarely, changed in place often.
    for service in ("payments", "sessions"):
        b.deploy(day(0.5, 9), service, "prod", "4.2.0", "alice", f"CHG-{service[:3].upper()}-1")
    for n in range(8):
        when = day(1 + n * 2.3, rng.randint(8, 18), rng.randint(0, 59))
        ref = f"CHG-{1200 + n}"
        content = _digest(f"payments.yml:{n}")
        b.add(
            "change-board",
            when - timedelta(hours=2),
            "approval.granted",
            "payments",
            "prod",
            "cab/servicenow",
            "carol",
            {"change_ref": ref, "approver": "carol", "hash": content},
        )
        applied = {
            "target_kind": "config",
            "target": "payments.yml",
            "hash": content,
            "previous_hash": _digest(f"payments.yml:{n - 1}") if n else None,
            "tool": "ansible",
            "method": "pipeline",
            "change_ref": ref,
        }
        if n:  # canary first (but not the first time): one instance, then the fleet
            b.add("config-mgmt", when - timedelta(minutes=30), "mutation.applied", "payments",
                  "prod", "ansible/playbooks/payments", "alice",
                  applied | {"instance": "payments-1"})  # fmt: skip
        b.add("config-mgmt", when, "mutation.applied", "payments", "prod",
              "ansible/playbooks/payments", "alice", applied)  # fmt: skip
    for n, flag in enumerate(("new-3ds-flow", "retry-budget", "new-3ds-flow")):
        b.add(
            "config-mgmt",
            day(3 + n * 5, 11),
            "mutation.applied",
            "payments",
            "prod",
            "consul/kv/payments",
            "bob",
            {
                "target_kind": "flag",
                "target": f"features/{flag}",
                "hash": _digest(f"{flag}:{n}"),
                "tool": "consul",
                "method": "pipeline",
            },
        )
    # A 2 a.m. hotfix patched by hand on one instance: no change ref, no approval.
    b.add(
        "ops-break-glass",
        day(days - 3, 2, 13),
        "mutation.applied",
        "payments",
        "prod",
        "manual/ssh",
        "dave",
        {
            "target_kind": "patch",
            "target": "libssl3",
            "hash": _digest("libssl3-hotfix"),
            "tool": "manual",
            "method": "manual",
            "instance": "payments-2",
        },
    )
    # sessions: Puppet runs, one change approved by the engineer who made it.
    for n in range(5):
        when = day(2 + n * 4, 6, 30)
        ref = f"CHG-{1300 + n}"
        approver = "frank" if n == 3 else "carol"
        content = _digest(f"redis.conf:{n}")
        b.add(
            "change-board",
            when - timedelta(hours=3),
            "approval.granted",
            "sessions",
            "prod",
            "cab/servicenow",
            approver,
            {"change_ref": ref, "approver": approver, "hash": content},
        )
        b.add(
            "config-mgmt",
            when,
            "mutation.applied",
            "sessions",
            "prod",
            "puppet/agent/sessions",
            "frank",
            {
                "target_kind": "file",
                "target": "/etc/redis/redis.conf",
                "hash": content,
                "tool": "puppet",
                "method": "pipeline",
                "change_ref": ref,
            },
        )

    events = sorted(b.events, key=lambda item: item[1].time)
    return DemoHistory(events=events, start=start, end=end)


def demo_keyring(key_dir: Path) -> tuple[dict[str, Signer], Keyring]:
    """Generate the demo's keys on disk and a keyring that authorizes each narrowly."""
    signers: dict[str, Signer] = {}
    ring = Keyring()
    for key_id, (types, sources) in KEY_POLICIES.items():
        key_path, _ = generate_key_files(key_id, key_dir)
        signer = Signer.from_file(key_path)
        ring.trust(key_id, signer.public_raw, types=types, sources=sources)
        signers[key_id] = signer
    return signers, ring


LEDGER_KEY_ID = "ledger"
"""The ledger's own key: signs checkpoints and evidence bundles, never events."""


def ledger_key(key_dir: Path) -> Signer:
    """Generate the ledger's key on disk beside the producers' (it is not in the keyring)."""
    key_path, _ = generate_key_files(LEDGER_KEY_ID, key_dir)
    return Signer.from_file(key_path)


def forged_messages(history: DemoHistory, ci_signer: Signer) -> list[tuple[bytes, bytes]]:
    """Two messages a careful ledger must refuse: (kafka key, value) pairs."""
    when = history.end - timedelta(days=1)
    # The CI key tries to approve its own deployment: a valid signature, but not its job.
    self_approval = event_from_mapping(
        {
            "type": "approval.granted",
            "time": when,
            "source": "ci/github/acme/inventory",
            "actor": "github-actions",
            "service": "inventory",
            "environment": "prod",
            "data": {"change_ref": "CHG-1120", "approver": "github-actions"},
        }
    )
    # A laptop key nobody trusted claims a prod deployment.
    rogue = Signer.generate("laptop-eve")
    unsigned_deploy = event_from_mapping(
        {
            "type": "deployment.succeeded",
            "time": when,
            "source": "ci/github/acme/checkout",
            "actor": "eve",
            "service": "checkout",
            "environment": "prod",
            "data": {"image": _image("checkout", "6.6.6")},
        }
    )
    return [
        (
            self_approval.partition_key,
            Envelope.sign(encode_event(self_approval), ci_signer).to_bytes(),
        ),
        (
            unsigned_deploy.partition_key,
            Envelope.sign(encode_event(unsigned_deploy), rogue).to_bytes(),
        ),
    ]


def emit_history(
    settings: KafkaSettings,
    history: DemoHistory,
    signers: dict[str, Signer],
    forged: list[tuple[bytes, bytes]],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Produce every event with its own key (and the forged messages raw); returns the count.

    In time order, as the systems would have sent them: each producer's events are
    acknowledged before another producer sends, so the ledger records each grant before
    the change it approves (authority goes by the ledger's order, docs/queries.md).
    """
    producers = {key_id: LedgerProducer(signer, settings) for key_id, signer in signers.items()}
    try:
        previous: str | None = None
        for key_id, event in history.events:
            if previous is not None and previous != key_id:
                producers[previous].flush()
            producers[key_id].emit(event)
            previous = key_id
            if progress is not None:
                progress(1)
        for producer in producers.values():
            producer.flush()
    finally:
        for producer in producers.values():
            producer.close()
    raw = KafkaProducer(**settings.client_config(), acks="all")
    try:
        for key, value in forged:
            raw.send(settings.topic, key=key, value=value).get(timeout=30)
    finally:
        raw.close()
    return len(history.events) + len(forged)
