"""The event contract: strict pydantic models for deployment, mutation, approval, classification
and policy events.

Field names here are a public contract (producers, stored payloads and third-party
verifiers rely on them): fields may be added, never renamed. Validation is strict, so a
signed event means exactly what its bytes say: no string becomes a number, no boolean a
count; a time is a datetime (decoded from Avro) or an RFC 3339 string with its offset (from
JSON), never a number. Every refusal names the field, so a producer learns at emit time
what the consumer would otherwise quarantine.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NewType, TypeAlias

import uuid6
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ledger.errors import InvalidEventError, UnpinnedImageError

__all__ = [
    "EVENT_TYPES",
    "ApprovalGrantedData",
    "ApprovalGrantedEvent",
    "ApprovalRevokedData",
    "ApprovalRevokedEvent",
    "Artifact",
    "ArtifactKind",
    "ClassificationData",
    "ClassificationEvent",
    "Container",
    "DeploymentData",
    "DeploymentEvent",
    "DeploymentFailedData",
    "DeploymentFailedEvent",
    "Event",
    "Instances",
    "MutationData",
    "MutationEvent",
    "PolicyData",
    "PolicyRecordedEvent",
    "RollbackData",
    "RollbackEvent",
    "ServicePreprod",
    "ThresholdName",
    "derived_event_id",
    "event_from_json",
    "event_from_mapping",
    "new_event_id",
    "unit_reference",
    "with_derived_id",
]

ImageRef = NewType("ImageRef", str)
"""An OCI reference pinned by digest: ``name@sha256:<64 hex>``."""

ContentDigest = NewType("ContentDigest", str)
"""A content digest: ``sha256:<64 hex>``."""

_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def _check_image(value: str) -> ImageRef:
    if not _IMAGE_RE.fullmatch(value):
        name, at, digest = value.rpartition("@")
        if at and _DIGEST_RE.fullmatch(digest):  # pinned, but not a repository name
            raise PydanticCustomError(
                "invalid_image",
                "image '{value}': '{name}' is not a repository name (lowercase letters, digits "
                "and . _ / : -, beginning with a letter or digit)",
                {"value": value, "name": name},
            )
        raise PydanticCustomError(
            "unpinned_image",
            "image '{value}' is not pinned by digest (expected name@sha256:<64 hex>);"
            " a tag is not evidence",
            {"value": value},
        )
    return ImageRef(value)


def _check_digest(value: str) -> ContentDigest:
    if not _DIGEST_RE.fullmatch(value):
        raise PydanticCustomError(
            "bad_digest", "'{value}' is not a digest of the form sha256:<64 hex>", {"value": value}
        )
    return ContentDigest(value)


_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:[Zz]|[+-]\d{2}:\d{2})?$"
)


def _time_input(value: object) -> object:
    """A datetime as it is, an RFC 3339 string parsed; anything else refused (a number would
    be read as seconds since 1970, a guess no signed event should rest on)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        if not _RFC3339.match(value):
            raise PydanticCustomError(
                "rfc3339",
                "'{value}' is not an RFC 3339 time, e.g. 2026-11-20T14:03:00Z",
                {"value": value},
            )
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    raise PydanticCustomError(
        "time_type", "a time is an RFC 3339 string, not {kind}", {"kind": type(value).__name__}
    )


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the calendar begins
        raise PydanticCustomError(
            "time_range", "'{value}' is outside the calendar in UTC", {"value": value.isoformat()}
        ) from None


Image = Annotated[str, AfterValidator(_check_image)]
Digest = Annotated[str, AfterValidator(_check_digest)]
UtcTime = Annotated[AwareDatetime, BeforeValidator(_time_input), AfterValidator(_to_utc)]
Text = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
LongText = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Name = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", min_length=1, max_length=128)
]
EventId = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$", min_length=1, max_length=128)
]

