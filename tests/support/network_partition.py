"""A real network path to the tests' PostgreSQL that a test can cut, in one direction or both.

A process started with `Partition.command(...)` runs in a network namespace of its own, joined to this host by a
veth pair; it reaches the database through a plain forwarder listening on the host's end of the pair (TCP) and
connected to the embedded server's Unix socket. `cut()`
puts Linux's `blackhole` queueing discipline on one or both ends: every packet leaving that end is dropped silently,
the way a partition or a vanished peer drops them — no RST, no ICMP. The client's kernel sees real silence (its
keepalive probes and retransmissions go unanswered), while the forwarder's connection to PostgreSQL stays up, so
the server sees what it sees in a partition: a client gone quiet in the middle of its transaction.

Needs root with CAP_NET_ADMIN and iproute2 (`ip`, `tc`): the Makefile's system-deps install it; the machines that
run `make test` (and CI) run as root. Nothing is mocked: kernel TCP on both sides, the real server.
"""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Literal

import sqlalchemy as sa

from tests.support.socket_forwarder import UnixSocketForwarder

Direction = Literal["both", "to_client", "to_server"]


def _ip(*args: str, namespace: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    subprocess.run([*prefix, *args], check=True, capture_output=True, text=True)


class Partition:
    """One namespace, one veth pair, one forwarder to the database of `database_url` (the embedded server's Unix
    socket). Use as a context manager."""

    def __init__(self, database_url: str) -> None:
        tag = f"{os.getpid() % 100_000}{threading.get_ident() % 100}"
        self.namespace = f"cjp{tag}"
        self._host_link, self._inner_link = f"cjh{tag}"[:15], f"cjn{tag}"[:15]
        subnet = 16 + os.getpid() % 200
        self.host_address, self._inner_address = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
        self._database_url = database_url
        self._forwarder: UnixSocketForwarder | None = None

    def __enter__(self) -> Partition:
        _ip("ip", "netns", "add", self.namespace)
        try:
            _ip("ip", "link", "add", self._host_link, "type", "veth", "peer", "name", self._inner_link)
            _ip("ip", "link", "set", self._inner_link, "netns", self.namespace)
            _ip("ip", "addr", "add", f"{self.host_address}/30", "dev", self._host_link)
            _ip("ip", "link", "set", self._host_link, "up")
            _ip("ip", "addr", "add", f"{self._inner_address}/30", "dev", self._inner_link, namespace=self.namespace)
            _ip("ip", "link", "set", self._inner_link, "up", namespace=self.namespace)
            _ip("ip", "link", "set", "lo", "up", namespace=self.namespace)
            self._forwarder = UnixSocketForwarder(self._database_url, self.host_address).__enter__()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        if self._forwarder is not None:
            self._forwarder.__exit__()
        subprocess.run(["ip", "link", "del", self._host_link], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, check=False)

    def url(self) -> str:
        """The database's URL as the namespaced process reaches it: TCP, through the forwarder."""
        assert self._forwarder is not None
        return self._forwarder.url()

    def command(self, *argv: str) -> list[str]:
        """`argv` run inside the namespace (its only route is to the forwarder)."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def cut(self, direction: Direction) -> None:
        """Drop every packet from now on: towards the client (the server's answers and ACKs), towards the server
        (the client's statements and ACKs), or both."""
        if direction in ("both", "to_client"):
            _ip("tc", "qdisc", "add", "dev", self._host_link, "root", "blackhole")
        if direction in ("both", "to_server"):
            _ip("tc", "qdisc", "add", "dev", self._inner_link, "root", "blackhole", namespace=self.namespace)


def stranded_lock_holders(engine: sa.Engine, database: str) -> int:
    """The project's sessions on `database` sitting in an open transaction that holds something: an xid, or any lock
    but its own virtual transaction id (row, relation or advisory locks). A session stranded right after its BEGIN —
    before the transaction's first statement, which sets its idle timeout — holds nothing and is not counted."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    """
                    SELECT count(*) FROM pg_stat_activity a
                    WHERE a.datname = :db AND a.application_name = 'credit-jobs' AND a.pid <> pg_backend_pid()
                      AND a.state LIKE 'idle in transaction%'
                      AND (a.backend_xid IS NOT NULL OR EXISTS (
                          SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype <> 'virtualxid'))
                    """
                ),
                {"db": database},
            ).scalar_one()
        )
