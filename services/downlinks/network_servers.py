"""LoRaWAN network-server clients: push and clear a device's downlink queue (httpx).

One network server per deployment, chosen by settings (``HIVEPIPE_LORAWAN_SERVER``):

- ``tts`` (The Things Stack v3): ``POST {url}/api/v3/as/applications/{app}/webhooks/{webhook}/
  devices/{device_id}/down/push`` with ``Authorization: Bearer <key>`` and
  ``{"downlinks": [{"frm_payload", "f_port", "priority", "confirmed"}]}``; clearing is
  ``down/replace`` with an empty list. ``device_id`` comes from the DevEUI through
  ``HIVEPIPE_TTS_DEVICE_ID`` (default ``eui-{dev_eui}``, the console's default).
- ``chirpstack`` (v4 REST): ``POST {url}/api/devices/{devEui}/queue`` with
  ``Grpc-Metadata-Authorization: Bearer <key>`` and ``{"queueItem": {"confirmed", "fPort",
  "data"}}``; clearing is ``DELETE`` on the same path.

Every call returns the network server's :class:`Answer` (status and body), whatever it is;
only a transport failure (unreachable, timeout) raises :class:`NetworkServerUnreachable`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import orjson

from services.platform import Settings

if TYPE_CHECKING:
    # Imported where a client is made, not here: httpx costs about 0.3 s of every process's
    # start, and only the API's downlinks use it (a restarted worker joins that much sooner).
    import httpx

#: What is kept of a network server's answer body.
MAX_ANSWER_CHARS = 2000


class NetworkServerUnreachable(RuntimeError):
    """The network server could not be reached or did not answer in time."""


class NotConfigured(RuntimeError):
    """The deployment has no (complete) network-server configuration."""


@dataclass(frozen=True, slots=True)
class Downlink:
    """A LoRaWAN downlink as requested through the API."""

    port: int
    payload_hex: str
    confirmed: bool = False

    @property
    def payload_b64(self) -> str:
        return base64.b64encode(bytes.fromhex(self.payload_hex)).decode()


@dataclass(frozen=True, slots=True)
class Answer:
    """A network server's answer: the HTTP status and its body (JSON, or text, truncated)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "body": self.body}


class NetworkServer(Protocol):
    """Pushes and clears a device's downlink queue on a LoRaWAN network server."""

    name: str

    async def push(self, dev_eui: str, downlink: Downlink) -> Answer: ...

    async def clear(self, dev_eui: str) -> Answer: ...

    async def close(self) -> None: ...


def _answer(response: httpx.Response) -> Answer:
    text = response.text[:MAX_ANSWER_CHARS]
    try:
        body: Any = orjson.loads(response.content) if response.content else None
        if len(response.content) > MAX_ANSWER_CHARS:
            body = text
    except orjson.JSONDecodeError:
        body = text
    return Answer(status=response.status_code, body=body)


class _HttpNetworkServer:
    name = "?"

    def __init__(
        self,
        *,
        url: str,
        headers: dict[str, str],
        timeout: float,
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        import httpx

        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={**headers, "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    async def _call(self, method: str, url: str, *, json: Any = None) -> Answer:
        import httpx

        try:
            response = await self._client.request(method, url, json=json)
        except httpx.HTTPError as exc:
            raise NetworkServerUnreachable(
                f"{self.name} unreachable ({type(exc).__name__})"
            ) from exc
        return _answer(response)

    async def close(self) -> None:
        await self._client.aclose()


class TtsNetworkServer(_HttpNetworkServer):
    """The Things Stack v3 Application Server, through a webhook's downlink API."""

    name = "tts"

    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        application_id: str,
        webhook_id: str,
        device_id: str = "eui-{dev_eui}",
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            url=url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )
        self._base = (
            f"/api/v3/as/applications/{quote(application_id, safe='')}"
            f"/webhooks/{quote(webhook_id, safe='')}/devices"
        )
        self._device_id = device_id

    def device_path(self, dev_eui: str) -> str:
        """The path of a device's downlink queue."""
        device = self._device_id.format(dev_eui=dev_eui.lower(), DEV_EUI=dev_eui.upper())
        return f"{self._base}/{quote(device, safe='')}"

    async def push(self, dev_eui: str, downlink: Downlink) -> Answer:
        body = {
            "downlinks": [
                {
                    "frm_payload": downlink.payload_b64,
                    "f_port": downlink.port,
                    "priority": "NORMAL",
                    "confirmed": downlink.confirmed,
                }
            ]
        }
        return await self._call("POST", self.device_path(dev_eui) + "/down/push", json=body)

    async def clear(self, dev_eui: str) -> Answer:
        return await self._call(
            "POST", self.device_path(dev_eui) + "/down/replace", json={"downlinks": []}
        )


class ChirpStackNetworkServer(_HttpNetworkServer):
    """ChirpStack v4 through its REST API."""

    name = "chirpstack"

    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            url=url,
            headers={"Grpc-Metadata-Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )

    @staticmethod
    def queue_path(dev_eui: str) -> str:
        return f"/api/devices/{dev_eui.lower()}/queue"

    async def push(self, dev_eui: str, downlink: Downlink) -> Answer:
        body = {
            "queueItem": {
                "confirmed": downlink.confirmed,
                "fPort": downlink.port,
                "data": downlink.payload_b64,
            }
        }
        return await self._call("POST", self.queue_path(dev_eui), json=body)

    async def clear(self, dev_eui: str) -> Answer:
        return await self._call("DELETE", self.queue_path(dev_eui))


def from_settings(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> NetworkServer | None:
    """The deployment's network server, or None when ``HIVEPIPE_LORAWAN_SERVER`` is unset.

    Raises :class:`NotConfigured` when it is set but incomplete.
    """
    kind = settings.lorawan_server
    if kind is None:
        return None
    key = settings.lorawan_api_key.get_secret_value() if settings.lorawan_api_key else ""
    if not settings.lorawan_url or not key:
        raise NotConfigured("HIVEPIPE_LORAWAN_URL and HIVEPIPE_LORAWAN_API_KEY are required")
    if kind == "chirpstack":
        return ChirpStackNetworkServer(
            url=settings.lorawan_url,
            api_key=key,
            timeout=settings.command_timeout,
            transport=transport,
        )
    if not settings.tts_application_id or not settings.tts_webhook_id:
        raise NotConfigured("HIVEPIPE_TTS_APPLICATION_ID and HIVEPIPE_TTS_WEBHOOK_ID are required")
    try:
        settings.tts_device_id.format(dev_eui="0", DEV_EUI="0")
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise NotConfigured("HIVEPIPE_TTS_DEVICE_ID may only use {dev_eui} and {DEV_EUI}") from exc
    return TtsNetworkServer(
        url=settings.lorawan_url,
        api_key=key,
        application_id=settings.tts_application_id,
        webhook_id=settings.tts_webhook_id,
        device_id=settings.tts_device_id,
        timeout=settings.command_timeout,
        transport=transport,
    )
