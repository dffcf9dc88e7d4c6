"""Retrying a batch until it is done: the agents acknowledge nothing they have not finished."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def retry_forever(what: str, func: Any) -> Any:
    """Retry ``func()`` until it succeeds: a batch is only acknowledged once it is stored.

    Faust acknowledges the events of a ``take()`` batch when the body moves on, even after an
    exception, so the body must not give up on a batch while the database or Kafka is away.
    """
    delay = 0.2
    while True:
        try:
            return await func()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s failed, retrying in %.1fs: %r", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
