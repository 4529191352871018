"""Who may read what through the API, and the record of who read what.

Named tokens (PCI DSS 10.2.1.1 and 10.3.1: access to audit logs attributable to a person or
a system, and limited to those who need it): each token has a name, the routes it may ask
(shell-style patterns), and is stored only as the SHA-256 of its secret, so the file that
grants access does not disclose it. Token file (TOML)::

    [[token]]
    name = "auditor-jane"
    sha256 = "<hex SHA-256 of the token>"       # printf %s "$TOKEN" | sha256sum
    routes = ["/v1/asof", "/v1/snapshot", "/v1/timeline", "/v1/evidence"]

Every request is logged on ``ledger.access``: when, who (the token's name), what was asked
(method, path and query) and the outcome; never a token.
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ledger.errors import ConfigurationError

__all__ = ["ApiToken", "ApiTokens", "Forbidden"]

SHARED = "api-token"
"""The name the one shared token (LEDGER_API_TOKEN) is logged under."""


class Forbidden(Exception):
    """A known token asking a route it may not."""


class ApiToken(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    routes: list[str] = Field(default=["/v1/*"], min_length=1)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: list[ApiToken] = Field(min_length=1)


class ApiTokens:
    """The tokens the API accepts."""

    def __init__(self, tokens: list[ApiToken]) -> None:
        if not tokens:
            raise ValueError("the HTTP API needs a token")
        names = [t.name for t in tokens]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"token names must differ: {sorted(names)}")
        self._tokens = tokens

    @classmethod
    def shared(cls, token: str) -> ApiTokens:
        """The one token everyone shares (LEDGER_API_TOKEN): every route, one name."""
        if not token:
            raise ValueError("the HTTP API needs a token")
        return cls([ApiToken(name=SHARED, sha256=_digest(token), routes=["*"])])

    @classmethod
    def load(cls, path: Path) -> ApiTokens:
        """A token file, strictly parsed; errors name the file and what is wrong."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"token file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"token file {path}: {exc}") from None
        try:
            return cls(_File.model_validate(data).token)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigurationError(f"token file {path}: {where}: {first['msg']}") from None

    def who(self, presented: str, route: str) -> str | None:
        """The name of the token ``presented`` (None: no token of ours); :class:`Forbidden`
        when it may not ask ``route``. Every digest is compared, in constant time."""
        digest = _digest(presented)
        found = None
        for token in self._tokens:
            if hmac.compare_digest(digest, token.sha256):
                found = token
        if found is None:
            return None
        if not any(fnmatchcase(route, pattern) for pattern in found.routes):
            raise Forbidden(f"token {found.name!r} may not ask {route}")
        return found.name


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
