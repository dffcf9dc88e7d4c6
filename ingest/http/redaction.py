"""What of a callback may be kept or shown: its query string and body with every credential
redacted. The callback token is the deployment's one secret (whoever has it can forge an uplink
for any device), and networks are often configured with it in the URL (``?token=``): nothing
that reaches ``dead-letter``, a log, an event or an error body may carry it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_plus

#: What replaces a credential.
REDACTED = "redacted"

# A parameter whose name says it holds a credential (after lower-casing, ``-`` read as ``_``):
# ``token``, ``apikey``, ``api_key``, ``key``, ``secret``, ``password``, ``access_token``,
# ``x_callback_token``, ``client_secret``, ``auth``, ``sig``...
_CREDENTIAL_NAME = re.compile(
    r"token|secret|passw|pwd|api_?key|credential|signature|authori[sz]ation"
    r"|^(key|auth|sig|pass)$|_key$"
)


def is_credential_name(name: str) -> bool:
    """Whether a query parameter of this name holds a credential."""
    return _CREDENTIAL_NAME.search(name.lower().replace("-", "_")) is not None


def _holds_secret(text: str, secrets: Iterable[str]) -> bool:
    return any(secret and secret in text for secret in secrets)


def redact_query(query: str, *, secrets: Iterable[str] = ()) -> str:
    """``query`` with the value of every credential parameter replaced by ``redacted``, and
    every parameter that holds one of ``secrets`` (percent-encoded or not) too; the other
    parameters are kept as they came."""
    secrets = tuple(secrets)
    kept: list[str] = []
    for part in query.split("&"):
        name, sep, value = part.partition("=")
        decoded_name = unquote_plus(name)
        if _holds_secret(part, secrets) or _holds_secret(unquote_plus(part), secrets):
            in_name = _holds_secret(name, secrets) or _holds_secret(decoded_name, secrets)
            kept.append(REDACTED if in_name or not sep else f"{name}={REDACTED}")
        elif sep and value and is_credential_name(decoded_name):
            kept.append(f"{name}={REDACTED}")
        else:
            kept.append(part)
    return "&".join(kept)


def redact_text(text: str, *, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each of ``secrets`` replaced by ``redacted``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
