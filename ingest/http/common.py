"""What every network callback shares: the token and source checks, JSON and model parsing
with the contract's errors, accepting an uplink or a device event, keeping a refused body.

Callbacks are authenticated by the deployment's callback token and are not rate limited.
Every answer follows the contract: 204 once Kafka has the uplink (or it is a duplicate, or it is
kept on ``dead-letter``), 400 invalid JSON, 401 token, 413 too large, 422 invalid content with
the fields, 503 when Kafka or the database is away (the network retries) — never a 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import orjson
import psycopg
from fastapi import Request
from pydantic import BaseModel, ValidationError

from api import ApiContext, ApiError, OrjsonResponse
from ingest.http.redaction import redact_query, redact_text
from services.platform import (
    ALL_TOPICS,
    TOPIC_DEAD_LETTER,
    TOPIC_DEVICE_EVENTS,
    TOPIC_UPLINKS,
    Coalescing,
    DeviceEvent,
    IPNetwork,
    KafkaPublisher,
    Publisher,
    PublishFailed,
    TopicRepair,
    UplinkEnvelope,
    dumps,
    metrics,
)
from services.uplinks import (
    DB_TIMEOUT,
    Accepted,
    ClaimGroups,
    accept_device_event,
    accept_uplink,
)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
log = logging.getLogger(__name__)

ACCEPTED: dict[int | str, dict[str, Any]] = {
    204: {"description": "accepted (or a duplicate, or kept on dead-letter)"}
}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body is not JSON (or, ChirpStack, no `event`)"},
    401: {"description": "missing or wrong callback token"},
    403: {"description": "Sigfox: not from an allowed source (`HIVEPIPE_SIGFOX_ALLOWED_SOURCES`)"},
    413: {"description": "body over the size limit"},
    422: {"description": "valid JSON, invalid content (`details` names the fields)"},
    503: {"description": "Kafka or the database is unavailable: retry"},
}


def reject(source: str, reason: str) -> None:
    metrics.UPLINKS_REJECTED.labels(source, reason).inc()


def check_token(request: Request, expected: str, source: str = "callback") -> None:
    """401 unless ``X-Callback-Token`` (or ``?token=``) matches, compared in constant time."""
    given = request.headers.get("x-callback-token") or request.query_params.get("token") or ""
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        reject(source, "unauthorized")
        raise ApiError(401, "invalid_callback_token", "Missing or wrong callback token.")


def check_source(request: Request, allowed: Sequence[IPNetwork], source: str) -> None:
    """403 when ``allowed`` is set and the caller's address is in none of its networks.

    The address is the connection's, or the one a proxy uvicorn trusts forwarded (on the same
    host by default; uvicorn's ``FORWARDED_ALLOW_IPS`` names others)."""
    if not allowed:
        return
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not any(address in network for network in allowed):
        reject(source, "source_not_allowed")
        raise ApiError(
            403, "source_not_allowed", f"Callbacks are not accepted from {host or 'here'}."
        )


async def read_json(request: Request, source: str = "callback") -> dict[str, Any]:
    """The body as a JSON object: 400 when it is not JSON, 422 when it is not an object."""
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reject(source, "invalid_json")
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from exc
    if not isinstance(data, dict):
        reject(source, "invalid")
        raise ApiError(
            422,
            "invalid",
            "The body must be a JSON object.",
            details=[{"field": "", "message": "must be a JSON object", "type": "dict_type"}],
        )
    return data


def validate(model: type[M], data: dict[str, Any], source: str = "callback") -> M:
    """``model`` from ``data``, or 422 naming each wrong field (wire names, dotted paths)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {
                "field": ".".join(str(p) for p in err["loc"]),
                "message": err["msg"],
                "type": err["type"],
            }
            for err in exc.errors(include_url=False, include_input=False)
        ]
        reject(source, "invalid")
        fields = ", ".join(d["field"] or "body" for d in details[:5])
        raise ApiError(422, "invalid", f"Invalid content: {fields}.", details=details) from exc


async def parse_body(request: Request, model: type[M]) -> M:
    """400 for invalid JSON, 422 with the fields for a body of the wrong shape."""
    return validate(model, await read_json(request))


def unavailable() -> ApiError:
    return ApiError(503, "kafka_unavailable", "The pipeline cannot take uplinks right now; retry.")


@asynccontextmanager
async def pipeline_errors(source: str) -> AsyncIterator[None]:
    """Kafka or the database away: 503, so that the network retries (nothing is lost)."""
    try:
        yield
    except PublishFailed as exc:
        log.warning("%s callback refused, Kafka unavailable: %s", source, exc)
        raise unavailable() from exc
    except psycopg.Error as exc:
        log.warning("%s callback refused, database unavailable: %r", source, exc)
        reject(source, "database_unavailable")
        raise ApiError(
            503, "database_unavailable", "The pipeline cannot take uplinks right now; retry."
        ) from exc


def ingest_publisher(ctx: ApiContext) -> Publisher:
    """The context's publisher, re-creating the topics after a Kafka outage (one per app); what
    the callbacks of a claim group publish as they resume together goes to it as one call
    (:class:`services.platform.Coalescing`)."""
    publisher = ctx.ingest_publisher
    if publisher is None:
        real = isinstance(ctx.publisher, KafkaPublisher)
        repair = TopicRepair(
            ctx.publisher,
            bootstrap=ctx.settings.kafka if real else None,
            topics=[ctx.settings.topic(t) for t in ALL_TOPICS],
            partitions=ctx.settings.partitions,
        )
        publisher = Coalescing(repair)
        ctx.ingest_publisher = publisher
    return publisher


def _late(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a callback answered 503 for its deadline then failed: %r", task.exception())


async def bounded(ctx: ApiContext, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result, or 503 ``pipeline_timeout`` once ``callback_deadline`` has passed.

    Networks give up after a few seconds (Sigfox: 10, and a missed downlink request is lost):
    the answer must not wait for a frozen database or a stalled broker, and a cancelled query
    can itself take seconds to cancel. So the work runs as its own task and is left to finish
    in the background after the deadline: either it completes (the uplink is accepted: the
    network's retry is a duplicate), or it fails and releases its claim (the retry goes
    through); its journal row covers a process that dies meanwhile.
    """
    loop = asyncio.get_running_loop()
    task = loop.create_task(work)
    # The wait ends when the task does or at the deadline, and never cancels the task (as
    # ``asyncio.wait`` with a timeout, for half its cost per callback: a waiter, a timer).
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    task.add_done_callback(wake)
    timer = loop.call_later(ctx.settings.callback_deadline, wake)
    try:
        await waiter
    finally:
        timer.cancel()
    if not task.done():
        task.remove_done_callback(wake)
        task.add_done_callback(_late)
        raise ApiError(
            503, "pipeline_timeout", "The pipeline did not take the uplink in time; retry."
        )
    return task.result()


