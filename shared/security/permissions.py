"""Who may do what: each service keeps its own table (action -> roles) in its policy.py,
and every endpoint checks it through this one mechanism."""
from __future__ import annotations

from typing import Iterable

from shared.security.auth import ROLES
from shared.web.errors import Forbidden


class Permissions:
    def __init__(self, table: dict[str, Iterable[str]]):
        self._table = {action: frozenset(roles) for action, roles in table.items()}
        for action, roles in self._table.items():
            unknown = roles - set(ROLES)
            if unknown:
                raise ValueError(f"{action}: unknown role(s) {', '.join(sorted(unknown))}")

    def roles(self, action: str) -> frozenset[str]:
        try:
            return self._table[action]
        except KeyError:
            raise KeyError(f"no permission {action!r} in this service's table") from None

    def may(self, identity, action: str) -> bool:
        return identity.role in self.roles(action)

    def require(self, identity, action: str) -> None:
        """403 naming the roles that may, unless the caller's role is one of them."""
        if not self.may(identity, action):
            allowed = ", ".join(sorted(self.roles(action)))
            raise Forbidden(f"role {identity.role} may not do this ({action}); allowed: {allowed}")
