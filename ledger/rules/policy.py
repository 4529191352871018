"""The horizon policy as data (pure): a TOML file in, a :class:`HorizonPolicy` out, and the
plan that brings the ledger in line with it.

The file says, for one production environment, where each service sits on the matrix of
../shared/reference/seed-deployment-horizon.txt (stateless or stateful, criticality low,
medium or high), which deployment model it follows, and why; which environments count as
pre-production; and the severities and thresholds ``ledger check`` applies. docs/horizon.md
describes the format. Every refusal names the file and the line (:class:`PolicyFileError`).

:func:`plan` compares a policy with what the ledger records (the latest classification of
each service, the latest policy record) and lists what ``ledger horizon apply`` would
record: no I/O and no clock here, the caller reads the ledger and sends the events.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any, Final, Literal

from ledger.errors import PolicyFileError
from ledger.rules.catalogue import RULES, SEVERITIES, THRESHOLDS

__all__ = [
    "CLASSIFICATION_FIELDS",
    "MATRIX",
    "MAX_SERVICES",
    "POLICY_FIELDS",
    "POLICY_SERVICE",
    "Classification",
    "HorizonPlan",
    "HorizonPolicy",
    "PolicyChange",
    "ServiceChange",
    "ServicePolicy",
    "Unclassified",
    "matrix_model",
    "parse_duration",
    "parse_policy",
    "plan",
    "policy_digest",
]

POLICY_SERVICE: Final = "horizon-policy"
"""The service name ``policy.recorded`` events carry (their environment is the policy's)."""

MAX_SERVICES: Final = 1000
"""At most this many ``[[service]]`` entries in one file (the event contract's limit)."""

_MAX_PREPROD = 32
_MAX_WHY = 4096
_MAX_SECONDS = 366 * 24 * 3600
"""A threshold: one second to 366 days, as the event contract takes it."""

STATES: Final = ("stateless", "stateful")
CRITICALITIES: Final = ("low", "medium", "high")
MODELS: Final = ("immutable", "mutable")

MATRIX: Final[Mapping[tuple[str, str], str | None]] = MappingProxyType(
    {
        ("stateless", "low"): "immutable",
        ("stateless", "medium"): "immutable",
        ("stateless", "high"): "immutable",
        ("stateful", "low"): "immutable",  # with its state externalized
        ("stateful", "medium"): None,  # the matrix gives no default: the file decides
        ("stateful", "high"): "mutable",  # canary first, automated health checks
    }
)
"""The framework's step 2: the model each cell of the matrix gets (None: no default)."""

CLASSIFICATION_FIELDS: Final = ("state", "criticality", "model", "why")
POLICY_FIELDS: Final = ("digest", "preprod", "services", "severity", "thresholds")
"""The fields of a ``policy.recorded`` event's data, in the order a plan names them."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PATTERN = re.compile(r"^[A-Za-z0-9._*?\[\]!-]+$")
_DURATION = re.compile(r"^([1-9][0-9]{0,8})([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TOP_KEYS = ("environment", "preprod", "thresholds", "severity", "service")
_SERVICE_KEYS = ("name", "match", "state", "criticality", "model", "why", "preprod")


def matrix_model(state: str, criticality: str) -> str | None:
    """The model the matrix gives a cell; None for stateful + medium (no default)."""
    return MATRIX.get((state, criticality))


def policy_digest(raw: bytes) -> str:
    """``sha256:<64 hex>`` of the policy file's bytes: what a policy record names."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def parse_duration(value: str) -> int:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"2d"`` as seconds; ValueError if not one."""
    found = _DURATION.fullmatch(value)
    if not found:
        raise ValueError(value)
    seconds = int(found[1]) * _UNITS[found[2]]
    if seconds > _MAX_SECONDS:
        raise ValueError(value)
    return seconds


@dataclass(frozen=True)
class Classification:
    """Where a service sits and its model, and why (None: a classification recorded
    without a reason, before reasons were recorded)."""

    state: str
    criticality: str
    model: str
    why: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CLASSIFICATION_FIELDS}


