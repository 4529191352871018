"""Kafka: connection settings, topics, the signing producer and the bundled local broker."""
