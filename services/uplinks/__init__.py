"""What networks and devices send, up to one envelope on ``uplinks``: parsing each network's
format (Sigfox, The Things Stack, ChirpStack, MQTT), deduplication, accepting (publish and
wait for Kafka), and the synchronous Sigfox downlink answer."""

from services.uplinks import chirpstack, dedup, journal, ttn
from services.uplinks.accept import (
    DB_TIMEOUT,
    Accepted,
    accept_device_event,
    accept_uplink,
    dead_letter_message,
    envelope_fields,
)
from services.uplinks.claims import Claim, ClaimGroups
from services.uplinks.journal import journal_entry
from services.uplinks.mqtt_messages import Rejected, mqtt_uplink, rejected, subscriptions
from services.uplinks.sigfox import SigfoxCallback, downlink_answer
from services.uplinks.sigfox_downlink import (
    DeviceUnavailable,
    DownlinkAnswer,
    answer_downlink_request,
)

__all__ = [
    "Accepted",
    "Claim",
    "ClaimGroups",
    "DB_TIMEOUT",
    "DeviceUnavailable",
    "DownlinkAnswer",
    "Rejected",
    "SigfoxCallback",
    "accept_device_event",
    "accept_uplink",
    "answer_downlink_request",
    "chirpstack",
    "dead_letter_message",
    "dedup",
    "downlink_answer",
    "envelope_fields",
    "journal",
    "journal_entry",
    "mqtt_uplink",
    "rejected",
    "subscriptions",
    "ttn",
]