@dataclass(frozen=True)
class ServicePolicy:
    """One ``[[service]]`` entry: a service by ``name``, or every service the ledger
    knows that ``match`` (an fnmatch pattern) matches."""

    name: str | None
    match: str | None
    state: str
    criticality: str
    model: str
    why: str
    preprod: tuple[str, ...] | None
    """Its own pre-production environments; None: the policy's."""
    departs_from_matrix: bool
    """The model given is not the one the matrix gives the cell (the why says why)."""
    line: int
    """The line of its ``[[service]]`` header."""

    @property
    def entry(self) -> str:
        """The name, or the pattern: what the entry is known by."""
        return self.name if self.name is not None else str(self.match)

    @property
    def classification(self) -> Classification:
        return Classification(self.state, self.criticality, self.model, self.why)

    def covers(self, service: str) -> bool:
        if self.name is not None:
            return service == self.name
        return fnmatchcase(service, str(self.match))


@dataclass(frozen=True)
class HorizonPolicy:
    """A parsed horizon policy file (:func:`parse_policy`)."""

    source: str
    """The file's name, as errors and plans name it."""
    environment: str
    preprod: tuple[str, ...] = ()
    thresholds: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Seconds, by catalogue.THRESHOLDS name: only those the file sets."""
    severity: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """By catalogue.RULES id: only those the file sets."""
    services: tuple[ServicePolicy, ...] = ()

    def service_policy(self, service: str) -> ServicePolicy | None:
        """The entry that governs ``service``: the one naming it, else the first pattern
        (in file order) that matches it, else None."""
        for entry in self.services:
            if entry.name == service:
                return entry
        for entry in self.services:
            if entry.match is not None and fnmatchcase(service, entry.match):
                return entry
        return None

    def preprod_for(self, service: str) -> tuple[str, ...]:
        """The pre-production environments of ``service``: its entry's, else the policy's."""
        entry = self.service_policy(service)
        return self.preprod if entry is None else self.preprod_for_entry(entry)

    def preprod_for_entry(self, entry: ServicePolicy) -> tuple[str, ...]:
        return self.preprod if entry.preprod is None else entry.preprod

    def policy_data(self, digest: str) -> dict[str, Any]:
        """The data of the ``policy.recorded`` event that records this policy: the file's
        digest, its pre-production environments, the severities and thresholds (seconds)
        it sets, and, when an entry overrides the pre-production environments, every entry
        (by name or pattern, in file order) with its own: a reader of the record then
        finds a service's as :meth:`preprod_for` does (the name first, then the first
        pattern), whichever entry governs it."""
        overrides = any(entry.preprod is not None for entry in self.services)
        return {
            "digest": digest,
            "preprod": list(self.preprod),
            "services": [
                {"match": entry.entry, "preprod": list(self.preprod_for_entry(entry))}
                for entry in self.services
                if overrides
            ],
            "severity": dict(sorted(self.severity.items())),
            "thresholds": dict(sorted(self.thresholds.items())),
        }


# --- parsing ---------------------------------------------------------------------------------


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]#]*?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*(?:"([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+))\s*[=.]""")


@dataclass
class _Section:
    name: str | None  # None: the top level, before any table header
    array: bool
    line: int
    keys: dict[str, int] = field(default_factory=dict)


