"""Where an MQTT broker is: ``HIVEPIPE_MQTT_URL`` parsed once for every MQTT client we run."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_SCHEMES = ("mqtt", "mqtts", "tcp", "ssl", "tls")


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> BrokerAddress:
    """``mqtt://[user:pass@]host[:1883]``, ``mqtts://...[:8883]`` or a bare ``host:port``.

    Raises ``ValueError`` for another scheme or a URL without a host.
    """
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ValueError(f"not an MQTT URL: {url!r} (expected mqtt://host:port)")
    tls = parts.scheme in ("mqtts", "ssl", "tls")
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
