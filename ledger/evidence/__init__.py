"""Evidence bundles: ``bundle`` checks one offline with nothing but its bytes (pure);
``build`` writes one from the ledger (DuckDB)."""
