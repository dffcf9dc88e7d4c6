"""The fake webhook sender: an in-memory :class:`services.webhooks.ports.WebhookSender` that
records every request and answers as told, for unit tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from services.webhooks.model import DeliveryResult
from services.webhooks.ports import Headers

_DELIVERED = DeliveryResult("delivered", 200, 0.0)


@dataclass(frozen=True, slots=True)
class SentRequest:
    """A request the fake sender received."""

    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class FakeWebhookSender:
    """In-memory :class:`WebhookSender` for unit tests.

    Records every request in ``sent`` and answers with ``answer(request)`` when ``answer`` is
    a function, else with the next result of ``answers``, and ``delivered`` (200) after those.
    """

    answers: Iterable[DeliveryResult] = ()
    answer: Callable[[SentRequest], DeliveryResult] | None = None
    sent: list[SentRequest] = field(default_factory=list)
    _queue: Iterator[DeliveryResult] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._queue = iter(self.answers)

    async def send(self, url: str, body: bytes, headers: Headers) -> DeliveryResult:
        request = SentRequest(url, body, dict(headers() if callable(headers) else headers))
        self.sent.append(request)
        if self.answer is not None:
            return self.answer(request)
        return next(self._queue, _DELIVERED)
