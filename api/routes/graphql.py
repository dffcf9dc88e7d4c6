"""``POST /graphql``: the account, users, devices with nested readings, state and Orbit
parameters, and mutations for commands and Orbit updates; the same keys and scopes as REST.

Authentication and rate limiting are the REST ones (the request is refused with 401/429 before
the query runs). Each field checks its own scope; a field the key may not read is ``null`` with
an error whose ``extensions.code`` is ``missing_scope``. Errors never carry internals: anything
unexpected becomes ``internal_error`` (and is logged). The schema is :mod:`api.graphql`.

``GET /v1/graphql`` from a browser (``Accept: text/html``) serves GraphiQL, the explorer: a static
page without data, the one route of ``/v1`` that needs no key (the key goes in its headers pane,
and the queries it sends are the ``POST`` above).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from api.deps import ConnDep, ContextDep, PrincipalDep, ServicesDep
from api.errors import ApiError
from api.graphql.context import Context
from api.graphql.explorer import graphiql_page
from api.graphql.schema import error_body, schema
from api.responses import OrjsonResponse
from api.routing import OrjsonRoute

router = APIRouter(tags=["graphql"], route_class=OrjsonRoute)


class GraphQLRequest(BaseModel):
    query: str = Field(
        min_length=1, max_length=20_000, examples=["{ devices { id readings { metric value } } }"]
    )
    variables: dict[str, Any] | None = None
    #: The GraphQL-over-HTTP spelling.
    operationName: str | None = Field(default=None, max_length=200)


class GraphQLResponse(BaseModel):
    data: dict[str, Any] | None
    errors: list[dict[str, Any]] = Field(
        default_factory=list, description="present only when there are errors"
    )


@router.post("/v1/graphql", response_model=GraphQLResponse)
@router.post("/graphql", response_model=GraphQLResponse, summary="Graphql (alias of /v1/graphql)")
async def graphql(
    body: GraphQLRequest,
    principal: PrincipalDep,
    conn: ConnDep,
    ctx: ContextDep,
    services: ServicesDep,
) -> Any:
    """Run a GraphQL query or mutation (each field checks its scope)."""
    result = await schema.execute(
        body.query,
        variable_values=body.variables,
        context_value=Context(principal=principal, conn=conn, ctx=ctx, services=services),
        operation_name=body.operationName,
    )
    response: dict[str, Any] = {"data": result.data}
    if result.errors:
        response["errors"] = [error_body(error) for error in result.errors]
    # As is: "data" stays when null, "errors" only when there are some (GraphQL over HTTP).
    return OrjsonResponse(response)


@router.get("/v1/graphql", include_in_schema=False)
async def graphiql(request: Request) -> HTMLResponse:
    """GraphiQL for a browser: a static page, no data, so no key (queries are POSTed with one)."""
    if "text/html" not in request.headers.get("accept", ""):
        raise ApiError(
            405,
            "method_not_allowed",
            "GraphQL queries are POSTed; GET serves the explorer to a browser (Accept: text/html).",
            headers={"Allow": "POST"},
        )
    return HTMLResponse(
        graphiql_page(),
        # A page that holds a key in its headers pane is never framed by another site.
        headers={"Content-Security-Policy": "frame-ancestors 'none'", "X-Frame-Options": "DENY"},
    )
