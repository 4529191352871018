"""Benchmark: parse + sign a 5,000-resource Terraform plan, against `ledger emit file`.

Generates a plan as `terraform show -json PLANFILE` writes it (resource_changes with
before/after, planned_values and prior_state repeating the attributes, as a real plan does)
and the log of its apply (`terraform apply -json`: planned_change, apply_start and
apply_complete per change, a change_summary), for N resources over 20 service modules:
in-place updates of ordinary resources (security groups, buckets, IAM roles with policy
documents, queues), RDS instances with a sensitive password, replacements, creates,
deletes, and deployable units (instances and launch templates with a new AMI, Lambda
functions with new code, ECS task definitions rolled out by their service).

Then measures, on one core, no broker:

  (a) terraform: read the two files, ``ledger.integrations.terraform.parse`` (with 20
      ``--map`` rules and an HMAC key), then ``seal`` each event (encode + Ed25519 sign),
      as `ledger ingest terraform` does before it sends;
  (b) emit file: the same events as `ledger emit file` lines (the --dry-run output), read
      and sealed by ``ledger.cli.emit._read_file`` and ``seal``, as `ledger emit file` does
      before it sends.

Each is run --runs times, alternately, after one warm-up. The figure is the ratio of the
median CPU times of this process (target: terraform within 1.5 x emit file): on a shared
machine the wall clock also counts the time other processes hold the cores. The median of
each run's wall-clock ratio to the emit run right after it is printed beside it. A
benchmark, not a test.

    python bench/terraform.py [--resources 5000] [--runs 7] [--json]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ledger.cli.emit import _read_file
from ledger.cli.ingest import event_line
from ledger.integrations import terraform
from ledger.integrations.secrets import HmacKey
from ledger.transport.producer import seal
from ledger.wire.keyring import Signer

SERVICES = 20
REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
START = datetime(2025, 6, 3, 14, 0, tzinfo=UTC)


def _hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _ami(n: int) -> str:
    return "ami-" + _hex(f"ami{n}")[:17]


def _policy(n: int) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": [f"arn:aws:s3:::bucket-{n}/*"]},
        {"Effect": "Allow", "Action": ["sqs:SendMessage"],
         "Resource": f"arn:aws:sqs:eu-west-1:123456789012:queue-{n}"}]})  # fmt: skip


def _resource(i: int) -> tuple[str, str, list[str], Any, Any, Any, Any]:
    """(type, name, actions, before, after, after_unknown, after_sensitive) of resource i."""
    kind = i % 20
    before: Any
    after: Any
    tags = {"service": f"svc{i % SERVICES:02d}", "team": "platform", "cost-centre": "4711"}
    if kind < 8:  # security group rules changed in place
        before = {"id": f"sg-{i:017x}", "name": f"sg-{i}", "description": "app", "vpc_id":
                  "vpc-0a1b2c3d", "ingress": [{"from_port": 443, "to_port": 443, "protocol":
                  "tcp", "cidr_blocks": ["10.0.0.0/8"]}], "egress": [], "tags": tags}  # fmt: skip
        after = json.loads(json.dumps(before))
        after["ingress"].append({"from_port": 8443, "to_port": 8443, "protocol": "tcp",
                                 "cidr_blocks": ["10.1.0.0/16"]})  # fmt: skip
        return "aws_security_group", f"sg{i}", ["update"], before, after, {}, {}
    if kind < 11:  # IAM role policy documents
        before = {"id": f"role-{i}", "name": f"role-{i}", "assume_role_policy": _policy(i),
                  "path": "/", "max_session_duration": 3600, "tags": tags}  # fmt: skip
        after = before | {"assume_role_policy": _policy(i + 1)}
        return "aws_iam_role", f"role{i}", ["update"], before, after, {}, {}
    if kind < 13:  # RDS: in place, a sensitive password
        before = {"id": f"db-{i}", "identifier": f"db-{i}", "engine": "postgres",
                  "engine_version": "16.3", "instance_class": "db.r6g.large",
                  "allocated_storage": 100, "password": f"pw-{i}", "username": "app",
                  "tags": tags}  # fmt: skip
        after = before | {"engine_version": "16.4"}
        return "aws_db_instance", f"db{i}", ["update"], before, after, {}, {"password": True}
    if kind == 13:  # a replaced bucket
        before = {"id": f"bucket-{i}", "bucket": f"bucket-{i}", "force_destroy": False,
                  "tags": tags}  # fmt: skip
        after = {"bucket": f"bucket-{i}-v2", "force_destroy": False, "tags": tags}
        return "aws_s3_bucket", f"b{i}", ["delete", "create"], before, after, {"id": True}, {}
    if kind == 14:  # created queues
        after = {"name": f"queue-{i}", "visibility_timeout_seconds": 30, "tags": tags}
        return "aws_sqs_queue", f"q{i}", ["create"], None, after, {"id": True, "arn": True}, {}
    if kind == 15:  # deleted queues
        before = {"id": f"https://sqs/queue-{i}", "name": f"queue-{i}", "tags": tags}
        return "aws_sqs_queue", f"old{i}", ["delete"], before, None, {}, False
    if kind == 16:  # instances replaced with a new AMI
        before = {"id": f"i-{i:017x}", "ami": _ami(i), "instance_type": "m7g.large",
                  "tags": tags}  # fmt: skip
        after = {"ami": _ami(i + 1), "instance_type": "m7g.large", "tags": tags}
        return "aws_instance", f"web{i}", ["delete", "create"], before, after, {"id": True}, {}
    if kind == 17:  # launch templates: a new AMI in place
        before = {"id": f"lt-{i:017x}", "image_id": _ami(i), "instance_type": "m7g.large",
                  "latest_version": 3, "name": f"lt-{i}", "tags": tags}  # fmt: skip
        after = before | {"image_id": _ami(i + 1)}
        after.pop("latest_version")
        return "aws_launch_template", f"lt{i}", ["update"], before, after, {
            "latest_version": True}, {}  # fmt: skip
    if kind == 18:  # Lambda functions with new code
        code = base64.b64encode(hashlib.sha256(f"code{i}".encode()).digest()).decode()
        new = base64.b64encode(hashlib.sha256(f"code{i + 1}".encode()).digest()).decode()
        before = {"function_name": f"fn-{i}", "handler": "main.handler", "runtime":
                  "python3.12", "memory_size": 256, "publish": True, "source_code_hash": code,
                  "version": "4", "tags": tags}  # fmt: skip
        after = before | {"source_code_hash": new}
        after.pop("version")
        return "aws_lambda_function", f"fn{i}", ["update"], before, after, {"version": True}, {}
    definitions = json.dumps([  # ECS task definitions, replaced
        {"name": "app", "image": f"{REGISTRY}/app{i}@sha256:{_hex(f'app{i}')}", "cpu": 256,
         "memory": 512, "essential": True, "portMappings": [{"containerPort": 8080}]},
        {"name": "envoy", "image": f"{REGISTRY}/envoy@sha256:{_hex('envoy')}", "cpu": 128,
         "memory": 256, "essential": True}])  # fmt: skip
    before = {"family": f"task-{i}", "revision": 7, "container_definitions": definitions,
              "cpu": "512", "memory": "1024", "tags": tags}  # fmt: skip
    after = {"family": f"task-{i}", "container_definitions": definitions.replace("8080", "8081"),
             "cpu": "512", "memory": "1024", "tags": tags}  # fmt: skip
    return "aws_ecs_task_definition", f"task{i}", ["delete", "create"], before, after, {
        "revision": True, "arn": True}, {}  # fmt: skip


def generate(resources: int) -> tuple[bytes, bytes, list[str]]:
    """The plan JSON, the apply log, and the --map rules for ``resources`` resources."""
    changes: list[dict[str, Any]] = []
    planned: list[dict[str, Any]] = []
    prior: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    at = START

    def stamp() -> str:
        nonlocal at
        at += timedelta(milliseconds=3)
        return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    lines.append({"@level": "info", "@message": "Terraform 1.11.4", "@module": "terraform.ui",
                  "@timestamp": stamp(), "terraform": "1.11.4", "type": "version",
                  "ui": "1.2"})  # fmt: skip
    hooks = []
    for i in range(resources):
        type_, name, actions, before, after, unknown, sensitive = _resource(i)
        module = f"module.svc{i % SERVICES:02d}"
        address = f"{module}.{type_}.{name}"
        changes.append({"address": address, "module_address": module, "mode": "managed",
                        "type": type_, "name": name, "provider_name":
                        "registry.terraform.io/hashicorp/aws", "change": {
                            "actions": actions, "before": before, "after": after,
                            "after_unknown": unknown, "before_sensitive": sensitive or {},
                            "after_sensitive": sensitive}})  # fmt: skip
        if after is not None:
            planned.append({"address": address, "type": type_, "values": after})
        if before is not None:
            prior.append({"address": address, "type": type_, "values": before})
        resource = {"addr": address, "module": module, "resource": f"{type_}.{name}",
                    "implied_provider": "aws", "resource_type": type_, "resource_name": name,
                    "resource_key": None}  # fmt: skip
        word = "replace" if len(actions) == 2 else actions[0]
        lines.append({"@level": "info", "@message": f"{address}: Plan to {word}",
                      "@module": "terraform.ui", "@timestamp": stamp(),
                      "change": {"resource": resource, "action": word},
                      "type": "planned_change"})  # fmt: skip
        for action in ["delete", "create"] if word == "replace" else [word]:
            hooks.append((resource, address, action))
    for resource, address, action in hooks:
        for kind in ("apply_start", "apply_complete"):
            lines.append({"@level": "info", "@message": f"{address}: {kind}",
                          "@module": "terraform.ui", "@timestamp": stamp(),
                          "hook": {"resource": resource, "action": action},
                          "type": kind})  # fmt: skip
    lines.append({"@level": "info", "@message": "Apply complete!", "@module": "terraform.ui",
                  "@timestamp": stamp(), "changes": {"add": 0, "change": 0, "remove": 0,
                  "operation": "apply"}, "type": "change_summary"})  # fmt: skip
    plan = {"format_version": "1.2", "terraform_version": "1.11.4",
            "planned_values": {"root_module": {"resources": planned}},
            "resource_changes": changes,
            "prior_state": {"format_version": "1.0", "terraform_version": "1.11.4",
                            "values": {"root_module": {"resources": prior}}},
            "timestamp": "2025-06-03T13:59:00Z", "applyable": True, "complete": True,
            "errored": False}  # fmt: skip
    log = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    maps = [f"module.svc{n:02d}=svc{n:02d}/prod" for n in range(SERVICES)]
    return json.dumps(plan, separators=(",", ":")).encode(), log.encode(), maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    signer = Signer.generate("terraform")
    key = HmacKey(b"bench-hmac-key-" * 3)
    plan, log, maps = generate(args.resources)
    with tempfile.TemporaryDirectory() as tmp:
        plan_path, log_path, lines_path = Path(tmp, "plan.json"), Path(tmp, "apply.jsonl"), Path(
            tmp, "events.jsonl")  # fmt: skip
        plan_path.write_bytes(plan)
        log_path.write_bytes(log)
        events = terraform.parse(plan, log, maps=maps, hmac_key=key).events
        lines_path.write_text("".join(event_line(event) + "\n" for event in events))

        def ingest_terraform() -> int:
            result = terraform.parse(plan_path.read_bytes(), log_path.read_bytes(), maps=maps,
                                     hmac_key=key, plan_source=str(plan_path),
                                     log_source=str(log_path))  # fmt: skip
            return len([seal(event, signer) for event in result.events])

        def emit_file() -> int:
            read = _read_file(lines_path, {"source": "terraform", "actor": "terraform"})
            return len([seal(event, signer) for event in read])

        wall: dict[str, list[float]] = {"terraform": [], "emit_file": []}
        cpu: dict[str, list[float]] = {"terraform": [], "emit_file": []}
        for run in range(args.runs + 1):
            for name, job in (("terraform", ingest_terraform), ("emit_file", emit_file)):
                began, began_cpu = time.perf_counter(), time.process_time()
                count = job()
                elapsed, used = time.perf_counter() - began, time.process_time() - began_cpu
                assert count == len(events)
                if run:  # the first run warms up
                    wall[name].append(elapsed)
                    cpu[name].append(used)
    medians = {name: statistics.median(values) for name, values in cpu.items()}
    wall_medians = {name: statistics.median(values) for name, values in wall.items()}
    ratio = medians["terraform"] / medians["emit_file"]
    # Each terraform run against the emit run right after it: a shared machine's load
    # drifts between runs more than within a pair.
    paired = statistics.median(t / e for t, e in zip(wall["terraform"], wall["emit_file"],
                                                      strict=True))  # fmt: skip
    kinds: dict[str, int] = {}
    for event in events:
        kinds[event.type] = kinds.get(event.type, 0) + 1
    report = {
        "resources": args.resources,
        "events": len(events),
        "by_type": kinds,
        "plan_bytes": len(plan),
        "log_bytes": len(log),
        "runs": args.runs,
        "terraform_cpu_s": [round(t, 4) for t in cpu["terraform"]],
        "emit_file_cpu_s": [round(t, 4) for t in cpu["emit_file"]],
        "terraform_median_cpu_s": round(medians["terraform"], 4),
        "emit_file_median_cpu_s": round(medians["emit_file"], 4),
        "terraform_median_wall_s": round(wall_medians["terraform"], 4),
        "emit_file_median_wall_s": round(wall_medians["emit_file"], 4),
        "terraform_events_per_cpu_s": round(len(events) / medians["terraform"]),
        "emit_file_events_per_cpu_s": round(len(events) / medians["emit_file"]),
        "ratio": round(ratio, 3),
        "ratio_wall_paired": round(paired, 3),
        "target_ratio": 1.5,
        "met": ratio <= 1.5,
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"{args.resources} resources, {len(events)} events {kinds}; plan {len(plan):,} bytes,"
          f" log {len(log):,} bytes")  # fmt: skip
    for name in ("terraform", "emit_file"):
        print(f"{name:>10}: median {medians[name]:.3f} s CPU ({len(events) / medians[name]:,.0f} "
              f"events/s; wall {wall_medians[name]:.3f} s) over {args.runs} runs: "
              + ", ".join(f"{t:.3f}" for t in cpu[name]))  # fmt: skip
    print(f"ratio terraform / emit file: {ratio:.2f} CPU, {paired:.2f} wall (paired runs); "
          f"target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'}")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
