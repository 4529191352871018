"""`ledger evidence` and `ledger verify-bundle`: a signed answer, checked offline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

import typer

from ledger.cli._common import (
    DEFAULT_DB,
    DEFAULT_KEYRING,
    ApiUrl,
    DbPath,
    Exit,
    JsonFlag,
    KeyringPath,
    LedgerKeyPath,
    TrustedKeyPath,
    console,
    fail,
    parse_time,
    print_json,
    read_input,
    reporting_errors,
    trusted_key,
)
from ledger.cli._terminal import styled
from ledger.cli.query import print_asof, print_timeline
from ledger.errors import EvidenceError

if TYPE_CHECKING:
    from ledger.evidence.bundle import AsOfQuery, BundleReport, TimelineQuery


def check_bundle_file(
    path: Path, trusted: Path | None, keyring: Path | None = None
) -> BundleReport:
    """Read and verify a bundle file: what `ledger verify-bundle` and the demo both run."""
    from ledger.evidence.bundle import verify_bundle
    from ledger.wire.keyring import Keyring

    key = trusted_key(trusted)
    ring = Keyring.load(keyring) if keyring is not None else None
    return verify_bundle(read_input(path), key, ring)


def _print_answer(report: BundleReport) -> None:
    """What the bundle says, as `ledger asof` and `ledger timeline` print it (stdout)."""
    from ledger.evidence.bundle import AsOfQuery

    query, answer = report.query, report.answer
    if isinstance(query, AsOfQuery):
        print_asof(answer)
        return
    print_asof(answer["state"])
    print_timeline(answer["timeline"], title=f"then, up to {query.to.isoformat()}")


def _describe(report: BundleReport) -> str:
    from ledger.evidence.bundle import AsOfQuery

    query = report.query
    if isinstance(query, AsOfQuery):
        asked = f"{query.service} in {query.environment} at {query.at.isoformat()}"
    else:
        asked = (
            f"{query.service} in {query.environment} from {query.from_.isoformat()} "
            f"to {query.to.isoformat()}"
        )
    return (
        f"{asked}: {len(report.entries)} entries, each proven in checkpoint "
        f"{report.checkpoint.size} of {report.checkpoint.origin}; answer re-derived"
    )


def report_json(report: BundleReport) -> dict[str, Any]:
    """The bundle's report; ``ok`` only when a trusted key vouches for it."""
    return {
        "ok": report.trusted,
        "query": report.query.model_dump(mode="json"),
        "subjects": report.subjects,
        "entries": report.entries,
        "keyring_records": report.keyring_records,
        "checkpoint": {"origin": report.checkpoint.origin, "size": report.checkpoint.size},
        "key": report.key_name,
        "trusted": report.trusted,
        "own_keyring": report.own_keyring,
        "answer": report.answer,
    }


def evidence(
    service: Annotated[str, typer.Option("--service", help="Service name.")],
    env: Annotated[str, typer.Option("--env", help="Environment, e.g. prod.")],
    ledger_key: LedgerKeyPath = None,
    at: Annotated[
        str | None, typer.Option("--at", help="What was live at this instant (asof).")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="State at this instant, then the timeline...")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="...up to this one (default: now).")
    ] = None,
    db: DbPath = DEFAULT_DB,
    api: ApiUrl = None,
    keyring: KeyringPath = DEFAULT_KEYRING,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Bundle file to write; default: stdout.")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="With --out: print what was written as JSON.")
    ] = False,
) -> None:
    """Write an evidence bundle: an answer with everything needed to check it offline.

    The answer, the entries it rests on, their inclusion proofs against a signed checkpoint
    and the keys, as a signed in-toto statement (DSSE). Signed with --ledger-key, or by the
    consumer that serves --api (which signs with its own).

    Example: `ledger evidence --service checkout --env prod --at 2026-11-24T14:03:00Z --ledger-key
    ledger.key --out evidence.json`"""
    from ledger.evidence.build import evidence_query
    from ledger.evidence.bundle import verify_bundle

    if json_out and out_path is None:
        fail(
            "--json prints the report of a bundle written with --out (without --out the "
            "bundle itself, JSON already, goes to standard output)"
        )
    with reporting_errors():
        query = evidence_query(
            service, env, parse_time(at, "--at") if at else None,
            parse_time(start, "--from") if start else None,
            parse_time(end, "--to") if end else None,
        )  # fmt: skip
        if api:  # the consumer signs with its own key: --ledger-key is not read
            from ledger.api.client import fetch_bytes

            data = fetch_bytes(api, "/v1/evidence?" + urlencode(_params(query)))
            report = verify_bundle(data)  # as served: refused here if it does not verify
        else:
            if ledger_key is None:
                fail(
                    "--ledger-key (LEDGER_LEDGER_KEY) is needed to sign the bundle, or "
                    "--api URL of a consumer started with --ledger-key"
                )
            data, report = _build(db, query, keyring, ledger_key)
    if out_path is None:
        typer.echo(data.decode(), nl=False)
    else:
        out_path.write_bytes(data)
    if json_out:
        print_json({"path": str(out_path), **report_json(report), "ok": True})
    console.print(
        f"wrote {out_path or 'the bundle'}: {_describe(report)}; signed by {report.key_name!r}"
    )


