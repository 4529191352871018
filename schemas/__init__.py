"""Avro schemas of the ledger wire format, one file per record version (Name.vN.avsc)."""
