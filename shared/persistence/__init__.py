"""Databases: engines, creation and migrations, the unit of work, idempotency keys."""
