"""Queues between the services (``embedded://`` durable SQLite queue)."""