def claim_groups(ctx: ApiContext) -> ClaimGroups | None:
    """The context's grouped claims (``HIVEPIPE_CLAIM_SLOTS``; None when 0), made once."""
    if ctx.claims is None and ctx.settings.claim_slots > 0:
        ctx.claims = ClaimGroups(
            ctx.pool,
            window_seconds=ctx.settings.dedup_window_seconds,
            durable=ctx.settings.intake_journal,
            slots=ctx.settings.claim_slots,
            timeout=DB_TIMEOUT,
            linger=ctx.settings.claim_linger_ms / 1000,
        )
    return ctx.claims


async def accept(ctx: ApiContext, envelope: UplinkEnvelope, dedup_key: str) -> Accepted:
    """Deduplicate, check the device, publish on ``uplinks`` (or ``dead-letter``), within
    the callback's deadline (:func:`bounded`)."""
    return await bounded(
        ctx,
        accept_uplink(
            envelope,
            dedup_key=dedup_key,
            pool=ctx.pool,
            publisher=ingest_publisher(ctx),
            topic=ctx.settings.topic(TOPIC_UPLINKS),
            window_seconds=ctx.settings.dedup_window_seconds,
            dead_letter_topic=ctx.settings.topic(TOPIC_DEAD_LETTER),
            keep_journal=ctx.settings.intake_journal,
            claims=claim_groups(ctx),
        ),
    )


async def accept_event(ctx: ApiContext, event: DeviceEvent, *, source: str) -> Accepted:
    """Store and publish a network's device event, once per distinct event."""
    canonical = orjson.dumps(event.to_dict(), option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(canonical).hexdigest()[:32]
    return await bounded(
        ctx,
        accept_device_event(
            event,
            source=source,
            dedup_key=f"event:{source}:{event.type}:{digest}",
            pool=ctx.pool,
            publisher=ingest_publisher(ctx),
            topic=ctx.settings.topic(TOPIC_DEVICE_EVENTS),
            dead_letter_topic=ctx.settings.topic(TOPIC_DEAD_LETTER),
            directory=ctx.directory,
            window_seconds=ctx.settings.dedup_window_seconds,
        ),
    )


def count_event(source: str, kind: str) -> None:
    metrics.CALLBACK_EVENTS.labels(source, kind).inc()


async def keep_body(ctx: ApiContext, request: Request, source: str, error: str) -> None:
    """Keep a callback's body on ``dead-letter`` (``{"raw", "source", "query", "error"}``,
    key empty), every credential redacted (:mod:`ingest.http.redaction`): the callback token
    may have come in the query string. Raises ``PublishFailed`` when Kafka does not take it."""
    raw = await request.body()  # Starlette keeps the body it read
    secrets = (ctx.settings.token,)
    value = {
        "raw": redact_text(raw.decode("utf-8", "replace"), secrets=secrets),
        "source": source,
        "query": redact_query(str(request.url.query), secrets=secrets),
        "error": error,
    }
    topic = ctx.settings.topic(TOPIC_DEAD_LETTER)
    await ingest_publisher(ctx).publish(topic, [("", dumps(value))])


async def keep_refused(ctx: ApiContext, request: Request, source: str, exc: ApiError) -> None:
    """Keep a body refused as malformed (400 or 422, once the token was accepted) on
    ``dead-letter`` (:func:`keep_body`): the answer tells the network what is wrong, and the
    uplink is not lost (ChirpStack's HTTP integration does not retry). Best effort: with Kafka
    away the refusal still goes out, and this is logged."""
    if exc.status not in (400, 422):
        return
    try:
        await keep_body(ctx, request, source, f"{exc.code}: {exc.message}")
    except Exception as publish_exc:
        log.warning("refused %s callback could not be kept: %r", source, publish_exc)
        return
    metrics.DEAD_LETTERS.labels(exc.code).inc()


def json_response(body: Any) -> OrjsonResponse:
    return OrjsonResponse(body, status_code=200)
