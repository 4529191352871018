"""`ledger check`'s rules over a period of one environment (pure): facts in, findings out.

Each service's facts are walked once, in the (time, seq) order the point-in-time rules
place them by, keeping the state the rules need: its classification, its last deployment,
its open failures, recent one-instance changes (canaries) and open manual changes. A
change's approval is judged by :func:`ledger.rules.pointintime.judge` over the grants and
revocations of its stream known by the end of the period, which is what ``asof`` at that
end reads: the two cannot disagree. The policy in force for a change is the latest policy
record the ledger witnessed before it (lower seq). docs/compliance.md defines each rule.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from ledger.rules.catalogue import RULES, SEVERITIES, THRESHOLDS, Severity
from ledger.rules.pointintime import INSTANCE_LOCAL_KINDS, Approvals, Fact, judge

__all__ = [
    "DEFAULT_POLICY",
    "MAX_CITED",
    "Cited",
    "Finding",
    "Period",
    "Policies",
    "PolicyInForce",
    "evaluate",
    "finding",
    "human_duration",
    "mixed_fleet",
    "sort_findings",
]

MAX_CITED = 100
"""The most entries one finding cites; a finding about more says how many (``more``)."""


@dataclass(frozen=True, slots=True)
class Cited:
    """A ledger entry a finding rests on: ``ledger proof inclusion --seq`` proves it."""

    seq: int
    event_id: str


@dataclass(frozen=True, slots=True)
class Finding:
    """One departure from the process; ``entries`` begins with the entry it is about.

    A dataclass rather than a validated model: every value comes from the verified ledger
    and the rules here, and a period of the benchmark ledger makes tens of thousands
    (validating them took half the time of a check). Answers carry it as is."""

    rule: str
    severity: Severity
    service: str | None
    environment: str
    time: datetime
    message: str
    requirements: list[str]
    entries: list[Cited]
    details: dict[str, Any]


@dataclass(frozen=True)
class Period:
    environment: str
    start: datetime
    end: datetime

    def holds(self, moment: datetime) -> bool:
        return self.start <= moment <= self.end


@dataclass(frozen=True)
class PolicyInForce:
    """A recorded policy as the rules read it (``seq`` 0: none recorded, the defaults)."""

    seq: int = 0
    event_id: str | None = None
    digest: str | None = None
    preprod: tuple[str, ...] = ()
    overrides: tuple[tuple[str, tuple[str, ...]], ...] = ()
    severity: Mapping[str, str] = field(default_factory=dict)
    thresholds: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_record(cls, seq: int, event_id: str, data: Mapping[str, Any]) -> PolicyInForce:
        return cls(
            seq=seq,
            event_id=event_id,
            digest=data.get("digest"),
            preprod=tuple(data.get("preprod") or ()),
            overrides=tuple((o["match"], tuple(o["preprod"])) for o in data.get("services") or ()),
            severity=dict(data.get("severity") or {}),
            thresholds=dict(data.get("thresholds") or {}),
        )

    def preprod_for(self, service: str) -> tuple[str, ...]:
        """The pre-production environments of ``service``: its own entry's, else the first
        pattern's that matches it, else the policy's."""
        for match, preprod in self.overrides:
            if match == service:
                return preprod
        for match, preprod in self.overrides:
            if fnmatchcase(service, match):
                return preprod
        return self.preprod

    def severity_of(self, rule: str) -> Severity:
        chosen = self.severity.get(rule, RULES[rule].severity)
        return chosen if chosen in SEVERITIES else RULES[rule].severity

    def threshold(self, name: str) -> timedelta:
        return timedelta(seconds=self.thresholds.get(name, THRESHOLDS[name]))


DEFAULT_POLICY = PolicyInForce()


class Policies:
    """The policy records of an environment in ledger order: which was in force when;
    ``overrides`` (thresholds, in seconds) stand above every record's (``--partial-after``)."""

    def __init__(
        self, records: Sequence[PolicyInForce], overrides: Mapping[str, int] | None = None
    ) -> None:
        def over(policy: PolicyInForce) -> PolicyInForce:
            if not overrides:
                return policy
            return replace(policy, thresholds={**policy.thresholds, **overrides})

        self.default = over(DEFAULT_POLICY)
        self.records = [over(p) for p in sorted(records, key=lambda p: p.seq)]
        self._seqs = [p.seq for p in self.records]

    def at(self, seq: int) -> PolicyInForce:
        """The latest record the ledger witnessed before entry ``seq``."""
        index = bisect_left(self._seqs, seq)
        return self.records[index - 1] if index else self.default

    def latest(self) -> PolicyInForce:
        return self.records[-1] if self.records else self.default

    def longest(self, name: str) -> timedelta:
        """A threshold's longest value under any record: how far back context must reach."""
        return max(p.threshold(name) for p in (self.default, *self.records))


