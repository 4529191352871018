"""Run GitHub Actions steps here as the runner would: a composite action's (or a workflow
job's) steps in order, each ``run:`` with ``bash --noprofile --norc -eo pipefail``, the
``${{ … }}`` expressions of ``with:``, ``env:`` and ``if:`` evaluated against the inputs,
the step outputs ($GITHUB_OUTPUT), the ``github`` and ``runner`` contexts, and ``uses:``
steps handed to a function given for each action (upload-artifact copies the files).

Only the expression language the templates use is supported: property paths, string
literals, ``== != && || !``, parentheses and ``success() failure() always()``; comparing
strings ignores case, as GitHub does. Anything else is an error, so a template that
outgrows this runner fails its test instead of passing untested.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<op>\|\||&&|==|!=|!|\(|\))|'(?P<str>(?:[^']|'')*)'|"
    r"(?P<call>success|failure|always)\(\)|(?P<path>[A-Za-z_][\w.-]*))"
)
_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


class Expression:
    """One expression, parsed by recursive descent over its tokens."""

    def __init__(self, text: str, context: Mapping[str, Any], failed: bool) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while position < len(text.rstrip()):
            match = _TOKEN.match(text, position)
            if not match or match.end() == position:
                raise ValueError(f"unsupported expression {text!r} at {position}")
            kind = match.lastgroup
            assert kind is not None
            self.tokens.append((kind, match[kind]))
            position = match.end()
        self.context, self.failed, self.at = context, failed, 0
        self.uses_status = any(kind == "call" for kind, _ in self.tokens)

    def value(self) -> Any:
        result = self._or()
        if self.at != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.at]}")
        return result

    def _peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def _or(self) -> Any:
        left = self._and()
        while self._peek() == "||":
            self.at += 1
            right = self._and()
            left = left if truthy(left) else right
        return left

    def _and(self) -> Any:
        left = self._compare()
        while self._peek() == "&&":
            self.at += 1
            right = self._compare()
            left = right if truthy(left) else left
        return left

    def _compare(self) -> Any:
        left = self._unary()
        if self._peek() in ("==", "!="):
            op = self.tokens[self.at][1]
            self.at += 1
            right = self._unary()
            same = _fold(left) == _fold(right)
            return same if op == "==" else not same
        return left

    def _unary(self) -> Any:
        if self._peek() == "!":
            self.at += 1
            return not truthy(self._unary())
        return self._primary()

    def _primary(self) -> Any:
        kind, text = self.tokens[self.at]
        self.at += 1
        if kind == "op" and text == "(":
            inner = self._or()
            assert self._peek() == ")", "unbalanced parentheses"
            self.at += 1
            return inner
        if kind == "str":
            return text.replace("''", "'")
        if kind == "call":
            return {"success": not self.failed, "failure": self.failed, "always": True}[text]
        if kind == "path":
            value: Any = self.context
            for part in text.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            return "" if value is None else value
        raise ValueError(f"unexpected {text!r}")


def _fold(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def truthy(value: Any) -> bool:
    return value not in ("", None, False, 0)


def evaluate(text: str, context: Mapping[str, Any], failed: bool = False) -> Any:
    return Expression(text, context, failed).value()


def substitute(text: Any, context: Mapping[str, Any]) -> str:
    """``text`` with each ``${{ expression }}`` replaced by its value."""
    return _EXPRESSION.sub(lambda m: str(evaluate(m[1], context)), str(text))


def condition(text: str | None, context: Mapping[str, Any], failed: bool) -> bool:
    """A step's ``if:``: ``success()`` unless it names a status function itself."""
    if text is None:
        return not failed
    inner = _EXPRESSION.fullmatch(text.strip())
    expression = Expression(inner[1] if inner else text, context, failed)
    result = truthy(expression.value())
    return result if expression.uses_status else result and not failed


