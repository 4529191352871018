"""`ledger ingest NAME`: what a tool already says about a change, as signed ledger events.

One pure parser per tool lives in ``ledger.integrations`` (tool output in, events out: no
Kafka, no clock, no environment); each command here is a small function that reads what
the parser needs (files, variables, options), calls it, and hands the events to
:func:`ingest_events`, which sends them the way ``ledger emit`` does (the same producer
options, after the command; ``--keyring``/``--api`` checked first; the spool; ``--json``)
or, with ``--dry-run``, prints them. Adding an integration is one parser module and one
command here (docs/integrations.md, "Adding an integration").
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledger.cli._common import console, fail, new_app, print_json, read_input, reporting_errors
from ledger.cli._options import OptionSet, shared
from ledger.cli.emit import EMIT, ChangeRefOpt, Emit, EnvOpt, ServiceOpt

if TYPE_CHECKING:
    from collections.abc import Callable

    from ledger.wire.events import Event

__all__ = ["INGEST", "Ingest", "app", "ingest_events", "parsed"]

app = new_app(
    "Record what a tool says about a change: its output in, signed ledger events out.\n\n"
    "Producer options go after the integration's name. The same input gives the same "
    "events, ids included, so ingesting it again records nothing twice."
)


@dataclass(frozen=True)
class Ingest:
    """What every `ingest` command takes: `ledger emit`'s options, and --dry-run."""

    emit: Emit
    dry_run: bool


_PER_EVENT = ("time", "event_id")
"""`ledger emit`'s options that name one event: an integration derives them from its input."""


def _ingest(dry_run: bool, **emit: Any) -> Ingest:
    return Ingest(EMIT.build(time=None, event_id=None, **emit), dry_run)


INGEST: OptionSet[Ingest] = OptionSet(
    (
        *(param for param in EMIT.params if param[0] not in _PER_EVENT),
        ("dry_run", Annotated[bool, typer.Option(
            "--dry-run", help="Print the events that would be sent, as JSON Lines (the "
                              "`ledger emit file` format), and send nothing: no key, no "
                              "broker needed.")], False),
    ),
    _ingest,
)  # fmt: skip
"""The options of every `ledger ingest` command: the producer options, --keyring/--api,
--timeout, --json (as `ledger emit` has them), and --dry-run."""


@app.callback()
def ingest() -> None:
    """Record what a tool says about a change: its output in, signed ledger events out.

    Producer options go after the integration's name. The same input gives the same
    events, ids included, so ingesting it again records nothing twice.
    """


def parsed(parse: Callable[[], list[Event]]) -> list[Event]:
    """Every event of the input, parsed before anything is sent: an input the parser
    refuses ends the command with exit 2 and its message (the file, the position, what
    was expected)."""
    with reporting_errors():
        return parse()


def event_line(event: Event) -> str:
    """One event as a line of `ledger emit file` (docs/formats.md §1), its id and time
    kept: sending the line gives the same event."""
    body = event.to_json_dict()
    order = ("id", "type", "time", "source", "actor", "service", "environment", "data")
    return json.dumps({name: body[name] for name in order}, ensure_ascii=False,
                      separators=(",", ":"))  # fmt: skip


def ingest_events(options: Ingest, events: list[Event]) -> None:
    """Send ``events`` as `ledger emit` sends (exit 3, or 5 when spooled, if the broker
    does not take them), or print them with --dry-run."""
    if options.dry_run:
        for event in events:
            sys.stdout.write(event_line(event) + "\n")
        console.print(f"dry run: {len(events)} event(s) would be sent; nothing was signed "
                      "or sent")  # fmt: skip
        return
    if not events:
        if options.emit.json_out:
            print_json([])
        else:
            console.print("nothing to send: the input records no change")
        return
    from ledger.cli.emit import _report, deliver_or_spool

    _report(options.emit, deliver_or_spool(options.emit, events), [])


# --- the integrations: one command each -------------------------------------------------------


