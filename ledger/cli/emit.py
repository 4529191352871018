"""`ledger emit`: sign events and put them on the topic, one from flags or many from a file."""

from __future__ import annotations

import getpass
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.cli._common import (
    Bootstrap,
    JsonFlag,
    SaslMechanism,
    SecurityProtocol,
    SslCafile,
    Topic,
    console,
    fail,
    kafka_settings,
    print_json,
    reporting_errors,
)
from ledger.errors import LedgerError
from ledger.integrations.ci_env import detect_ci
from ledger.transport.producer import Delivery, LedgerProducer
from ledger.transport.settings import DEFAULT_TOPIC
from ledger.wire.codec import encode_event
from ledger.wire.events import Event, event_from_json, event_from_mapping
from ledger.wire.keyring import Signer

app = typer.Typer(
    help=(
        "Sign events and put them on the topic. Common options go before the event kind: "
        "ledger emit --key keys/ci.key deployment --service checkout --env prod --image …"
    ),
)


@dataclass
class _Context:
    key: Path | None
    key_id: str | None
    source: str | None
    actor: str | None
    time: str | None
    event_id: str | None
    settings: tuple[str | None, str, str | None, str | None, Path | None]
    json_out: bool


ServiceOpt = Annotated[str, typer.Option("--service", help="Service name.")]
EnvOpt = Annotated[str, typer.Option("--env", help="Environment, e.g. prod.")]
ChangeRefOpt = Annotated[
    str | None, typer.Option("--change-ref", help="Change/ticket reference, e.g. CHG-1042.")
]


@app.callback(invoke_without_command=True)
def emit(
    ctx: typer.Context,
    key: Annotated[
        Path | None,
        typer.Option("--key", envvar="LEDGER_KEY", show_envvar=True,
                     help="Private key file (ID.key) to sign with."),
    ] = None,
    key_id: Annotated[
        str | None, typer.Option("--key-id", help="Key id; defaults to the key's file name.")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="JSON Lines file of events ('-' for stdin); id/time kept."),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(envvar="LEDGER_SOURCE", help="Emitting system; default from the CI run."),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(envvar="LEDGER_ACTOR", help="Who caused it; default from CI, else $USER."),
    ] = None,
    time: Annotated[
        str | None, typer.Option("--time", help="Event time (RFC 3339); default now.")
    ] = None,
    event_id: Annotated[
        str | None, typer.Option("--id", help="Event id; default a new UUIDv7.")
    ] = None,
    bootstrap: Bootstrap = None,
    topic: Topic = DEFAULT_TOPIC,
    security_protocol: SecurityProtocol = None,
    sasl_mechanism: SaslMechanism = None,
    ssl_cafile: SslCafile = None,
    json_out: JsonFlag = False,
) -> None:
    """Sign events and put them on the Kafka topic (delivery confirmed, or exit 2)."""
    ctx.obj = _Context(key, key_id, source, actor, time, event_id,
                       (bootstrap, topic, security_protocol, sasl_mechanism, ssl_cafile), json_out)
    if ctx.invoked_subcommand is not None:
        if file is not None:
            fail("--file emits events from a file; do not also name an event kind")
        return
    if file is None:
        console.print(ctx.get_help())
        raise typer.Exit(2)
    events = _read_file(file)
    _send(ctx.obj, events)


