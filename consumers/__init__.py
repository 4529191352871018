"""Long-running Kafka consumer services."""
