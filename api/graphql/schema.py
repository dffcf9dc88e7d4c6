"""The executable GraphQL schema (with its depth, alias and token limits) and how its errors
reach the client: a resolver's :class:`~api.graphql.context.Refused` as is, a bad request as
``invalid_query``, anything else as ``internal_error`` (logged, never shown)."""

from __future__ import annotations

import logging
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.types import ExecutionContext

from api.graphql.context import Refused
from api.graphql.mutation import Mutation
from api.graphql.query import Query

log = logging.getLogger(__name__)


class _Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            if error_kind(error) == "internal":
                log.error("GraphQL resolver failed", exc_info=error.original_error)


schema = _Schema(
    query=Query,
    mutation=Mutation,
    # Factories: a fresh instance per request.
    extensions=[
        lambda: QueryDepthLimiter(max_depth=6),
        lambda: MaxAliasesLimiter(max_alias_count=20),
        lambda: MaxTokensLimiter(max_token_count=2000),
    ],
)


def error_kind(error: GraphQLError) -> str:
    """``refused`` (a resolver's :class:`Refused`), ``invalid`` (the request: syntax,
    validation, a variable of the wrong type; such errors have no path, being found before any
    field runs) or ``internal`` (a field's resolver failed)."""
    if isinstance(error.original_error, Refused):
        return "refused"
    if error.original_error is None or not error.path:
        return "invalid"
    return "internal"


def error_body(error: GraphQLError) -> dict[str, Any]:
    """The error as the client sees it: a message, ``extensions.code``, locations and path."""
    kind = error_kind(error)
    if kind == "invalid":
        code, message = "invalid_query", error.message
    elif kind == "refused":
        assert isinstance(error.original_error, Refused)
        code, message = error.original_error.code, str(error.original_error)
    else:
        code, message = "internal_error", "An internal error occurred."
    body: dict[str, Any] = {"message": message, "extensions": {"code": code}}
    if error.locations:
        body["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path:
        body["path"] = list(error.path)
    return body
