"""`ledger emit`: sign events and put them on the topic, one from options or many from a file."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ledger.cli._common import (
    DeliveryTimeout,
    Exit,
    console,
    fail,
    new_app,
    print_json,
    read_input,
    reporting_errors,
)
from ledger.cli._options import PRODUCER, OptionSet, Producer, shared

if TYPE_CHECKING:
    from ledger.errors import TransportError
    from ledger.integrations.ci_env import CiContext
    from ledger.transport.producer import Delivery
    from ledger.wire.events import Event
    from ledger.wire.keyring import Keyring, Signer

app = new_app(
    "Sign events and put them on the Kafka topic (delivery confirmed; else exit 3, or 5 "
    "when spooled).\n\n"
    "Producer options go after the event kind (`ledger emit deployment --key keys/ci.key "
    "…`) or before it (`ledger emit --key keys/ci.key deployment …`)."
)


@dataclass(frozen=True)
class Emit:
    """What every `emit` command takes: the producer, and what sets one event apart."""

    producer: Producer
    time: str | None
    event_id: str | None
    keyring: Path | None
    api: str | None
    timeout: float
    json_out: bool


def _emit(
    time: str | None,
    event_id: str | None,
    keyring: Path | None,
    api: str | None,
    timeout: float,
    json_out: bool,
    **producer: Any,
) -> Emit:
    if keyring is not None and api is not None:
        fail("--keyring and --api name two keyrings to check under: give one")
    return Emit(PRODUCER.build(**producer), time, event_id, keyring, api, timeout, json_out)


EMIT: OptionSet[Emit] = OptionSet(
    (
        *PRODUCER.params,
        ("time", Annotated[str | None, typer.Option(
            "--time", help="Event time (RFC 3339); default now.")], None),
        ("event_id", Annotated[str | None, typer.Option(
            "--id", help="Event id; default a new UUIDv7.")], None),
        ("keyring", Annotated[Path | None, typer.Option(
            "--keyring", envvar="LEDGER_KEYRING", show_envvar=True,
            help="Check each event as the consumer would under this keyring, now, before "
                 "sending any (the consumer's keyring and time still decide).")], None),
        ("api", Annotated[str | None, typer.Option(
            "--api", help="Check as --keyring does, under the keyring this running consumer "
                          "(its API's URL) recorded last.")], None),
        ("timeout", DeliveryTimeout, 120.0),
        ("json_out", Annotated[bool, typer.Option(
            "--json", help="Machine-readable JSON output.")], False),
    ),
    _emit,
)  # fmt: skip

ServiceOpt = Annotated[str, typer.Option("--service", help="Service name.")]
EnvOpt = Annotated[str, typer.Option("--env", help="Environment, e.g. prod.")]
ChangeRefOpt = Annotated[
    str | None, typer.Option("--change-ref", help="Change/ticket reference, e.g. CHG-1042.")
]


ArtifactOpt = Annotated[
    str | None,
    typer.Option(
        help="The unit, when it is no image, as answers show it: ami:ami-<hex>, "
        "lambda:<function>:<version>@sha256:<hex>, generic:<name>@sha256:<hex>, or "
        "ecs-task-definition:<family>:<revision> with --container."
    ),
]
ContainerOpt = Annotated[
    list[str] | None,
    typer.Option(help="An ECS task definition's container: NAME=IMAGE (repeatable)."),
]


def _unit(image: str | None, artifact: str | None, containers: list[str] | None) -> dict[str, Any]:
    """The data naming the deployed unit: the image, or the artifact its reference names."""
    if (image is None) == (artifact is None):
        fail("give --image, or --artifact when the unit is no image")
    if artifact is None:
        if containers:
            fail("--container belongs to an --artifact ecs-task-definition:…")
        return {"image": image}
    kind, colon, rest = artifact.partition(":")
    if not colon or not rest:
        fail(f"--artifact {artifact!r}: expected KIND:ID[@sha256:<hex>], e.g. ami:ami-0abc12345")
    unit_id, _, digest = rest.rpartition("@") if "@" in rest else (rest, "", "")
    pairs = [c.partition("=") for c in containers or []]
    if any(not name or not sep or not ref for name, sep, ref in pairs):
        fail("--container: expected NAME=IMAGE, e.g. web=registry.example/web@sha256:<64 hex>")
    return {"artifact": {"kind": kind, "id": unit_id, "digest": digest or None,
                         "containers": [{"name": n, "image": r} for n, _, r in pairs]}}  # fmt: skip


@app.callback()
@shared("options", EMIT)
def emit(options: Emit) -> None:
    """Sign events and put them on the Kafka topic (delivery confirmed; else exit 3, or 5
    when spooled).

    The options given here apply to the event kind that follows them.
    """


@app.command("file")
@shared("options", EMIT)
def from_file(
    options: Emit,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE|-",
            help="JSON Lines: one event per line ('-': standard input); each line's id and "
            "time are kept, and a line with a time but no id gets an id derived from its "
            "content, so re-sending the file records nothing twice.",
        ),
    ],
) -> None:
    """Events from a file: one per line, as the event contract's JSON (docs/formats.md §1).

    Every line is checked before any event is sent.

    Example: `ledger emit file events.jsonl --key keys/ci-github.key`"""
    if options.time is not None or options.event_id is not None:
        fail("--time and --id name one event; a file's lines carry their own")
    _send(options, _read_file(file, _producer_fields(options, _ci())))


_MAX_PROBLEMS = 50
"""How many of a file's problems are named, one per line, before the rest are counted."""


