"""`ledger ingest ci`: a deployment (or its failure) as the CI run it happens in tells it.

Pure: the CI system's variables (and, on GitHub Actions, the event JSON the runner wrote)
come in as values; one validated event comes out. No clock, no environment, no Kafka, so
the same run of the same job always gives the same event: the same id, the same bytes.

What comes from where (docs/integrations.md has the table):

- ``source``, ``actor``, ``commit``, ``run_url``: :func:`ledger.integrations.ci_env.detect_ci`,
  unless given (``--source``/``--actor``); with no actor in the variables (Jenkins without
  the Build User Vars plugin) the actor is the pipeline itself, its ``source``.
- The event's ``time``: ``--time`` when given, else the time the CI gives the run
  (GitLab: ``CI_JOB_STARTED_AT``, else ``CI_PIPELINE_CREATED_AT``). GitHub Actions and
  Jenkins give none in their variables: the templates pass it (the run attempt's
  ``run_started_at`` from the GitHub API; the Jenkins build's start time).
- ``commit_time``: GitHub's ``head_commit.timestamp`` in the event JSON (when that commit
  is the one deployed), GitLab's ``CI_COMMIT_TIMESTAMP``; Jenkins gives none.
- The id: :func:`ledger.integrations.ids.ingest_id` over the tool ``ci``, the run
  (provider, project, run id, attempt) and the resource (service, environment, status,
  image), at the event's time: a retried step sends the same event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.errors import LedgerError
from ledger.integrations.ci_env import CiContext, detect_ci
from ledger.integrations.ids import ingest_id
from ledger.integrations.inputs import InputError, json_path, parse_json, parse_time
from ledger.wire.codec import encode_event
from ledger.wire.events import Event, event_from_mapping

__all__ = ["STATUSES", "TOOL", "VARIABLES", "CiRun", "parse", "read_run"]

TOOL = "ci"
"""The tool, as ids name it."""

STATUSES: dict[str, str] = {
    "started": "deployment.started",
    "succeeded": "deployment.succeeded",
    "failed": "deployment.failed",
}
"""``--status`` → the event type."""

VARIABLES: tuple[str, ...] = (
    # GitHub Actions
    "GITHUB_ACTIONS", "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_REPOSITORY",
    "GITHUB_SERVER_URL", "GITHUB_SHA", "GITHUB_ACTOR", "GITHUB_TRIGGERING_ACTOR",
    # GitLab CI
    "GITLAB_CI", "CI_PIPELINE_ID", "CI_PIPELINE_URL", "CI_PIPELINE_CREATED_AT", "CI_JOB_ID",
    "CI_JOB_URL", "CI_JOB_STARTED_AT", "CI_PROJECT_PATH", "CI_COMMIT_SHA",
    "CI_COMMIT_TIMESTAMP", "GITLAB_USER_LOGIN",
    # Jenkins
    "JENKINS_URL", "BUILD_TAG", "BUILD_NUMBER", "BUILD_URL", "JOB_NAME", "GIT_COMMIT",
    "BUILD_USER_ID",
)  # fmt: skip
"""Every variable the parser reads: the command line passes their values, nothing else."""

_COMMIT_VARIABLE = {"github": "GITHUB_SHA", "gitlab": "CI_COMMIT_SHA", "jenkins": "GIT_COMMIT"}
_RUN_URL_VARIABLE = {
    "github": "GITHUB_SERVER_URL/GITHUB_REPOSITORY/GITHUB_RUN_ID",
    "gitlab": "CI_JOB_URL",
    "jenkins": "BUILD_URL",
}
_SOURCE_VARIABLE = {
    "github": "GITHUB_REPOSITORY",
    "gitlab": "CI_PROJECT_PATH",
    "jenkins": "JOB_NAME",
}
_NUMBER = re.compile(r"^[0-9]{1,20}$")
_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")


@dataclass(frozen=True)
class CiRun:
    """The CI run an event comes from, as its variables tell it."""

    context: CiContext
    run: tuple[str, ...]
    """Provider, project, run id, attempt: one attempt of one run (the id's run part)."""
    time: datetime | None
    """The time the CI gives the run (GitLab), or None (GitHub Actions, Jenkins)."""
    time_from: str | None
    commit_time: datetime | None
    commit_time_from: str | None


def _required(variables: Mapping[str, str], name: str, expected: str) -> str:
    value = variables.get(name)
    if value is None or not value.strip():
        raise InputError(name, "not set", expected)
    return value


def _number(variables: Mapping[str, str], name: str, what: str) -> str:
    value = _required(variables, name, what)
    if not _NUMBER.match(value):
        raise InputError(name, f"{value[:64]!r} is not a number", what)
    return value


def read_run(
    variables: Mapping[str, str],
    github_event: bytes | None = None,
    event_source: str = "GITHUB_EVENT_PATH",
) -> CiRun:
    """The run from the CI's ``variables`` (and GitHub's event JSON, ``github_event``, read
    from the file ``event_source`` names); an :class:`InputError` naming the variable or
    the file's position when one is missing or malformed."""
    context = detect_ci(variables)
    if context is None:
        raise InputError(
            "the environment",
            "no CI run: none of GITHUB_RUN_ID, CI_PIPELINE_ID, JENKINS_URL or BUILD_TAG is set",
            "a GitHub Actions, GitLab CI or Jenkins job (or give the event to `ledger emit "
            "deployment`)",
        )
    provider = context.provider
    commit_name = _COMMIT_VARIABLE[provider]
    if context.commit is not None and not _COMMIT.match(context.commit):
        raise InputError(commit_name, f"{context.commit[:80]!r} is not a commit SHA",
                         "7 to 64 lowercase hexadecimal digits")  # fmt: skip
    time: datetime | None = None
    time_from: str | None = None
    commit_time: datetime | None = None
    commit_time_from: str | None = None
    if provider == "github":
        repo = _required(variables, "GITHUB_REPOSITORY", "the repository, owner/name")
        run_id = _number(variables, "GITHUB_RUN_ID", "the workflow run's id")
        attempt = "1"
        if "GITHUB_RUN_ATTEMPT" in variables:
            attempt = _number(variables, "GITHUB_RUN_ATTEMPT", "the run's attempt, 1 or more")
        run = ("github", repo, run_id, attempt)
        if github_event is not None:
            commit_time = _head_commit_time(github_event, event_source, context.commit)
            commit_time_from = f"{event_source} head_commit.timestamp"
    elif provider == "gitlab":
        project = _required(variables, "CI_PROJECT_PATH", "the project's path, group/project")
        pipeline = _number(variables, "CI_PIPELINE_ID", "the pipeline's id")
        job = _number(variables, "CI_JOB_ID", "the job's id (a retried job has a new one)")
        run = ("gitlab", project, pipeline, job)
        for name in ("CI_JOB_STARTED_AT", "CI_PIPELINE_CREATED_AT"):
            if variables.get(name):
                time, time_from = parse_time(variables[name], name), name
                break
        if variables.get("CI_COMMIT_TIMESTAMP"):
            commit_time = parse_time(variables["CI_COMMIT_TIMESTAMP"], "CI_COMMIT_TIMESTAMP")
            commit_time_from = "CI_COMMIT_TIMESTAMP"
    else:
        job_name = _required(variables, "JOB_NAME", "the job's full name, folder/job/branch")
        build = _number(variables, "BUILD_NUMBER", "the build's number")
        run = ("jenkins", job_name, build, "1")
    if commit_time is not None and context.commit is None:
        commit_time, commit_time_from = None, None  # a time of no commit named
    return CiRun(context, run, time, time_from, commit_time, commit_time_from)


def _head_commit_time(data: bytes, source: str, commit: str | None) -> datetime | None:
    """``head_commit.timestamp`` of GitHub's event JSON, when the head commit is the one
    deployed (push events); None when the event names no head commit."""
    expected = "the event JSON GitHub Actions writes (an object)"
    event = parse_json(data, source, expected)
    if not isinstance(event, dict):
        raise InputError(source, f"a JSON {_kind(event)}, not an object", expected)
    head = event.get("head_commit")
    if head is None:
        return None
    where = ["head_commit"]
    if not isinstance(head, dict):
        raise InputError(source, f"a JSON {_kind(head)}", "an object or null", json_path(where))
    head_id = head.get("id")
    if head_id is not None and not isinstance(head_id, str):
        raise InputError(source, f"a JSON {_kind(head_id)}", "the commit's SHA",
                         json_path([*where, "id"]))  # fmt: skip
    if head_id != commit or "timestamp" not in head:
        return None  # the head commit is not the one deployed (or has no time)
    return parse_time(head["timestamp"], source, json_path([*where, "timestamp"]))


def _kind(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def parse(
    variables: Mapping[str, str],
    *,
    service: str,
    environment: str,
    image: str,
    status: str,
    change_ref: str | None = None,
    reason: str | None = None,
    time: str | None = None,
    source: str | None = None,
    actor: str | None = None,
    github_event: bytes | None = None,
    event_source: str = "GITHUB_EVENT_PATH",
) -> list[Event]:
    """The deployment event of this CI run: ``status`` ``started``, ``succeeded`` or
    ``failed`` of ``image`` to ``service`` in ``environment``.

    ``time`` (RFC 3339) is the run's time when the CI gives none, and wins over the one it
    gives; ``source`` and ``actor`` win over the CI's. Raises :class:`InputError` (naming
    the variable, option or file position) for anything that is not a valid event."""
    if status not in STATUSES:
        raise InputError("--status", f"{status[:64]!r} is not a status",
                         "started, succeeded or failed")  # fmt: skip
    if reason is not None and status != "failed":
        raise InputError("--reason", f"given with --status {status}", "--status failed")
    ci = read_run(variables, github_event, event_source)
    at, at_from = ci.time, ci.time_from
    if time is not None:
        at, at_from = parse_time(time, "--time"), "--time"
    if at is None:
        raise InputError(
            "--time",
            f"not given, and {_PROVIDER[ci.context.provider]} gives no time for the run in its "
            "variables",
            "the run's start (RFC 3339), the same every time the step runs: the GitHub "
            "action passes the attempt's run_started_at, the Jenkins step the build's start",
        )
    context = ci.context
    data: dict[str, Any] = {"image": image, "change_ref": change_ref}
    if status == "failed":
        data["reason"] = reason
    else:
        data |= {"commit": context.commit, "run_url": context.run_url}
        if ci.commit_time is not None:
            data["commit_time"] = ci.commit_time
    the_source = source or context.source
    raw: dict[str, Any] = {
        "id": ingest_id(at, TOOL, ci.run, (service, environment, status, image)),
        "type": STATUSES[status],
        "time": at,
        "source": the_source,
        "actor": actor or context.actor or the_source,
        "service": service,
        "environment": environment,
        "data": {name: value for name, value in data.items() if value is not None},
    }
    origins = {
        "time": at_from or "--time",
        "source": "--source" if source else _SOURCE_VARIABLE[context.provider] + " (source)",
        "actor": "--actor" if actor else "the CI's actor variable",
        "service": "--service",
        "environment": "--env",
        "data.image": "--image",
        "data.change_ref": "--change-ref",
        "data.reason": "--reason",
        "data.commit": _COMMIT_VARIABLE[context.provider],
        "data.run_url": _RUN_URL_VARIABLE[context.provider],
        "data.commit_time": ci.commit_time_from or "the commit time",
    }
    try:
        event = event_from_mapping(raw)
        encode_event(event)  # an oversize event is refused here, before anything is sent
    except LedgerError as exc:
        field = getattr(exc, "field", None)
        origin = origins.get(field or "", "the event")
        raise InputError(origin, exc.message) from None
    return [event]


_PROVIDER = {"github": "GitHub Actions", "gitlab": "GitLab CI", "jenkins": "Jenkins"}
