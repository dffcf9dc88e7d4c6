"""Network-server callbacks (Sigfox, TTN, ChirpStack), mounted in the API process under
``/callbacks``, and the API's app class, whose shortcut takes the busiest of them past
FastAPI's middleware stack and routing."""

from fastapi import APIRouter

from api import OrjsonRoute
from ingest.http import lorawan, sigfox
from ingest.http.common import ingest_publisher
from ingest.http.shortcut import CallbackApp
from ingest.http.sigfox import ANSWER_POOL_SIZE
from ingest.http.timing import CallbackTiming

router = APIRouter(prefix="/callbacks", route_class=OrjsonRoute)
router.include_router(sigfox.router)
router.include_router(lorawan.router)

__all__ = [
    "ANSWER_POOL_SIZE",
    "CallbackApp",
    "CallbackTiming",
    "ingest_publisher",
    "router",
]
