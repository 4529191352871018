"""`ledger gate`: would this change be approved if it were made now? Exit 0 or 1."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from ledger.cli._common import (
    DEFAULT_DB,
    ApiUrl,
    DbPath,
    Exit,
    JsonFlag,
    console,
    local_or_remote,
    print_json,
    reporting_errors,
)
from ledger.cli._terminal import styled


def gate(
    service: Annotated[str, typer.Option(help="Service name.")],
    env: Annotated[str, typer.Option(help="Environment, e.g. prod.")],
    actor: Annotated[str, typer.Option(help="Who is about to make the change.")],
    image: Annotated[str | None, typer.Option(help="A deployment: the image, by digest.")] = None,
    target_kind: Annotated[str | None, typer.Option(help="An in-place change: its kind.")] = None,
    target: Annotated[str | None, typer.Option(help="...its target.")] = None,
    content_hash: Annotated[
        str | None, typer.Option("--hash", help="...and the new content's hash.")
    ] = None,
    change_ref: Annotated[
        str | None, typer.Option(help="Change/ticket reference the approval names.")
    ] = None,
    preprod: Annotated[
        list[str] | None,
        typer.Option(
            help="A pre-production environment the image must have succeeded in "
            "(repeatable); default: those the horizon policy in force names for the service "
            "(none recorded: not checked)."
        ),
    ] = None,
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    json_out: JsonFlag = False,
) -> None:
    """Would this change be approved if it were made now? Exit 0 if so, 1 with every reason.

    Judged by the point-in-time rules as if it were the ledger's next entry (a valid grant
    already recorded, by someone other than the actor, for this image or hash). Emits nothing.

    The image must have succeeded in pre-production first: --preprod, else the environments
    the horizon policy in force names.

    Example: `ledger gate --service checkout --env prod --actor alice --image
    registry.example/checkout@sha256:<64 hex> --change-ref CHG-1042 --preprod staging`"""
    from ledger.store.gate import ProposedChange
    from ledger.store.gate import gate as judge

    with reporting_errors():
        proposed = ProposedChange(service, env, actor, change_ref, image, target_kind, target,
                                  content_hash)  # fmt: skip
        fields = asdict(proposed) | {"env": proposed.environment}
        # the API's parameters are the options' names (docs/cli.md): env, not environment
        query = {k: v for k, v in fields.items() if v is not None and k != "environment"}
        path = "/v1/gate?" + urlencode(query | {"preprod": preprod or []}, doseq=True)
        answer: dict[str, Any] = local_or_remote(
            db, api, path, lambda r: asdict(judge(r, proposed, preprod or None))
        )
    if json_out:
        print_json(answer)
    elif answer["allowed"]:
        approval = answer["approval"] or {}
        console.print(styled(("allowed", "green"), f": approved by {approval.get('approver')} "
                             f"(entry {approval.get('seq')})"))  # fmt: skip
    else:
        for reason in answer["reasons"]:
            console.print(styled(("refused", "red"), f": {reason}"))
    if not answer["allowed"]:
        raise typer.Exit(Exit.CHECK_FAILED)
