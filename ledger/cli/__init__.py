"""The `ledger` command line: a thin layer over the library; arguments are checked first.

Commands are registered here by name and imported only when run (ledger.cli._lazy), so a
command loads what it uses and nothing else; docs/cli.md has the conventions they follow.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar

import typer

from ledger.cli._lazy import Command, LazyGroup

__all__ = ["COMMANDS", "app", "main"]

COMMANDS = (
    Command("backup", "ledger.cli.backup:backup",
            "Copy the ledger consistently, while the consumer runs or from the file, then "
            "verify the copy."),
    Command("restore", "ledger.cli.backup:restore",
            "Put a backup in place of a lost ledger, and state the restore, signed by the "
            "ledger key."),
    Command("config", "ledger.cli.config:app",
            "Show the settings a command would use, and where each comes from."),
    Command("demo", "ledger.cli.demo:demo",
            "Run the whole flow end to end, on a local broker unless one is given."),
    Command("broker", "ledger.cli.broker:broker",
            "Run the bundled Kafka-compatible broker until Ctrl-C, for local runs."),
    Command("keys", "ledger.cli.keys:app",
            "Generate signing keys and manage the keyring that authorizes them."),
    Command("emit", "ledger.cli.emit:app",
            "Sign events and put them on the Kafka topic (delivery confirmed; else exit 3, or 5 "
            "when spooled)."),
    Command("ingest", "ledger.cli.ingest:app",
            "Record what a tool says about a change: its output in, signed ledger events "
            "out."),
    Command("spool", "ledger.cli.spool:app",
            "Send the events a producer spooled when Kafka did not take them, or say what is "
            "pending."),
    Command("consume", "ledger.cli.consume:consume",
            "Verify signed events from Kafka and chain them into the ledger (runs until "
            "stopped)."),
    Command("verify", "ledger.cli.inspect:verify",
            "Re-check everything stored: hashes, links, tree, checkpoints, every signature."),
    Command("quarantine", "ledger.cli.inspect:quarantine",
            "List quarantined messages: where they came from, why, and their raw bytes."),
    Command("replay", "ledger.cli.replay:replay",
            "Judge quarantined messages again under the keyring, and chain those that now "
            "pass."),
    Command("doctor", "ledger.cli.doctor:doctor",
            "Check a deployment end to end: broker, topics and their retention, keyring, "
            "ledger, witness file, ledger key, last recorded verification."),
    Command("status", "ledger.cli.inspect:status",
            "Size, head hash, last ingestion time and quarantine count of the ledger."),
    Command("asof", "ledger.cli.query:asof",
            "Exactly what was live for a service at an instant, with the entries that prove "
            "it."),
    Command("snapshot", "ledger.cli.query:snapshot",
            "Every service of an environment at an instant: the whole estate, one row each."),
    Command("diff", "ledger.cli.query:diff",
            "What changed in an environment between two instants: images, mutations, "
            "approvals."),
    Command("timeline", "ledger.cli.query:timeline",
            "The ordered history of a service in an environment."),
    Command("search", "ledger.cli.query:search",
            "Where and when an image ran, a commit was deployed, or a change ref was used."),
    Command("gate", "ledger.cli.gate:gate",
            "Would this change be approved if it were made now? Exit 0 if so, 1 with every "
            "reason."),
    Command("horizon", "ledger.cli.horizon:app",
            "Keep the horizon policy (where each service sits, and why) in the ledger: plan, "
            "then apply."),
    Command("check", "ledger.cli.check:check",
            "Check a period's production changes against the process and the horizon "
            "policy."),
    Command("report", "ledger.cli.report:report",
            "Write the auditor's report of a period: findings by requirement, numbers, "
            "timelines."),
    Command("stats", "ledger.cli.stats:stats",
            "Measure deployment frequency, lead time, failure rate and time to restore, by "
            "deployment model."),
    Command("proof", "ledger.cli.proof:app",
            "Inclusion and consistency proofs of the ledger's Merkle tree (RFC 9162)."),
    Command("evidence", "ledger.cli.evidence:evidence",
            "Write an evidence bundle: an answer with everything needed to check it offline."),
    Command("verify-bundle", "ledger.cli.evidence:verify_bundle",
            "Check an evidence bundle offline: no ledger, no Kafka, no network."),
)  # fmt: skip


def _flags_take_no_value() -> None:
    """Typer's rich help (0.29) prints a type beside every option, ``<bool>`` beside a flag
    too (``--help`` included), which reads as if the flag took a value: none for flags."""
    from typer.core import TyperOption

    typed = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else typed(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()


class _Ledger(LazyGroup):
    registry: ClassVar[dict[str, Command]] = {command.name: command for command in COMMANDS}


app = typer.Typer(
    cls=_Ledger,
    name="ledger",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"ledger {version('deploy-ledger')}")
        raise typer.Exit()


@app.callback()
def ledger(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_version, help="Print the version and exit."
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="LEDGER_CONFIG",
            show_envvar=True,
            help="Defaults for every command's options (TOML), below flags and environment "
            "variables.",
        ),
    ] = None,
) -> None:
    """Signed, hash-chained audit ledger of deployments, in-place mutations and approvals."""
    ctx.obj = {"config": config}
    name = ctx.invoked_subcommand
    if config is not None and name in _Ledger.registry:
        from ledger.cli._common import reporting_errors
        from ledger.cli._config import command_defaults, load_config

        with reporting_errors():
            command = _Ledger.registry[name].load()
            ctx.default_map = {name: command_defaults(load_config(config), name, command, config)}


def main() -> None:
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Results (stdout) and messages (stderr) keep their order when both go to one pipe.
        sys.stdout.reconfigure(line_buffering=True)
    app()
