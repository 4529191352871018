"""The configuration file: defaults for every command's options, below flags and the
environment (``--config FILE`` or ``LEDGER_CONFIG``; docs/cli.md "Configuration").

TOML. Top-level keys apply to every command that has an option of that name (its parameter
name: ``bootstrap``, ``db``, ``keyring``, ``sasl_password``); a table named for a command
(``[consume]``, ``[emit]``) applies to it and, for a group, to its subcommands, over the
top-level keys. Precedence is Click's: a flag, then the option's environment variable,
then this file, then the built-in default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from ledger.errors import ConfigurationError

__all__ = ["SECRET_WORDS", "command_defaults", "load_config", "options_of"]

SECRET_WORDS = ("password", "token")
"""Settings whose names hold one of these are shown masked."""


def load_config(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"configuration file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"configuration file {path}: {exc}") from None


def options_of(command: Any) -> set[str]:
    """The parameter names of a command, and of all its subcommands for a group."""
    names = {p.name for p in command.params if p.name}
    for sub in getattr(command, "commands", {}).values():
        names |= options_of(sub)
    return names


def command_defaults(config: dict[str, Any], name: str, command: Any, path: Path) -> dict[str, Any]:
    """Click's ``default_map`` for command ``name``: the top-level keys it has options for,
    its own table over them, and the same for each of its subcommands."""
    section = config.get(name, {})
    if not isinstance(section, dict):
        raise ConfigurationError(f"configuration file {path}: [{name}] must be a table")
    known = options_of(command)
    unknown = sorted(k for k, v in section.items() if not isinstance(v, dict) and k not in known)
    if unknown:
        raise ConfigurationError(
            f"configuration file {path}: [{name}] has no option {', '.join(unknown)} "
            f"(its options: {', '.join(sorted(known))})"
        )
    flat = {k: v for k, v in config.items() if not isinstance(v, dict)}
    return _nested(
        command, {**flat, **{k: v for k, v in section.items() if not isinstance(v, dict)}}
    )


def _nested(command: Any, values: dict[str, Any]) -> dict[str, Any]:
    own = {p.name for p in command.params if p.name}
    found: dict[str, Any] = {k: v for k, v in values.items() if k in own}
    for sub_name, sub in getattr(command, "commands", {}).items():
        found[sub_name] = _nested(sub, values)
    return found
