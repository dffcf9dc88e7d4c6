"""The Things Stack (v3) webhook: uplinks become envelopes, downlink reports device events.

One webhook URL receives every message type of the application (``ApplicationUp``): exactly one
of ``uplink_message``, ``join_accept``, ``downlink_ack``, ``downlink_nack``, ``downlink_sent``,
``downlink_failed``, ``downlink_queued``, ``downlink_queue_invalidated``, ``location_solved``,
``service_data``, ``uplink_normalized`` is set. Empty, zero and false fields are omitted.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.platform import DeviceEvent, UplinkEnvelope
from services.uplinks.lorawan import DEV_EUI, base64_to_hex, best_reception, parse_rfc3339

#: TTS message type -> device event type (``downlink_sent_ns``: the network transmitted it;
#: ``downlink_sent`` is the pipeline's own "handed to the network").
DOWNLINK_EVENTS: dict[str, str] = {
    "downlink_ack": "downlink_ack",
    "downlink_nack": "downlink_nack",
    "downlink_sent": "downlink_sent_ns",
    "downlink_failed": "downlink_failed",
    "downlink_queued": "downlink_queued",
    "downlink_queue_invalidated": "downlink_queue_invalidated",
}
#: Accepted and counted, nothing stored.
OTHER_MESSAGES = (
    "join_accept",
    "location_solved",
    "service_data",
    "uplink_normalized",
)
UPLINK = "uplink_message"
MESSAGE_TYPES = (UPLINK, *DOWNLINK_EVENTS, *OTHER_MESSAGES)


def message_type(body: dict[str, Any]) -> str | None:
    """The message type of an ``ApplicationUp`` body (None when it is none we know)."""
    for name in MESSAGE_TYPES:
        if name in body:
            return name
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ApplicationIds(_Model):
    application_id: str | None = None


class EndDeviceIds(_Model):
    device_id: str = Field(min_length=1, max_length=128)
    dev_eui: str | None = None
    dev_addr: str | None = Field(default=None, max_length=64)
    application_ids: ApplicationIds | None = None

    @field_validator("dev_eui")
    @classmethod
    def _dev_eui(cls, value: str | None) -> str | None:
        if value is not None and not DEV_EUI.fullmatch(value):
            raise ValueError("dev_eui must be 16 hexadecimal digits")
        return None if value is None else value.upper()


def _time(value: str | None) -> float | None:
    return None if value is None else parse_rfc3339(value)


class _Message(_Model):
    """What every ``ApplicationUp`` carries."""

    end_device_ids: EndDeviceIds
    received_at: str | None = None
    correlation_ids: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("received_at")
    @classmethod
    def _received_at(cls, value: str | None) -> str | None:
        _time(value)
        return value

    def device(self) -> str:
        """The pipeline's device id: the DevEUI, upper-case (422 ``end_device_ids.dev_eui``)."""
        dev_eui = self.end_device_ids.dev_eui
        assert dev_eui is not None  # checked by the subclasses that need it
        return dev_eui


class _NeedsDevEui(_Message):
    @field_validator("end_device_ids")
    @classmethod
    def _has_dev_eui(cls, value: EndDeviceIds) -> EndDeviceIds:
        if value.dev_eui is None:
            raise ValueError("dev_eui is required: the pipeline identifies devices by DevEUI")
        return value


class GatewayIds(_Model):
    gateway_id: str | None = Field(default=None, max_length=128)


class RxMetadata(_Model):
    gateway_ids: GatewayIds | None = None
    rssi: float | None = Field(default=None, allow_inf_nan=False)
    snr: float | None = Field(default=None, allow_inf_nan=False)


class UplinkMessage(_Model):
    f_port: int = Field(default=0, ge=0, le=255)
    f_cnt: int = Field(default=0, ge=0, lt=2**32)
    frm_payload: str = ""
    rx_metadata: list[RxMetadata] = Field(default_factory=list, max_length=256)
    received_at: str | None = None
    session_key_id: str | None = Field(default=None, max_length=128)
    confirmed: bool = False

    @field_validator("frm_payload")
    @classmethod
    def _base64(cls, value: str) -> str:
        return base64_to_hex(value)  # stored as hex from here on

    @field_validator("received_at")
    @classmethod
    def _received_at(cls, value: str | None) -> str | None:
        _time(value)
        return value


