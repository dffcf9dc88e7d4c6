"""What every GraphQL resolver gets (the request's principal, connection, services and batched
loads) and the one error a client may see (:class:`Refused`: a code and a message, never
internals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from strawberry.types import Info

from api.context import ApiContext, ApiServices
from api.deps import Conn
from api.graphql.loaders import Loaders
from services.accounts import Principal


class Refused(Exception):
    """A GraphQL error the client may see: a code and a message (no internals)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Context:
    principal: Principal
    conn: Conn
    ctx: ApiContext
    services: ApiServices
    loaders: Loaders = field(init=False)

    def __post_init__(self) -> None:
        self.loaders = Loaders(self.conn, self.principal)


def need(info: Info[Context, None], scope: str) -> Context:
    """The resolver's context if the key has ``scope``; else :class:`Refused` ``missing_scope``."""
    context = info.context
    if not context.principal.has(scope):
        raise Refused("missing_scope", f"This key lacks the {scope!r} scope.")
    return context