@app.command("ci")
@shared("options", INGEST)
def ci(
    options: Ingest,
    service: ServiceOpt,
    env: EnvOpt,
    image: Annotated[str, typer.Option(help="Image pinned by digest: name@sha256:<64 hex>.")],
    status: Annotated[str, typer.Option(help="started | succeeded | failed.")] = "succeeded",
    change_ref: ChangeRefOpt = None,
    reason: Annotated[str | None, typer.Option(help="--status failed: why it failed.")] = None,
    time: Annotated[
        str | None,
        typer.Option(
            "--time",
            help="The run's start (RFC 3339), the same each time the step runs; needed where "
            "the CI's variables give no time (GitHub Actions, Jenkins), and wins over theirs.",
        ),
    ] = None,
) -> None:
    """A deployment (or its failure) from the CI run this runs in: GitHub Actions, GitLab
    CI or Jenkins.

    Source, actor, commit, run URL and commit time come from the CI's variables (on GitHub
    also the event JSON at GITHUB_EVENT_PATH); the id from the run, its attempt, service,
    environment, status and image, so a retried step sends the same event.

    Example: `ledger ingest ci --service checkout --env prod --image
    registry.example/checkout@sha256:<64 hex> --status succeeded --key keys/ci-github.key`"""
    from ledger.integrations import ci as parser

    variables = {name: os.environ[name] for name in parser.VARIABLES if name in os.environ}
    event_path = os.environ.get("GITHUB_EVENT_PATH")
    github_event = None
    on_github = os.environ.get("GITHUB_ACTIONS") == "true" or "GITHUB_RUN_ID" in os.environ
    if event_path and on_github:
        try:
            github_event = Path(event_path).read_bytes()
        except OSError as exc:
            fail(f"GITHUB_EVENT_PATH {event_path}: cannot read it ({exc.strerror or exc})")
    producer = options.emit.producer
    events = parsed(
        lambda: parser.parse(
            variables,
            service=service,
            environment=env,
            image=image,
            status=status,
            change_ref=change_ref,
            reason=reason,
            time=time,
            source=producer.source,
            actor=producer.actor,
            github_event=github_event,
            event_source=event_path or "GITHUB_EVENT_PATH",
        )
    )
    ingest_events(options, events)


@app.command("terraform")
@shared("options", INGEST)
def terraform(
    options: Ingest,
    plan: Annotated[
        Path,
        typer.Argument(
            metavar="PLAN_JSON|-",
            help="The plan as `terraform show -json PLANFILE` writes it ('-': standard input).",
        ),
    ],
    apply_log: Annotated[
        Path,
        typer.Option(
            "--apply-log",
            help="What `terraform apply -json PLANFILE` wrote (JSON Lines): only the changes "
            "it completed are recorded.",
        ),
    ],
    maps: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="PATTERN=SERVICE or PATTERN=SERVICE/ENV: resources whose address (or module "
            "path) matches the fnmatch PATTERN belong to SERVICE; the first match wins "
            "(repeatable).",
        ),
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", help="The service of the addresses no --map maps.")
    ] = None,
    env: Annotated[
        str | None,
        typer.Option("--env", help="The environment, where a --map rule names none."),
    ] = None,
    hmac_key_file: Annotated[
        Path | None,
        typer.Option(
            "--hmac-key-file",
            envvar="LEDGER_HMAC_KEY_FILE",
            show_envvar=True,
            help="The organisation's HMAC key: sensitive values are recorded as their keyed "
            "digest; a plan with sensitive values is refused without it.",
        ),
    ] = None,
    change_ref: ChangeRefOpt = None,
    change_ref_var: Annotated[
        str | None,
        typer.Option(
            "--change-ref-var", help="Take the change ref from this variable of the plan."
        ),
    ] = None,
) -> None:
    """Infrastructure changes from a Terraform apply: deployments where a service's
    deployable unit was replaced, infra mutations for everything else.

    The plan gives the attributes, the apply's log what completed and what failed; nothing
    is sent unless both are read whole and every changed address maps to a service. Source
    and actor: --source and --actor, else the CI's, else terraform.

    Example: `ledger ingest terraform plan.json --apply-log apply.jsonl --map
    'module.payments.*=payments' --env prod --key keys/terraform.key`"""
    from ledger.integrations import terraform as parser
    from ledger.integrations.ci_env import detect_ci
    from ledger.integrations.secrets import key_from_bytes

    plan_bytes = read_input(plan)
    log_bytes = read_input(apply_log)
    key = None
    if hmac_key_file is not None:
        with reporting_errors():
            key = key_from_bytes(read_input(hmac_key_file), str(hmac_key_file))
    ci = detect_ci(os.environ)
    producer = options.emit.producer
    result: list[parser.Ingested] = []

    def parse() -> list[Event]:
        result.append(
            parser.parse(
                plan_bytes,
                log_bytes,
                plan_source=str(plan),
                log_source=str(apply_log),
                maps=maps or (),
                service=service,
                environment=env,
                hmac_key=key,
                change_ref=change_ref,
                change_ref_variable=change_ref_var,
                source=producer.source or (ci.source if ci else None),
                actor=producer.actor or (ci.actor if ci else None),
            )
        )
        return result[0].events

    events = parsed(parse)
    for note in result[0].notes:
        console.print(f"note: {note}", style="yellow")
    ingest_events(options, events)