_REASONS = {
    "missing": "no approval names its change ref",
    "after_change": "its approval is dated after the change",
    "recorded_late": "its approval reached the ledger only after the change",
    "self_approved": "it was approved by the person who made it (separation of duties)",
    "scope_mismatch": "its approval is for another image or content",
    "expired": "its approval had expired when the change was recorded",
    "revoked": "its approval was revoked before the change",
}


def finding(
    rule: str,
    policy: PolicyInForce,
    environment: str,
    service: str | None,
    time: datetime,
    message: str,
    cited: Sequence[Fact | Cited],
    details: Mapping[str, Any] | None = None,
    *,
    lower: bool = False,
    severity: Severity | None = None,
    requirements: Sequence[str] = (),
) -> Finding:
    """A finding of ``rule`` with the policy's severity (one step lower with ``lower``;
    ``severity``: this one, whatever the policy says), its requirements (and
    ``requirements`` besides), citing at most :data:`MAX_CITED` entries: the one it is
    about first, then those it rests on."""
    severity = severity or policy.severity_of(rule)
    if lower:
        severity = SEVERITIES[max(SEVERITIES.index(severity) - 1, 0)]
    by_seq: dict[int, str] = {}  # each entry once, in the order given
    for c in cited:
        by_seq.setdefault(c.seq, c.event_id)
    extra = dict(details or {})
    if len(by_seq) > MAX_CITED:
        extra["more"] = len(by_seq) - MAX_CITED
    entries = [Cited(seq, event_id) for seq, event_id in list(by_seq.items())[:MAX_CITED]]
    return Finding(
        rule=rule,
        severity=severity,
        service=service,
        environment=environment,
        time=time,
        message=message,
        requirements=[*requirements, *RULES[rule].requirements],
        entries=entries,
        details=extra,
    )


def sort_findings(found: Iterable[Finding]) -> list[Finding]:
    """By time, then rule, service and first entry: the same ledger gives the same order."""
    return sorted(
        found,
        key=lambda f: (f.time, f.rule, f.service or "", f.entries[0].seq if f.entries else 0),
    )


def mixed_fleet(instances: Mapping[str, int] | None) -> bool:
    """Whether a failed deployment left a mixed fleet: ``0 < updated < total`` instances
    (the point-in-time rules' rule 2; ``partial_fleet`` and ``ledger stats`` read it so)."""
    return bool(instances and 0 < instances["updated"] < instances["total"])


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())


def _image(fact: Fact) -> str:
    return str(fact.data["image"])


def _target(fact: Fact) -> str:
    d = fact.data
    where = f" on {d['instance']}" if d.get("instance") else ""
    return f"{d['target_kind']} {d['target']}{where}"


def _what(fact: Fact) -> str:
    if fact.type == "mutation.applied":
        return f"the change of {_target(fact)}"
    if fact.type == "deployment.failed":
        return f"the partial deployment of {_image(fact)}"
    if fact.type == "deployment.rolled_back":
        return f"the rollback to {_image(fact)}"
    return f"the deployment of {_image(fact)}"


