"""Persisted records: their schemas, the durable writer, and the run directory store."""
