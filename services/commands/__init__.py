"""Device commands: validating a command's payload, and publishing it on MQTT (the publisher
port, its paho adapter and fake)."""

from services.commands.publishing import (
    BrokerUnavailable,
    CommandPublisher,
    NoBroker,
    PahoCommandPublisher,
    command_record,
    record_command,
    send_command,
)
from services.commands.validation import CommandInvalid

__all__ = [
    "BrokerUnavailable",
    "CommandInvalid",
    "CommandPublisher",
    "NoBroker",
    "PahoCommandPublisher",
    "command_record",
    "record_command",
    "send_command",
]
