"""One module per resource; :func:`routers` gives their routers in mounting order."""

from fastapi import APIRouter

from api.routes import (
    account,
    commands,
    data,
    device_place,
    devices,
    downlinks,
    fleets,
    graphql,
    keys,
    models,
    ops,
    orbit,
    places,
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
        models.router,
        data.router,
        device_place.router,
        account.router,
        fleets.router,
        places.router,
        keys.router,
        users.router,
        commands.router,
        downlinks.router,
        usage.router,
        graphql.router,
        orbit.router,
        webhooks.router,
    ]
