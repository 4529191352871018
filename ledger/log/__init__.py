"""The tamper-evident log (pure): the hash chain, the Merkle tree, signed checkpoints,
inclusion and consistency proofs, and the witness file's format."""