EVENT_TYPES: tuple[str, ...] = (
    "deployment.started",
    "deployment.succeeded",
    "deployment.failed",
    "deployment.rolled_back",
    "mutation.applied",
    "approval.granted",
    "approval.revoked",
    "service.classified",
    "policy.recorded",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Instances(_Strict):
    total: int = Field(ge=1, le=1_000_000)
    updated: int = Field(ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _updated_within_total(self) -> Instances:
        if self.updated > self.total:
            raise ValueError(f"updated ({self.updated}) exceeds total ({self.total})")
        return self


ArtifactKind: TypeAlias = Literal["ami", "lambda", "ecs-task-definition", "generic"]
_AMI_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")
_ARTIFACT_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9._:/+=,-]*$"
"""An artifact id names the unit (no ``@``, no space): the reference appends its digest."""


class Container(_Strict):
    name: Name
    image: Image


class Artifact(_Strict):
    """A deployable unit that is not an OCI image (schema v3): what a deployment replaced.

    Its :attr:`reference` stands where an image would in every answer (the ledger's
    ``image`` column, the point-in-time rules, search, check, gate): ``kind:id``, and
    ``@sha256:<hex>`` after it when the unit has a content digest, which is then its
    identity across environments (an AMI's id is its identity already)."""

    kind: ArtifactKind
    id: Annotated[str, StringConstraints(pattern=_ARTIFACT_ID_RE, min_length=1, max_length=512)]
    digest: Digest | None = Field(default=None, exclude_if=lambda value: value is None)
    containers: list[Container] = Field(
        default_factory=list, max_length=64, exclude_if=lambda value: not value
    )

    @model_validator(mode="after")
    def _fits_its_kind(self) -> Artifact:
        kind, named = self.kind, {c.name for c in self.containers}
        if kind == "ami" and not _AMI_RE.fullmatch(self.id):
            raise ValueError(f"an AMI id is ami-<8 to 17 hex>, not {self.id!r}")
        if kind in ("lambda", "generic") and self.digest is None:
            raise ValueError(f"a {kind} artifact needs the digest of its content")
        if kind in ("ami", "ecs-task-definition") and self.digest is not None:
            raise ValueError(f"a {kind} artifact takes no digest (its identity is "
                             f"{'its id' if kind == 'ami' else 'its containers'})")  # fmt: skip
        if (kind == "ecs-task-definition") != bool(self.containers):
            raise ValueError("containers belong to an ecs-task-definition, which needs one")
        if len(named) != len(self.containers):
            raise ValueError("two containers share a name")
        return self

    @property
    def identity(self) -> str | None:
        """The content digest: given, or (a task definition) of its containers' images."""
        if self.kind != "ecs-task-definition":
            return self.digest
        lines = "".join(f"{c.name}={c.image}\n" for c in sorted(self.containers, key=_by_name))
        return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()

    @property
    def reference(self) -> str:
        identity = self.identity
        return f"{self.kind}:{self.id}" + (f"@{identity}" if identity else "")


def _by_name(container: Container) -> str:
    return container.name


def _one_unit(image: str | None, artifact: Artifact | None) -> None:
    """Exactly one names the unit; the refusal names the field (``_domain_error``)."""
    if image is None and artifact is None:
        raise PydanticCustomError("unit_missing", "is required (or artifact, when the unit is "
                                  "no OCI image)")  # fmt: skip
    if image is not None and artifact is not None:
        raise PydanticCustomError("unit_twice", "give the image, or the artifact when the unit "
                                  "is no OCI image: not both")  # fmt: skip


_Unit = Image | None
_NoneLeftOut = Field(default=None, exclude_if=lambda value: value is None)


class DeploymentData(_Strict):
    # Schema v3: an image or an artifact; each left out of every dump when null, so an
    # event without an artifact keeps the form it had before the field existed.
    image: _Unit = _NoneLeftOut
    artifact: Artifact | None = _NoneLeftOut
    change_ref: Text | None = None
    commit: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{7,64}$")] | None = None
    run_url: LongText | None = None
    strategy: Literal["blue_green", "rolling", "canary", "recreate"] | None = None
    instances: Instances | None = None
    # Schema v2. Left out of every dump when null, as ClassificationData.why is.
    commit_time: UtcTime | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="When the commit deployed was made: lead time from commit to production.",
    )

    @model_validator(mode="after")
    def _one_unit(self) -> DeploymentData:
        _one_unit(self.image, self.artifact)
        return self


class DeploymentFailedData(_Strict):
    image: _Unit = _NoneLeftOut
    change_ref: Text | None = None
    reason: LongText | None = None
    instances: Instances | None = None
    artifact: Artifact | None = _NoneLeftOut

    @model_validator(mode="after")
    def _one_unit(self) -> DeploymentFailedData:
        _one_unit(self.image, self.artifact)
        return self


