"""The Sigfox data callback: liberal parsing of the customer's template into an envelope."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.platform import UplinkEnvelope

_HEX = re.compile(r"^[0-9a-fA-F]*$")


class SigfoxCallback(BaseModel):
    """A Sigfox uplink or downlink request; quoted numbers and booleans are accepted.

    ``device`` and ``data`` must be hex (``data`` 0..12 bytes); ``time`` is Unix seconds;
    ``station``, ``rssi``, ``snr``, ``deviceTypeId`` are optional; ``longPolling`` is ignored.
    ``seqNumber`` is optional too: some templates in the wild send only ``device``, ``time``
    and ``data`` (see :attr:`dedup_key`).
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    device: str = Field(min_length=1, max_length=8)
    time: int = Field(ge=0, lt=2**32)
    data: str = Field(default="", max_length=24)
    seq_number: int | None = Field(default=None, alias="seqNumber", ge=0, lt=2**32)
    ack: bool = False
    station: str | None = Field(default=None, max_length=64)
    rssi: float | None = Field(default=None, allow_inf_nan=False)
    snr: float | None = Field(default=None, allow_inf_nan=False)
    device_type_id: str | None = Field(default=None, alias="deviceTypeId", max_length=64)

    @field_validator("device")
    @classmethod
    def _device_hex(cls, value: str) -> str:
        if not _HEX.fullmatch(value):
            raise ValueError("device must be a hexadecimal Sigfox id")
        return value.upper()

    @field_validator("data")
    @classmethod
    def _data_hex(cls, value: str) -> str:
        if not _HEX.fullmatch(value) or len(value) % 2:
            raise ValueError("data must be an even number of hexadecimal digits (0..12 bytes)")
        return value.lower()

    def envelope(self) -> UplinkEnvelope:
        """The raw envelope published on ``uplinks``; ``received`` is the network time."""
        meta: dict[str, Any] = {} if self.seq_number is None else {"seq": self.seq_number}
        for key in ("station", "rssi", "snr"):
            value = getattr(self, key)
            if value is not None:
                meta[key] = value
        if self.device_type_id:
            meta["device_type"] = self.device_type_id
        return UplinkEnvelope(
            source="sigfox",
            device=self.device,
            received=float(self.time),
            payload_hex=self.data,
            meta=meta,
            downlink_requested=self.ack,
        )

    @property
    def dedup_key(self) -> str:
        """Sigfox identifies an uplink by (device, seqNumber): ``sigfox:{device}:{seq}``.

        Without ``seqNumber``, by (device, time, data): ``sigfox:{device}:at:{time}:{data}``.
        Every copy of one callback (the network's retries) carries the same network time; a
        device cannot send two frames within one second (a frame's radio transmission, with
        its repetitions, takes longer), so two distinct uplinks never share the key.
        """
        if self.seq_number is None:
            return f"sigfox:{self.device}:at:{self.time}:{self.data}"
        return f"sigfox:{self.device}:{self.seq_number}"


def downlink_answer(device: str, frame_hex: str) -> dict[str, dict[str, str]]:
    """The 200 body that carries a downlink: ``{"1A2B3C": {"downlinkData": "<16 hex>"}}``."""
    return {device: {"downlinkData": frame_hex}}
