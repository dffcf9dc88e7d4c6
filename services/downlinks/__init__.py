"""LoRaWAN downlinks requested through the API: stored, pushed to the network server (The Things
Stack or ChirpStack clients), and the network's reports kept."""

from services.downlinks import network_servers, requests
from services.downlinks.network_servers import Downlink, NetworkServer
from services.downlinks.requests import (
    NetworkServerFailed,
    clear_downlinks,
    downlink_body,
    list_downlinks,
    queue_downlink,
)

__all__ = [
    "Downlink",
    "NetworkServer",
    "NetworkServerFailed",
    "clear_downlinks",
    "downlink_body",
    "list_downlinks",
    "network_servers",
    "queue_downlink",
    "requests",
]