class RollbackData(_Strict):
    image: _Unit = _NoneLeftOut
    from_image: Image | None = None
    change_ref: Text | None = None
    reason: LongText | None = None
    artifact: Artifact | None = _NoneLeftOut

    @model_validator(mode="after")
    def _one_unit(self) -> RollbackData:
        _one_unit(self.image, self.artifact)
        return self


def unit_reference(data: BaseModel) -> str | None:
    """What stands for the deployed unit in every answer (an event's data): its image, or
    its artifact's :attr:`Artifact.reference`; None for events that deploy nothing."""
    image = getattr(data, "image", None)
    if image is not None:
        return str(image)
    artifact = getattr(data, "artifact", None)
    return None if artifact is None else str(artifact.reference)


class MutationData(_Strict):
    target_kind: Literal["config", "flag", "secret", "file", "package", "patch", "infra"]
    target: Text
    hash: Digest | None = Field(description="Digest of the new content; null: target removed.")
    previous_hash: Digest | None = None
    tool: Name
    method: Literal["pipeline", "manual"]
    instance: Text | None = None
    change_ref: Text | None = None


class ApprovalGrantedData(_Strict):
    change_ref: Text
    approver: Text
    image: Image | None = None
    hash: Digest | None = None
    valid_until: UtcTime | None = None
    artifact: Artifact | None = _NoneLeftOut
    """Schema v3: the unit approved, when it is no OCI image (instead of ``image``)."""

    @model_validator(mode="after")
    def _one_unit_at_most(self) -> ApprovalGrantedData:
        if self.image is not None and self.artifact is not None:
            raise ValueError("an approval names the image or the artifact, not both")
        return self


class ApprovalRevokedData(_Strict):
    change_ref: Text
    reason: LongText | None = None


class ClassificationData(_Strict):
    state: Literal["stateless", "stateful"]
    criticality: Literal["low", "medium", "high"]
    model: Literal["immutable", "mutable"]
    # Schema v2. Left out of every dump when null, so a classification without one keeps
    # the data column, JSON form and derived id it had before the field existed.
    why: LongText | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Why the team drew the horizon here.",
    )


ThresholdName: TypeAlias = Literal["partial_after", "late_after", "canary_window", "config_window"]
"""The thresholds a policy may set: ledger.rules.catalogue.THRESHOLDS names them (the wire
layer does not import the rules; tests/test_events.py keeps the two in step)."""

Seconds = Annotated[int, Field(ge=1, le=31_622_400)]
"""A threshold: one second to 366 days."""


class ServicePreprod(_Strict):
    match: Text = Field(description="A service name or an fnmatch pattern.")
    preprod: list[Name] = Field(max_length=32)


class PolicyData(_Strict):
    """The horizon policy in force for an environment (schema v2)."""

    digest: Digest = Field(description="sha256:<64 hex> of the policy file as applied.")
    preprod: list[Name] = Field(default=[], max_length=32)
    services: list[ServicePreprod] = Field(default=[], max_length=1000)
    severity: dict[Name, Literal["info", "low", "medium", "high"]] = Field(
        default={}, max_length=64
    )
    thresholds: dict[ThresholdName, Seconds] = Field(default={})


