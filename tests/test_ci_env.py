"""Who and what caused a change, read from the CI system's own variables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import IMAGE_A, data_of
from kafka import KafkaConsumer, TopicPartition

from ledger.integrations.ci_env import CiContext, detect_ci
from ledger.transport.settings import KafkaSettings
from ledger.wire.codec import decode_event
from ledger.wire.envelope import Envelope
from ledger.wire.events import DeploymentData
from ledger.wire.keyring import generate_key_files

SHA = "9fceb02d0ae598e95dc970b74767f19372d61af8"

# Values as the providers document and set them.
GITHUB = {
    "CI": "true",
    "GITHUB_ACTIONS": "true",
    "GITHUB_SHA": SHA,
    "GITHUB_REPOSITORY": "acme/checkout",
    "GITHUB_RUN_ID": "1658821493",
    "GITHUB_RUN_ATTEMPT": "2",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_ACTOR": "octocat",
    "GITHUB_TRIGGERING_ACTOR": "monalisa",
}
GITLAB = {
    "CI": "true",
    "GITLAB_CI": "true",
    "CI_PIPELINE_ID": "1000",
    "CI_COMMIT_SHA": SHA,
    "CI_PIPELINE_URL": "https://gitlab.example.com/acme/checkout/-/pipelines/1000",
    "CI_JOB_URL": "https://gitlab.example.com/acme/checkout/-/jobs/4242",
    "CI_PROJECT_PATH": "acme/checkout",
    "GITLAB_USER_LOGIN": "alice",
}
JENKINS = {
    "JENKINS_URL": "https://jenkins.example.com/",
    "BUILD_TAG": "jenkins-acme-checkout-main-17",
    "GIT_COMMIT": SHA,
    "BUILD_URL": "https://jenkins.example.com/job/acme/job/checkout/job/main/17/",
    "JOB_NAME": "acme/checkout/main",
    "BUILD_USER_ID": "bob",
}
_CI_VARIABLE = re.compile(
    r"^(CI|CI_.*|GITHUB_.*|GITLAB_.*|JENKINS_.*|BUILD_.*|GIT_.*|JOB_.*|"
    r"RUNNER_.*|LEDGER_.*)$"
)


def test_github_actions() -> None:
    assert detect_ci(GITHUB) == CiContext(
        provider="github",
        source="ci/github/acme/checkout",
        actor="monalisa",  # who triggered this (re-)run, not who started the first attempt
        commit=SHA,
        run_url="https://github.com/acme/checkout/actions/runs/1658821493/attempts/2",
    )


def test_github_actor_when_no_triggering_actor() -> None:
    env = {k: v for k, v in GITHUB.items() if k != "GITHUB_TRIGGERING_ACTOR"}
    ci = detect_ci(env)
    assert ci is not None
    assert ci.actor == "octocat"


def test_github_enterprise_server_url() -> None:
    env = GITHUB | {"GITHUB_SERVER_URL": "https://github.acme.internal"}
    del env["GITHUB_RUN_ATTEMPT"]
    ci = detect_ci(env)
    assert ci is not None
    assert ci.run_url == "https://github.acme.internal/acme/checkout/actions/runs/1658821493"


def test_gitlab_ci() -> None:
    assert detect_ci(GITLAB) == CiContext(
        provider="gitlab",
        source="ci/gitlab/acme/checkout",
        actor="alice",
        commit=SHA,
        run_url="https://gitlab.example.com/acme/checkout/-/jobs/4242",
    )


def test_gitlab_pipeline_url_when_no_job_url() -> None:
    env = {k: v for k, v in GITLAB.items() if k != "CI_JOB_URL"}
    ci = detect_ci(env)
    assert ci is not None
    assert ci.run_url == GITLAB["CI_PIPELINE_URL"]


def test_jenkins() -> None:
    assert detect_ci(JENKINS) == CiContext(
        provider="jenkins",
        source="ci/jenkins/acme/checkout/main",
        actor="bob",
        commit=SHA,
        run_url="https://jenkins.example.com/job/acme/job/checkout/job/main/17/",
    )


def test_jenkins_without_the_build_user_plugin_has_no_actor() -> None:
    env = {k: v for k, v in JENKINS.items() if k != "BUILD_USER_ID"}
    ci = detect_ci(env)
    assert ci is not None
    assert ci.provider == "jenkins"
    assert ci.actor is None


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"HOME": "/home/alice", "USER": "alice", "PATH": "/usr/bin"},
        {"CI": "true"},  # some CI we do not know: no guessing
        {"GIT_COMMIT": SHA},  # a stray variable is not a CI run
    ],
)
def test_outside_ci_there_is_no_context(env: dict[str, str]) -> None:
    assert detect_ci(env) is None


# --- `ledger emit` in a GitHub Actions job -----------------------------------------------------


def clean_env() -> dict[str, str]:
    """This process's environment without any CI or ledger variables (the tests may
    themselves run in CI)."""
    return {k: v for k, v in os.environ.items() if not _CI_VARIABLE.match(k)}


def read_values(settings: KafkaSettings, count: int, deadline_s: float = 15.0) -> list[bytes]:
    consumer = KafkaConsumer(**settings.client_config(), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(settings.topic, p) for p in range(3)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        deadline = time.monotonic() + deadline_s
        while len(values) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                values.extend(r.value for r in records)
        return values
    finally:
        consumer.close()


@pytest.mark.kafka
def test_emit_deployment_in_github_actions_fills_source_actor_commit_and_run_url(
    tmp_path: Path, kafka: KafkaSettings
) -> None:
    key, _ = generate_key_files("ci-github", tmp_path)
    env = clean_env() | GITHUB
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ledger",
            "emit",
            "--key",
            str(key),
            "--bootstrap",
            kafka.bootstrap,
            "--topic",
            kafka.topic,
            "deployment",
            "--service",
            "checkout",
            "--env",
            "prod",
            "--image",
            IMAGE_A,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    [value] = read_values(kafka, 1)
    event = decode_event(Envelope.from_bytes(value).payload)
    assert event.type == "deployment.succeeded"
    assert event.source == "ci/github/acme/checkout"
    assert event.actor == "monalisa"
    assert event.data.commit == SHA
    assert event.data.run_url == (
        "https://github.com/acme/checkout/actions/runs/1658821493/attempts/2"
    )


@pytest.mark.kafka
def test_explicit_flags_win_over_the_ci_environment(tmp_path: Path, kafka: KafkaSettings) -> None:
    key, _ = generate_key_files("ci-github", tmp_path)
    env = clean_env() | GITHUB
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ledger",
            "emit",
            "--key",
            str(key),
            "--bootstrap",
            kafka.bootstrap,
            "--topic",
            kafka.topic,
            "--source",
            "deploybot/prod",
            "--actor",
            "release-bot",
            "deployment",
            "--service",
            "checkout",
            "--env",
            "prod",
            "--image",
            IMAGE_A,
            "--commit",
            "abc1234",
            "--run-url",
            "https://ci.example/1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    [value] = read_values(kafka, 1)
    event = decode_event(Envelope.from_bytes(value).payload)
    assert event.source == "deploybot/prod"
    assert event.actor == "release-bot"
    data = data_of(event, DeploymentData)
    assert data.commit == "abc1234"
    assert data.run_url == "https://ci.example/1"
