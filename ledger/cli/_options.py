"""Option sets shared by several commands, so each option is spelled, read and documented once.

A command takes a set with :func:`shared`, which adds the set's options to its signature
and hands it one value. A set given to a group and to its leaf command is one set:
``ledger emit --key K deployment …`` and ``ledger emit deployment --key K …`` mean the
same. An option typed before the leaf counts unless the leaf's own command line gives it
too (both, with different values, is refused); otherwise the leaf's value stands (from its
environment variable, or the default).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

import typer

from ledger.cli._common import fail
from ledger.errors import ConfigurationError
from ledger.transport.settings import DEFAULT_TOPIC, KafkaSettings
from ledger.wire.keyring import Signer

__all__ = ["CONNECTION", "PRODUCER", "Connection", "OptionSet", "Producer", "shared"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
Param = tuple[str, Any, Any]
"""(name, annotated type, default) of one option, as a function parameter."""

_TYPED = "ledger.options_typed"
"""ctx.meta key (shared by nested contexts): options typed on an enclosing command line."""


@dataclass(frozen=True)
class OptionSet(Generic[T]):
    """Parameters, and what builds the command's value from theirs."""

    params: tuple[Param, ...]
    build: Callable[..., T]


def shared(name: str, options: OptionSet[T]) -> Callable[[F], F]:
    """Add ``options`` to a command; it receives their value as the keyword ``name``."""

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != name]
        added = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=d)
            for n, a, d in options.params
        ]
        takes_ctx = "ctx" in signature.parameters
        if not takes_ctx:
            added.append(
                inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
            )

        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> Any:
            ctx: typer.Context = kwargs["ctx"] if takes_ctx else kwargs.pop("ctx")
            values = {n: kwargs.pop(n) for n, _, _ in options.params}
            kwargs[name] = options.build(**_resolve(ctx, values))
            return func(*args, **kwargs)

        command.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
        command.__annotations__ = {}  # typer reads the signature's evaluated annotations
        return command  # type: ignore[return-value]

    return decorate


