"""The ports of webhook delivery: what it needs from outside, as protocols. The sender
(:class:`WebhookSender`: the HTTP adapter in :mod:`services.webhooks.http_sender`, a fake in
:mod:`services.webhooks.fake_sender`), the database (:class:`DeliveryStore`:
:mod:`services.webhooks.delivery_store`, a fake in tests) and the dead-letter topic
(:data:`PublishDeadLetters`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Container, Mapping, Sequence
from typing import Protocol

from services.platform import Message
from services.webhooks.model import Delivery, DeliveryResult, Hook, Settlement

Headers = Mapping[str, str] | Callable[[], Mapping[str, str]]


class WebhookSender(Protocol):
    """Sends one signed webhook request and says how it went; never raises for the receiver's
    or the network's faults."""

    async def send(self, url: str, body: bytes, headers: Headers) -> DeliveryResult:
        """POST ``body`` with ``headers`` to ``url``.

        ``headers`` may be a function returning them: it is called once the request has its
        slot, just before sending, so that a signature's timestamp is not stale after a wait
        behind a slow receiver's queue.
        """
        ...


class DeliveryStore(Protocol):
    """What delivering needs of the database (``delivery_store.PgDeliveryStore``; a fake in
    tests)."""

    @property
    def failing(self) -> Container[int]:
        """Webhooks whose last known attempt failed."""
        ...

    async def active_hooks(self, devices: set[str]) -> Mapping[str, Sequence[Hook]]:
        """The active webhooks of each device (cached: at most one query per call)."""
        ...

    async def claim_retries(
        self, *, limit: int, lease: float, exclude: Collection[int] = ()
    ) -> tuple[list[Delivery], list[tuple[Delivery, str]]]:
        """Claim due retries, none of the webhooks in ``exclude``: those to attempt, and those
        of disabled webhooks (with why)."""
        ...

    async def persist(self, settlement: Settlement) -> list[tuple[int, str]]:
        """Write a settled batch; returns the webhooks it disabled as (id, device)."""
        ...


PublishDeadLetters = Callable[[Sequence[Message]], Awaitable[None]]
