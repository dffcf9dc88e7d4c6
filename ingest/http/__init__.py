"""Network-server callbacks (Sigfox, TTN, ChirpStack), mounted in the API process under
``/callbacks``, and the shortcut that takes the busiest of them past FastAPI's routing."""

from fastapi import APIRouter

from api.routing import OrjsonRoute
from ingest.http import lorawan, sigfox
from ingest.http.shortcut import CallbackShortcut

router = APIRouter(prefix="/callbacks", route_class=OrjsonRoute)
router.include_router(sigfox.router)
router.include_router(lorawan.router)

__all__ = ["CallbackShortcut", "router"]
