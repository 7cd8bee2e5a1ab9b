"""What the console accepts: staff accounts (the CLI) and its forms. Every wrong field is named."""
from __future__ import annotations

import re

from marshmallow import fields, validate

from services.console.policy import LANGUAGES, RULES, STAFF_ROLES
from shared.web.requests import Strict, Text

LOGIN = re.compile(r"\A[a-z0-9][a-z0-9._-]{1,63}\Z")
_LOGIN_RULE = "2-64 characters: lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"


class StaffIn(Strict):
    login = fields.String(required=True, validate=validate.Regexp(LOGIN, error=_LOGIN_RULE))
    name = Text(100, required=True)
    role = fields.String(required=True, validate=validate.OneOf(STAFF_ROLES, error="unknown role; roles: "
                                                                + ", ".join(STAFF_ROLES)))
    branch = fields.String(load_default=None)
    region = fields.String(load_default=None)


def password_problem(password: str) -> str | None:
    rules = RULES.passwords
    if len(password) < rules.min_length:
        return f"at least {rules.min_length} characters"
    if len(password) > rules.max_length:
        return f"at most {rules.max_length} characters"
    if "\x00" in password or not password.strip():
        return "must not be blank or hold the NUL character"
    return None


class LoginForm(Strict):
    """The sign-in form. Lengths are checked before any hashing: an oversized password is a
    400, not a second of argon2."""
    login = fields.String(required=True, validate=validate.Length(min=1, max=64))
    password = fields.String(required=True, validate=validate.Length(min=1, max=RULES.passwords.max_length))
    csrf_token = fields.String(load_default=None)


class LanguageForm(Strict):
    language = fields.String(required=True, validate=validate.OneOf(LANGUAGES))
    csrf_token = fields.String(load_default=None)
    next = fields.String(load_default="/")
