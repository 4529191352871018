"""Avro wire format: single-object encoding over every schema version this build knows.

Each message is ``C3 01`` + the 8-byte CRC-64-AVRO fingerprint (little-endian) of the
writer schema's Parsing Canonical Form + the Avro binary body, as in the Avro
specification's "single object encoding". The fingerprint names the writer schema, so
old events stay readable after a schema gains fields: they are decoded with the schema
they were written with and resolved into the newest one. A fingerprint this build does
not know is refused (upgrade the reader first), never guessed.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from ledger.errors import LedgerError, MalformedPayloadError, UnknownSchemaError

__all__ = ["MAGIC", "Schema", "SchemaSet", "default_schemas"]

MAGIC = b"\xc3\x01"
_HEADER_LEN = len(MAGIC) + 8
_FILE_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[0-9]+)\.avsc$")


@dataclass(frozen=True)
class Schema:
    """One version of one top-level record."""

    name: str
    version: int
    parsed: dict[str, Any]
    fingerprint: bytes

    @classmethod
    def from_json(cls, name: str, version: int, text: str) -> Schema:
        parsed = parse_schema(json.loads(text))
        if not isinstance(parsed, dict):
            raise LedgerError(f"schema {name}.v{version} is not a record")
        fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
        return cls(name=name, version=version, parsed=parsed, fingerprint=fp)


class SchemaSet:
    """Every version of every record this build can read, keyed by fingerprint.

    The newest version of a record is the one written and the one decoded into.
    """

    def __init__(self, schemas: Iterable[Schema]) -> None:
        self._by_fp: dict[bytes, Schema] = {}
        self._latest: dict[str, Schema] = {}
        for schema in schemas:
            self._by_fp[schema.fingerprint] = schema
            current = self._latest.get(schema.name)
            if current is None or schema.version > current.version:
                self._latest[schema.name] = schema

    @classmethod
    def load(cls, directory: Traversable | Path) -> SchemaSet:
        """Read every ``Name.vN.avsc`` file of a directory."""
        found = []
        for entry in directory.iterdir():
            match = _FILE_RE.match(entry.name)
            if match:
                found.append(
                    Schema.from_json(
                        match["name"], int(match["version"]), entry.read_text(encoding="utf-8")
                    )
                )
        return cls(found)

    def latest(self, name: str) -> Schema:
        try:
            return self._latest[name]
        except KeyError:
            raise LedgerError(f"no schema for record {name!r}") from None

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        """Encode with the newest schema of ``name``, framed as a single object."""
        schema = self.latest(name)
        out = io.BytesIO()
        out.write(MAGIC)
        out.write(schema.fingerprint)
        schemaless_writer(out, schema.parsed, record)
        return out.getvalue()

    def decode(self, name: str, data: bytes) -> dict[str, Any]:
        """Decode a single object written with any known version of ``name``."""
        if len(data) < _HEADER_LEN or data[:2] != MAGIC:
            raise MalformedPayloadError(
                f"not Avro single-object encoding (expected marker C3 01, got {data[:2].hex()!r})"
            )
        fp = data[2:_HEADER_LEN]
        writer = self._by_fp.get(fp)
        if writer is None or writer.name != name:
            known = ", ".join(
                f"{s.name}.v{s.version}={s.fingerprint.hex()}" for s in self._known(name)
            )
            raise UnknownSchemaError(
                f"unknown {name} schema fingerprint {fp.hex()}; this reader knows {known}"
            )
        reader = self.latest(name)
        body = io.BytesIO(data[_HEADER_LEN:])
        try:
            record = schemaless_reader(
                body, writer.parsed, None if reader is writer else reader.parsed
            )
        except Exception as exc:  # fastavro signals bad input with many exception types
            raise MalformedPayloadError(
                f"{name}.v{writer.version} body does not decode: {exc!r}"
            ) from None
        if body.tell() != len(data) - _HEADER_LEN:
            raise MalformedPayloadError(
                f"{name}.v{writer.version}: {len(data) - _HEADER_LEN - body.tell()} trailing bytes"
            )
        if not isinstance(record, dict):
            raise MalformedPayloadError(f"{name} is not a record")
        return record

    def _known(self, name: str) -> list[Schema]:
        return sorted((s for s in self._by_fp.values() if s.name == name), key=lambda s: s.version)


@cache
def default_schemas() -> SchemaSet:
    """The schemas of ``schemas/``, shipped as the resource package ``ledger.wire.schemas``."""
    return SchemaSet.load(resources.files("ledger.wire.schemas"))
