"""Webhooks: each stored data point is POSTed to the webhooks of its device.

Building blocks, wired by the delivery worker: URL rules, address checks and parsing
(:mod:`.url_rules`, :mod:`.addresses`, :mod:`.url_parsing`), a cached resolver
(:mod:`.resolver`), Standard Webhooks signatures (:mod:`.signing`), the sender port
(:mod:`.ports`) with its HTTP adapter (:mod:`.http_sender`, on the HTTP/1.1 client of
:mod:`.http1` with the pinned connections of :mod:`.pinning`) and fake (:mod:`.fake_sender`), and
the retry/disable policy (:mod:`.policy`). See ``docs/webhooks.md``.
"""

from services.webhooks.addresses import address_problem, check_address
from services.webhooks.attempts import delivery_body, list_deliveries
from services.webhooks.batches import (
    Batch,
    finish_batch,
    prepare_fresh,
    prepare_retries,
    send_batch,
)
from services.webhooks.delivery_store import PgDeliveryStore
from services.webhooks.directory import WebhookDirectory
from services.webhooks.fake_sender import FakeWebhookSender, SentRequest
from services.webhooks.http_sender import DEFAULT_SENDER_CONFIG, HttpWebhookSender, SenderConfig
from services.webhooks.in_flight import InFlight
from services.webhooks.lanes import Lanes
from services.webhooks.model import DeliveryResult
from services.webhooks.pinning import RefusedAddress
from services.webhooks.policy import (
    DEFAULT_DISABLE_POLICY,
    DEFAULT_RETRY_POLICY,
    DEFAULT_SCHEDULE,
    DisablePolicy,
    EndpointHealth,
    NextStep,
    Outcome,
    RetryPolicy,
    classify_status,
    next_step,
    parse_retry_after,
    retry_delay,
    should_disable,
)
from services.webhooks.ports import Headers, WebhookSender
from services.webhooks.registrations import (
    TooManyWebhooks,
    WebhookExists,
    create_webhook,
    delete_webhook,
    get_webhook,
    list_webhooks,
    webhook_body,
)
from services.webhooks.resolver import CachingResolver, ResolutionError, system_resolve
from services.webhooks.retry_queue import RetryBacklog, retry_backlog, schedule_redelivery
from services.webhooks.signing import generate_secret, message_id, signed_headers
from services.webhooks.url_parsing import WebhookURL, parse_webhook_url, validate_webhook_url
from services.webhooks.url_rules import WebhookRules, WebhookURLError, parse_cidrs

__all__ = [
    "Batch",
    "CachingResolver",
    "DEFAULT_DISABLE_POLICY",
    "DEFAULT_RETRY_POLICY",
    "DEFAULT_SCHEDULE",
    "DEFAULT_SENDER_CONFIG",
    "DeliveryResult",
    "DisablePolicy",
    "EndpointHealth",
    "FakeWebhookSender",
    "Headers",
    "HttpWebhookSender",
    "InFlight",
    "Lanes",
    "NextStep",
    "Outcome",
    "PgDeliveryStore",
    "RefusedAddress",
    "ResolutionError",
    "RetryBacklog",
    "RetryPolicy",
    "SenderConfig",
    "SentRequest",
    "TooManyWebhooks",
    "WebhookDirectory",
    "WebhookExists",
    "WebhookRules",
    "WebhookSender",
    "WebhookURL",
    "WebhookURLError",
    "address_problem",
    "check_address",
    "classify_status",
    "create_webhook",
    "delete_webhook",
    "delivery_body",
    "finish_batch",
    "generate_secret",
    "get_webhook",
    "list_deliveries",
    "list_webhooks",
    "message_id",
    "next_step",
    "parse_cidrs",
    "parse_retry_after",
    "parse_webhook_url",
    "prepare_fresh",
    "prepare_retries",
    "retry_backlog",
    "retry_delay",
    "schedule_redelivery",
    "send_batch",
    "should_disable",
    "signed_headers",
    "system_resolve",
    "validate_webhook_url",
    "webhook_body",
]