@dataclass
class StepResult:
    name: str
    ran: bool
    code: int = 0
    stdout: str = ""
    stderr: str = ""
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class JobResult:
    steps: list[StepResult]
    outputs: dict[str, str]

    @property
    def failed(self) -> bool:
        return any(step.ran and step.code != 0 for step in self.steps)

    def step(self, name: str) -> StepResult:
        return next(step for step in self.steps if step.name == name)

    @property
    def log(self) -> str:
        return "\n".join(f"--- {s.name} (exit {s.code})\n{s.stdout}{s.stderr}" for s in self.steps)


Uses = Callable[[dict[str, str], dict[str, str]], int]
"""A ``uses:`` step: (its evaluated ``with:``, the environment) → exit code."""


def _read_outputs(path: Path) -> dict[str, str]:
    outputs: dict[str, str] = {}
    lines = iter(path.read_text().splitlines()) if path.exists() else iter(())
    for line in lines:
        if "<<" in line and "=" not in line.split("<<", 1)[0]:
            name, delimiter = line.split("<<", 1)
            body = []
            for more in lines:
                if more == delimiter:
                    break
                body.append(more)
            outputs[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


def run_steps(
    steps: list[dict[str, Any]],
    context: dict[str, Any],
    env: dict[str, str],
    workdir: Path,
    uses: Mapping[str, Uses],
    timeout: float = 180,
) -> list[StepResult]:
    """Run ``steps`` in order; ``context["steps"]`` collects each step's outputs."""
    context.setdefault("steps", {})
    env = dict(env)
    results: list[StepResult] = []
    failed = False
    for number, step in enumerate(steps, start=1):
        name = step.get("name") or step.get("uses") or f"step {number}"
        if not condition(step.get("if"), context, failed):
            results.append(StepResult(name, ran=False))
            continue
        step_env = env | {k: substitute(v, context) for k, v in (step.get("env") or {}).items()}
        if "uses" in step:
            action = step["uses"].split("@", 1)[0]
            given = {k: substitute(v, context) for k, v in (step.get("with") or {}).items()}
            code = uses[action](given, step_env)
            result = StepResult(name, ran=True, code=code)
        else:
            assert step.get("shell", "bash") == "bash", f"{name}: run with bash"
            files = {
                n: workdir / f"{n.lower()}.{number}"
                for n in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH")
            }
            for path in files.values():
                path.write_text("")
            script = workdir / f"step-{number}.sh"
            script.write_text(step["run"])
            done = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                env=step_env | {n: str(p) for n, p in files.items()},
                cwd=step.get("working-directory", workdir),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            result = StepResult(name, True, done.returncode, done.stdout, done.stderr,
                                _read_outputs(files["GITHUB_OUTPUT"]))  # fmt: skip
            env |= _read_outputs(files["GITHUB_ENV"])
            added = [p for p in files["GITHUB_PATH"].read_text().splitlines() if p]
            if added:
                env["PATH"] = os.pathsep.join([*reversed(added), env["PATH"]])
        if step.get("id"):
            outcome = "success" if result.code == 0 else "failure"
            context["steps"][step["id"]] = {"outputs": result.outputs, "outcome": outcome}
        results.append(result)
        failed = failed or result.code != 0
    return results


def run_action(
    action: dict[str, Any],
    inputs: Mapping[str, str],
    env: dict[str, str],
    workdir: Path,
    uses: Mapping[str, Uses],
    github: Mapping[str, Any],
) -> JobResult:
    """A composite action as a workflow step ``uses:`` it with ``with: inputs``."""
    unknown = set(inputs) - set(action["inputs"])
    assert not unknown, f"the action has no input {unknown}"
    context: dict[str, Any] = {"github": dict(github), "runner": {"temp": env["RUNNER_TEMP"]}}
    given: dict[str, str] = {}
    for name, spec in action["inputs"].items():
        if name in inputs:
            given[name] = inputs[name]
        else:
            assert not spec.get("required"), f"input {name} is required"
            given[name] = substitute(spec.get("default", ""), context)
    context["inputs"] = given
    steps = run_steps(action["runs"]["steps"], context, env, workdir, uses)
    outputs = {name: substitute(spec["value"], context) for name, spec in action["outputs"].items()}
    return JobResult(steps, outputs)
