"""A TCP forwarder that a test can cut: the server behind it "goes away" (every connection is
closed, new ones are closed at once) and comes back, without touching the real server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._away = False
        self._flowing = threading.Event()
        self._flowing.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _connect(self) -> socket.socket:
        host, port = self._target
        if host.startswith("/"):  # a PostgreSQL Unix socket directory
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(f"{host}/.s.PGSQL.{port}")
            return upstream
        return socket.create_connection((host, port))

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._away:
                    client.close()
                    continue
                upstream = self._connect()
                self._open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """The server goes away: open connections are closed, new ones closed on arrival."""
        with self._lock:
            self._away = True
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._open.clear()

    def freeze(self) -> None:
        """The server hangs (as under SIGSTOP): connections stay open, nothing goes through."""
        self._flowing.clear()

    def thaw(self) -> None:
        """What was held goes through, and the server answers again."""
        self._flowing.set()

    def restore(self) -> None:
        with self._lock:
            self._away = False

    def close(self) -> None:
        self.cut()
        self._listener.close()


@contextmanager
def postgres_proxy(url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy in front of the PostgreSQL server of ``url``, and ``url`` through it."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "/var/run/postgresql")
    proxy = TcpProxy(host, int(params.get("port") or 5432))
    try:
        yield proxy, make_conninfo(url, host="127.0.0.1", port=str(proxy.port))
    finally:
        proxy.close()