_LIVE = frozenset({"deployment.succeeded", "deployment.rolled_back"})


@dataclass
class _Failure:
    fact: Fact
    partial: bool


@dataclass
class _Stream:
    """The walk over one service's facts."""

    service: str
    period: Period
    policies: Policies
    promoted: Mapping[str, Sequence[tuple[str, int]]]
    releases: frozenset[str]
    approvals: dict[str, Approvals]
    judged: dict[int, Fact]
    """The grants and revocations, by seq: the entries a verdict cites."""
    found: list[Finding] = field(default_factory=list)
    classification: Fact | None = None
    deployed: Fact | None = None
    failures: list[_Failure] = field(default_factory=list)
    canaries: dict[tuple[str, str, str | None], list[datetime]] = field(default_factory=dict)
    manual: dict[tuple[str, str, str | None], Fact] = field(default_factory=dict)
    unclassified: list[Fact] = field(default_factory=list)

    def add(
        self,
        rule: str,
        fact: Fact,
        message: str,
        cited: Sequence[Fact | Cited],
        details: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        self.found.append(
            finding(
                rule,
                self.policies.at(fact.seq),
                self.period.environment,
                self.service,
                fact.time,
                message,
                cited,
                details,
                **options,
            )
        )

    def walk(self, facts: Iterable[Fact]) -> list[Finding]:
        for fact in facts:
            inside = self.period.holds(fact.time)
            if fact.type == "service.classified":
                self.classification = fact
            elif fact.type in _LIVE:
                self._deployed(fact, inside)
            elif fact.type == "deployment.failed":
                self._failed(fact, inside)
            elif fact.type == "mutation.applied":
                self._mutated(fact, inside)
        self._close()
        return self.found

    def _model(self) -> dict[str, Any] | None:
        return None if self.classification is None else self.classification.data

    def _change(self, fact: Fact, scope: tuple[str, str | None]) -> None:
        """What every production change is checked for: approval and classification."""
        verdict = judge(fact, scope, self.approvals)
        if verdict.reason is not None:
            ref = fact.data.get("change_ref")
            grants = [self.judged[s] for s in verdict.evidence if s in self.judged]
            self.add(
                "unapproved_change",
                fact,
                f"{_what(fact)} by {fact.actor} was not approved: {_REASONS[verdict.reason]} "
                f"(change ref {ref or 'none'})",
                [fact, *grants],
                {"reason": verdict.reason, "change_ref": ref, "actor": fact.actor},
                requirements=("PCI DSS 6.5.4",) if verdict.reason == "self_approved" else (),
            )
        if self.classification is None:
            self.unclassified.append(fact)

    def _deployed(self, fact: Fact, inside: bool) -> None:
        if inside:
            self._change(fact, ("image", _image(fact)))
            if fact.type == "deployment.succeeded":
                self._promotion(fact)
            if fact.type == "deployment.rolled_back":
                self._rollback(fact)
        for failure in self.failures:
            self._restored(failure, fact)
        self.failures = []
        for key in [k for k in self.manual if k[0] in INSTANCE_LOCAL_KINDS]:
            self._resolve_manual(key, fact)  # the instances were replaced
        self.deployed = fact

    def _promotion(self, fact: Fact) -> None:
        preprod = self.policies.at(fact.seq).preprod_for(self.service)
        if not preprod:
            return  # the policy names no pre-production: nothing to check against
        digest = _image(fact).rpartition("@")[2]
        seen = [s for env, s in self.promoted.get(digest, ()) if env in preprod and s < fact.seq]
        if not seen:
            self.add(
                "promotion_skipped",
                fact,
                f"{_image(fact)} was deployed to {self.period.environment} without the ledger "
                f"having seen it succeed in {' or '.join(preprod)} first",
                [fact],
                {"image": _image(fact), "preprod": list(preprod)},
            )

    def _rollback(self, fact: Fact) -> None:
        failed = self.failures[0].fact if self.failures else None
        restore = None if failed is None else _seconds(fact.time - failed.time)
        after = (
            "" if restore is None else f", {human_duration(restore)} after the failed deployment"
        )
        self.add(
            "rollback",
            fact,
            f"{self.service} was rolled back to {_image(fact)} by {fact.actor}{after}",
            [fact] if failed is None else [fact, failed],
            {
                "image": _image(fact),
                "from_image": fact.data.get("from_image"),
                "time_to_restore_s": restore,
            },
        )

    def _failed(self, fact: Fact, inside: bool) -> None:
        partial = mixed_fleet(fact.data.get("instances"))
        if inside and partial:
            self._change(fact, ("image", _image(fact)))
        self.failures.append(_Failure(fact, partial))

    def _restored(self, failure: _Failure, by: Fact | None) -> None:
        """Report a failure of the period, restored by ``by`` (None: not by the end)."""
        fact = failure.fact
        if not self.period.holds(fact.time):
            return
        until = by.time if by is not None else self.period.end
        lasted = _seconds(until - fact.time)
        restored = (
            None
            if by is None
            else {
                "restored_at": by.time.isoformat(),
                "restored_by": by.seq,
                "rolled_back": by.type == "deployment.rolled_back",
                "time_to_restore_s": lasted,
            }
        )
        cited = [fact] if by is None else [fact, by]
        how = (
            f"not restored by the end of the period ({human_duration(lasted)} later)"
            if by is None
            else f"{'rolled back' if by.type == 'deployment.rolled_back' else 'restored'} "
            f"{human_duration(lasted)} later"
        )
        self.add(
            "failed_change",
            fact,
            f"the deployment of {_image(fact)} failed; {how}",
            cited,
            {"image": _image(fact), "restored": restored},
        )
        if (
            failure.partial
            and lasted > self.policies.at(fact.seq).threshold("partial_after").total_seconds()
        ):
            i = fact.data["instances"]
            self.add(
                "partial_fleet",
                fact,
                f"{i['updated']} of {i['total']} instances ran {_image(fact)} for "
                f"{human_duration(lasted)}"
                f"{'' if by else ' (still mixed at the end of the period)'}",
                cited,
                {
                    "image": _image(fact),
                    "updated": i["updated"],
                    "total": i["total"],
                    "duration_s": lasted,
                    "resolved": by is not None,
                },
            )

    def _mutated(self, fact: Fact, inside: bool) -> None:
        d = fact.data
        key = (d["target_kind"], d["target"], d.get("instance"))
        if inside:
            self._change(fact, ("hash", d["hash"]))
            self._shape(fact)
        if d.get("instance") is not None:
            self.canaries.setdefault((d["target_kind"], d["target"], d["hash"]), []).append(
                fact.time
            )
        if d["method"] == "manual":
            if inside:
                self.manual[key] = fact
        elif key in self.manual:
            self._resolve_manual(key, fact)

    def _shape(self, fact: Fact) -> None:
        """The rules that depend on the service's model: horizon, canary, config ties."""
        model = self._model()
        if model is None:
            return
        d, policy = fact.data, self.policies.at(fact.seq)
        local = d["target_kind"] in INSTANCE_LOCAL_KINDS or d.get("instance") is not None
        if model["model"] == "immutable" and local:
            self.add(
                "horizon_violation",
                fact,
                f"{self.service} is classified immutable, and {fact.actor} changed "
                f"{_target(fact)} in place (bake changes into the image instead)",
                [fact, self.classification] if self.classification else [fact],
                {
                    "target_kind": d["target_kind"],
                    "target": d["target"],
                    "instance": d.get("instance"),
                },
            )
        if (
            model["model"] == "mutable"
            and model["criticality"] == "high"
            and d.get("instance") is None
        ):
            since = fact.time - policy.threshold("canary_window")
            tried = self.canaries.get((d["target_kind"], d["target"], d["hash"]), [])
            if not any(since <= t <= fact.time for t in tried):
                self.add(
                    "no_canary",
                    fact,
                    f"{_target(fact)} was changed on every instance of {self.service} (mutable, "
                    f"high criticality) without first going to one instance",
                    [fact],
                    {
                        "target_kind": d["target_kind"],
                        "target": d["target"],
                        "canary_window_s": _seconds(policy.threshold("canary_window")),
                    },
                )
        if model["model"] == "immutable" and d["target_kind"] in ("config", "flag"):
            self._tied(fact, policy)

    def _tied(self, fact: Fact, policy: PolicyInForce) -> None:
        ref = fact.data.get("change_ref")
        if ref is not None and ref in self.releases:
            return
        window = policy.threshold("config_window")
        last = self.deployed
        if (
            last is not None
            and last.type == "deployment.succeeded"
            and (fact.time - last.time <= window)
        ):
            return
        self.add(
            "config_not_tied_to_release",
            fact,
            f"{_target(fact)} changed on {self.service} (immutable) with no deployment sharing "
            f"its change ref nor one in the {human_duration(_seconds(window))} before it",
            [fact],
            {
                "target_kind": fact.data["target_kind"],
                "target": fact.data["target"],
                "change_ref": ref,
                "config_window_s": _seconds(window),
            },
        )

    def _resolve_manual(self, key: tuple[str, str, str | None], by: Fact) -> None:
        fact = self.manual.pop(key)
        self.add(
            "manual_change",
            fact,
            f"{fact.actor} changed {_target(fact)} by hand; the pipeline restored it "
            f"{human_duration(_seconds(by.time - fact.time))} later",
            [fact, by],
            {
                "target_kind": key[0],
                "target": key[1],
                "instance": key[2],
                "resolved": True,
                "resolved_by": by.seq,
            },
            lower=True,
        )

    def _close(self) -> None:
        for failure in self.failures:
            self._restored(failure, None)
        for key, fact in self.manual.items():
            self.add(
                "manual_change",
                fact,
                f"{fact.actor} changed {_target(fact)} by hand, and no pipeline change has "
                "restored it since",
                [fact],
                {
                    "target_kind": key[0],
                    "target": key[1],
                    "instance": key[2],
                    "resolved": False,
                    "resolved_by": None,
                },
            )
        if self.unclassified:
            first = self.unclassified[0]
            self.add(
                "unclassified_service",
                first,
                f"{self.service} had {len(self.unclassified)} production change(s) in the period "
                "with no recorded deployment model (run `ledger horizon apply`)",
                self.unclassified,
                {"changes": len(self.unclassified)},
            )


def human_duration(seconds: int) -> str:
    """A person's reading of a duration: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def evaluate(
    period: Period,
    streams: Iterable[tuple[str, Sequence[Fact]]],
    policies: Policies,
    promoted: Mapping[str, Sequence[tuple[str, int]]],
    releases: Mapping[str, frozenset[str]],
) -> list[Finding]:
    """The findings of the change rules over each service's facts (every fact of the period
    and the context before it the rules read, in (time, seq) order, with the grants and
    revocations of its refs): ``promoted`` maps an image digest to where and at which entry
    the ledger saw it succeed; ``releases`` each service's deployment change refs."""
    found: list[Finding] = []
    for service, facts in streams:
        approvals: defaultdict[str, Approvals] = defaultdict(Approvals)
        judged: dict[int, Fact] = {}
        changes = []
        for fact in facts:
            if fact.type == "approval.granted" and fact.time <= period.end:
                approvals[fact.data["change_ref"]].grants.append(fact)
                judged[fact.seq] = fact
            elif fact.type == "approval.revoked":  # whatever time it claims (rule 4)
                approvals[fact.data["change_ref"]].revocations.append(fact)
                judged[fact.seq] = fact
            elif not fact.type.startswith("approval."):
                changes.append(fact)
        stream = _Stream(
            service,
            period,
            policies,
            promoted,
            releases.get(service, frozenset()),
            dict(approvals),
            judged,
        )
        found += stream.walk(changes)
    return found