class _EventBase(_Strict):
    id: EventId
    time: UtcTime
    source: Text
    actor: Text
    service: Name
    environment: Name

    @property
    def partition_key(self) -> bytes:
        """Kafka message key: one service/environment keeps its order in one partition."""
        return f"{self.service}/{self.environment}".encode()

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON form of the contract (times as RFC 3339 in UTC)."""
        out: dict[str, Any] = self.model_dump(mode="json", exclude_none=False)
        return out


class DeploymentEvent(_EventBase):
    type: Literal["deployment.started", "deployment.succeeded"]
    data: DeploymentData


class DeploymentFailedEvent(_EventBase):
    type: Literal["deployment.failed"]
    data: DeploymentFailedData


class RollbackEvent(_EventBase):
    type: Literal["deployment.rolled_back"]
    data: RollbackData


class MutationEvent(_EventBase):
    type: Literal["mutation.applied"]
    data: MutationData


class ApprovalGrantedEvent(_EventBase):
    type: Literal["approval.granted"]
    data: ApprovalGrantedData


class ApprovalRevokedEvent(_EventBase):
    type: Literal["approval.revoked"]
    data: ApprovalRevokedData


class ClassificationEvent(_EventBase):
    type: Literal["service.classified"]
    data: ClassificationData


class PolicyRecordedEvent(_EventBase):
    type: Literal["policy.recorded"]
    data: PolicyData


Event: TypeAlias = Annotated[
    DeploymentEvent
    | DeploymentFailedEvent
    | RollbackEvent
    | MutationEvent
    | ApprovalGrantedEvent
    | ApprovalRevokedEvent
    | ClassificationEvent
    | PolicyRecordedEvent,
    Field(discriminator="type"),
]

_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def new_event_id() -> str:
    """A UUIDv7: unique and ordered by creation time."""
    return str(uuid6.uuid7())


def derived_event_id(at: datetime, material: bytes) -> str:
    """A UUIDv7-shaped id that the same input always gets: the millisecond of ``at`` (the
    time the event claims) and 74 bits of SHA-256 of ``material``. The same event sent
    again is then a duplicate, chained once, and ids still grow with time, as the
    consumer's duplicate check relies on."""
    millis = int(at.timestamp() * 1000) & (1 << 48) - 1
    digest = int.from_bytes(hashlib.sha256(material).digest()[:10], "big")
    rand_a, rand_b = digest >> 68, digest & (1 << 62) - 1
    return str(uuid.UUID(int=millis << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b))


def with_derived_id(event: Event) -> Event:
    """``event`` with the id :func:`derived_event_id` gives its content (all but its id)."""
    content = {k: v for k, v in event.to_json_dict().items() if k != "id"}
    material = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return event.model_copy(update={"id": derived_event_id(event.time, material)})


def event_from_mapping(raw: Mapping[str, Any]) -> Event:
    """Validate a JSON-shaped mapping into an event, or raise a domain error naming the field.

    ``id`` and ``time`` are filled in when absent (a new UUIDv7, the current time).
    """
    values = dict(raw)
    # Not setdefault: a new UUIDv7 costs a urandom call, and decoding never needs one.
    if "id" not in values:
        values["id"] = new_event_id()
    if "time" not in values:
        values["time"] = datetime.now(UTC)
    try:
        return _EVENT_ADAPTER.validate_python(values)
    except ValidationError as exc:
        raise _domain_error(exc) from None


def event_from_json(text: str | bytes) -> Event:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidEventError(f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidEventError("an event must be a JSON object")
    return event_from_mapping(raw)


def _domain_error(exc: ValidationError) -> InvalidEventError:
    """Turn pydantic's report into one precise domain error (the first problem, by field)."""
    first = exc.errors(include_url=False)[0]
    # Skip the discriminator tag (e.g. 'deployment.succeeded') that pydantic puts in the path.
    parts = [str(p) for p in first["loc"] if not (isinstance(p, str) and p in EVENT_TYPES)]
    # A refused key of a map (a policy's severity or thresholds): pydantic adds '[key]'.
    bad_key = parts[-1:] == ["[key]"]
    field = ".".join(parts[:-1] if bad_key else parts) or None
    message = first["msg"]
    if bad_key:
        message = f"is not an accepted key ({message[:1].lower()}{message[1:]})"
    elif first["type"] == "union_tag_invalid":
        field = "type"
        message = f"unknown event type; expected one of: {', '.join(EVENT_TYPES)}"
    elif first["type"] == "union_tag_not_found":
        field = "type"
        message = f"is required; expected one of: {', '.join(EVENT_TYPES)}"
    elif first["type"] == "missing":
        message = "is required"
    elif first["type"] == "extra_forbidden":
        message = "is not a field of this event type"
    elif first["type"] in ("unit_missing", "unit_twice"):  # raised for the data as a whole
        field = f"{field or 'data'}.{'image' if first['type'] == 'unit_missing' else 'artifact'}"
    elif first["type"] == "timezone_aware":
        message = "needs an explicit UTC offset (RFC 3339), e.g. 2026-11-20T14:03:00Z"
    text = f"{field}: {message}" if field else message
    more = exc.error_count() - 1
    if more:
        text += f" (and {more} more problem{'s' if more > 1 else ''})"
    cls = UnpinnedImageError if first["type"] == "unpinned_image" else InvalidEventError
    return cls(text, field=field)
