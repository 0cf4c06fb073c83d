"""A plain TCP forwarder to the embedded PostgreSQL's Unix socket (which listens on no TCP port), for tests whose
client must connect over TCP: a process in its own network namespace (tests/support/network_partition.py), or one in a
sandbox (tests/e2e/test_image_smoke.py). Threads; closed with the context manager."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url


class UnixSocketForwarder:
    """Listens on (`host`, a free port); each connection is piped to the server of `database_url`."""

    def __init__(self, database_url: str, host: str = "127.0.0.1") -> None:
        self.database_url = make_url(database_url)
        socket_dir = Path(str(self.database_url.query["host"]))
        self._target = str(next(p for p in socket_dir.glob(".s.PGSQL.*") if p.suffix != ".lock"))
        self.host = host
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._closing = threading.Event()

    def __enter__(self) -> UnixSocketForwarder:
        self._listener = socket.create_server((self.host, 0))
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._closing.set()
        for sock in [*self._sockets, *([self._listener] if self._listener else [])]:
            with contextlib.suppress(OSError):
                sock.close()

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.getsockname()[1])

    def url(self) -> str:
        """The database's URL over TCP, through this forwarder (SQLAlchemy form)."""
        url: sa.URL = self.database_url.difference_update_query(["host", "port"]).set(host=self.host, port=self.port)
        return url.render_as_string(hide_password=False)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
                server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                server.connect(self._target)
            except OSError:
                return
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
