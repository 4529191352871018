"""What `ledger check` looks for: its rules, their default severities, the requirements each
serves, and the thresholds a policy may set (pure data; docs/compliance.md explains each).

Rule ids and threshold names are a public contract (findings, policy files and the signed
policy records name them): new ones may be added, none renamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "RULES",
    "SEVERITIES",
    "THRESHOLDS",
    "Rule",
    "Severity",
    "severity_rank",
]

Severity = Literal["info", "low", "medium", "high"]
SEVERITIES: Final[tuple[Severity, ...]] = ("info", "low", "medium", "high")


def severity_rank(severity: str) -> int:
    """Higher is more severe: ``--fail-on`` compares by this."""
    return SEVERITIES.index(severity)


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    requirements: tuple[str, ...]
    """PCI DSS v4.0 and HIPAA Security Rule ids, as ../shared/reference/compliance.md
    numbers them: what a finding of this rule is evidence about."""
    summary: str


_REVIEW = ("PCI DSS 10.4.1.1", "HIPAA 164.308(a)(1)(ii)(D)")
"""Every finding is the product of an automated review of the audit log."""

RULES: Final[dict[str, Rule]] = {
    rule.id: rule
    for rule in (
        Rule("unapproved_change", "high", ("PCI DSS 6.5.1", *_REVIEW),
             "a production change without a valid approval"),
        Rule("promotion_skipped", "high", ("PCI DSS 6.5.3", "PCI DSS 6.5.1", *_REVIEW),
             "an artifact deployed to production never seen succeeding in pre-production"),
        Rule("horizon_violation", "high", ("PCI DSS 6.5.1", "PCI DSS 11.5.2", *_REVIEW),
             "an in-place change to an instance of a service classified immutable"),
        Rule("no_canary", "medium", ("PCI DSS 6.5.1", *_REVIEW),
             "a fleet-wide in-place change on a mutable, high-criticality service, with no "
             "canary first"),
        Rule("manual_change", "high", ("PCI DSS 6.5.1", "PCI DSS 11.5.2", *_REVIEW),
             "a manual change in production, outside the pipeline"),
        Rule("config_not_tied_to_release", "medium", ("PCI DSS 6.5.1", *_REVIEW),
             "a configuration or flag change on an immutable service tied to no deployment"),
        Rule("partial_fleet", "high", ("PCI DSS 6.5.1", *_REVIEW),
             "a mixed fleet left unresolved"),
        Rule("failed_change", "low", ("PCI DSS 6.5.1", *_REVIEW),
             "a failed deployment, and whether and when the service was restored"),
        Rule("rollback", "info", ("PCI DSS 6.5.1", *_REVIEW),
             "a rollback, and the time to restore"),
        Rule("unclassified_service", "medium", ("PCI DSS 6.5.1", *_REVIEW),
             "production changes on a service with no recorded deployment model"),
        Rule("late_arrival", "info", ("PCI DSS 10.6.x", "PCI DSS 10.3.2", *_REVIEW),
             "an entry claiming a time long before the ledger witnessed it, or signed by a "
             "key reported compromised since"),
        Rule("quarantine_in_period", "medium", ("PCI DSS 10.7.2", "PCI DSS 10.3.2",
                                                "HIPAA 164.312(c)(1)", *_REVIEW),
             "events refused in the period: tampering or a misconfigured producer"),
    )
}  # fmt: skip

THRESHOLDS: Final[dict[str, int]] = {
    "partial_after": 3600,
    "late_after": 3600,
    "canary_window": 24 * 3600,
    "config_window": 1800,
}
"""Seconds, by name: how long a mixed fleet may last (``partial_after``); how far before
the ledger witnessed it an entry may claim its time (``late_after``); how long before a
fleet-wide change a one-instance change of the same content counts as its canary
(``canary_window``); how long after a deployment a configuration change counts as tied to
it (``config_window``)."""
