"""One module per resource; :func:`routers` gives their routers in mounting order."""

from fastapi import APIRouter

from api.routes import (
    commands,
    data,
    devices,
    downlinks,
    graphql,
    keys,
    ops,
    orbit,
    usage,
    users,
    webhooks,
)


def routers(*, callbacks: APIRouter) -> list[APIRouter]:
    """Every router of the API in the order the app mounts them (the OpenAPI document's order),
    with ``callbacks`` (the network callbacks, :mod:`ingest.http`) after the operations'."""
    return [
        ops.router,
        callbacks,
        devices.router,
        data.router,
        keys.router,
        users.router,
        commands.router,
        downlinks.router,
        usage.router,
        graphql.router,
        orbit.router,
        webhooks.router,
    ]
