"""`ledger ingest terraform`: what a Terraform apply changed, as ledger events.

Pure: the plan (``terraform show -json PLANFILE``) and the apply's machine-readable log
(``terraform apply -json PLANFILE``) come in as bytes; events come out. No clock, no
environment, no Kafka: the same plan and log always give the same events, ids and bytes.

A plan is intent; only the apply says what changed. An event is made for each resource
change the log says completed (``apply_complete``); a failed one (``apply_errored``) is a
``deployment.failed`` when the change would have replaced a service's deployable unit, and
is otherwise only reported. What each change becomes (docs/integrations.md, "Terraform",
has the table):

- The **replacement of a deployable unit** is a deployment: a resource of a type in
  :data:`DEPLOYABLE` that is created, replaced, or updated in place with a new value of the
  attribute that carries its artifact (a Lambda function's code, an ECS service's task
  definition, a launch template's AMI). The artifact is read from that attribute; one that
  cannot be named as evidence (a tag rather than a digest, a value known only after apply,
  a sensitive value) makes the change an ``infra`` mutation instead, and a note says why.
- Everything else is a ``mutation.applied`` of kind ``infra``: target the resource address,
  hash the SHA-256 of the new attributes as canonical JSON (sorted keys, no spaces), each
  sensitive value (``after_sensitive``) replaced by its keyed digest
  (:mod:`ledger.integrations.secrets`); a deletion has hash null.
- An ECS service's rollout of a task definition the same plan registers is one
  deployment: the service's (the registration alone deploys nothing), with the task
  definition's containers.

Service and environment come from ``--map PATTERN=SERVICE[/ENV]`` rules (fnmatch on the
resource address, or on the address of a module or resource it is in; first match wins)
or ``--service``/``--env`` for the whole plan. Every change's address must map.

The event's time is the ``@timestamp`` of its ``apply_complete`` (``apply_errored``) line;
its id :func:`ledger.integrations.ids.ingest_id` over the tool ``terraform``, the run (the
SHA-256 of the plan file's bytes, as `terraform show -json` writes them: the same for the
same plan file, every time) and the resource (address, action).
"""

from __future__ import annotations

import base64
import binascii
import gc
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import translate
from typing import Any

from ledger.errors import LedgerError
from ledger.integrations.ids import ingest_id
from ledger.integrations.inputs import InputError, json_path, parse_json, parse_time
from ledger.integrations.secrets import HmacKey
from ledger.wire.codec import encode_event
from ledger.wire.events import Event, event_from_mapping

__all__ = [
    "DEPLOYABLE",
    "TOOL",
    "Ingested",
    "MapRule",
    "attributes_digest",
    "parse",
    "parse_maps",
]

TOOL = "terraform"
"""The tool, as ids and mutations name it."""

PLAN_FORMAT_MAJOR = "1"
"""``format_version`` of the plan JSON read (1.x: Terraform 0.12 to 1.x)."""
UI_FORMAT_MAJOR = "1"
"""``ui`` of the machine-readable UI stream read (1.x)."""

DEPLOYABLE: dict[str, str] = {
    "aws_ecs_task_definition": "container_definitions (each container's image) → "
    "ecs-task-definition family[:revision] with its containers",
    "aws_ecs_service": "task_definition → the ecs-task-definition it runs, when the plan "
    "registers it",
    "aws_lambda_function": "source_code_hash (else code_sha256) and version → lambda "
    "function_name[:version]@sha256:<code>; image_uri → OCI image (package_type Image)",
    "aws_launch_template": "image_id → ami",
    "aws_instance": "ami → ami",
    "docker_container": "image → OCI image, when pinned by digest",
    "kubernetes_deployment": "spec.template.spec.container[].image → OCI image (one "
    "container) or generic namespace/name (several), when pinned by digest",
    "kubernetes_deployment_v1": "as kubernetes_deployment",
}
"""The resource types whose replacement is a deployment, and the attribute that carries
the artifact. Any other type's changes are ``infra`` mutations."""

_ACTIONS: dict[tuple[str, ...], str] = {
    ("no-op",): "none",
    ("read",): "none",
    ("forget",): "none",
    ("create",): "create",
    ("update",): "update",
    ("delete",): "delete",
    ("delete", "create"): "replace",
    ("create", "delete"): "replace",
}
"""``change.actions`` → what the change does (none: nothing recorded)."""

_HOOK_ACTIONS: dict[str, frozenset[str]] = {
    "create": frozenset({"create"}),
    "update": frozenset({"update"}),
    "delete": frozenset({"delete"}),
    "replace": frozenset({"create", "delete", "replace"}),
    "none": frozenset({"read", "noop", "no-op", "forget"}),
}
"""What the log's hooks may say they do to a change of each kind."""

_COMPLETES: dict[str, frozenset[str]] = {
    "create": frozenset({"create"}),
    "update": frozenset({"update"}),
    "delete": frozenset({"delete"}),
    "replace": frozenset({"create", "replace"}),  # the new object exists: the unit replaced
}
"""The hook action whose ``apply_complete`` completes a change of each kind."""

