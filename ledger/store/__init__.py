"""The DuckDB ledger file: its schema, the one writer, read-only readers, the query index,
the questions asked of it, full verification and proofs built from it."""
