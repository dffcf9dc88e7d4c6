"""Run an amqtt broker on 127.0.0.1:PORT (the MQTT fallback when Mosquitto is not installed)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any


async def serve(port: int) -> None:
    """Serve until cancelled."""
    from amqtt.broker import Broker

    config: dict[str, Any] = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    try:
        await asyncio.Event().wait()
    finally:
        await broker.shutdown()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
