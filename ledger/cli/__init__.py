"""The `ledger` command line: a thin layer over the library; arguments are checked first."""

from __future__ import annotations

import io
import sys

import typer

from ledger.cli import consume, demo, emit, evidence, keys, proof, query

app = typer.Typer(
    name="ledger",
    help="Signed, hash-chained audit ledger of deployments, in-place mutations and approvals.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
app.add_typer(keys.app, name="keys")
app.add_typer(emit.app, name="emit")
app.command()(consume.consume)
app.command()(consume.verify)
app.command()(consume.quarantine)
app.command()(consume.status)
app.command()(demo.demo)
for command in (query.asof, query.snapshot, query.diff, query.timeline, query.search):
    app.command()(command)
app.add_typer(proof.app, name="proof")
app.command()(evidence.evidence)
app.command(name="verify-bundle")(evidence.verify_bundle_command)


def main() -> None:
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Results (stdout) and messages (stderr) keep their order when both go to one pipe.
        sys.stdout.reconfigure(line_buffering=True)
    app()
