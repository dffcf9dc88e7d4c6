"""Where the running installation's servers are: ``hivepipe up`` records their URLs in
``{HIVEPIPE_DATA_DIR}/urls.json`` (the embedded servers listen on ports picked at the first start
and kept while they are free), and the administration commands use the configured URL, else the
recorded one.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import typer

from services.platform import Settings

URLS_FILE = "urls.json"


def write_urls(data_dir: Path, urls: dict[str, str | None]) -> Path:
    """Record the URLs ``hivepipe up`` uses (mode 0600: a URL may carry a password)."""
    path = data_dir / URLS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(urls, out, indent=2)
    return path


def previous_port(data_dir: Path, name: str) -> int | None:
    """The port of embedded server ``name`` (``database_url``, ``kafka``, ``mqtt_url``) at the
    installation's last start, while it is free: ``hivepipe up`` started again (after a crash,
    a power cut) keeps its servers' addresses, so clients and devices find them again."""
    try:
        url = json.loads((data_dir / URLS_FILE).read_text()).get(name)
        port = urlsplit(url if "://" in url else f"tcp://{url}").port
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if not port:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers bind (SO_REUSEADDR): a port left in TIME_WAIT by a killed one is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return None  # taken by something else now: a new one is picked
    return port


def installation_url(settings: Settings, name: str) -> str | None:
    """Setting ``name`` (``database_url``, ``kafka``) from the environment, else the running
    embedded installation's (``urls.json``), else None."""
    configured = getattr(settings, name)
    if configured:
        return str(configured)
    try:
        url = json.loads((settings.data_dir / URLS_FILE).read_text()).get(name)
    except (OSError, ValueError):
        return None
    return str(url) if url else None


def database_url(settings: Settings | None = None) -> str:
    """``HIVEPIPE_DATABASE_URL``, else the running embedded installation's (``urls.json``).

    Without either, it says so on stderr and exits with code 1."""
    settings = settings or Settings.for_administration()
    url = installation_url(settings, "database_url")
    if not url:
        path = settings.data_dir / URLS_FILE
        typer.echo(
            f"error: No database: set HIVEPIPE_DATABASE_URL, or start `hivepipe up`"
            f" (it writes {path}).",
            err=True,
        )
        raise typer.Exit(1)
    return str(url)
