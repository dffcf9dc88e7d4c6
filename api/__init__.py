from api.body_limit import BodyLimitMiddleware, BodyTooLarge
from api.context import ApiContext
from api.deps import ContextDep
from api.errors import (
    ApiError,
    api_error_response,
    install_error_handlers,
    internal_error_response,
)
from api.lifespan import start_api_services
from api.openapi import install_openapi_errors
from api.responses import OrjsonResponse
from api.routes import routers
from api.routing import OrjsonRoute

__all__ = [
    "ApiContext",
    "ApiError",
    "BodyLimitMiddleware",
    "BodyTooLarge",
    "ContextDep",
    "OrjsonResponse",
    "OrjsonRoute",
    "api_error_response",
    "install_error_handlers",
    "install_openapi_errors",
    "internal_error_response",
    "routers",
    "start_api_services",
]