def _read_file(path: Path, defaults: dict[str, str]) -> list[Event]:
    """Every line's event, ``defaults`` filling the fields a line leaves out; every line
    that is no valid event named, with its number."""
    from ledger.errors import LedgerError
    from ledger.wire.codec import encode_event
    from ledger.wire.events import event_from_mapping, with_derived_id

    try:
        text = read_input(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{path} is not UTF-8 text: {exc}")
    events: list[Event] = []
    problems: list[str] = []
    untimed = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{number}: not valid JSON: {exc}")
            continue
        if not isinstance(raw, dict):
            problems.append(f"{path}:{number}: an event must be a JSON object")
            continue
        try:
            event = event_from_mapping(defaults | raw)
            encode_event(event)  # refuse an oversize event now, before any event is sent
        except LedgerError as exc:
            problems.append(f"{path}:{number}: {exc.message}")
            continue
        if "id" in raw:
            events.append(event)
        elif "time" in raw:  # the same line sent again: the same id, recorded once
            events.append(with_derived_id(event))
        else:
            untimed += 1
            events.append(event)
    if problems:
        more = len(problems) - _MAX_PROBLEMS
        listed = "\n".join(problems[:_MAX_PROBLEMS]) + (f"\n… and {more} more" if more > 0 else "")
        fail(f"{len(problems)} line(s) of {path} are not valid events; nothing was sent:\n{listed}")
    if not events:
        fail(f"{path} holds no events")
    if untimed:
        console.print(
            f"note: {untimed} line(s) of {path} carry no time (nor id): each is dated now with "
            "a new id, so sending the file again records them again; give each line its "
            '"time" to make the file safe to re-send',
            style="yellow",
        )
    return events


def _ci() -> CiContext | None:
    from ledger.integrations.ci_env import detect_ci

    return detect_ci(os.environ)


def _producer_fields(options: Emit, ci: CiContext | None) -> dict[str, str]:
    """``source`` and ``actor`` from the options, else from the CI run, else this host and
    user: what an event built here carries, and what a file's lines lacking them get."""
    producer = options.producer
    return {
        "source": producer.source or (ci.source if ci else f"cli/{os.uname().nodename}"),
        "actor": producer.actor or (ci.actor if ci and ci.actor else getpass.getuser()),
    }


def _build(
    options: Emit,
    kind: str,
    service: str,
    env: str,
    data: dict[str, Any],
    keep_null: tuple[str, ...] = (),
) -> Event:
    """One event from options; None values are left out unless named in ``keep_null``."""
    from ledger.errors import LedgerError
    from ledger.wire.events import event_from_mapping

    ci = _ci()
    raw: dict[str, Any] = {
        "type": kind,
        "service": service,
        "environment": env,
        **_producer_fields(options, ci),
        "data": {k: v for k, v in data.items() if v is not None or k in keep_null},
    }
    if kind in ("deployment.started", "deployment.succeeded") and ci:
        for name, value in (("commit", ci.commit), ("run_url", ci.run_url)):
            if value and name not in raw["data"]:
                raw["data"][name] = value
    if options.time:
        raw["time"] = options.time
    if options.event_id:
        raw["id"] = options.event_id
    try:
        return event_from_mapping(raw)
    except LedgerError as exc:
        fail(exc.message)


def _send(options: Emit, events: list[Event]) -> None:
    _report(options, deliver_or_spool(options, events), [])


def deliver_or_spool(options: Emit, events: list[Event]) -> list[Delivery]:
    """Sign and send ``events`` (checked first under --keyring or --api when given); their
    deliveries when the broker acknowledged every one. Otherwise the command ends: with a
    spool (--spool, LEDGER_SPOOL) the events not acknowledged are written to it, exact
    signed bytes, and it exits 5 naming the file; without one it exits 3 naming them.
    Every producer command sends this way (``ledger emit``, ``ledger horizon apply``)."""
    from ledger.errors import PartialDeliveryError, TransportError
    from ledger.transport.producer import LedgerProducer, seal

    with reporting_errors():
        signer = options.producer.signer()
        if options.keyring is not None:
            _precheck(events, signer, *_file_keyring(options.keyring))
        elif options.api is not None:
            _precheck(events, signer, *_recorded_keyring(options.api))
        settings = options.producer.settings()
        sealed = [(event, seal(event, signer)) for event in events]  # what is sent, or spooled
        deliveries: list[Delivery] = []
        try:
            with LedgerProducer(signer, settings) as producer:
                for event, envelope in sealed:
                    producer.send_sealed(event, envelope)
                deliveries = producer.flush(options.timeout)
        except TransportError as exc:
            if isinstance(exc, PartialDeliveryError):
                deliveries = exc.delivered
            acknowledged = {d.event_id for d in deliveries}
            rest = [(event, envelope) for event, envelope in sealed if event.id not in acknowledged]
            if not rest:
                raise
            if options.producer.spool is None:
                if isinstance(exc, PartialDeliveryError):
                    _report(options, exc.delivered, exc.failed)  # --json: every id not delivered
                raise
            _spool(options, exc, deliveries, rest, len(sealed))
    return deliveries


_deliver = deliver_or_spool  # the name `ledger horizon apply` imports


def _spool(
    options: Emit,
    exc: TransportError,
    deliveries: list[Delivery],
    rest: list[tuple[Event, bytes]],
    total: int,
) -> NoReturn:
    """Write the events the broker did not acknowledge to the spool, say where, and exit 5;
    exit 3 if the spool would not take them either."""
    from ledger.errors import PartialDeliveryError
    from ledger.transport import spool

    directory = options.producer.spool
    assert directory is not None
    bootstrap = options.producer.connection.bootstrap
    reason = (
        f"{len(rest)} of {total} event(s) not acknowledged by {bootstrap} within "
        f"{options.timeout:.0f} s"
        if isinstance(exc, PartialDeliveryError)
        else exc.message
    )
    try:
        path = spool.append(directory, options.producer.topic, rest)
    except OSError as error:
        if isinstance(exc, PartialDeliveryError):
            _report(options, deliveries, [event.id for event, _ in rest])
        fail(f"{reason}; and the spool {directory} could not keep them ({error.strerror or error})"
             ": nothing was spooled", Exit.UNREACHABLE)  # fmt: skip
    ids = [event.id for event, _ in rest]
    if options.json_out:
        print_json({"delivered": [d.__dict__ for d in deliveries], "not_delivered": ids,
                    "spooled": {"file": str(path), "events": len(rest)}})  # fmt: skip
    elif deliveries:
        _report(options, deliveries, ids)
    console.print(f"not delivered: {reason}")
    console.print(
        f"spooled: {len(rest)} signed event(s) written to {path}; send them with "
        f"`ledger spool flush {directory}` once the broker answers",
        style="yellow",
    )
    raise typer.Exit(Exit.SPOOLED)


def _file_keyring(path: Path) -> tuple[Keyring, str]:
    from ledger.wire.keyring import Keyring

    return Keyring.load(path), f"keyring {path}"


def _recorded_keyring(api: str) -> tuple[Keyring, str]:
    """The keyring a running consumer recorded last, as its API serves it."""
    from ledger.api.client import fetch
    from ledger.wire.keyring import Keyring

    recorded = fetch(api, "/v1/keyring")
    keyring = Keyring.from_json(json.dumps(recorded["keyring"]).encode(), f"{api}/v1/keyring")
    return keyring, f"the keyring {api} recorded at entry {recorded['seq']}"


def _precheck(events: list[Event], signer: Signer, keyring: Keyring, name: str) -> None:
    """Refuse to send unless every event would pass the consumer's checklist under
    ``keyring`` and the time now: a refusal is named before anything is sent. The consumer
    has the last word: its keyring, at the time it witnesses each."""
    from datetime import UTC, datetime

    from ledger.errors import RejectedMessage
    from ledger.transport.producer import seal
    from ledger.wire.verify import verify_message

    now = datetime.now(UTC)
    refused = []
    for number, event in enumerate(events, start=1):
        try:
            verify_message(seal(event, signer), keyring, now)
        except RejectedMessage as exc:
            refused.append(
                f"event {number} ({event.type}, {event.id}): {exc.reason}: {exc.message}"
            )
    if refused:
        fail(f"{len(refused)} event(s) would be refused under {name} as of now; "
             "nothing was sent:\n" + "\n".join(refused[:_MAX_PROBLEMS]))  # fmt: skip
    console.print(f"checked under {name} as of now: authorized (the consumer has the "
                  "last word: its keyring, at the time it witnesses each event)")  # fmt: skip


def _report(options: Emit, deliveries: list[Delivery], failed: list[str]) -> None:
    """What was delivered: with --json a list of deliveries, or, when some were not
    delivered, ``{"delivered": [...], "not_delivered": [event ids]}``."""
    if options.json_out:
        done = [d.__dict__ for d in deliveries]
        print_json({"delivered": done, "not_delivered": failed} if failed else done)
        return
    for d in deliveries[:20]:
        console.print(f"emitted {d.type} {d.event_id} -> {d.topic}[{d.partition}]@{d.offset}")
    if len(deliveries) > 20:
        console.print(f"... and {len(deliveries) - 20} more")
    console.print(f"{len(deliveries)} event(s) delivered and acknowledged")


@app.command()
@shared("options", EMIT)
def deployment(
    options: Emit,
    service: ServiceOpt,
    env: EnvOpt,
    image: Annotated[
        str | None, typer.Option(help="Image pinned by digest: name@sha256:<64 hex>.")
    ] = None,
    artifact: ArtifactOpt = None,
    container: ContainerOpt = None,
    status: Annotated[
        str, typer.Option(help="started | succeeded | failed | rolled_back.")
    ] = "succeeded",
    change_ref: ChangeRefOpt = None,
    commit: Annotated[str | None, typer.Option(help="Commit SHA; default from CI.")] = None,
    commit_time: Annotated[
        str | None,
        typer.Option(help="When that commit was made (RFC 3339): lead time to production."),
    ] = None,
    run_url: Annotated[str | None, typer.Option(help="CI run URL; default from CI.")] = None,
    strategy: Annotated[
        str | None, typer.Option(help="blue_green | rolling | canary | recreate.")
    ] = None,
    total: Annotated[int | None, typer.Option(help="Instances in the fleet.")] = None,
    updated: Annotated[int | None, typer.Option(help="Instances that got the image.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why it failed or was rolled back.")] = None,
    from_image: Annotated[
        str | None, typer.Option(help="rolled_back: the image that was replaced.")
    ] = None,
) -> None:
    """A deployment started, succeeded, failed (maybe partly) or was rolled back.

    The unit is an image (--image) or, when it is none, an artifact (--artifact): an AMI, a
    Lambda function version with its code digest, an ECS task definition (--container for
    each of its images), or any unit with a digest.

    Example: `ledger emit deployment --service checkout --env prod --image
    registry.example/checkout@sha256:<64 hex> --change-ref CHG-1042 --key keys/ci-github.key`"""
    kinds = {"started", "succeeded", "failed", "rolled_back", "rolled-back"}
    if status not in kinds:
        fail(f"--status {status!r}: expected started, succeeded, failed or rolled_back")
    kind = "deployment." + status.replace("-", "_")
    if (total is None) != (updated is None):
        fail("--total and --updated go together")
    data: dict[str, Any] = {"change_ref": change_ref} | _unit(image, artifact, container)
    instances = {"total": total, "updated": updated} if total is not None else None
    if kind in ("deployment.started", "deployment.succeeded"):
        data |= {"commit": commit, "run_url": run_url, "strategy": strategy, "instances": instances}
        data |= {"commit_time": commit_time} if commit_time is not None else {}
    elif kind == "deployment.failed":
        data |= {"reason": reason, "instances": instances}
    else:
        data |= {"from_image": from_image, "reason": reason}
    _send(options, [_build(options, kind, service, env, data)])


@app.command()
@shared("options", EMIT)
def mutation(
    options: Emit,
    service: ServiceOpt,
    env: EnvOpt,
    target_kind: Annotated[
        str, typer.Option(help="config | flag | secret | file | package | patch | infra.")
    ],
    target: Annotated[str, typer.Option(help="What changed, e.g. nginx.conf.")],
    tool: Annotated[str, typer.Option(help="ansible, puppet, terraform, kubectl, manual, …")],
    content_hash: Annotated[
        str | None, typer.Option("--hash", help="Digest of the new content, sha256:<64 hex>.")
    ] = None,
    content_file: Annotated[
        Path | None, typer.Option(help="Hash this file's bytes as the new content.")
    ] = None,
    removed: Annotated[bool, typer.Option(help="The target was removed.")] = False,
    previous_hash: Annotated[str | None, typer.Option(help="Digest before the change.")] = None,
    method: Annotated[str, typer.Option(help="pipeline | manual.")] = "pipeline",
    instance: Annotated[
        str | None, typer.Option(help="One instance; default the whole service.")
    ] = None,
    change_ref: ChangeRefOpt = None,
) -> None:
    """An in-place change to a running system (config, flag, secret, file, package, …).

    Example: `ledger emit mutation --service payments --env prod --target-kind config --target
    payments.yml --content-file payments.yml --tool ansible --key keys/config.key`"""
    given = [content_hash is not None, content_file is not None, removed]
    if sum(given) != 1:
        fail("give exactly one of --hash, --content-file or --removed")
    if content_file is not None:
        try:
            content_hash = "sha256:" + hashlib.sha256(content_file.read_bytes()).hexdigest()
        except OSError as exc:
            fail(f"--content-file {content_file}: {exc.strerror}")
    data = {
        "target_kind": target_kind,
        "target": target,
        "hash": content_hash,
        "previous_hash": previous_hash,
        "tool": tool,
        "method": method,
        "instance": instance,
        "change_ref": change_ref,
    }
    event = _build(options, "mutation.applied", service, env, data, keep_null=("hash",))
    _send(options, [event])


@app.command()
@shared("options", EMIT)
def approval(
    options: Emit,
    service: ServiceOpt,
    env: EnvOpt,
    change_ref: Annotated[str, typer.Option("--change-ref", help="The change approved.")],
    approver: Annotated[str | None, typer.Option(help="Who approved; default the actor.")] = None,
    image: Annotated[str | None, typer.Option(help="The exact image approved.")] = None,
    artifact: ArtifactOpt = None,
    container: ContainerOpt = None,
    content_hash: Annotated[
        str | None, typer.Option("--hash", help="The exact content digest approved.")
    ] = None,
    valid_until: Annotated[str | None, typer.Option(help="Approval expiry (RFC 3339).")] = None,
    revoke: Annotated[bool, typer.Option(help="Revoke the approval of --change-ref.")] = False,
    reason: Annotated[str | None, typer.Option(help="Why it was revoked.")] = None,
) -> None:
    """A change approval granted (or, with --revoke, withdrawn).

    Example: `ledger emit approval --service checkout --env prod --change-ref CHG-1042 --approver
    carol --image registry.example/checkout@sha256:<64 hex> --key keys/change-board.key`"""
    if revoke:
        event = _build(
            options, "approval.revoked", service, env, {"change_ref": change_ref, "reason": reason}
        )
    else:
        who = approver or options.producer.actor or getpass.getuser()
        event = _build(
            options,
            "approval.granted",
            service,
            env,
            {
                "change_ref": change_ref,
                "approver": who,
                "hash": content_hash,
                "valid_until": valid_until,
            }
            | (_unit(image, artifact, container) if image or artifact else {}),
        )
    _send(options, [event])


@app.command()
@shared("options", EMIT)
def classify(
    options: Emit,
    service: ServiceOpt,
    env: EnvOpt,
    state: Annotated[str, typer.Option(help="stateless | stateful.")],
    criticality: Annotated[str, typer.Option(help="low | medium | high.")],
    model: Annotated[str, typer.Option(help="immutable | mutable.")],
    why: Annotated[
        str | None,
        typer.Option(help="Why the team drew the horizon here (the framework asks for it)."),
    ] = None,
) -> None:
    """Record the service's deployment model, as the team decided it.

    Example: `ledger emit classify --service checkout --env prod --state stateless --criticality
    high --model immutable --why "no local state; rebuilt from the image" --key
    keys/ci-github.key`"""
    data = {"state": state, "criticality": criticality, "model": model, "why": why}
    _send(options, [_build(options, "service.classified", service, env, data)])