def _resolve(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """Each option's value: typed on this command line, else typed on an enclosing one,
    else this command's own (its environment variable, or its default)."""
    typed: dict[str, Any] = ctx.meta.setdefault(_TYPED, {})
    resolved = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name == "COMMANDLINE":
            if name in typed and typed[name] != value:
                flag = next(p.opts[0] for p in ctx.command.params if p.name == name)
                fail(f"{flag} is given twice, with different values")
            typed[name] = value
            resolved[name] = value
        else:
            resolved[name] = typed.get(name, value)
    return resolved


# --- Kafka: where the broker is and how to talk to it ---------------------------------------

_KAFKA = "Kafka"
_PRODUCER = "Producer"


def _option(*decls: str, panel: str, help: str, envvar: str | None = None) -> Any:
    return typer.Option(
        *decls, help=help, envvar=envvar, show_envvar=envvar is not None, rich_help_panel=panel
    )


@dataclass(frozen=True)
class Connection:
    """The broker and TLS/SASL settings (each also from its environment variable)."""

    bootstrap: str | None
    security_protocol: str | None
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password: str | None
    ssl_cafile: Path | None
    ssl_certfile: Path | None
    ssl_keyfile: Path | None

    def settings(self, topic: str) -> KafkaSettings:
        if not self.bootstrap:
            raise ConfigurationError(
                "no Kafka bootstrap server: pass --bootstrap host:port or set LEDGER_BOOTSTRAP"
            )
        passed = {
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
            "ssl_cafile": self.ssl_cafile and str(self.ssl_cafile),
            "ssl_certfile": self.ssl_certfile and str(self.ssl_certfile),
            "ssl_keyfile": self.ssl_keyfile and str(self.ssl_keyfile),
        }
        return KafkaSettings(
            self.bootstrap, topic, {name: value for name, value in passed.items() if value}
        )


CONNECTION: OptionSet[Connection] = OptionSet(
    (
        ("bootstrap", Annotated[str | None, _option(
            "--bootstrap", panel=_KAFKA, envvar="LEDGER_BOOTSTRAP",
            help="Kafka bootstrap servers, host:port[,host:port].")], None),
        ("security_protocol", Annotated[str | None, _option(
            "--security-protocol", panel=_KAFKA, envvar="LEDGER_KAFKA_SECURITY_PROTOCOL",
            help="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")], None),
        ("sasl_mechanism", Annotated[str | None, _option(
            "--sasl-mechanism", panel=_KAFKA, envvar="LEDGER_KAFKA_SASL_MECHANISM",
            help="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")], None),
        ("sasl_username", Annotated[str | None, _option(
            "--sasl-username", panel=_KAFKA, envvar="LEDGER_KAFKA_SASL_PLAIN_USERNAME",
            help="SASL user name.")], None),
        ("sasl_password", Annotated[str | None, _option(
            "--sasl-password", panel=_KAFKA, envvar="LEDGER_KAFKA_SASL_PLAIN_PASSWORD",
            help="SASL password; prefer the variable (a command line is seen by other "
                 "users of the machine).")], None),
        ("ssl_cafile", Annotated[Path | None, _option(
            "--ssl-cafile", panel=_KAFKA, envvar="LEDGER_KAFKA_SSL_CAFILE",
            help="CA bundle that signed the broker's certificate.")], None),
        ("ssl_certfile", Annotated[Path | None, _option(
            "--ssl-certfile", panel=_KAFKA, envvar="LEDGER_KAFKA_SSL_CERTFILE",
            help="Client certificate (PEM), for brokers that authenticate clients by TLS.")],
         None),
        ("ssl_keyfile", Annotated[Path | None, _option(
            "--ssl-keyfile", panel=_KAFKA, envvar="LEDGER_KAFKA_SSL_KEYFILE",
            help="The client certificate's private key (PEM).")], None),
    ),
    Connection,
)  # fmt: skip


# --- producers: who signs, as whom, to which topic --------------------------------------------


@dataclass(frozen=True)
class Producer:
    """How a producer command signs and delivers: key, identity, topic, connection, and
    the spool that keeps what the broker did not acknowledge (None: exit 3 instead)."""

    connection: Connection
    topic: str
    key: Path | None
    key_id: str | None
    source: str | None
    actor: str | None
    spool: Path | None = None

    def signer(self) -> Signer:
        if self.key is None:
            raise ConfigurationError("no signing key: pass --key keys/ID.key or set LEDGER_KEY")
        return Signer.from_file(self.key, self.key_id)

    def settings(self) -> KafkaSettings:
        return self.connection.settings(self.topic)


def _producer(
    topic: str,
    key: Path | None,
    key_id: str | None,
    source: str | None,
    actor: str | None,
    spool: Path | None,
    **connection: Any,
) -> Producer:
    return Producer(Connection(**connection), topic, key, key_id, source, actor, spool)


PRODUCER: OptionSet[Producer] = OptionSet(
    (
        ("key", Annotated[Path | None, _option(
            "--key", panel=_PRODUCER, envvar="LEDGER_KEY",
            help="The producer's private key (ID.key) to sign with.")], None),
        ("key_id", Annotated[str | None, _option(
            "--key-id", panel=_PRODUCER,
            help="Key id; default: the key file's name.")], None),
        ("source", Annotated[str | None, _option(
            "--source", panel=_PRODUCER, envvar="LEDGER_SOURCE",
            help="Emitting system, e.g. ci/github/acme/checkout; default from the CI run.")],
         None),
        ("actor", Annotated[str | None, _option(
            "--actor", panel=_PRODUCER, envvar="LEDGER_ACTOR",
            help="Who caused it; default from the CI run, else $USER.")], None),
        ("topic", Annotated[str, _option(
            "--topic", panel=_PRODUCER, envvar="LEDGER_TOPIC", help="Event topic.")],
         DEFAULT_TOPIC),
        ("spool", Annotated[Path | None, _option(
            "--spool", panel=_PRODUCER, envvar="LEDGER_SPOOL",
            help="Directory to keep the signed events the broker did not acknowledge in "
                 "(exit 5), for `ledger spool flush` to send later; without it, exit 3.")],
         None),
        *CONNECTION.params,
    ),
    _producer,
)  # fmt: skip