class _Lines:
    """Where each table and key of the raw text is, to name the line of a problem
    (tomllib keeps no positions). Good enough for what people write: a line inside a
    multi-line string is not read as a key."""

    def __init__(self, text: str) -> None:
        self.sections = [_Section(None, False, 1)]
        quote: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if quote is not None:
                if line.count(quote) % 2:
                    quote = None
                continue
            header = _HEADER.match(line)
            if header:
                self.sections.append(_Section(header[2].strip(), header[1] == "[[", number))
                continue
            key = _KEY.match(line)
            if key:
                name = next(group for group in key.groups() if group is not None)
                self.sections[-1].keys.setdefault(name, number)
            for mark in ('"""', "'''"):
                if line.count(mark) % 2:
                    quote = mark
                    break

    def line(self, table: str | None = None, index: int = 0, key: str | None = None) -> int:
        """The line of ``key`` in ``table`` (the ``index``-th of an array of tables), else
        of the table's header, else of the top-level key that holds the table, else 1."""
        top = self.sections[0]
        if table is None:
            return top.keys.get(key, 1) if key is not None else 1
        found = [s for s in self.sections if s.name == table]
        if index < len(found):
            section = found[index]
            return section.keys.get(key, section.line) if key is not None else section.line
        return top.keys.get(table, 1)


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines = _Lines(text)
        self.environment = ""

    def fail(self, line: int, what: str) -> PolicyFileError:
        return PolicyFileError(f"{self.source} line {line}: {what}", self.source, line)

    # -- the top level --

    def policy(self, raw: dict[str, Any]) -> HorizonPolicy:
        self.unknown(raw, _TOP_KEYS, None, 0, "")
        if "environment" not in raw:
            raise self.fail(
                1,
                "environment is required: the production environment this "
                'policy governs, e.g. environment = "prod"',
            )
        self.environment = self.name(
            raw["environment"], self.lines.line(key="environment"), "environment"
        )
        preprod = self.preprod(raw.get("preprod", []), self.lines.line(key="preprod"), "preprod")
        thresholds = self.thresholds(raw.get("thresholds", {}))
        severity = self.severity(raw.get("severity", {}))
        services = self.services(raw.get("service", []))
        return HorizonPolicy(
            source=self.source,
            environment=self.environment,
            preprod=preprod,
            thresholds=MappingProxyType(thresholds),
            severity=MappingProxyType(severity),
            services=services,
        )

    def unknown(
        self,
        raw: Mapping[str, Any],
        known: tuple[str, ...],
        table: str | None,
        index: int,
        where: str,
    ) -> None:
        for key in raw:
            if key not in known:
                raise self.fail(
                    self.lines.line(table, index, key),
                    f"{where}unknown key {_shown(key)} (expected one of: {', '.join(known)})",
                )

    def name(self, value: Any, line: int, what: str) -> str:
        if not isinstance(value, str) or not _NAME.fullmatch(value) or len(value) > 128:
            raise self.fail(
                line,
                f"{what} {_shown(value)} is not a valid name (1-128 letters, "
                "digits, '.', '_' or '-', beginning with a letter or digit)",
            )
        return value

    def preprod(self, value: Any, line: int, what: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(line, f'{what} must be a list of environments, e.g. ["staging"]')
        if len(value) > _MAX_PREPROD:
            raise self.fail(
                line, f"{what} lists {len(value)} environments (at most {_MAX_PREPROD})"
            )
        names: list[str] = []
        for item in value:
            name = self.name(item, line, f"{what}: environment")
            if name == self.environment:
                raise self.fail(
                    line,
                    f"{what}: {_shown(name)} is the environment this policy "
                    "governs, not a pre-production one",
                )
            if name in names:
                raise self.fail(line, f"{what} lists {_shown(name)} twice")
            names.append(name)
        return tuple(names)

    def table(self, value: Any, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(self.lines.line(name), f"{name} must be a table: [{name}]")
        return value

    def thresholds(self, value: Any) -> dict[str, int]:
        out: dict[str, int] = {}
        for key, given in self.table(value, "thresholds").items():
            line = self.lines.line("thresholds", 0, key)
            if key not in THRESHOLDS:
                raise self.fail(
                    line,
                    f"thresholds: unknown threshold {_shown(key)} (expected one "
                    f"of: {', '.join(THRESHOLDS)})",
                )
            try:
                if not isinstance(given, str):
                    raise ValueError(given)
                out[key] = parse_duration(given)
            except ValueError:
                raise self.fail(
                    line,
                    f"thresholds: {key} = {_shown(given)} is not a duration: "
                    'expected a positive one such as "90s", "15m", "1h" or '
                    '"2d" (at most 366 days)',
                ) from None
        return out

    def severity(self, value: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, given in self.table(value, "severity").items():
            line = self.lines.line("severity", 0, key)
            if key not in RULES:
                raise self.fail(
                    line,
                    f"severity: unknown rule {_shown(key)} (expected one of: {', '.join(RULES)})",
                )
            if given not in SEVERITIES:
                raise self.fail(
                    line,
                    f"severity: {key} = {_shown(given)}: expected one of {', '.join(SEVERITIES)}",
                )
            out[key] = given
        return out

    # -- [[service]] --

    def services(self, value: Any) -> tuple[ServicePolicy, ...]:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(
                self.lines.line("service"), "service must be an array of tables: [[service]]"
            )
        if len(value) > MAX_SERVICES:
            raise self.fail(
                self.lines.line("service", MAX_SERVICES),
                f"{len(value)} services: at most {MAX_SERVICES} in one file",
            )
        entries: list[ServicePolicy] = []
        seen: dict[str, ServicePolicy] = {}
        for index, raw in enumerate(value):
            entry = self.service(raw, index)
            first = seen.get(entry.entry)
            if first is not None:
                key = "name" if entry.name is not None else "match"
                raise self.fail(
                    self.lines.line("service", index, key),
                    f"service {_shown(entry.entry)} is already given an entry (line {first.line})",
                )
            seen[entry.entry] = entry
            entries.append(entry)
        return tuple(entries)

    def service(self, raw: dict[str, Any], index: int) -> ServicePolicy:
        def at(key: str | None = None) -> int:
            return self.lines.line("service", index, key)

        label = _label(raw, index)
        self.unknown(raw, _SERVICE_KEYS, "service", index, f"{label}: ")
        if ("name" in raw) == ("match" in raw):
            raise self.fail(
                at("match" if "match" in raw else None),
                f"{label}: give exactly one of name (a service) or match (an "
                'fnmatch pattern, e.g. "payments-*")',
            )
        name = match = None
        if "name" in raw:
            name = self.name(raw["name"], at("name"), f"{label}: name")
            if name == POLICY_SERVICE:
                raise self.fail(
                    at("name"),
                    f"{label}: {_shown(POLICY_SERVICE)} is the name the policy records "
                    "themselves carry",
                )
        else:
            match = raw["match"]
            if not isinstance(match, str) or not _PATTERN.fullmatch(match) or len(match) > 128:
                raise self.fail(
                    at("match"),
                    f"{label}: match {_shown(match)} is not a pattern "
                    "of service names (letters, digits, '.', '_', "
                    "'-' and the wildcards * ? [ ] !)",
                )
        state = self.choice(raw, "state", STATES, at, label)
        criticality = self.choice(raw, "criticality", CRITICALITIES, at, label)
        default = matrix_model(state, criticality)
        if "model" in raw:
            model = self.choice(raw, "model", MODELS, at, label)
        elif default is None:
            raise self.fail(
                at(),
                f"{label}: model is required for a {state} service of "
                f"{criticality} criticality: the matrix gives that cell no "
                "default (immutable or mutable)",
            )
        else:
            model = default
        why = raw.get("why")
        if why is None or (isinstance(why, str) and not why.strip()):
            raise self.fail(
                at("why"), f"{label}: why is required (document why the horizon is drawn here)"
            )
        if not isinstance(why, str) or len(why.strip()) > _MAX_WHY:
            raise self.fail(
                at("why"), f"{label}: why must be text of at most {_MAX_WHY} characters"
            )
        preprod = None
        if "preprod" in raw:
            preprod = self.preprod(raw["preprod"], at("preprod"), f"{label}: preprod")
        return ServicePolicy(
            name=name,
            match=match,
            state=state,
            criticality=criticality,
            model=model,
            why=why.strip(),
            preprod=preprod,
            departs_from_matrix=default is not None and model != default,
            line=at(),
        )

    def choice(
        self, raw: Mapping[str, Any], key: str, allowed: tuple[str, ...], at: Any, label: str
    ) -> str:
        if key not in raw:
            raise self.fail(at(), f"{label}: {key} is required ({' | '.join(allowed)})")
        value = raw[key]
        if value not in allowed:
            raise self.fail(
                at(key), f"{label}: {key} = {_shown(value)}: expected {' | '.join(allowed)}"
            )
        return str(value)


def _label(raw: Mapping[str, Any], index: int) -> str:
    for key in ("name", "match"):
        if isinstance(raw.get(key), str):
            return f'service "{raw[key]}"'
    return f"service #{index + 1}"


def _shown(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


_TOML_POSITION = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", flags=re.S)


def parse_policy(text: str, source: str = "horizon.toml") -> HorizonPolicy:
    """The policy ``text`` (TOML) holds; :class:`PolicyFileError` naming ``source`` and
    the line of the first problem (syntax, an unknown key, a missing why, a bad value)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_POSITION.match(message)
        if found:
            line = int(found[2])
            what = f"{found[1]} (column {found[3]})"
        else:  # "(at end of document)"
            line = max(1, len(text.splitlines()))
            what = message.replace(" (at end of document)", " at the end of the file")
        raise PolicyFileError(
            f"{source} line {line}: not valid TOML: {what}", source, line
        ) from None
    return _Parser(text, source).policy(raw)


# --- planning --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceChange:
    """A classification the ledger would record: a new one (``before`` None) or a change."""

    service: str
    entry: str
    """The policy entry (name or pattern) that classifies it."""
    before: Classification | None
    after: Classification
    changed: tuple[str, ...]
    """The fields that differ (every field for a new one)."""
    matrix_model: str | None
    departs_from_matrix: bool

    @property
    def action(self) -> Literal["create", "update"]:
        return "create" if self.before is None else "update"

    def as_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "action": self.action,
            "entry": self.entry,
            "before": None if self.before is None else self.before.as_dict(),
            "after": self.after.as_dict(),
            "changed": list(self.changed),
            "matrix_model": self.matrix_model,
            "departs_from_matrix": self.departs_from_matrix,
        }


@dataclass(frozen=True)
class PolicyChange:
    """The policy record the ledger would get: its data differs from the latest one's."""

    before: Mapping[str, Any] | None
    after: Mapping[str, Any]
    changed: tuple[str, ...]
    """Which of :data:`POLICY_FIELDS` differ (all, when none is recorded yet)."""

    @property
    def action(self) -> Literal["create", "update"]:
        return "create" if self.before is None else "update"

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "changed": list(self.changed),
            "before": None if self.before is None else dict(self.before),
            "after": dict(self.after),
        }


@dataclass(frozen=True)
class Unclassified:
    """A service the ledger knows in the environment that no entry of the policy covers,
    with what the ledger records of it (None: nothing)."""

    service: str
    recorded: Classification | None

    def as_dict(self) -> dict[str, Any]:
        recorded = None if self.recorded is None else self.recorded.as_dict()
        return {"service": self.service, "recorded": recorded}


@dataclass(frozen=True)
class HorizonPlan:
    """What applying a policy would record, as terraform plan lists it."""

    source: str
    environment: str
    digest: str
    changes: tuple[ServiceChange, ...]
    unchanged: tuple[str, ...]
    policy: PolicyChange | None
    unclassified: tuple[Unclassified, ...]
    """Not an action: services the ledger knows that the policy leaves unclassified."""

    @property
    def empty(self) -> bool:
        """Nothing to apply."""
        return not self.changes and self.policy is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy_file": self.source,
            "environment": self.environment,
            "digest": self.digest,
            "empty": self.empty,
            "services": [change.as_dict() for change in self.changes],
            "unchanged": list(self.unchanged),
            "policy": None if self.policy is None else self.policy.as_dict(),
            "unclassified": [u.as_dict() for u in self.unclassified],
        }


_EMPTY: dict[str, Any] = {"preprod": [], "services": [], "severity": {}, "thresholds": {}}


def plan(
    policy: HorizonPolicy,
    digest: str,
    known_services: Iterable[str],
    current_classifications: Mapping[str, Classification],
    current_policy_data: Mapping[str, Any] | None,
) -> HorizonPlan:
    """What applying ``policy`` (whose file has ``digest``) would record in a ledger that
    knows ``known_services`` in the policy's environment (any event names them there),
    whose latest classification of each service is ``current_classifications`` and whose
    latest policy record holds ``current_policy_data`` (None: none yet).

    A ``name`` entry classifies its service whether or not the ledger has seen it; a
    ``match`` entry classifies the known services it matches (the first pattern that
    matches, unless a name entry names the service). In service-name order."""
    known = sorted(set(known_services) - {POLICY_SERVICE})
    governed: dict[str, ServicePolicy] = {e.name: e for e in policy.services if e.name}
    unclassified: list[Unclassified] = []
    for service in known:
        entry = policy.service_policy(service)
        if entry is not None:
            governed.setdefault(service, entry)
        else:
            unclassified.append(Unclassified(service, current_classifications.get(service)))
    changes: list[ServiceChange] = []
    unchanged: list[str] = []
    for service in sorted(governed):
        entry = governed[service]
        after = entry.classification
        before = current_classifications.get(service)
        changed = tuple(
            name
            for name in CLASSIFICATION_FIELDS
            if before is None or getattr(before, name) != getattr(after, name)
        )
        if not changed:
            unchanged.append(service)
            continue
        changes.append(
            ServiceChange(
                service=service,
                entry=entry.entry,
                before=before,
                after=after,
                changed=changed,
                matrix_model=matrix_model(entry.state, entry.criticality),
                departs_from_matrix=entry.departs_from_matrix,
            )
        )
    wanted = policy.policy_data(digest)
    policy_change = None
    if current_policy_data is None:
        policy_change = PolicyChange(None, wanted, POLICY_FIELDS)
    else:
        recorded = _EMPTY | dict(current_policy_data)
        differs = tuple(name for name in POLICY_FIELDS if recorded.get(name) != wanted[name])
        if differs:
            policy_change = PolicyChange(dict(current_policy_data), wanted, differs)
    return HorizonPlan(
        source=policy.source,
        environment=policy.environment,
        digest=digest,
        changes=tuple(changes),
        unchanged=tuple(unchanged),
        policy=policy_change,
        unclassified=tuple(unclassified),
    )