_HOOK_TYPES = frozenset({"apply_start", "apply_progress", "apply_complete", "apply_errored"})
_PROVISION_TYPES = frozenset(
    {"provision_start", "provision_progress", "provision_complete", "provision_errored"}
)
_PLAN = "the JSON of `terraform show -json PLANFILE`"
_LOG = "the JSON Lines of `terraform apply -json PLANFILE`"
_PINNED = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")
_AMI = re.compile(r"^ami-[0-9a-f]{8,17}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ARTIFACT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+=,-]{0,511}$")
_FORMAT = re.compile(r"^(\d+)\.(\d+)$")
_MAX_NOTED = 10


# --- the command line's rules --------------------------------------------------------------


@dataclass(frozen=True)
class MapRule:
    """``--map PATTERN=SERVICE[/ENV]``: resources whose address matches go to SERVICE."""

    pattern: str
    service: str
    environment: str | None
    given: str
    matcher: re.Pattern[str] = field(compare=False, repr=False)
    """PATTERN as fnmatch matches it (case-sensitive), against the whole address or the
    address of a module or resource it is in: ``module.a`` matches ``module.a.aws_x.y``,
    ``aws_x.y`` matches ``aws_x.y[0]`` (what follows the match begins with ``.`` or ``[``)."""

    def matches(self, address: str) -> bool:
        return self.matcher.match(address) is not None


def parse_maps(values: Sequence[str]) -> list[MapRule]:
    """The ``--map`` rules, in order; an :class:`InputError` naming a malformed one."""
    rules = []
    for value in values:
        pattern, equals, target = value.rpartition("=")
        service, slash, environment = target.partition("/")
        if not equals or not pattern or not service or (slash and not environment):
            raise InputError(
                "--map",
                f"{value[:120]!r} is not a rule",
                "PATTERN=SERVICE or PATTERN=SERVICE/ENV, e.g. 'module.payments.*=payments' or "
                "'module.payments.*=payments/prod'",
            )
        whole = re.sub(r"\\[Zz]$", "", translate(pattern))  # (?s:…) without its end anchor
        matcher = re.compile(f"(?:{whole})(?:[.\\[].*)?\\Z", re.DOTALL)
        rules.append(MapRule(pattern, service, environment or None, value, matcher))
    return rules


# --- the result ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ingested:
    """The events of one apply, and what the command should tell its user about it."""

    events: list[Event]
    notes: list[str] = field(default_factory=list)


# --- reading the plan ----------------------------------------------------------------------


@dataclass
class _Change:
    index: int
    address: str
    type: str
    kind: str  # create, update, delete, replace, none
    before: Any
    after: Any
    after_unknown: Any
    after_sensitive: Any


@dataclass
class _Plan:
    terraform_version: str
    digest: str
    changes: dict[str, _Change]
    deposed: set[str]
    variables: Any