def _build(
    db: Path, query: AsOfQuery | TimelineQuery, keyring: Path, ledger_key: Path
) -> tuple[bytes, BundleReport]:
    from ledger.evidence.build import build_bundle
    from ledger.store.reader import LedgerReader
    from ledger.wire.keyring import Keyring, Signer

    signer = Signer.from_file(ledger_key)
    ring = Keyring.load(keyring)
    with LedgerReader(db) as reader:
        data, report = build_bundle(reader, query, ring, signer)
    return data, report


def _params(query: AsOfQuery | TimelineQuery) -> dict[str, str]:
    from ledger.evidence.bundle import AsOfQuery

    params = {"service": query.service, "env": query.environment}
    if isinstance(query, AsOfQuery):
        return params | {"at": query.at.isoformat()}
    return params | {"from": query.from_.isoformat(), "to": query.to.isoformat()}


def verify_bundle(
    file: Annotated[
        Path, typer.Argument(metavar="FILE|-", help="A bundle written by `ledger evidence`.")
    ],
    trusted: TrustedKeyPath = None,
    keyring: Annotated[
        Path | None,
        typer.Option(
            "--keyring",
            help="The producers' keyring as you hold it: check their "
            "signatures under it, not under the keyring the bundle carries.",
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Check an evidence bundle offline: no ledger, no Kafka, no network.

    Exit 1 naming the failed check: signature, checkpoint, inclusion, producer signature,
    answer, subjects. Exit 4 when every check passes but no --trusted-key vouches for the
    key that signed it: anyone can sign a bundle.

    Example: `ledger verify-bundle evidence.json --trusted-key ledger.pub`"""
    with reporting_errors():
        try:
            report = check_bundle_file(file, trusted, keyring)
        except EvidenceError as exc:
            if json_out:
                print_json({"ok": False, "check": exc.check, "seq": exc.seq, "reason": exc.message})
            else:
                console.print(styled(("FAILED", "red"), f" ({exc.check}): {exc.message}"))
            raise typer.Exit(Exit.CHECK_FAILED) from None
    if json_out:
        print_json(report_json(report))
    else:
        _print_report(report)
    if not report.trusted:
        raise typer.Exit(Exit.NO_TRUST_ROOT)


def _print_report(report: BundleReport) -> None:
    if report.trusted:
        console.print(styled(("OK", "green"), f" {_describe(report)}"))
    else:
        console.print(
            styled(("NOT VERIFIED", "yellow"), f" {_describe(report)}, but signed by key "
                   f"{report.key_name!r} carried in the bundle, which nothing vouches for "
                   "(anyone can sign a bundle): pass --trusted-key (or LEDGER_TRUSTED_KEY)")
        )  # fmt: skip
    console.print(f"subjects: {', '.join(report.subjects)}")
    if report.trusted:
        console.print(f"signed by trusted ledger key {report.key_name!r}")
    if report.own_keyring:
        console.print("producer signatures checked under your keyring")
    elif report.keyring_records:
        records = ", ".join(str(seq) for seq in report.keyring_records)
        console.print(
            f"producer signatures checked under the keyrings the ledger recorded (entries "
            f"{records}, proven in the checkpoint like the events): pass --keyring to check "
            "them under your own"
        )
    else:
        console.print(
            "producer keys from the keyring the bundle carries (the ledger "
            "operator's statement): pass --keyring to check them under your own",
            style="yellow",
        )
    _print_answer(report)
