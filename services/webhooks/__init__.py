"""Webhooks: each stored data point is POSTed to the webhooks of its device.

Building blocks, wired by the delivery worker: URL and address rules (:mod:`.urls`), a cached
resolver (:mod:`.resolver`), Standard Webhooks signatures (:mod:`.signing`), the sender port
with its HTTP adapter and fake (:mod:`.sender`), and the retry/disable policy (:mod:`.policy`).
See ``docs/webhooks.md``.
"""

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
from services.webhooks.resolver import CachingResolver, ResolutionError, system_resolve
from services.webhooks.sender import (
    DEFAULT_SENDER_CONFIG,
    DeliveryResult,
    FakeWebhookSender,
    Headers,
    HttpWebhookSender,
    RefusedAddress,
    SenderConfig,
    SentRequest,
    WebhookSender,
)
from services.webhooks.signing import generate_secret, message_id, signed_headers
from services.webhooks.urls import (
    WebhookRules,
    WebhookURL,
    WebhookURLError,
    address_problem,
    check_address,
    parse_cidrs,
    parse_webhook_url,
    validate_webhook_url,
)

__all__ = [
    "DEFAULT_DISABLE_POLICY",
    "DEFAULT_RETRY_POLICY",
    "DEFAULT_SCHEDULE",
    "DEFAULT_SENDER_CONFIG",
    "CachingResolver",
    "DeliveryResult",
    "DisablePolicy",
    "EndpointHealth",
    "FakeWebhookSender",
    "Headers",
    "HttpWebhookSender",
    "NextStep",
    "Outcome",
    "RefusedAddress",
    "ResolutionError",
    "RetryPolicy",
    "SenderConfig",
    "SentRequest",
    "WebhookRules",
    "WebhookSender",
    "WebhookURL",
    "WebhookURLError",
    "address_problem",
    "check_address",
    "classify_status",
    "generate_secret",
    "message_id",
    "next_step",
    "parse_cidrs",
    "parse_retry_after",
    "parse_webhook_url",
    "retry_delay",
    "should_disable",
    "signed_headers",
    "system_resolve",
    "validate_webhook_url",
]
