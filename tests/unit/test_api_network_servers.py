"""Network-server clients: the exact requests of wire-formats.md, on httpx's in-memory transport."""

from __future__ import annotations

import json

import httpx
import pytest
from pydantic import SecretStr

from services.downlinks.network_servers import (
    ChirpStackNetworkServer,
    Downlink,
    NetworkServerUnreachable,
    NotConfigured,
    TtsNetworkServer,
    from_settings,
)
from services.platform.settings import Settings


class Recorder:
    def __init__(self, status: int = 200, body: bytes = b"{}") -> None:
        self.requests: list[httpx.Request] = []
        self.status = status
        self.body = body

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, content=self.body)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


async def test_tts_push() -> None:
    recorder = Recorder(body=b'{"correlation_ids": ["x"]}')
    tts = TtsNetworkServer(
        url="https://eu1.cloud.thethings.network/",
        api_key="NNSXS.K",
        application_id="cold-chain",
        webhook_id="hivepipe",
        transport=recorder.transport,
    )
    answer = await tts.push("70B3D57ED0000002", Downlink(port=15, payload_hex="0102FF"))
    await tts.close()
    assert answer.ok
    assert answer.body == {"correlation_ids": ["x"]}
    [request] = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == (
        "https://eu1.cloud.thethings.network/api/v3/as/applications/cold-chain/webhooks/"
        "hivepipe/devices/eui-70b3d57ed0000002/down/push"
    )
    assert request.headers["Authorization"] == "Bearer NNSXS.K"
    assert json.loads(request.content) == {
        "downlinks": [
            {"frm_payload": "AQL/", "f_port": 15, "priority": "NORMAL", "confirmed": False}
        ]
    }


async def test_tts_clear_and_device_id_template() -> None:
    recorder = Recorder()
    tts = TtsNetworkServer(
        url="http://tts",
        api_key="k",
        application_id="app 1",
        webhook_id="wh",
        device_id="node-{DEV_EUI}",
        transport=recorder.transport,
    )
    await tts.clear("70b3d57ed0000002")
    await tts.close()
    [request] = recorder.requests
    assert request.url.raw_path == (
        b"/api/v3/as/applications/app%201/webhooks/wh/devices/node-70B3D57ED0000002/down/replace"
    )
    assert json.loads(request.content) == {"downlinks": []}


async def test_chirpstack_push_and_flush() -> None:
    recorder = Recorder(body=b'{"id": "5e9b"}')
    cs = ChirpStackNetworkServer(url="http://cs:8090", api_key="K", transport=recorder.transport)
    answer = await cs.push("70B3D57ED0000002", Downlink(port=10, payload_hex="AB", confirmed=True))
    flushed = await cs.clear("70B3D57ED0000002")
    await cs.close()
    assert answer.body == {"id": "5e9b"}
    assert flushed.ok
    push, flush = recorder.requests
    assert (push.method, push.url.path) == ("POST", "/api/devices/70b3d57ed0000002/queue")
    assert push.headers["Grpc-Metadata-Authorization"] == "Bearer K"
    assert "Authorization" not in push.headers
    assert json.loads(push.content) == {
        "queueItem": {"confirmed": True, "fPort": 10, "data": "qw=="}
    }
    assert (flush.method, flush.url.path) == ("DELETE", "/api/devices/70b3d57ed0000002/queue")
    assert flush.content == b""


async def test_answers_are_recorded_whatever_they_are() -> None:
    text = Recorder(status=502, body=b"<html>bad gateway</html>")
    cs = ChirpStackNetworkServer(url="http://cs", api_key="K", transport=text.transport)
    answer = await cs.push("AA", Downlink(port=1, payload_hex="00"))
    assert (answer.ok, answer.status, answer.body) == (False, 502, "<html>bad gateway</html>")
    big = Recorder(body=json.dumps({"x": "y" * 5000}).encode())
    cs = ChirpStackNetworkServer(url="http://cs", api_key="K", transport=big.transport)
    answer = await cs.push("AA", Downlink(port=1, payload_hex="00"))
    assert isinstance(answer.body, str)
    assert len(answer.body) == 2000


async def test_unreachable_raises() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    cs = ChirpStackNetworkServer(
        url="http://cs", api_key="K", transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(NetworkServerUnreachable) as raised:
        await cs.push("AA", Downlink(port=1, payload_hex="00"))
    assert "K" not in str(raised.value)


def _settings(**values: object) -> Settings:
    return Settings(embedded=True, **values)  # type: ignore[arg-type]


def test_from_settings() -> None:
    assert from_settings(_settings()) is None
    with pytest.raises(NotConfigured):
        from_settings(_settings(lorawan_server="chirpstack", lorawan_url="http://cs"))
    with pytest.raises(NotConfigured):
        from_settings(
            _settings(lorawan_server="tts", lorawan_url="http://t", lorawan_api_key=SecretStr("k"))
        )
    with pytest.raises(NotConfigured):
        from_settings(
            _settings(
                lorawan_server="tts",
                lorawan_url="http://t",
                lorawan_api_key=SecretStr("k"),
                tts_application_id="a",
                tts_webhook_id="w",
                tts_device_id="{nope}",
            )
        )
    server = from_settings(
        _settings(lorawan_server="chirpstack", lorawan_url="http://cs", lorawan_api_key="k")
    )
    assert server is not None
    assert server.name == "chirpstack"
