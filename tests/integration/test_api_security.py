"""Security properties over every route of the app, walked from ``app.routes`` so that a new
route cannot skip them: without a key 401, with a key lacking the route's scope 403, another
hierarchy's objects 404 exactly like unknown ones, and no error leaks SQL, paths or traces."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from services.accounts.scopes import SCOPES
from tests.api_support import Account, Api, add_key, api_on_new_schema, make_account

#: A valid body per (method, path template); a route with a body not listed here is still
#: checked for 401/403, and its cross-tenant answer must be 404 or 422 (never a success).
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/keys"): {"name": "walk", "scopes": ["readdev"]},
    ("POST", "/v1/users"): {"username": "walk-user"},
    ("POST", "/v1/devices"): {"id": "walk-device", "model": "json"},
    ("PATCH", "/v1/devices/{device_id}"): {"name": "taken"},
    ("POST", "/v1/devices/{device_id}/commands"): {"payload": {"Output": "Relay", "Relays": []}},
    ("POST", "/v1/devices/{device_id}/downlinks"): {"port": 1, "payload_hex": "00"},
    ("POST", "/v1/devices/{device_id}/webhooks"): {"url": "https://example.com/hook"},
    ("POST", "/v1/orbit/dev/{device_id}"): {"params": {"sample_interval": 30}},
    ("PATCH", "/v1/account"): {"name": "walk"},
    ("POST", "/v1/fleets"): {"name": "walk"},
    ("PATCH", "/v1/fleets/{fleet_id}"): {"name": "taken"},
    ("POST", "/v1/places"): {"name": "walk", "type": "site"},
    ("PATCH", "/v1/places/{place_id}"): {"name": "taken"},
    ("PUT", "/v1/devices/{device_id}/place"): {"place": None},
    ("POST", "/graphql"): {"query": "{ devices { id } }"},
}
#: The deliberate exceptions to "every route needs a key": static pages that carry no data.
#: GraphiQL (``GET /v1/graphql`` for a browser) must open before a key is typed in its headers
#: pane; the queries it sends are ``POST /v1/graphql``, which needs the key like every route.
#: ``test_the_explorer_page_is_static_and_its_queries_need_a_key`` checks what this allows.
KEYLESS_PAGES = {("GET", "/v1/graphql")}
#: Values for required query parameters.
QUERY_VALUES = {"bucket": "3600", "confirm": "b-only-key"}
LEAKS = re.compile(r"Traceback|SELECT |INSERT |psycopg|/work/|\.py\b|line \d+|Exception", re.I)


@dataclass(frozen=True)
class Case:
    method: str
    template: str
    scope: str | None
    route: APIRoute


def _scopes_of(route: APIRoute) -> set[str]:
    found: set[str] = set()
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        scope = getattr(dep.call, "required_scope", None)
        if scope:
            found.add(scope)
        stack.extend(dep.dependencies)
    return found


def _authenticated(route: APIRoute) -> bool:
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if getattr(dep.call, "__name__", "") == "get_principal":
            return True
        stack.extend(dep.dependencies)
    return False


def cases(app: Any, *, keyless: bool = False) -> list[Case]:
    """Every (method, path) of the app under /v1 and /graphql, included routers flattened;
    the :data:`KEYLESS_PAGES` only with ``keyless``."""
    found = []
    for context in iter_route_contexts(app.routes):
        route, path = context.original_route, context.path or ""
        if not isinstance(route, APIRoute):
            continue
        if not (path.startswith("/v1/") or path == "/graphql"):
            continue
        scopes = _scopes_of(route)
        assert len(scopes) <= 1, f"{path}: several scopes {scopes}"
        for method in sorted(context.methods or ()):
            if (method, path) in KEYLESS_PAGES and not keyless:
                continue
            found.append(Case(method, path, next(iter(scopes), None), route))
    return found


@dataclass
class World:
    api: Api
    a: Account  # the caller: an integrator with every scope
    b: Account  # another hierarchy
    b_device: str
    b_user: str
    b_fleet: int  # with b_device in it
    b_place: int  # b_device is there
    lacking: dict[str, str]  # scope -> a key of A with every scope but that one


@pytest.fixture(scope="module")
async def world(
    pg_server: str, kafka_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    async with api_on_new_schema(
        pg_server, kafka=kafka_server, data_dir=tmp_path_factory.mktemp("security")
    ) as api:
        a = await make_account(api.database_url, "tenant-a", integrator=True)
        b = await make_account(api.database_url, "tenant-b", integrator=True)
        b_user = await make_account(api.database_url, "tenant-b-user", parent="tenant-b")
        await add_key(api.database_url, b_user, "b-only-key", ("readdev",))
        created = await api.client.post(
            "/v1/devices",
            json={"id": "b-secret-device", "model": "json", "owner": b_user.username},
            headers=b.headers,
        )
        assert created.status_code == 201, created.text
        fleet = await api.client.post(
            "/v1/fleets", json={"name": "tenant-b fleet"}, headers=b.headers
        )
        place = await api.client.post(
            "/v1/places", json={"name": "tenant-b place", "type": "site"}, headers=b.headers
        )
        b_fleet, b_place = fleet.json()["id"], place.json()["id"]
        for method, path, body in (
            ("PUT", f"/v1/fleets/{b_fleet}/devices/b-secret-device", None),
            ("PUT", "/v1/devices/b-secret-device/place", {"place": b_place}),
        ):
            done = await api.client.request(method, path, json=body, headers=b.headers)
            assert done.status_code == 200, done.text
        lacking = {
            scope: await add_key(
                api.database_url, a, f"no-{scope}", tuple(s for s in SCOPES if s != scope)
            )
            for scope in SCOPES
        }
        yield World(api, a, b, "b-secret-device", b_user.username, b_fleet, b_place, lacking)


#: Ids that exist nowhere, for the paths of :func:`_path` with ``nowhere=True``.
NOWHERE = {"device_id": "NO-SUCH-DEVICE", "fleet_id": 987654321, "place_id": 987654321}


def _path(case: Case, world: World, *, nowhere: bool = False) -> str:
    values: dict[str, Any] = {}
    for param in case.route.dependant.path_params:
        name = param.name
        if nowhere and name in NOWHERE:
            values[name] = NOWHERE[name]
        elif name in ("device_id", "id"):
            values[name] = world.b_device
        elif name == "fleet_id":
            values[name] = world.b_fleet
        elif name == "place_id":
            values[name] = world.b_place
        elif name == "username":
            values[name] = world.b_user
        elif name == "name":
            values[name] = "b-only-key"
        else:
            values[name] = "1"
    path = case.template.format(**values)
    query = [
        f"{p.alias}={QUERY_VALUES.get(p.alias, '1')}"
        for p in case.route.dependant.query_params
        if p.field_info.is_required()
    ]
    return path + ("?" + "&".join(query) if query else "")


async def _call(world: World, case: Case, path: str, headers: dict[str, str]) -> httpx.Response:
    body = BODIES.get((case.method, case.template))
    if body is None and case.route.body_field is not None:
        body = {}
    answer = await world.api.client.request(case.method, path, json=body, headers=headers)
    assert answer.status_code != 500, (case, answer.text)
    assert not LEAKS.search(answer.text) or answer.headers.get("content-type", "").startswith(
        "text/csv"
    ), (case, answer.text)
    return answer


def test_every_v1_route_is_authenticated_and_scoped(world: World) -> None:
    all_cases = cases(world.api.app)
    assert len(all_cases) >= 20  # the walk sees the routes
    for case in all_cases:
        assert _authenticated(case.route), f"{case.method} {case.template} has no auth"
        if case.template not in ("/graphql", "/v1/graphql"):  # GraphQL: each field checks
            assert case.scope in SCOPES, f"{case.method} {case.template} checks no scope"


async def test_the_explorer_page_is_static_and_its_queries_need_a_key(world: World) -> None:
    # The exemption covers exactly the explorer page, which is indeed without a key.
    unauthenticated = {
        (c.method, c.template)
        for c in cases(world.api.app, keyless=True)
        if not _authenticated(c.route)
    }
    assert unauthenticated == KEYLESS_PAGES
    client = world.api.client
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    pages = [
        await client.get("/v1/graphql", headers={**browser, **extra})
        for extra in ({}, world.a.headers, world.b.headers, {"X-API-Key": "A" * 64})
    ]
    for page in pages:
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.text == pages[0].text  # the same static page whoever asks: no data in it
        assert "set-cookie" not in page.headers
    for marker in (world.b_device, world.b_user, "b-only-key", "tenant-a", "tenant-b"):
        assert marker not in pages[0].text
    assert "GraphiQL" in pages[0].text
    assert '\\"X-API-Key\\": \\"<your API key>\\"' in pages[0].text  # the headers pane
    # What it sends, POST, needs the key; GET serves nothing but the page.
    query = {"query": "{ devices { id } }"}
    assert (await client.post("/v1/graphql", json=query)).status_code == 401
    assert (await client.post("/v1/graphql", json=query, headers=browser)).status_code == 401
    not_browser = await client.get("/v1/graphql", params={"query": "{ devices { id } }"})
    assert not_browser.status_code == 405
    assert not_browser.headers["allow"] == "POST"
    assert world.b_device not in not_browser.text
    answer = await client.post("/v1/graphql", json=query, headers=world.b.headers)
    assert answer.status_code == 200
    assert world.b_device in answer.text


async def test_without_a_key_every_route_is_401(world: World) -> None:
    for case in cases(world.api.app):
        for headers in ({}, {"X-API-Key": "A" * 64}):
            answer = await _call(world, case, _path(case, world), headers)
            assert answer.status_code == 401, (case.method, case.template, answer.text)
            assert answer.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")


async def test_a_key_lacking_the_scope_is_403(world: World) -> None:
    for case in cases(world.api.app):
        if case.scope is None:
            continue
        headers = {"X-API-Key": world.lacking[case.scope]}
        answer = await _call(world, case, _path(case, world), headers)
        assert answer.status_code == 403, (case.method, case.template, answer.text)
        assert answer.json()["error"]["code"] == "missing_scope"


async def test_another_hierarchy_is_404_like_nothing(world: World) -> None:
    checked = 0
    for case in cases(world.api.app):
        if not case.route.dependant.path_params:
            continue
        theirs = await _call(world, case, _path(case, world), world.a.headers)
        known_body = (case.method, case.template) in BODIES or case.route.body_field is None
        expected = {404} if known_body else {404, 422}
        assert theirs.status_code in expected, (case.method, case.template, theirs.text)
        # Indistinguishable from an id that exists nowhere.
        nothing = await _call(world, case, _path(case, world, nowhere=True), world.a.headers)
        if any(f"{{{name}}}" in case.template for name in NOWHERE):
            assert (nothing.status_code, nothing.json()["error"]["code"]) == (
                theirs.status_code,
                theirs.json()["error"]["code"],
            ), (case.method, case.template)
        checked += 1
    assert checked >= 10
    # And listings show nothing of it.
    for case in cases(world.api.app):
        if case.method == "GET" and not case.route.dependant.path_params:
            answer = await _call(world, case, _path(case, world), world.a.headers)
            assert answer.status_code == 200, (case.template, answer.text)
            for marker in (world.b_device, world.b_user, "b-only-key", "tenant-b"):
                assert marker not in answer.text, (case.template, marker)
    # The other tenant's objects are untouched.
    device = await world.api.client.get(f"/v1/devices/{world.b_device}", headers=world.b.headers)
    assert device.status_code == 200
    assert device.json()["name"] == ""
    b = world.b.headers
    fleet = await world.api.client.get(f"/v1/fleets/{world.b_fleet}", headers=b)
    assert fleet.json()["name"] == "tenant-b fleet"
    assert fleet.json()["devices"] == [world.b_device]
    place = await world.api.client.get(f"/v1/places/{world.b_place}", headers=b)
    assert (place.json()["name"], place.json()["devices"]) == ("tenant-b place", [world.b_device])


async def test_hostile_input_never_500_and_never_leaks(world: World) -> None:
    h = world.a.headers
    JSON_H = {**h, "Content-Type": "application/json"}  # noqa: N806
    client = world.api.client
    statuses = []
    cases_sent = []
    mine = await client.post(
        "/v1/devices", json={"id": "a-nul-device", "model": "json"}, headers=JSON_H
    )
    assert mine.status_code in (201, 409), mine.text
    # A cursor of the right shape whose metric holds a NUL: [1, "a\u0000b", "d"].
    nul_cursor = base64.urlsafe_b64encode(b'[1,"a\\u0000b","d"]').decode().rstrip("=")
    for method, path, kwargs in (
        ("GET", "/v1/devices/a-nul-device/data?metric=%00", {}),
        ("GET", "/v1/devices/a-nul-device/data?metric=a,b%00", {}),
        ("GET", "/v1/devices/a-nul-device/data/aggregate?bucket=60&metric=%00", {}),
        ("GET", "/v1/devices/a-nul-device/events?type=%00", {}),
        ("GET", f"/v1/devices/a-nul-device/data?cursor={nul_cursor}", {}),
        ("GET", "/v1/devices/%00", {}),
        ("GET", "/v1/devices/" + "A" * 5000, {}),
        ("GET", "/v1/devices/'; DROP TABLE devices; --", {}),
        ("GET", "/v1/users/%00x", {}),
        ("POST", "/v1/keys/%00/revoke", {}),
        ("DELETE", "/v1/keys/x?confirm=%00", {}),
        ("GET", "/v1/usage?from=1e308", {}),
        ("GET", "/v1/usage?from=-1", {}),
        ("GET", "/v1/usage?from=nan", {}),
        (
            "POST",
            "/v1/devices",
            {"content": b"{not json", "headers": {**h, "Content-Type": "application/json"}},
        ),
        ("POST", "/v1/devices", {"json": {"id": "\x00", "model": "json"}}),
        ("POST", "/v1/devices", {"json": {"id": "ok-id", "model": "json", "name": "\x00"}}),
        ("POST", "/v1/devices", {"json": {"id": "ok-id2", "model": "json", "owner": "\x00"}}),
        ("POST", "/v1/users", {"json": {"username": "\x00"}}),
        (
            "POST",
            "/v1/devices",
            {"content": b'{"id": "s1", "model": "json", "name": "\\ud800"}', "headers": JSON_H},
        ),
        ("PATCH", "/v1/devices/NONE", {"content": b'{"name": "\\udfff"}', "headers": JSON_H}),
        ("GET", "/v1/devices/%ED%A0%80", {}),
        ("POST", "/v1/keys", {"json": {"name": "n", "scopes": ["\x00"]}}),
        ("POST", "/v1/keys", {"json": {"name": "n2", "scopes": ["readdev"], "user": "\x00"}}),
        ("POST", "/v1/keys", {"json": {"name": "n3", "scopes": ["readdev"], "expiration": 1e300}}),
        ("PATCH", "/v1/devices/b-secret-device", {"json": {"owner": "tenant-b-user"}}),
        ("GET", "/v1/fleets/99999999999999999999", {}),
        ("GET", "/v1/places/%00", {}),
        ("GET", "/v1/devices?fleet=1e400&place=-1", {}),
        ("GET", "/v1/fleets/1/data/aggregate?bucket=60&metric=%00", {}),
        ("POST", "/v1/places", {"json": {"name": "\x00", "type": "site"}}),
        (
            "POST",
            "/v1/places",
            {
                "content": b'{"name": "n", "type": "t", "location": {"latitude": 1e400, '
                b'"longitude": 0}}',
                "headers": JSON_H,
            },
        ),
        ("PATCH", "/v1/account", {"json": {"country": "\x00"}}),
        ("PUT", "/v1/devices/a-nul-device/place", {"json": {"place": 2**64}}),
        ("PUT", "/v1/devices/a-nul-device/place", {"json": {"place": None, "since": 1e300}}),
        ("POST", "/graphql", {"json": {"query": "{ devices { id } }", "variables": [1]}}),
    ):
        kwargs.setdefault("headers", h)
        answer = await client.request(method, path, **kwargs)
        assert answer.status_code < 500, (method, path, answer.text)
        assert not LEAKS.search(answer.text), (method, path, answer.text)
        if answer.status_code >= 400:
            assert set(answer.json()) == {"error"}, answer.text
        statuses.append(answer.status_code)
        cases_sent.append((method, path))
    # Each was refused as bad input (400/404/422), none accepted.
    accepted = [c for c, st in zip(cases_sent, statuses, strict=True) if st not in (400, 404, 422)]
    assert not accepted, accepted
    # Not JSON (RFC 8259) although Python's json module reads them: 400 like any malformed body.
    for raw in (
        b'{"params": {"led": NaN}}',
        b'{"params": {"led": -Infinity}}',
        b'{"params": {"led": 1, }}',
    ):
        answer = await client.post("/v1/orbit/dev/a-nul-device", content=raw, headers=JSON_H)
        assert answer.status_code == 400, (raw, answer.text)
        assert answer.json()["error"]["code"] == "invalid_json"
    nul = await client.post(
        "/graphql", json={"query": '{ device(id: "\\u0000") { id } }'}, headers=h
    )
    assert nul.json() == {"data": {"device": None}}