class TtnUplink(_NeedsDevEui):
    """An uplink message: ``uplink_message.frm_payload`` (base64) and its metadata."""

    uplink_message: UplinkMessage

    def envelope(self) -> UplinkEnvelope:
        """The raw envelope; ``received`` is the top-level ``received_at`` (ms)."""
        up = self.uplink_message
        received = _time(self.received_at) or _time(up.received_at) or round(time.time(), 3)
        meta: dict[str, Any] = {"f_cnt": up.f_cnt, "f_port": up.f_port}
        meta.update(
            best_reception(
                [
                    (r.gateway_ids.gateway_id if r.gateway_ids else None, r.rssi, r.snr)
                    for r in up.rx_metadata
                ]
            )
        )
        ids = self.end_device_ids
        for key, value in (
            ("device_id", ids.device_id),
            ("dev_addr", ids.dev_addr),
            ("application_id", ids.application_ids.application_id if ids.application_ids else None),
        ):
            if value:
                meta[key] = value
        if up.confirmed:
            meta["confirmed"] = True
        return UplinkEnvelope(
            source="ttn",
            device=self.device(),
            received=received,
            payload_hex=up.frm_payload,
            meta=meta,
        )

    @property
    def dedup_key(self) -> str:
        """(DevEUI, f_cnt) and the session, so that a rejoin's f_cnt 0 is not a duplicate:
        ``session_key_id``; without it (older stacks, some forwarders) the DevAddr, which a
        join changes (``dev_addr=...``); the frame counter alone only when neither is sent."""
        session = self.uplink_message.session_key_id
        if not session and self.end_device_ids.dev_addr:
            session = f"dev_addr={self.end_device_ids.dev_addr.upper()}"
        return f"lorawan:{self.device()}:{session or ''}:{self.uplink_message.f_cnt}"


class ErrorDetails(_Model):
    namespace: str | None = None
    name: str | None = None
    message_format: str | None = None
    code: int | None = None


class ApplicationDownlink(_Model):
    f_port: int | None = Field(default=None, ge=0, le=255)
    f_cnt: int | None = Field(default=None, ge=0, lt=2**32)
    frm_payload: str | None = Field(default=None, max_length=1024)
    confirmed: bool | None = None
    priority: str | None = Field(default=None, max_length=32)
    correlation_ids: list[str] | None = Field(default=None, max_length=64)

    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class DownlinkFailed(_Model):
    downlink: ApplicationDownlink | None = None
    error: ErrorDetails | None = None


class QueueInvalidated(_Model):
    downlinks: list[ApplicationDownlink] = Field(default_factory=list, max_length=256)
    last_f_cnt_down: int | None = Field(default=None, ge=0, lt=2**32)


class TtnDownlinkReport(_Message):
    """``downlink_ack``/``nack``/``sent``/``failed``/``queued``/``queue_invalidated``.

    TTS sends some of them (``downlink_failed``, for one) for a device identified by its
    ``device_id`` alone: such a report is still a valid message (a 4xx would make TTS count
    failed deliveries, and at last disable the webhook for every device), but it has no
    device of the pipeline's (:attr:`missing_device`)."""

    downlink_ack: ApplicationDownlink | None = None
    downlink_nack: ApplicationDownlink | None = None
    downlink_sent: ApplicationDownlink | None = None
    downlink_queued: ApplicationDownlink | None = None
    downlink_failed: DownlinkFailed | None = None
    downlink_queue_invalidated: QueueInvalidated | None = None

    @property
    def missing_device(self) -> str | None:
        """``missing_dev_eui`` when the report names no DevEUI (keep it on ``dead-letter``
        with that reason), else None (:meth:`device_event`)."""
        return "missing_dev_eui" if self.end_device_ids.dev_eui is None else None

    def device_event(self, kind: str) -> DeviceEvent:
        """The device event of this report (``kind`` is its TTS message type); only for a
        report that names its DevEUI (:attr:`missing_device` is None)."""
        data: dict[str, Any] = {"source": "ttn"}
        report = getattr(self, kind)
        if isinstance(report, ApplicationDownlink):
            data.update(report.fields())
        elif isinstance(report, DownlinkFailed):
            if report.downlink is not None:
                data.update(report.downlink.fields())
            if report.error is not None:
                data["error"] = report.error.model_dump(exclude_none=True)
        elif isinstance(report, QueueInvalidated):
            data["downlinks"] = len(report.downlinks)
            if report.last_f_cnt_down is not None:
                data["last_f_cnt_down"] = report.last_f_cnt_down
        if self.correlation_ids:
            data["message_correlation_ids"] = self.correlation_ids
        return DeviceEvent(
            device=self.device(),
            time=_time(self.received_at) or round(time.time(), 3),
            type=DOWNLINK_EVENTS[kind],
            data=data,
        )


class TtnOther(_Message):
    """Any other message: only its identifiers are checked."""
