"""Webhooks (and email): a project's events, delivered from a database outbox."""
