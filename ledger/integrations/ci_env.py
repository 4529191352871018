"""Who and what caused a change, read from the CI system's own environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["CiContext", "detect_ci"]


@dataclass(frozen=True)
class CiContext:
    provider: str
    source: str
    actor: str | None
    commit: str | None
    run_url: str | None


def detect_ci(env: Mapping[str, str]) -> CiContext | None:
    """GitHub Actions, GitLab CI or Jenkins, from their documented variables; else None."""
    if env.get("GITHUB_ACTIONS") == "true" or "GITHUB_RUN_ID" in env:
        repo = env.get("GITHUB_REPOSITORY", "unknown")
        run_url = None
        if "GITHUB_RUN_ID" in env:
            server = env.get("GITHUB_SERVER_URL", "https://github.com")
            run_url = f"{server}/{repo}/actions/runs/{env['GITHUB_RUN_ID']}"
            if "GITHUB_RUN_ATTEMPT" in env:
                run_url += f"/attempts/{env['GITHUB_RUN_ATTEMPT']}"
        return CiContext(
            provider="github",
            source=f"ci/github/{repo}",
            actor=env.get("GITHUB_TRIGGERING_ACTOR") or env.get("GITHUB_ACTOR"),
            commit=env.get("GITHUB_SHA"),
            run_url=run_url,
        )
    if env.get("GITLAB_CI") == "true" or "CI_PIPELINE_ID" in env:
        return CiContext(
            provider="gitlab",
            source=f"ci/gitlab/{env.get('CI_PROJECT_PATH', 'unknown')}",
            actor=env.get("GITLAB_USER_LOGIN"),
            commit=env.get("CI_COMMIT_SHA"),
            run_url=env.get("CI_JOB_URL") or env.get("CI_PIPELINE_URL"),
        )
    if "JENKINS_URL" in env or "BUILD_TAG" in env:
        return CiContext(
            provider="jenkins",
            source=f"ci/jenkins/{env.get('JOB_NAME', 'unknown')}",
            actor=env.get("BUILD_USER_ID"),
            commit=env.get("GIT_COMMIT"),
            run_url=env.get("BUILD_URL"),
        )
    return None
