"""The tamper-evident log (pure): the hash chain, the Merkle tree, signed checkpoints
(and the notes of a witness file), inclusion and consistency proofs."""
