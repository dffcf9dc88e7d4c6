"""ChirpStack v4 HTTP integration (JSON encoding): ``POST ...?event=<type>``.

``up`` becomes an uplink envelope, ``ack`` and ``txack`` become device events; ``join``,
``status``, ``log``, ``location`` and ``integration`` are accepted and counted; an event name
we do not know is accepted and counted too (a newer ChirpStack may add some).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.platform import DeviceEvent, UplinkEnvelope
from services.uplinks.lorawan import DEV_EUI, base64_to_hex, best_reception, parse_rfc3339

UPLINK = "up"
DEVICE_EVENTS = ("ack", "txack")
IGNORED = ("join", "status", "log", "location", "integration")
KNOWN_EVENTS = (UPLINK, *DEVICE_EVENTS, *IGNORED)


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DeviceInfo(_Model):
    dev_eui: str = Field(alias="devEui")
    device_name: str | None = Field(default=None, alias="deviceName", max_length=256)
    application_id: str | None = Field(default=None, alias="applicationId", max_length=64)
    tenant_id: str | None = Field(default=None, alias="tenantId", max_length=64)

    @field_validator("dev_eui")
    @classmethod
    def _dev_eui(cls, value: str) -> str:
        if not DEV_EUI.fullmatch(value):
            raise ValueError("devEui must be 16 hexadecimal digits")
        return value.upper()


class _Event(_Model):
    device_info: DeviceInfo = Field(alias="deviceInfo")
    time: str | None = None

    @field_validator("time")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rfc3339(value)
        return value

    @property
    def received(self) -> float:
        """The event's ``time`` in Unix seconds (ms), or now when it is absent."""
        return round(time.time(), 3) if self.time is None else parse_rfc3339(self.time)


class RxInfo(_Model):
    gateway_id: str | None = Field(default=None, alias="gatewayId", max_length=64)
    rssi: float | None = Field(default=None, allow_inf_nan=False)
    snr: float | None = Field(default=None, allow_inf_nan=False)


class ChirpstackUp(_Event):
    """An ``up`` event; ``data`` is base64 (absent for an empty payload)."""

    deduplication_id: str | None = Field(
        default=None, alias="deduplicationId", min_length=1, max_length=64
    )
    dev_addr: str | None = Field(default=None, alias="devAddr", max_length=16)
    f_cnt: int = Field(default=0, alias="fCnt", ge=0, lt=2**32)
    f_port: int = Field(default=0, alias="fPort", ge=0, le=255)
    confirmed: bool = False
    data: str = ""
    rx_info: list[RxInfo] = Field(default_factory=list, alias="rxInfo", max_length=256)

    @field_validator("data")
    @classmethod
    def _base64(cls, value: str) -> str:
        return base64_to_hex(value)  # stored as hex from here on

    def envelope(self) -> UplinkEnvelope:
        """The raw envelope; ``received`` is the event's ``time`` (ms)."""
        meta: dict[str, Any] = {"f_cnt": self.f_cnt, "f_port": self.f_port}
        meta.update(best_reception([(r.gateway_id, r.rssi, r.snr) for r in self.rx_info]))
        if self.dev_addr:
            meta["dev_addr"] = self.dev_addr
        if self.deduplication_id:
            meta["deduplication_id"] = self.deduplication_id
        if self.device_info.device_name:
            meta["device_name"] = self.device_info.device_name
        if self.confirmed:
            meta["confirmed"] = True
        return UplinkEnvelope(
            source="chirpstack",
            device=self.device_info.dev_eui,
            received=self.received,
            payload_hex=self.data,
            meta=meta,
        )

    @property
    def dedup_key(self) -> str:
        """ChirpStack's ``deduplicationId``; (DevEUI, fCnt) when it is absent."""
        if self.deduplication_id:
            return f"chirpstack:{self.deduplication_id}"
        return f"lorawan:{self.device_info.dev_eui}::{self.f_cnt}"


class ChirpstackAck(_Event):
    """``ack``: the device acknowledged (or not) a confirmed downlink."""

    queue_item_id: str | None = Field(default=None, alias="queueItemId", max_length=64)
    acknowledged: bool = False
    f_cnt_down: int = Field(default=0, alias="fCntDown", ge=0, lt=2**32)
    deduplication_id: str | None = Field(default=None, alias="deduplicationId", max_length=64)

    def device_event(self) -> DeviceEvent:
        """``downlink_ack`` (or ``downlink_nack`` when not acknowledged)."""
        data: dict[str, Any] = {
            "source": "chirpstack",
            "acknowledged": self.acknowledged,
            "fCntDown": self.f_cnt_down,
        }
        if self.queue_item_id:
            data["queueItemId"] = self.queue_item_id
        return DeviceEvent(
            device=self.device_info.dev_eui,
            time=self.received,
            type="downlink_ack" if self.acknowledged else "downlink_nack",
            data=data,
        )


class ChirpstackTxAck(_Event):
    """``txack``: a gateway transmitted a downlink."""

    queue_item_id: str | None = Field(default=None, alias="queueItemId", max_length=64)
    downlink_id: int | None = Field(default=None, alias="downlinkId", ge=0, lt=2**32)
    f_cnt_down: int = Field(default=0, alias="fCntDown", ge=0, lt=2**32)
    gateway_id: str | None = Field(default=None, alias="gatewayId", max_length=64)

    def device_event(self) -> DeviceEvent:
        """``downlink_sent_ns``: the network transmitted the downlink."""
        data: dict[str, Any] = {"source": "chirpstack", "fCntDown": self.f_cnt_down}
        for key, value in (
            ("queueItemId", self.queue_item_id),
            ("downlinkId", self.downlink_id),
            ("gatewayId", self.gateway_id),
        ):
            if value is not None:
                data[key] = value
        return DeviceEvent(
            device=self.device_info.dev_eui,
            time=self.received,
            type="downlink_sent_ns",
            data=data,
        )