def _read_file(path: Path) -> list[Event]:
    try:
        text = (typer.get_text_stream("stdin").read() if str(path) == "-"
                else path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    events: list[Event] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = event_from_json(line)
            encode_event(event)  # refuse an oversize event now, before any event is sent
        except LedgerError as exc:
            fail(f"{path}:{number}: {exc.message}")
        events.append(event)
    if not events:
        fail(f"{path} holds no events")
    return events


def _build(
    c: _Context,
    kind: str,
    service: str,
    env: str,
    data: dict[str, Any],
    keep_null: tuple[str, ...] = (),
) -> Event:
    """One event from flags; None values are left out unless named in ``keep_null``."""
    ci = detect_ci(os.environ)
    raw: dict[str, Any] = {
        "type": kind,
        "service": service,
        "environment": env,
        "source": c.source or (ci.source if ci else f"cli/{os.uname().nodename}"),
        "actor": c.actor or (ci.actor if ci and ci.actor else getpass.getuser()),
        "data": {k: v for k, v in data.items() if v is not None or k in keep_null},
    }
    if kind in ("deployment.started", "deployment.succeeded") and ci:
        for name, value in (("commit", ci.commit), ("run_url", ci.run_url)):
            if value and name not in raw["data"]:
                raw["data"][name] = value
    if c.time:
        raw["time"] = c.time
    if c.event_id:
        raw["id"] = c.event_id
    try:
        return event_from_mapping(raw)
    except LedgerError as exc:
        fail(exc.message)


def _send(c: _Context, events: list[Event]) -> None:
    if c.key is None:
        fail("no signing key: pass --key keys/ID.key or set LEDGER_KEY")
    with reporting_errors():
        signer = Signer.from_file(c.key, c.key_id)
        settings = kafka_settings(*c.settings)
        with LedgerProducer(signer, settings) as producer:
            for event in events:
                producer.emit(event)
            deliveries = producer.flush()
        _report(c, deliveries)


def _report(c: _Context, deliveries: list[Delivery]) -> None:
    if c.json_out:
        print_json([d.__dict__ for d in deliveries])
        return
    for d in deliveries[:20]:
        console.print(f"emitted {d.type} {d.event_id} -> {d.topic}[{d.partition}]@{d.offset}")
    if len(deliveries) > 20:
        console.print(f"... and {len(deliveries) - 20} more")
    console.print(f"{len(deliveries)} event(s) delivered and acknowledged")


@app.command()
def deployment(
    ctx: typer.Context,
    service: ServiceOpt,
    env: EnvOpt,
    image: Annotated[str, typer.Option(help="Image pinned by digest: name@sha256:<64 hex>.")],
    status: Annotated[
        str, typer.Option(help="started | succeeded | failed | rolled_back.")
    ] = "succeeded",
    change_ref: ChangeRefOpt = None,
    commit: Annotated[str | None, typer.Option(help="Commit SHA; default from CI.")] = None,
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
    """A deployment started, succeeded, failed (maybe partly) or was rolled back."""
    kinds = {"started", "succeeded", "failed", "rolled_back", "rolled-back"}
    if status not in kinds:
        fail(f"--status {status!r}: expected started, succeeded, failed or rolled_back")
    kind = "deployment." + status.replace("-", "_")
    if (total is None) != (updated is None):
        fail("--total and --updated go together")
    data: dict[str, Any] = {"image": image, "change_ref": change_ref}
    instances = {"total": total, "updated": updated} if total is not None else None
    if kind in ("deployment.started", "deployment.succeeded"):
        data |= {"commit": commit, "run_url": run_url, "strategy": strategy,
                 "instances": instances}
    elif kind == "deployment.failed":
        data |= {"reason": reason, "instances": instances}
    else:
        data |= {"from_image": from_image, "reason": reason}
    _send(ctx.obj, [_build(ctx.obj, kind, service, env, data)])


@app.command()
def mutation(
    ctx: typer.Context,
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
    """An in-place change to a running system (config, flag, secret, file, package, …)."""
    given = [content_hash is not None, content_file is not None, removed]
    if sum(given) != 1:
        fail("give exactly one of --hash, --content-file or --removed")
    if content_file is not None:
        try:
            content_hash = "sha256:" + hashlib.sha256(content_file.read_bytes()).hexdigest()
        except OSError as exc:
            fail(f"--content-file {content_file}: {exc.strerror}")
    data = {"target_kind": target_kind, "target": target, "hash": content_hash,
            "previous_hash": previous_hash, "tool": tool, "method": method,
            "instance": instance, "change_ref": change_ref}
    event = _build(ctx.obj, "mutation.applied", service, env, data, keep_null=("hash",))
    _send(ctx.obj, [event])


@app.command()
def approval(
    ctx: typer.Context,
    service: ServiceOpt,
    env: EnvOpt,
    change_ref: Annotated[str, typer.Option("--change-ref", help="The change approved.")],
    approver: Annotated[
        str | None, typer.Option(help="Who approved; default the actor.")
    ] = None,
    image: Annotated[str | None, typer.Option(help="The exact image approved.")] = None,
    content_hash: Annotated[
        str | None, typer.Option("--hash", help="The exact content digest approved.")
    ] = None,
    valid_until: Annotated[str | None, typer.Option(help="Approval expiry (RFC 3339).")] = None,
    revoke: Annotated[bool, typer.Option(help="Revoke the approval of --change-ref.")] = False,
    reason: Annotated[str | None, typer.Option(help="Why it was revoked.")] = None,
) -> None:
    """A change approval granted (or, with --revoke, withdrawn)."""
    c: _Context = ctx.obj
    if revoke:
        event = _build(c, "approval.revoked", service, env,
                       {"change_ref": change_ref, "reason": reason})
    else:
        who = approver or c.actor or getpass.getuser()
        event = _build(c, "approval.granted", service, env,
                       {"change_ref": change_ref, "approver": who, "image": image,
                        "hash": content_hash, "valid_until": valid_until})
    _send(c, [event])


@app.command()
def classify(
    ctx: typer.Context,
    service: ServiceOpt,
    env: EnvOpt,
    state: Annotated[str, typer.Option(help="stateless | stateful.")],
    criticality: Annotated[str, typer.Option(help="low | medium | high.")],
    model: Annotated[str, typer.Option(help="immutable | mutable.")],
) -> None:
    """Record the service's deployment model, as the team decided it."""
    data = {"state": state, "criticality": criticality, "model": model}
    _send(ctx.obj, [_build(ctx.obj, "service.classified", service, env, data)])
