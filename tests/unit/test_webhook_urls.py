"""Webhook URL and address rules, and the cached resolver (fake DNS, fake clock)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.webhooks.addresses import address_problem
from services.webhooks.resolver import CachingResolver, ResolutionError
from services.webhooks.url_parsing import parse_webhook_url, validate_webhook_url
from services.webhooks.url_rules import IPAddress, WebhookRules, WebhookURLError, parse_cidrs

STRICT = WebhookRules()
# http allowed, so that address cases are judged on the address, not on the scheme.
HTTP = WebhookRules(allow_http=True)


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


class FakeDNS:
    """A resolve function answering from a dict; counts lookups."""

    def __init__(self, records: dict[str, Sequence[str]]) -> None:
        self.records = dict(records)
        self.calls: list[str] = []

    async def __call__(self, host: str) -> tuple[IPAddress, ...]:
        self.calls.append(host)
        if host not in self.records:
            raise ResolutionError(f"{host}: Name or service not known")
        return tuple(ip(a) for a in self.records[host])


# --- refused URLs ------------------------------------------------------------------------

REFUSED = [
    # (url, rules, code, words expected in the reason)
    ("http://[::ffff:127.0.0.1]/", HTTP, "address_not_allowed", "IPv4-mapped"),
    ("https://[::ffff:7f00:1]/", STRICT, "address_not_allowed", "IPv4-mapped"),
    ("https://[::ffff:8.8.8.8]/", STRICT, "address_not_allowed", "IPv4-mapped"),
    ("https://[::127.0.0.1]/", STRICT, "address_not_allowed", "IPv4-compatible"),
    ("https://169.254.169.254/", STRICT, "address_not_allowed", "metadata"),
    ("https://169.254.169.254/latest/meta-data/", STRICT, "address_not_allowed", "metadata"),
    ("https://[fd00:ec2::254]/", STRICT, "address_not_allowed", "metadata"),
    ("https://100.100.100.200/", STRICT, "address_not_allowed", "metadata"),
    ("http://127.0.0.1/", HTTP, "address_not_allowed", "loopback"),
    ("https://127.255.0.9:8443/", STRICT, "address_not_allowed", "loopback"),
    ("https://[::1]/", STRICT, "address_not_allowed", "loopback"),
    ("https://0.0.0.0/", STRICT, "address_not_allowed", "unspecified"),
    ("https://[::]/", STRICT, "address_not_allowed", "unspecified"),
    ("https://10.1.2.3/", STRICT, "address_not_allowed", "private"),
    ("https://172.16.0.1/", STRICT, "address_not_allowed", "private"),
    ("https://172.31.255.255/", STRICT, "address_not_allowed", "private"),
    ("https://192.168.1.1/", STRICT, "address_not_allowed", "private"),
    ("https://100.64.0.1/", STRICT, "address_not_allowed", "CGNAT"),
    ("https://100.127.255.254/", STRICT, "address_not_allowed", "CGNAT"),
    ("https://169.254.1.1/", STRICT, "address_not_allowed", "link-local"),
    ("https://224.0.0.1/", STRICT, "address_not_allowed", "multicast"),
    ("https://239.255.255.250/", STRICT, "address_not_allowed", "multicast"),
    ("https://255.255.255.255/", STRICT, "address_not_allowed", "broadcast"),
    ("https://240.0.0.1/", STRICT, "address_not_allowed", "reserved"),
    ("https://192.0.0.8/", STRICT, "address_not_allowed", "IETF"),
    ("https://192.0.2.10/", STRICT, "address_not_allowed", "documentation"),
    ("https://198.51.100.7/", STRICT, "address_not_allowed", "documentation"),
    ("https://203.0.113.7/", STRICT, "address_not_allowed", "documentation"),
    ("https://198.18.0.1/", STRICT, "address_not_allowed", "benchmarking"),
    ("https://192.88.99.1/", STRICT, "address_not_allowed", "6to4 relay"),
    ("https://[fc00::1]/", STRICT, "address_not_allowed", "unique local"),
    ("https://[fd12:3456::1]/", STRICT, "address_not_allowed", "unique local"),
    ("https://[fe80::1]/", STRICT, "address_not_allowed", "link-local"),
    ("https://[febf:ffff::1]/", STRICT, "address_not_allowed", "link-local"),
    ("https://[fec0::1]/", STRICT, "address_not_allowed", "site-local"),
    ("https://[ff02::1]/", STRICT, "address_not_allowed", "multicast"),
    ("https://[2001:db8::1]/", STRICT, "address_not_allowed", "documentation"),
    ("https://[2001::1]/", STRICT, "address_not_allowed", "IETF"),  # Teredo
    ("https://[100::1]/", STRICT, "address_not_allowed", "discard"),
    ("https://[4000::1]/", STRICT, "address_not_allowed", "reserved"),
    ("https://[64:ff9b:1::1]/", STRICT, "address_not_allowed", "NAT64"),
    # NAT64 and 6to4 addresses embedding refused IPv4 addresses
    ("https://[64:ff9b::7f00:1]/", STRICT, "address_not_allowed", "127.0.0.1, a loopback"),
    ("https://[64:ff9b::a9fe:a9fe]/", STRICT, "address_not_allowed", "169.254.169.254"),
    ("https://[64:ff9b::10.0.0.1]/", STRICT, "address_not_allowed", "private"),
    ("https://[2002:7f00:1::1]/", STRICT, "address_not_allowed", "127.0.0.1, a loopback"),
    ("https://[2002:c0a8:101::]/", STRICT, "address_not_allowed", "192.168.1.1"),
    ("https://[2002:a9fe:a9fe::1]/", STRICT, "address_not_allowed", "metadata"),
    # numeric IPv4 forms that inet_aton and browsers read as addresses
    ("http://2130706433/", HTTP, "ambiguous_ip", "non-standard"),
    ("https://2130706433/", STRICT, "ambiguous_ip", "non-standard"),
    ("https://0x7f000001/", STRICT, "ambiguous_ip", "non-standard"),
    ("https://0x7f.0.0.1/", STRICT, "ambiguous_ip", "non-standard"),
    ("https://0177.0.0.1/", STRICT, "ambiguous_ip", "non-standard"),
    ("https://017700000001/", STRICT, "ambiguous_ip", "non-standard"),
    ("https://127.1/", STRICT, "ambiguous_ip", "non-standard"),
    ("https://127.0.1/", STRICT, "ambiguous_ip", "non-standard"),
    ("https://127.0.0.1./", STRICT, "ambiguous_ip", "non-standard"),
    ("https://127.000.000.001/", STRICT, "ambiguous_ip", "non-standard"),
    ("https://256.0.0.1/", STRICT, "ambiguous_ip", "non-standard"),
    # the same, spelled with full-width digits and ideographic dots (IDNA maps them to ASCII)
    ("https://\uff18.\uff18.\uff12\uff10\uff15\uff16/x", STRICT, "ambiguous_ip", "non-standard"),
    ("https://\uff11\uff12\uff17\u3002\uff11/", STRICT, "ambiguous_ip", "non-standard"),
    ("https://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", STRICT, "address_not_allowed", "loopback"),
    ("https://example.123/", STRICT, "ambiguous_ip", "non-standard"),
    # credentials
    ("https://user:pw@example.com/", STRICT, "credentials_not_allowed", "password"),
    ("https://user@example.com/", STRICT, "credentials_not_allowed", "password"),
    ("https://@example.com/", STRICT, "credentials_not_allowed", "password"),
    ("https://example.com:443@10.0.0.1/", STRICT, "credentials_not_allowed", "password"),
    # scheme
    ("http://example.com/hook", STRICT, "scheme_not_allowed", "plain http"),
    ("ftp://example.com/", STRICT, "scheme_not_allowed", "https://"),
    ("file:///etc/passwd", STRICT, "scheme_not_allowed", "https://"),
    ("gopher://example.com/", STRICT, "scheme_not_allowed", "https://"),
    ("https:example.com", STRICT, "scheme_not_allowed", "https://"),
    ("//example.com/hook", STRICT, "scheme_not_allowed", "https://"),
    ("example.com/hook", STRICT, "scheme_not_allowed", "https://"),
    # host and port form
    ("https:///hook", STRICT, "invalid_host", "no host"),
    ("https://exa%6dple.com/", STRICT, "invalid_host", "percent"),
    ("https://[fe80::1%25eth0]/", STRICT, "invalid_host", "zone"),
    ("https://exa_mple..com/", STRICT, "invalid_host", "not a valid host"),
    ("https://-bad.example.com/", STRICT, "invalid_host", "not a valid host"),
    ("https://example.com:0/", STRICT, "invalid_port", "port"),
    ("https://example.com:65536/", STRICT, "invalid_port", "port"),
    ("https://example.com:8x/", STRICT, "invalid_port", "port"),
    ("https://example.com:/", STRICT, "invalid_port", "port"),
    # characters that parsers read differently
    ("https://example.com\\@10.0.0.1/", STRICT, "invalid_url", "backslash"),
    ("https://example.com /", STRICT, "invalid_url", "whitespace"),
    ("https://example.com/\r\nX-Injected: 1", STRICT, "invalid_url", "control"),
    ("https://example.com/\x00", STRICT, "invalid_url", "control"),
    # length
    ("https://example.com/" + "a" * 2040, STRICT, "url_too_long", "2048"),
]


@pytest.mark.parametrize(("url", "rules", "code", "words"), REFUSED)
def test_refused_url(url: str, rules: WebhookRules, code: str, words: str) -> None:
    with pytest.raises(WebhookURLError) as info:
        parse_webhook_url(url, rules)
    assert info.value.code == code
    assert words in info.value.reason


ACCEPTED = [
    # (url, normalised url, host, port)
    ("https://example.com/hook", "https://example.com/hook", "example.com", 443),
    ("HTTPS://Hooks.Example.COM/Hook?x=1", "https://hooks.example.com/Hook?x=1", None, 443),
    ("https://example.com", "https://example.com/", "example.com", 443),
    ("https://example.com:443/a", "https://example.com/a", "example.com", 443),
    ("https://example.com:8443/a#frag", "https://example.com:8443/a", "example.com", 8443),
    ("https://example.com./a", "https://example.com/a", "example.com", 443),
    ("https://b\u00fccher.example/p", "https://xn--bcher-kva.example/p", None, 443),
    ("https://example.com/caf\u00e9", "https://example.com/caf%C3%A9", None, 443),
    ("https://example.com/%41?q=%20", "https://example.com/%41?q=%20", None, 443),
    ("https://93.184.216.34/", "https://93.184.216.34/", "93.184.216.34", 443),
    ("https://1.1.1.1:8443/x", "https://1.1.1.1:8443/x", "1.1.1.1", 8443),
    (
        "https://[2606:2800:220:1:248:1893:25c8:1946]/",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/",
        "2606:2800:220:1:248:1893:25c8:1946",
        443,
    ),
    # 6to4 and NAT64 addresses embedding a public IPv4 address
    ("https://[2002:5db8:d822::1]/", "https://[2002:5db8:d822::1]/", None, 443),
    ("https://[64:ff9b::5db8:d822]/", "https://[64:ff9b::5db8:d822]/", None, 443),
    ("https://a1.example-hooks.io/", "https://a1.example-hooks.io/", None, 443),
]


@pytest.mark.parametrize(("url", "normalised", "host", "port"), ACCEPTED)
def test_accepted_url(url: str, normalised: str, host: str | None, port: int) -> None:
    target = parse_webhook_url(url, STRICT)
    assert target.url == normalised
    if host is not None:
        assert target.host == host
    assert target.port == port


def test_http_allowed_only_by_setting() -> None:
    assert parse_webhook_url("http://example.com/h", HTTP).url == "http://example.com/h"
    assert parse_webhook_url("http://example.com:80/h", HTTP).port == 80


def test_url_length_limit_is_a_setting() -> None:
    url = "https://example.com/" + "a" * 100
    parse_webhook_url(url, STRICT)
    with pytest.raises(WebhookURLError, match="longer than 64"):
        parse_webhook_url(url, WebhookRules(max_url_length=64))


def test_ip_literal_is_recorded() -> None:
    assert parse_webhook_url("https://1.1.1.1/", STRICT).ip == ip("1.1.1.1")
    assert parse_webhook_url("https://example.com/", STRICT).ip is None


# --- allowed_cidrs -----------------------------------------------------------------------


def test_allowed_cidrs_open_chosen_ranges() -> None:
    rules = WebhookRules(
        allow_http=True, allowed_cidrs=parse_cidrs(["127.0.0.0/8", "10.20.0.0/16"])
    )
    assert parse_webhook_url("http://127.0.0.1:8080/hook", rules).port == 8080
    assert parse_webhook_url("https://10.20.3.4/", rules).ip == ip("10.20.3.4")
    with pytest.raises(WebhookURLError, match="private"):
        parse_webhook_url("https://10.21.0.1/", rules)
    with pytest.raises(WebhookURLError, match="loopback"):
        parse_webhook_url("https://[::1]/", rules)  # an IPv4 network does not open IPv6


@pytest.mark.parametrize(
    ("address", "cidr"),
    [
        ("169.254.169.254", "169.254.0.0/16"),
        ("169.254.169.254", "0.0.0.0/0"),
        ("::ffff:127.0.0.1", "::/0"),
        ("0.0.0.0", "0.0.0.0/0"),
        ("224.0.0.1", "224.0.0.0/4"),
        ("255.255.255.255", "0.0.0.0/0"),
        ("fd00:ec2::254", "fc00::/7"),
        ("ff02::1", "::/0"),
    ],
)
def test_allowed_cidrs_never_open(address: str, cidr: str) -> None:
    rules = WebhookRules(allowed_cidrs=parse_cidrs([cidr]))
    assert address_problem(ip(address), rules) is not None


def test_parse_cidrs() -> None:
    assert parse_cidrs(["10.0.0.1/8", " fd00::/8 ", ""]) == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    )
    with pytest.raises(ValueError, match="does not appear"):
        parse_cidrs(["not-a-network"])


@pytest.mark.parametrize(
    "address",
    ["1.1.1.1", "8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4007:80e::200e"],
)
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ip(address), STRICT) is None


_PRIVATE_V4 = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


@given(st.sampled_from(_PRIVATE_V4), st.integers(min_value=0, max_value=2**24 - 1))
def test_every_private_ipv4_is_refused_in_every_spelling(
    network: ipaddress.IPv4Network, offset: int
) -> None:
    address = network[offset % network.num_addresses]
    for url in (
        f"https://{address}/",
        f"https://[::ffff:{address}]/",
        f"https://[64:ff9b::{address}]/",
        f"https://{int(address)}/",
    ):
        with pytest.raises(WebhookURLError):
            parse_webhook_url(url, STRICT)


@given(st.ip_addresses(v=4))
def test_ipv4_mapped_form_is_always_refused(address: ipaddress.IPv4Address) -> None:
    with pytest.raises(WebhookURLError, match="IPv4-mapped"):
        parse_webhook_url(f"https://[::ffff:{address}]/", STRICT)


# --- registration: every resolved address ------------------------------------------------


async def test_registration_accepts_a_public_name() -> None:
    dns = FakeDNS({"hooks.example.com": ["93.184.216.34", "2606:2800:220:1::1"]})
    target = await validate_webhook_url("https://hooks.example.com/h", rules=STRICT, resolve=dns)
    assert target.host == "hooks.example.com"
    assert dns.calls == ["hooks.example.com"]


@pytest.mark.parametrize(
    ("records", "words"),
    [
        (["127.0.0.1"], "resolves to 127.0.0.1, a loopback address"),
        (["93.184.216.34", "10.0.0.7"], "resolves to 10.0.0.7, a private address"),
        (["93.184.216.34", "fd00::1"], "unique local"),
        (["169.254.169.254"], "metadata"),
        (["::ffff:10.0.0.1"], "IPv4-mapped"),
    ],
)
async def test_registration_refuses_a_name_with_any_internal_address(
    records: list[str], words: str
) -> None:
    dns = FakeDNS({"hooks.example.com": records})
    with pytest.raises(WebhookURLError) as info:
        await validate_webhook_url("https://hooks.example.com/h", rules=STRICT, resolve=dns)
    assert info.value.code == "address_not_allowed"
    assert words in info.value.reason


async def test_registration_refuses_an_unresolvable_name() -> None:
    with pytest.raises(WebhookURLError) as info:
        await validate_webhook_url("https://nowhere.example/", rules=STRICT, resolve=FakeDNS({}))
    assert info.value.code == "host_not_found"
    assert "nowhere.example" in info.value.reason


async def test_registration_of_an_ip_literal_needs_no_lookup() -> None:
    dns = FakeDNS({})
    await validate_webhook_url("https://1.1.1.1/", rules=STRICT, resolve=dns)
    assert dns.calls == []


async def test_registration_allows_an_allowlisted_name() -> None:
    rules = WebhookRules(allowed_cidrs=parse_cidrs(["10.20.0.0/16"]))
    dns = FakeDNS({"receiver.internal": ["10.20.0.5"]})
    target = await validate_webhook_url("https://receiver.internal/h", rules=rules, resolve=dns)
    assert target.host == "receiver.internal"


# --- the cached resolver -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_resolver_caches_for_ttl() -> None:
    dns = FakeDNS({"a.example": ["93.184.216.34"]})
    clock = Clock()
    resolver = CachingResolver(dns, ttl=60, clock=clock)
    assert await resolver.resolve("a.example") == (ip("93.184.216.34"),)
    clock.now += 59
    dns.records["a.example"] = ["127.0.0.1"]
    assert await resolver.resolve("a.example") == (ip("93.184.216.34"),)
    assert dns.calls == ["a.example"]
    clock.now += 2
    assert await resolver.resolve("a.example") == (ip("127.0.0.1"),)
    assert dns.calls == ["a.example", "a.example"]


async def test_resolver_coalesces_concurrent_lookups() -> None:
    calls = 0
    gate = asyncio.Event()

    async def slow(host: str) -> tuple[IPAddress, ...]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return (ip("1.1.1.1"),)

    resolver = CachingResolver(slow)
    waiting = [asyncio.create_task(resolver.resolve("a.example")) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    assert set(await asyncio.gather(*waiting)) == {(ip("1.1.1.1"),)}
    assert calls == 1


async def test_resolver_remembers_failures_briefly() -> None:
    dns = FakeDNS({})
    clock = Clock()
    resolver = CachingResolver(dns, negative_ttl=5, clock=clock)
    for _ in range(3):
        with pytest.raises(ResolutionError, match="not known"):
            await resolver.resolve("gone.example")
    assert dns.calls == ["gone.example"]
    clock.now += 6
    dns.records["gone.example"] = ["1.1.1.1"]
    assert await resolver.resolve("gone.example") == (ip("1.1.1.1"),)


async def test_resolver_times_out() -> None:
    async def hang(host: str) -> tuple[IPAddress, ...]:
        await asyncio.sleep(10)
        return ()

    resolver = CachingResolver(hang, timeout=0.05)
    with pytest.raises(ResolutionError, match="timed out"):
        await resolver.resolve("slow.example")


async def test_resolver_refuses_an_empty_answer_and_dedups() -> None:
    resolver = CachingResolver(FakeDNS({"empty.example": [], "dup.example": ["1.1.1.1"] * 3}))
    with pytest.raises(ResolutionError, match="no address"):
        await resolver.resolve("empty.example")
    assert await resolver.resolve("dup.example") == (ip("1.1.1.1"),)


async def test_resolver_passes_ip_literals_through() -> None:
    dns = FakeDNS({})
    resolver = CachingResolver(dns)
    assert await resolver.resolve("::1") == (ip("::1"),)
    assert await resolver.resolve("10.0.0.1") == (ip("10.0.0.1"),)
    assert dns.calls == []


async def test_resolver_bounds_its_size_and_forgets() -> None:
    dns = FakeDNS({f"h{i}.example": ["1.1.1.1"] for i in range(10)})
    resolver = CachingResolver(dns, max_entries=3)
    for i in range(10):
        await resolver.resolve(f"h{i}.example")
    assert len(resolver._entries) <= 3
    resolver.forget("h9.example")
    await resolver.resolve("h9.example")
    assert dns.calls.count("h9.example") == 2