def _kind_of(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _looks_like_log(data: bytes) -> bool:
    first = data.lstrip().split(b"\n", 1)[0]
    try:
        value = json.loads(first)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and "@message" in value and "type" in value


def _read_plan(data: bytes, source: str, *, variable: str | None) -> _Plan:
    try:
        plan = parse_json(data, source, _PLAN)
    except InputError:
        if _looks_like_log(data):
            raise InputError(
                source, "a log of `terraform apply -json` (JSON Lines), not a plan", _PLAN
            ) from None
        raise
    if not isinstance(plan, dict):
        raise InputError(source, f"a JSON {_kind_of(plan)}, not a Terraform plan", _PLAN)
    if "@message" in plan and "type" in plan:
        raise InputError(source, "a line of `terraform apply -json`, not a plan", _PLAN)
    version = plan.get("format_version")
    if version is None:
        raise InputError(
            source,
            "no format_version: not a Terraform plan (JSON of another tool?)",
            _PLAN,
            "the top level",
        )
    found = _FORMAT.match(version) if isinstance(version, str) else None
    if found is None or found[1] != PLAN_FORMAT_MAJOR:
        raise InputError(
            source,
            f"unknown format version {version!r}",
            f"format_version {PLAN_FORMAT_MAJOR}.x ({_PLAN})",
            "format_version",
        )
    terraform = plan.get("terraform_version")
    if not isinstance(terraform, str) or not terraform:
        raise InputError(
            source,
            f"terraform_version is a JSON {_kind_of(terraform)}",
            "the version of Terraform that made the plan",
            "terraform_version",
        )
    if "resource_changes" not in plan:
        what = (
            "a Terraform state (`terraform show -json` without a plan file), not a plan"
            if "values" in plan
            else "a plan without resource_changes"
        )
        raise InputError(source, what, _PLAN + ", which lists resource_changes", "the top level")
    if plan.get("errored") is True:
        raise InputError(
            source,
            "the plan errored (errored: true): it cannot have been applied",
            "the plan of an apply that ran",
            "errored",
        )
    listed = plan["resource_changes"]
    if not isinstance(listed, list):
        raise InputError(
            source, f"a JSON {_kind_of(listed)}", "an array of resource changes", "resource_changes"
        )
    changes: dict[str, _Change] = {}
    deposed: set[str] = set()
    for index, item in enumerate(listed):
        change = _read_change(item, index, source)
        if isinstance(item.get("deposed"), str):
            deposed.add(change.address)
            continue
        if item.get("deposed") is not None:
            raise InputError(
                source,
                f"a JSON {_kind_of(item['deposed'])}",
                "the deposed object's key (a string) or nothing",
                f"resource_changes[{index}].deposed",
            )
        if change.address in changes:
            raise InputError(
                source,
                f"{change.address} is listed twice",
                "one change per resource address",
                f"resource_changes[{index}]",
            )
        changes[change.address] = change
    variables = plan.get("variables")
    if variable is not None:
        entry = variables.get(variable) if isinstance(variables, dict) else None
        value = entry.get("value") if isinstance(entry, dict) else None
        if not isinstance(value, str):
            problem = (
                f"no variable {variable!r}"
                if entry is None
                else f"the variable {variable!r} is a JSON {_kind_of(value)}"
            )
            raise InputError(
                source,
                problem,
                "the change ref as a string variable of the plan (--change-ref-var)",
                f"variables.{variable}.value",
            )
    digest = hashlib.sha256(data).hexdigest()  # the file's bytes: what Terraform wrote
    return _Plan(terraform, f"sha256:{digest}", changes, deposed, variables)


def _read_change(item: Any, index: int, source: str) -> _Change:
    where: list[str | int] = ["resource_changes", index]
    if not isinstance(item, dict):
        raise InputError(
            source, f"a JSON {_kind_of(item)}", "a resource change (an object)", json_path(where)
        )
    for name in ("address", "type"):
        if not isinstance(item.get(name), str) or not item[name]:
            raise InputError(
                source,
                f"{name} is a JSON {_kind_of(item.get(name))}",
                f"the resource's {name} (a string)",
                json_path([*where, name]),
            )
    change = item.get("change")
    if not isinstance(change, dict):
        raise InputError(
            source,
            f"a JSON {_kind_of(change)}",
            "the change (an object)",
            json_path([*where, "change"]),
        )
    actions = change.get("actions")
    kind = None
    if isinstance(actions, list) and all(isinstance(a, str) for a in actions):
        kind = _ACTIONS.get(tuple(actions))
    if kind is None:
        known = "; ".join(json.dumps(list(a)) for a in _ACTIONS)
        shown = json.dumps(actions)[:120] if _kind_of(actions) != "object" else "an object"
        raise InputError(
            source,
            f"actions {shown} are not Terraform's",
            f"one of {known}",
            json_path([*where, "change", "actions"]),
        )
    for name in ("before", "after"):
        value = change.get(name)
        if value is not None and not isinstance(value, dict):
            raise InputError(
                source,
                f"a JSON {_kind_of(value)}",
                "the resource's attributes (an object) or null",
                json_path([*where, "change", name]),
            )
    if kind in ("create", "update", "replace") and change.get("after") is None:
        raise InputError(
            source,
            "null",
            "the attributes after the change (an object)",
            json_path([*where, "change", "after"]),
        )
    return _Change(
        index,
        item["address"],
        item["type"],
        kind,
        change.get("before"),
        change.get("after"),
        change.get("after_unknown"),
        change.get("after_sensitive"),
    )


# --- reading the apply log -----------------------------------------------------------------


@dataclass
class _Outcome:
    completed: datetime | None = None
    errored: datetime | None = None
    message: str | None = None


@dataclass
class _Log:
    outcomes: dict[str, _Outcome]
    reasons: dict[str, str]
    errors: list[str]


def _line_error(
    source: str, number: int, problem: str, expected: str = _LOG, at: str | None = None
) -> InputError:
    return InputError(source, problem, expected, f"line {number}" + (f" {at}" if at else ""))


def _read_log(data: bytes, source: str, plan: _Plan, plan_source: str) -> _Log:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(source, "not UTF-8 text", _LOG, f"byte {exc.start}") from None
    outcomes: dict[str, _Outcome] = {}
    reasons: dict[str, str] = {}
    errors: list[str] = []
    version_seen = finished = False
    last = 0
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        last = number
        try:
            message = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _line_error(
                source,
                number,
                f"not valid JSON ({exc.msg}; a truncated log?)",
                at=f"column {exc.colno}",
            ) from None
        except (ValueError, RecursionError):
            raise _line_error(source, number, "JSON this parser cannot read") from None
        if not isinstance(message, dict):
            raise _line_error(source, number, f"a JSON {_kind_of(message)}, not a message")
        if "format_version" in message and "@message" not in message:
            raise _line_error(
                source,
                number,
                "a plan or state (terraform show -json), not a log of terraform apply -json",
            )
        if not version_seen:
            _check_version(message, source, number, plan, plan_source)
            version_seen = True
            continue
        kind = message.get("type")
        if not isinstance(kind, str):
            raise _line_error(
                source,
                number,
                f"type is a JSON {_kind_of(kind)}",
                "a message of `terraform apply -json` with its type",
                "type",
            )
        if kind in _HOOK_TYPES or kind in _PROVISION_TYPES:
            _hook(message, kind, source, number, plan, outcomes)
        elif kind == "planned_change":
            _planned(message, source, number, plan)
        elif kind == "change_summary":
            finished = True
        elif kind == "diagnostic":
            diagnostic = message.get("diagnostic")
            if not isinstance(diagnostic, dict):
                raise _line_error(
                    source,
                    number,
                    f"diagnostic is a JSON {_kind_of(diagnostic)}",
                    "Terraform's diagnostic (an object)",
                    "diagnostic",
                )
            if diagnostic.get("severity") == "error":
                finished = True
                summary = _text(diagnostic.get("summary")) or "error"
                detail = _text(diagnostic.get("detail"))
                said = f"{summary}: {detail}" if detail else summary
                address = diagnostic.get("address")
                if isinstance(address, str) and address in plan.changes:
                    reasons.setdefault(address, said)
                else:
                    errors.append(said)
    if not version_seen:
        raise InputError(source, "empty: no message", _LOG)
    if not finished:
        raise _line_error(
            source,
            last,
            "the log ends before Terraform's summary "
            "(change_summary) or an error: a truncated log, or an apply still "
            "running",
            "the whole output of `terraform apply -json PLANFILE`",
        )
    return _Log(outcomes, reasons, errors)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _check_version(
    message: dict[str, Any], source: str, number: int, plan: _Plan, plan_source: str
) -> None:
    if message.get("type") != "version":
        raise _line_error(
            source,
            number,
            "not Terraform's version message: not a log of "
            "`terraform apply -json` (the JSON of another tool?)",
        )
    ui = message.get("ui")
    found = _FORMAT.match(ui) if isinstance(ui, str) else None
    if found is None or found[1] != UI_FORMAT_MAJOR:
        raise _line_error(
            source,
            number,
            f"unknown format version {ui!r}",
            f"the machine-readable UI {UI_FORMAT_MAJOR}.x",
            "ui",
        )
    terraform = message.get("terraform")
    if terraform != plan.terraform_version:
        raise _line_error(
            source,
            number,
            f"written by Terraform {str(terraform)[:40]}, while "
            f"{plan_source} was planned by {plan.terraform_version}: the log is "
            "not this plan's apply",
            "the apply of this plan",
            "terraform",
        )


def _resource(message: dict[str, Any], holder: str, source: str, number: int) -> dict[str, Any]:
    inner = message.get(holder)
    if isinstance(inner, dict):
        resource = inner.get("resource")
        if isinstance(resource, dict) and isinstance(resource.get("addr"), str):
            return inner
    raise _line_error(
        source,
        number,
        f"no {holder}.resource.addr",
        f"a {str(message.get('type'))[:40]} message naming its resource",
        holder,
    )


def _not_this_plan(source: str, number: int, address: str, said: str | None = None) -> InputError:
    problem = (
        f"names {address[:200]}, which the plan does not change"
        if said is None
        else f"says Terraform {said} {address[:200]}, which the plan does not"
    )
    return _line_error(
        source,
        number,
        f"{problem}: the log is not this plan's apply",
        "the log of `terraform apply -json` of this very plan",
    )


def _hook(
    message: dict[str, Any],
    kind: str,
    source: str,
    number: int,
    plan: _Plan,
    outcomes: dict[str, _Outcome],
) -> None:
    hook = _resource(message, "hook", source, number)
    address = hook["resource"]["addr"]
    change = plan.changes.get(address)
    if change is None and address not in plan.deposed:
        raise _not_this_plan(source, number, address)
    if kind in _PROVISION_TYPES:
        return
    action = hook.get("action")
    if not isinstance(action, str):
        raise _line_error(
            source,
            number,
            f"hook.action is a JSON {_kind_of(action)}",
            f"the action of an {kind} message",
            "hook.action",
        )
    allowed = _HOOK_ACTIONS[change.kind] if change is not None else frozenset()
    if address in plan.deposed:
        allowed = allowed | {"delete"}
    if action not in allowed:
        raise _not_this_plan(source, number, address, said=f"did {action[:20]!r} to")
    if change is None or kind not in ("apply_complete", "apply_errored"):
        return
    at = _timestamp(message.get("@timestamp"), source, f"line {number} @timestamp")
    outcome = outcomes.setdefault(address, _Outcome())
    if kind == "apply_complete":
        if change.kind in _COMPLETES and action in _COMPLETES[change.kind]:
            outcome.completed = outcome.completed or at
    elif outcome.errored is None:
        outcome.errored = at
        outcome.message = _text(message.get("@message")) or None


_TERRAFORM_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
"""The form Terraform writes ``@timestamp`` in (Go's RFC 3339 with microseconds, UTC)."""


def _timestamp(value: Any, source: str, position: str) -> datetime:
    """A log line's ``@timestamp``: Terraform's own form read directly, anything else as
    :func:`parse_time` reads (and refuses) RFC 3339."""
    if isinstance(value, str) and _TERRAFORM_TIME.match(value):
        try:
            return datetime.fromisoformat(value)  # Python 3.11 reads the Z as UTC
        except ValueError:
            pass  # 2025-02-30: parse_time names it
    return parse_time(value, source, position)


def _planned(message: dict[str, Any], source: str, number: int, plan: _Plan) -> None:
    planned = _resource(message, "change", source, number)
    address = planned["resource"]["addr"]
    if address not in plan.changes and address not in plan.deposed:
        raise _not_this_plan(source, number, address)


# --- what a change is ----------------------------------------------------------------------


def _get(value: Any, *path: str | int) -> Any:
    """``value[path…]`` where every step exists with the right shape, else None."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(value, list) or step >= len(value):
                return None
        elif not isinstance(value, dict):
            return None
        value = value[step] if isinstance(step, int) else value.get(step)
    return value


def _marked(marks: Any, *path: str | int) -> bool:
    """True when ``after_unknown``/``after_sensitive`` marks the value at ``path``, or a
    value that holds it, or one inside it."""
    value = marks
    for step in path:
        if value is True:
            return True
        value = _get(value, step)
    return _any_true(value)


def _any_true(marks: Any) -> bool:
    if marks is True:
        return True
    if isinstance(marks, dict):
        return any(_any_true(v) for v in marks.values())
    if isinstance(marks, list):
        return any(_any_true(v) for v in marks)
    return False


@dataclass(frozen=True)
class _Unit:
    """What a deployment names: ``{"image": …}`` or ``{"artifact": {…}}``."""

    data: dict[str, Any]
    folds: str | None = None
    """The address of a task definition whose registration this rollout includes."""


_Namer = Callable[["_Change", "_Context"], "_Unit | str"]


@dataclass
class _Context:
    plan: _Plan
    places: dict[str, tuple[str, str]]


def _unknown_or_sensitive(change: _Change, *path: str | int) -> str | None:
    name = ".".join(str(p) for p in path)
    if _marked(change.after_unknown, *path):
        return f"its {name} is known only after apply, so the plan cannot name the artifact"
    if _marked(change.after_sensitive, *path):
        return f"its {name} is sensitive: an artifact is not recorded from a secret"
    return None


def _pinned(image: Any, where: str) -> str | None:
    """None when ``image`` is a reference pinned by digest, else why it is no evidence."""
    if not isinstance(image, str):
        return f"{where} is no image reference"
    if not _PINNED.match(image):
        return f"{where} {image[:200]!r} is not pinned by digest (a tag is not evidence)"
    return None


def _ami(attribute: str) -> _Namer:
    def name(change: _Change, context: _Context) -> _Unit | str:
        why = _unknown_or_sensitive(change, attribute)
        if why:
            return why
        ami = _get(change.after, attribute)
        if not isinstance(ami, str) or not _AMI.match(ami):
            return f"its {attribute} {str(ami)[:80]!r} is not an AMI id (ami-<hex>)"
        return _Unit({"artifact": {"kind": "ami", "id": ami}})

    return name


def _containers(definitions: Any) -> list[tuple[str, Any]] | str:
    """An ECS task definition's containers, (name, image), from container_definitions."""
    if not isinstance(definitions, str):
        return "its container_definitions is no JSON text"
    try:
        parsed = json.loads(definitions)
    except (ValueError, RecursionError):
        return "its container_definitions is not valid JSON"
    if not isinstance(parsed, list) or not parsed:
        return "its container_definitions lists no container"
    out = []
    for container in parsed:
        name = _get(container, "name")
        if not isinstance(name, str):
            return "a container of its container_definitions has no name"
        out.append((name, _get(container, "image")))
    return out


def _task_definition(change: _Change, context: _Context) -> _Unit | str:
    why = _unknown_or_sensitive(change, "container_definitions")
    if why:
        return why
    containers = _containers(_get(change.after, "container_definitions"))
    if isinstance(containers, str):
        return containers
    for name, image in containers:
        unpinned = _pinned(image, f"container {name[:64]}'s image")
        if unpinned:
            return unpinned
    family = _get(change.after, "family")
    if not isinstance(family, str) or not _ARTIFACT_ID.match(family):
        return f"its family {str(family)[:80]!r} does not name a task definition"
    revision = _get(change.after, "revision")
    unit_id = family
    if (
        isinstance(revision, int)
        and not isinstance(revision, bool)
        and not _marked(change.after_unknown, "revision")
    ):
        unit_id = f"{family}:{revision}"
    listed = [{"name": name, "image": image} for name, image in containers]
    return _Unit({"artifact": {"kind": "ecs-task-definition", "id": unit_id, "containers": listed}})


def _family(reference: str) -> tuple[str, str | None]:
    """``arn:…:task-definition/web:7``, ``web:7`` or ``web`` → (family, revision)."""
    tail = reference.rsplit("task-definition/", 1)[-1]
    family, colon, revision = tail.partition(":")
    return family, (revision if colon else None)


def _ecs_service(change: _Change, context: _Context) -> _Unit | str:
    if _marked(change.after_sensitive, "task_definition"):
        return "its task_definition is sensitive: an artifact is not recorded from a secret"
    reference = _get(change.after, "task_definition")
    candidates = [
        c
        for c in context.plan.changes.values()
        if c.type == "aws_ecs_task_definition" and c.kind in ("create", "replace")
    ]
    if isinstance(reference, str) and not _marked(change.after_unknown, "task_definition"):
        # A family alone runs its latest revision: the one this plan registers, if it does.
        # A revision named is another matter: the plan does not know the number the new
        # registration gets, so it cannot tell whether that revision is the new one.
        family, revision = _family(reference)
        found = [c for c in candidates if _get(c.after, "family") == family]
        if revision is not None or not found:
            registers = "registers a new revision of its family, numbered only at apply"
            return (
                f"it runs task definition {reference[:120]!r}, which this plan "
                f"{registers if found else 'does not register'}: its containers are unknown here"
            )
    else:
        place = context.places.get(change.address)
        found = [c for c in candidates if context.places.get(c.address) == place]
    if len(found) != 1:
        return (
            f"the plan registers {len(found)} task definitions it may run: which one it runs "
            "cannot be told"
        )
    named = _task_definition(found[0], context)
    if isinstance(named, str):
        return f"the task definition it runs ({found[0].address}): {named}"
    return _Unit(named.data, folds=found[0].address)


def _code_digest(value: Any) -> str | None:
    """A Lambda code hash (base64 of the SHA-256, as Terraform's filebase64sha256 and the
    Lambda API give it, or 64 hex digits) as ``sha256:<hex>``; None if it is neither."""
    if not isinstance(value, str):
        return None
    if _HEX64.match(value):
        return f"sha256:{value}"
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return f"sha256:{raw.hex()}" if len(raw) == 32 else None


def _lambda(change: _Change, context: _Context) -> _Unit | str:
    after = change.after
    if _get(after, "package_type") == "Image":
        why = _unknown_or_sensitive(change, "image_uri")
        if why:
            return why
        image = _get(after, "image_uri")
        return _pinned(image, "its image_uri") or _Unit({"image": image})
    digest = None
    for attribute in ("source_code_hash", "code_sha256"):
        if _marked(change.after_unknown, attribute) or _marked(change.after_sensitive, attribute):
            continue
        digest = _code_digest(_get(after, attribute))
        if digest:
            break
    if digest is None:
        return (
            "the plan knows no SHA-256 of its code (set source_code_hash = "
            'filebase64sha256("<zip>"))'
        )
    function = _get(after, "function_name")
    if not isinstance(function, str) or not _ARTIFACT_ID.match(function):
        return f"its function_name {str(function)[:80]!r} does not name a function"
    version = _get(after, "version")
    known = (
        isinstance(version, str)
        and version.isdigit()
        and not _marked(change.after_unknown, "version")
    )
    unit_id = f"{function}:{version}" if known else function
    return _Unit({"artifact": {"kind": "lambda", "id": unit_id, "digest": digest}})


def _docker(change: _Change, context: _Context) -> _Unit | str:
    why = _unknown_or_sensitive(change, "image")
    if why:
        return why
    image = _get(change.after, "image")
    return _pinned(image, "its image") or _Unit({"image": image})


def _pod_containers(values: Any) -> list[tuple[Any, Any]]:
    listed = _get(values, "spec", 0, "template", 0, "spec", 0, "container")
    if not isinstance(listed, list):
        return []
    return [(_get(c, "name"), _get(c, "image")) for c in listed]


def _kubernetes(change: _Change, context: _Context) -> _Unit | str:
    path = ("spec", 0, "template", 0, "spec", 0, "container")
    why = _unknown_or_sensitive(change, *path)
    if why:
        return why
    containers = _pod_containers(change.after)
    if not containers:
        return "it lists no container"
    for name, image in containers:
        unpinned = _pinned(image, f"container {str(name)[:64]}'s image")
        if unpinned:
            return unpinned
    if len(containers) == 1:
        return _Unit({"image": containers[0][1]})
    name = _get(change.after, "metadata", 0, "name")
    namespace = _get(change.after, "metadata", 0, "namespace") or "default"
    unit_id = f"{namespace}/{name}"
    if not isinstance(name, str) or not _ARTIFACT_ID.match(unit_id):
        return f"its metadata names no deployment ({str(name)[:80]!r})"
    lines = "".join(f"{n}={i}\n" for n, i in sorted(containers, key=lambda c: str(c[0])))
    digest = "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    return _Unit({"artifact": {"kind": "generic", "id": unit_id, "digest": digest}})


_LAMBDA_CODE = (
    "source_code_hash",
    "image_uri",
    "filename",
    "s3_bucket",
    "s3_key",
    "s3_object_version",
)


def _carried(type_: str, values: Any) -> Any:
    """The value(s) that carry a deployable resource's artifact: an update that changes
    them replaces the unit."""
    if type_ == "aws_ecs_task_definition":
        containers = _containers(_get(values, "container_definitions"))
        return containers if not isinstance(containers, str) else None
    if type_ == "aws_lambda_function":
        return [_get(values, name) for name in _LAMBDA_CODE]
    if type_.startswith("kubernetes_deployment"):
        return _pod_containers(values)
    attribute = {
        "aws_ecs_service": "task_definition",
        "aws_launch_template": "image_id",
        "aws_instance": "ami",
        "docker_container": "image",
    }[type_]
    return _get(values, attribute)


def _carrier_unknown(change: _Change) -> bool:
    marks = change.after_unknown
    if change.type == "aws_lambda_function":
        return any(_marked(marks, name) for name in _LAMBDA_CODE)
    if change.type.startswith("kubernetes_deployment"):
        return _marked(marks, "spec", 0, "template", 0, "spec", 0, "container")
    attribute = {
        "aws_ecs_task_definition": "container_definitions",
        "aws_ecs_service": "task_definition",
        "aws_launch_template": "image_id",
        "aws_instance": "ami",
        "docker_container": "image",
    }[change.type]
    return _marked(marks, attribute)


_NAMERS: dict[str, _Namer] = {
    "aws_ecs_task_definition": _task_definition,
    "aws_ecs_service": _ecs_service,
    "aws_lambda_function": _lambda,
    "aws_launch_template": _ami("image_id"),
    "aws_instance": _ami("ami"),
    "docker_container": _docker,
    "kubernetes_deployment": _kubernetes,
    "kubernetes_deployment_v1": _kubernetes,
}


def _replaces_unit(change: _Change) -> bool:
    """Whether the change replaces a deployable unit (before naming its artifact)."""
    if change.type not in _NAMERS or change.kind in ("delete", "none"):
        return False
    if change.kind in ("create", "replace"):
        return True
    return _carrier_unknown(change) or _carried(change.type, change.before) != _carried(
        change.type, change.after
    )


# --- the new attributes' digest ------------------------------------------------------------


def _redact(value: Any, marks: Any, key: HmacKey) -> Any:
    if marks is True:
        return key.digest_value(value)
    if isinstance(value, dict) and isinstance(marks, dict):
        return {name: _redact(inner, marks.get(name), key) for name, inner in value.items()}
    if isinstance(value, list) and isinstance(marks, list):
        return [
            _redact(inner, marks[i] if i < len(marks) else None, key)
            for i, inner in enumerate(value)
        ]
    return value


def _sensitive_paths(marks: Any, prefix: str = "") -> list[str]:
    if marks is True:
        return [prefix or "(every attribute)"]
    out: list[str] = []
    if isinstance(marks, dict):
        for name, inner in marks.items():
            out += _sensitive_paths(inner, f"{prefix}.{name}" if prefix else str(name))
    elif isinstance(marks, list):
        for index, inner in enumerate(marks):
            out += _sensitive_paths(inner, f"{prefix}[{index}]")
    return out


def attributes_digest(after: Any, after_sensitive: Any, key: HmacKey | None) -> str:
    """``sha256:<hex>`` of the attributes as canonical JSON (sorted keys, no spaces,
    UTF-8), each value ``after_sensitive`` marks replaced by ``hmac-sha256:<hex>`` under
    ``key`` (a :class:`ValueError` without a key when there is one to replace)."""
    if _any_true(after_sensitive):
        if key is None:
            raise ValueError("sensitive values need an HMAC key")
        after = _redact(after, after_sensitive, key)
    text = json.dumps(after, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# --- the events ----------------------------------------------------------------------------


def _places(
    plan: _Plan, rules: Sequence[MapRule], service: str | None, environment: str | None
) -> dict[str, tuple[str, str]]:
    """(service, environment) of every address with a change to record."""
    places: dict[str, tuple[str, str]] = {}
    unmapped: list[str] = []
    unplaced: list[str] = []
    # One regular expression for all the rules: an alternation tries its branches in
    # order, so the branch that matches is the first rule that does.
    either: re.Pattern[str] | None = None
    if rules:
        branches = "|".join(f"(?P<r{n}>{r.matcher.pattern})" for n, r in enumerate(rules))
        try:
            either = re.compile(branches, re.DOTALL)
        except re.error:  # a Python whose fnmatch names groups: one rule at a time
            either = None
    for address, change in plan.changes.items():
        if change.kind == "none":
            continue
        if either is not None:
            found = either.match(address)
            rule = rules[int(found.lastgroup[1:])] if found and found.lastgroup else None
        else:
            rule = next((r for r in rules if r.matches(address)), None)
        the_service = rule.service if rule else service
        the_env = (rule.environment if rule else None) or environment
        if the_service is None:
            unmapped.append(address)
        elif the_env is None:
            unplaced.append(address)
        else:
            places[address] = (the_service, the_env)
    if unmapped:
        shown = ", ".join(unmapped[:_MAX_NOTED]) + (
            f" and {len(unmapped) - _MAX_NOTED} more" if len(unmapped) > _MAX_NOTED else ""
        )
        raise InputError(
            "--map",
            f"no rule maps {shown} to a service, and no --service is given",
            "a --map PATTERN=SERVICE[/ENV] rule matching each changed "
            "resource's address, or --service for the whole plan",
        )
    if unplaced:
        raise InputError(
            "--env",
            f"not given, and the --map rule for {unplaced[0]} names no environment",
            "--env ENV, or rules of the form PATTERN=SERVICE/ENV",
        )
    return places


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a plan is read: decoding a plan's JSON makes
    hundreds of thousands of containers and no reference cycle, and the collector,
    triggered by their number, would walk them again and again (half the time of reading
    a large plan on Python 3.11). Restored after, as it was."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def parse(
    plan: bytes,
    apply_log: bytes,
    *,
    plan_source: str = "the plan",
    log_source: str = "the apply log",
    maps: Sequence[str] = (),
    service: str | None = None,
    environment: str | None = None,
    hmac_key: HmacKey | None = None,
    change_ref: str | None = None,
    change_ref_variable: str | None = None,
    source: str | None = None,
    actor: str | None = None,
) -> Ingested:
    """The events of the apply ``apply_log`` records of ``plan`` (see the module's text).

    Everything is read and checked before anything is returned: an :class:`InputError`
    names the file, the position in it and what was expected, or the option at fault."""
    if change_ref is not None and change_ref_variable is not None:
        raise InputError("--change-ref-var", "given with --change-ref", "one of the two")
    rules = parse_maps(maps)
    try:
        with _collector_paused():
            return _parse(
                plan,
                apply_log,
                plan_source,
                log_source,
                rules,
                service,
                environment,
                hmac_key,
                change_ref,
                change_ref_variable,
                source,
                actor,
            )
    except RecursionError:
        raise InputError(plan_source, "JSON nested too deeply to read", _PLAN) from None


def _parse(
    plan_bytes: bytes,
    log_bytes: bytes,
    plan_source: str,
    log_source: str,
    rules: Sequence[MapRule],
    service: str | None,
    environment: str | None,
    key: HmacKey | None,
    change_ref: str | None,
    change_ref_variable: str | None,
    source: str | None,
    actor: str | None,
) -> Ingested:
    try:
        plan = _read_plan(plan_bytes, plan_source, variable=change_ref_variable)
    except ValueError:  # an integer of more digits than Python converts
        raise InputError(plan_source, "a number too long to read", _PLAN) from None
    log = _read_log(log_bytes, log_source, plan, plan_source)
    places = _places(plan, rules, service, environment)
    if change_ref_variable is not None:
        change_ref = plan.variables[change_ref_variable]["value"]
    context = _Context(plan, places)
    the_source = source or TOOL
    the_actor = actor or the_source
    notes: list[str] = []
    units: dict[str, _Unit | str] = {}
    for address, change in plan.changes.items():
        if _replaces_unit(change):
            units[address] = _NAMERS[change.type](change, context)
    folded = {
        unit.folds: address
        for address, unit in units.items()
        if isinstance(unit, _Unit) and unit.folds
    }
    raws: list[tuple[datetime, str, dict[str, Any]]] = []
    needs_key: list[str] = []
    not_applied: list[str] = []
    failed: list[str] = []
    for address, change in plan.changes.items():
        if change.kind == "none":
            continue
        outcome = log.outcomes.get(address, _Outcome())
        at = outcome.completed or outcome.errored
        if at is None:
            not_applied.append(address)
            continue
        unit = units.get(address)
        if isinstance(unit, str):
            notes.append(f"{address}: recorded as an infra mutation, not a deployment: {unit}")
        if address in folded and outcome.completed is not None:
            rollout = folded[address]
            if rollout in log.outcomes:
                notes.append(f"{address}: its registration is part of the deployment {rollout} "
                             "records")  # fmt: skip
            else:
                notes.append(f"{address}: registered, but the apply did not reach its rollout "
                             f"{rollout}: nothing was deployed, nothing is recorded")  # fmt: skip
            continue
        the_service, the_env = places[address]
        base = {
            "time": at,
            "source": the_source,
            "actor": the_actor,
            "service": the_service,
            "environment": the_env,
        }
        if outcome.completed is None:  # errored
            reason = log.reasons.get(address) or outcome.message or "terraform apply failed"
            if isinstance(unit, _Unit):
                raws.append(
                    (
                        at,
                        address,
                        base
                        | {
                            "id": ingest_id(at, TOOL, (plan.digest,), (address, change.kind)),
                            "type": "deployment.failed",
                            "data": unit.data | {"change_ref": change_ref, "reason": reason[:4096]},
                        },
                    )
                )
            else:
                failed.append(f"{address} ({change.kind}: {reason[:200]})")
            continue
        if isinstance(unit, _Unit):
            data: dict[str, Any] = unit.data | {"change_ref": change_ref}
            kind = "deployment.succeeded"
        else:
            digest = None
            if change.kind != "delete":
                if _any_true(change.after_sensitive) and key is None:
                    paths = ", ".join(_sensitive_paths(change.after_sensitive)[:5])
                    needs_key.append(f"{address} ({paths})")
                    continue
                digest = attributes_digest(change.after, change.after_sensitive, key)
            data = {
                "target_kind": "infra",
                "target": address,
                "hash": digest,
                "tool": TOOL,
                "method": "pipeline",
                "change_ref": change_ref,
            }
            kind = "mutation.applied"
        raws.append(
            (
                at,
                address,
                base
                | {
                    "id": ingest_id(at, TOOL, (plan.digest,), (address, change.kind)),
                    "type": kind,
                    "data": data,
                },
            )
        )
    if needs_key:
        shown = "; ".join(needs_key[:_MAX_NOTED])
        raise InputError(
            plan_source,
            f"sensitive values in {shown}{' …' if len(needs_key) > _MAX_NOTED else ''}, and no "
            "HMAC key to record them with (a plain digest of a secret can be guessed)",
            "--hmac-key-file FILE or LEDGER_HMAC_KEY_FILE: the key the producers and "
            'observers of the organisation share (docs/integrations.md, "The HMAC key")',
        )
    if failed:
        notes.append(
            f"{len(failed)} change(s) failed, not recorded (no deployable unit: a "
            "failed change leaves no new state to record): " + "; ".join(failed[:_MAX_NOTED])
        )
    if not_applied:
        notes.append(
            f"{len(not_applied)} planned change(s) the apply did not reach, not "
            "recorded: " + ", ".join(not_applied[:_MAX_NOTED])
        )
    notes += [f"terraform apply: {error[:300]}" for error in log.errors[:_MAX_NOTED]]
    raws.sort(key=lambda item: (item[0], item[1]))
    return Ingested([_event(raw, address, plan_source) for _, address, raw in raws], notes)


_ORIGINS = {
    "source": "--source",
    "actor": "--actor",
    "service": "--map/--service",
    "environment": "--map/--env",
    "data.change_ref": "--change-ref",
}


def _event(raw: Mapping[str, Any], address: str, plan_source: str) -> Event:
    raw = dict(raw)
    raw["data"] = {
        name: value for name, value in raw["data"].items() if value is not None or name == "hash"
    }
    try:
        event = event_from_mapping(raw)
        if event.type != "mutation.applied":
            # An oversize event is refused here, before anything is sent. A mutation cannot
            # be one: every field of it is bounded (address, source, actor, change ref at
            # most 1,024 characters each, a digest), far below the 48 KiB limit; a
            # deployment's artifact is not (its images have no length limit).
            encode_event(event)
    except LedgerError as exc:
        field_name = getattr(exc, "field", None) or ""
        origin = _ORIGINS.get(field_name)
        if origin is None:
            raise InputError(
                plan_source, f"{address}: {exc.message}", "attributes that make a valid event"
            ) from None
        raise InputError(origin, exc.message) from None
    return event
