"""Device models through the real API and PostgreSQL: CRUD of an account's own models, the codec
checked at registration, the decode and encode "test" routes with real vendor codecs and their
published examples, devices of such a model, large sources whatever the body limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.api_support import Account, Api, add_key, api_on_new_schema, make_account
from tests.unit.test_codecs_vendor import vendor_codec


@pytest.fixture(scope="module")
async def api(
    pg_server: str, kafka_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    async with api_on_new_schema(
        pg_server, kafka=kafka_server, data_dir=tmp_path_factory.mktemp("models")
    ) as running:
        yield running


@pytest.fixture
async def owner(api: Api) -> Account:
    return await make_account(api.database_url)


def model_body(model_id: str, source: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": model_id,
        "network": "lorawan",
        "codec": {"language": "javascript", "source": source},
        **extra,
    }


async def test_crud_of_an_accounts_own_model(api: Api, owner: Account) -> None:
    source, _ = vendor_codec("dragino-lht65")
    h = owner.headers
    created = await api.client.post(
        "/v1/models", json=model_body("dragino-lht65", source, units={"BatV": "V"}), headers=h
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"] == "dragino-lht65"
    assert body["builtin"] is False
    assert body["version"] == 1
    assert body["functions"] == ["decodeUplink"]
    assert body["codec"] == {"language": "javascript", "source": source}
    assert body["units"] == {"BatV": "V"}
    assert (body["failing"], body["failing_since"], body["last_error"]) == (False, None, None)

    listed = (await api.client.get("/v1/models", headers=h)).json()
    ids = [m["id"] for m in listed]
    assert ids[:6] == [
        "orbit-t",
        "orbit-th",
        "orbit-lite",
        "lorawan-lpp",
        "json",
        "relay-controller",
    ]
    assert "dragino-lht65" in ids
    assert all(m["builtin"] for m in listed[:6])

    got = await api.client.get("/v1/models/dragino-lht65", headers=h)
    assert got.json() == body
    builtin = await api.client.get("/v1/models/lorawan-lpp", headers=h)
    assert builtin.json()["builtin"] is True

    put = await api.client.put(
        "/v1/models/dragino-lht65",
        json={"network": "lorawan", "codec": {"source": source}, "units": {}},
        headers=h,
    )
    assert put.status_code == 200, put.text
    assert put.json()["version"] == 2

    other = await make_account(api.database_url)
    assert (
        await api.client.get("/v1/models/dragino-lht65", headers=other.headers)
    ).status_code == 404

    assert (await api.client.delete("/v1/models/dragino-lht65", headers=h)).status_code == 204
    assert (await api.client.get("/v1/models/dragino-lht65", headers=h)).status_code == 404


async def test_conflicts_are_409(api: Api, owner: Account) -> None:
    source = "function decodeUplink(i) { return {data: {}}; }"
    h = owner.headers
    assert (
        await api.client.post("/v1/models", json=model_body("m1", source), headers=h)
    ).status_code == 201
    again = await api.client.post("/v1/models", json=model_body("m1", source), headers=h)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "model_exists")
    builtin = await api.client.post("/v1/models", json=model_body("orbit-t", source), headers=h)
    assert (builtin.status_code, builtin.json()["error"]["code"]) == (409, "builtin_model")
    for method in ("put", "delete"):
        answer = await api.client.request(
            method,
            "/v1/models/json",
            json={"network": "mqtt", "codec": {"source": source}} if method == "put" else None,
            headers=h,
        )
        assert answer.status_code == 409, answer.text


@pytest.mark.parametrize(
    ("source", "line", "words"),
    [
        ("function decodeUplink(input) {\n  var x = ;\n}", 2, "SyntaxError"),
        ("var a = 1;\n\nthrow new Error('no');", 3, "Error: no"),
        ("var nothing = 1;", None, "defines none"),
    ],
)
async def test_a_codec_that_does_not_compile_is_422_with_message_and_line(
    api: Api, owner: Account, source: str, line: int | None, words: str
) -> None:
    answer = await api.client.post(
        "/v1/models", json=model_body("broken", source), headers=owner.headers
    )
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid_codec"
    assert words in error["message"]
    assert error["details"][0]["line"] == line


async def test_invalid_ids_are_422(api: Api, owner: Account) -> None:
    for model_id in ("A", "Upper", "x", "a_b", "a" * 65):
        answer = await api.client.post(
            "/v1/models",
            json=model_body(model_id, "function Decoder(b){return {}}"),
            headers=owner.headers,
        )
        assert answer.status_code == 422, model_id


async def test_a_large_vendor_source_is_accepted_whatever_the_body_limit(
    api: Api, owner: Account
) -> None:
    assert api.settings.max_body_bytes < 200_000
    source, _ = vendor_codec("dragino-lht65")
    padding = "".join(f'var LIB_{i} = "{"x" * 60}";\n' for i in range(3000))  # ~200 KB
    answer = await api.client.post(
        "/v1/models", json=model_body("big-codec", padding + source), headers=owner.headers
    )
    assert answer.status_code == 201, answer.text[:300]
    too_big = await api.client.post(
        "/v1/models",
        json=model_body("too-big", "//" + "y" * (300 * 1024) + "\n" + source),
        headers=owner.headers,
    )
    assert too_big.status_code == 422


@pytest.mark.parametrize("name", ["dragino-lht65", "milesight-em300-th", "example-windsensor"])
async def test_the_decode_endpoint_matches_the_published_examples(
    api: Api, owner: Account, name: str
) -> None:
    source, spec = vendor_codec(name)
    h = owner.headers
    created = await api.client.post("/v1/models", json=model_body(name, source), headers=h)
    assert created.status_code == 201, created.text
    for example in spec["uplinkDecoder"]["examples"]:
        answer = await api.client.post(
            f"/v1/models/{name}/decode",
            json={
                "payload_hex": bytes(example["input"]["bytes"]).hex(),
                "port": example["input"]["fPort"],
                "time": 1_700_000_000,
            },
            headers=h,
        )
        expected = example["output"]
        if "errors" in expected:
            assert answer.status_code == 422, answer.text
            error = answer.json()["error"]
            assert error["code"] == "codec_error"
            assert error["details"][0]["errors"] == expected["errors"]
            continue
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["data"] == expected["data"]
        numbers = {k: v for k, v in expected["data"].items() if isinstance(v, int | float)}
        if body["normalized"] is None:
            assert {p["metric"]: p["value"] for p in body["points"]} == numbers
        assert {p["time"] for p in body["points"]} == {1_700_000_000}


async def test_decode_reports_an_exception_and_its_line(api: Api, owner: Account) -> None:
    source = "function decodeUplink(input) {\n  var x = null;\n  return {data: {v: x.y}};\n}"
    h = owner.headers
    await api.client.post("/v1/models", json=model_body("throws", source), headers=h)
    answer = await api.client.post(
        "/v1/models/throws/decode", json={"payload_hex": "01", "port": 1}, headers=h
    )
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "codec_error"
    assert error["details"][0]["line"] == 3
    assert "TypeError" in error["message"]


async def test_the_encode_endpoint_matches_the_published_examples(api: Api, owner: Account) -> None:
    source, spec = vendor_codec("example-windsensor")
    h = owner.headers
    await api.client.post("/v1/models", json=model_body("wind", source), headers=h)
    example = spec["downlinkEncoder"]["examples"][0]
    answer = await api.client.post(
        "/v1/models/wind/encode", json={"data": example["input"]["data"]}, headers=h
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert bytes.fromhex(body["payload_hex"]) == bytes(example["output"]["bytes"])
    assert body["port"] == example["output"]["fPort"]
    assert body["decoded"] == example["input"]["data"]
    refused = await api.client.post(
        "/v1/models/wind/encode", json={"data": {"led": "blue"}}, headers=h
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["errors"] == ["invalid LED color"]


async def test_devices_of_an_own_model_and_delete_while_in_use(api: Api, owner: Account) -> None:
    source, _ = vendor_codec("dragino-lht65")
    h = owner.headers
    await api.client.post("/v1/models", json=model_body("lht65", source), headers=h)
    device = await api.client.post(
        "/v1/devices", json={"id": "a84041000181c061", "model": "lht65"}, headers=h
    )
    assert device.status_code == 201, device.text
    assert (device.json()["model"], device.json()["network"]) == ("lht65", "lorawan")
    unknown = await api.client.post(
        "/v1/devices", json={"id": "a84041000181c062", "model": "not-mine"}, headers=h
    )
    assert unknown.status_code == 422
    other = await make_account(api.database_url)
    foreign = await api.client.post(
        "/v1/devices", json={"id": "a84041000181c063", "model": "lht65"}, headers=other.headers
    )
    assert foreign.status_code == 422  # another account's model is not the caller's
    in_use = await api.client.delete("/v1/models/lht65", headers=h)
    assert (in_use.status_code, in_use.json()["error"]["code"]) == (409, "model_in_use")
    await api.client.delete("/v1/devices/A84041000181C061", headers=h)
    assert (await api.client.delete("/v1/models/lht65", headers=h)).status_code == 204


async def test_scopes_as_for_devices(api: Api, owner: Account) -> None:
    read_only = await add_key(api.database_url, owner, "ro", ("readdev",))
    headers = {"X-API-Key": read_only}
    assert (await api.client.get("/v1/models", headers=headers)).status_code == 200
    refused = await api.client.post(
        "/v1/models", json=model_body("ro-model", "function Decoder(b){return {}}"), headers=headers
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "missing_scope")
    assert (await api.client.get("/v1/models")).status_code == 401


async def test_graphql_lists_models_and_a_devices_model(api: Api, owner: Account) -> None:
    source, _ = vendor_codec("milesight-em300-th")
    h = owner.headers
    await api.client.post("/v1/models", json=model_body("em300-th", source), headers=h)
    await api.client.post(
        "/v1/devices", json={"id": "24e124136b316361", "model": "em300-th"}, headers=h
    )
    answer = await api.client.post(
        "/v1/graphql",
        json={
            "query": "{ models { id network builtin version functions }"
            ' device(id: "24E124136B316361") { id deviceModel { id builtin functions } } }'
        },
        headers=h,
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    own = [m for m in data["models"] if m["id"] == "em300-th"]
    assert own == [
        {
            "id": "em300-th",
            "network": "lorawan",
            "builtin": False,
            "version": 1,
            "functions": ["Decoder", "decodeUplink", "normalizeUplink"],
        }
    ]
    assert any(m["id"] == "orbit-t" and m["builtin"] for m in data["models"])
    assert data["device"]["deviceModel"] == {
        "id": "em300-th",
        "builtin": False,
        "functions": ["Decoder", "decodeUplink", "normalizeUplink"],
    }
