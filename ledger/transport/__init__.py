"""Getting data in and out: Kafka settings and topics, the signing producer, the bundled
local broker, and the witness file checkpoints are appended to."""
