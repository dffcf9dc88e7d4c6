"""Standard Webhooks signatures: secrets, stable message ids, and the three signed headers.

A receiver verifies a delivery with ``standardwebhooks.Webhook(secret).verify(body, headers)``
and deduplicates on ``webhook-id``, which is the same for every attempt of one data point.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import UTC, datetime
from functools import lru_cache

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format prefix, not a secret
#: Bytes of randomness in a new secret (Standard Webhooks asks for 24 to 64).
SECRET_BYTES = 32
USER_AGENT = "hivepipe-webhooks/1"


def generate_secret() -> str:
    """A new signing secret in Standard Webhooks form: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _canonical_time(time: float) -> str:
    # As on the wire (DataPoint.to_dict): whole seconds as integers, others as repr(float).
    value = float(time)
    return str(int(value)) if value.is_integer() else repr(value)


def message_id(*, webhook_id: str | int, device: str, metric: str, time: float) -> str:
    """The ``webhook-id`` of one data point sent to one webhook, stable across retries.

    Derived from (webhook id, device, metric, time) only, so every attempt, and a re-run of
    the same point after a crash, carries the same id: ``msg_`` + 32 base32 characters.
    """
    key = "\x1f".join(("hivepipe.v1", str(webhook_id), device, metric, _canonical_time(time)))
    digest = hashlib.sha256(key.encode("utf-8")).digest()[:20]
    return "msg_" + base64.b32encode(digest).decode("ascii").lower()


@lru_cache(maxsize=4096)
def _signer(secret: str) -> Webhook:
    return Webhook(secret)


def signed_headers(
    *, secret: str, msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The request headers of one delivery attempt: content type, user agent and signature.

    ``timestamp`` (Unix seconds, default now) must be the attempt's time: receivers refuse a
    timestamp more than 5 minutes away from their clock, so sign each attempt just before
    sending it, not once per data point.
    """
    ts = int(datetime.now(UTC).timestamp()) if timestamp is None else timestamp
    signature = _signer(secret).sign(
        msg_id=msg_id, timestamp=datetime.fromtimestamp(ts, tz=UTC), data=body.decode("utf-8")
    )
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature,
    }
