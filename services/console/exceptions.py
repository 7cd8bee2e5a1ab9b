"""What the console refuses, turned into pages (web.py) or the CLI's messages (shared/cli.py)."""
from __future__ import annotations


class StaffRefused(Exception):
    """A staff account change refused: `fields` names every wrong field (login, name, role,
    scope, password)."""

    def __init__(self, message: str, fields: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.fields = fields or {}


class UnknownStaff(Exception):
    """No staff member has this login."""
