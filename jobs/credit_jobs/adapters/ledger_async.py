"""`credit_consume` for an event loop, in one network round trip: the engine's per-transaction timeouts and the call
sent as one message, which the server runs as one implicit transaction, on an async psycopg connection kept open
beside the engine.

The HTTP API's consume route awaits it: no worker thread, no SQLAlchemy, one round trip where the engine takes five
(pre-ping, BEGIN, timeouts, call, COMMIT). The SQL is the same function `ledger_functions.consume` calls, and every
error is raised as the engine would raise it (SQLAlchemy's `DBAPIError`; no free connection as its `TimeoutError`),
so the refusals (`ledger_functions.refusals`) and the API's error handlers are the engine path's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.pq import TransactionStatus

from credit_jobs.adapters import database
from credit_jobs.adapters.ledger_functions import refusals

CONSUME_SQL = "SELECT credit_consume(%s, %s, %s)"


class AsyncLedger:
    """Async connections like `engine`'s (same server, parameters and per-transaction timeouts): at most `pool.size`
    open, kept open between requests; a caller waits at most `pool.timeout_seconds` for one. A missing connection is
    opened when a caller needs it, so a server that is down fails the request at once (psycopg_pool would keep it
    waiting while its background task reconnects)."""

    def __init__(self, engine: sa.Engine, pool: database.PoolLimits) -> None:
        timeouts = database.transaction_timeouts(engine) or database.SessionTimeouts()
        self._sql = f"{timeouts.set_local_sql()}; {CONSUME_SQL}"
        self._parameters = {
            **database.connection_parameters(engine),
            "autocommit": True,  # no BEGIN of psycopg's: the one message is the transaction
            "cursor_factory": psycopg.AsyncClientCursor,  # parameters bound here: several statements in one message
        }
        self._limits = pool
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._in_use: asyncio.Semaphore | None = None  # made in the event loop that uses it

    async def consume(self, user_id: str, amount: int, request_id: str) -> dict[str, Any]:
        """`credit_consume`'s result, `{"takes": [[grant_id, credits], …], "replayed": bool}`; a refusal as the
        domain's error.

        One message, `SELECT set_config(<the timeouts>, true), …; SELECT credit_consume(…)`, which the server runs
        as one implicit transaction: committed when both succeed, rolled back whole on any error. A pooled connection
        the server ended (a restart, a failover, an idle-session reaper) is retried once on a fresh one, the other
        idle ones closed: the request id makes the repeat apply once even had the first attempt committed."""
        parameters = (user_id, amount, request_id)
        with refusals(user_id, amount):
            try:
                return await self._consume(parameters, fresh=False)
            except _PooledConnectionLost:
                await self._close_idle()
                return await self._consume(parameters, fresh=True)

    async def _consume(self, parameters: tuple[str, int, str], *, fresh: bool) -> dict[str, Any]:
        async with self._connection(fresh=fresh) as (conn, pooled):
            try:
                cursor = await conn.execute(self._sql, parameters)
                cursor.nextset()  # past the timeouts' row
                row = await cursor.fetchone()
            except psycopg.Error as exc:
                if pooled and conn.closed:  # ended by the server while it sat in the pool
                    raise _PooledConnectionLost from exc
                lost = bool(conn.closed)
                raise sa.exc.DBAPIError.instance(
                    CONSUME_SQL, parameters, exc, psycopg.Error, connection_invalidated=lost
                ) from exc
        assert row is not None
        result: dict[str, Any] = row[0]
        return result

    @asynccontextmanager
    async def _connection(self, *, fresh: bool) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], bool]]:
        """(a connection, whether it came from the pool); returned to the pool if still idle, else closed."""
        if self._in_use is None:
            self._in_use = asyncio.Semaphore(self._limits.size)
        in_use = self._in_use
        try:
            if in_use.locked():  # every connection in use: wait, for a while
                await asyncio.wait_for(in_use.acquire(), self._limits.timeout_seconds)
            else:  # at once (wait_for would cost a task per request)
                await in_use.acquire()
        except TimeoutError:
            raise sa.exc.TimeoutError(f"no connection came free within {self._limits.timeout_seconds:g} s") from None
        conn: psycopg.AsyncConnection[Any] | None = None
        try:
            pooled = bool(self._idle) and not fresh
            conn = self._idle.pop() if pooled else await self._connect()
            yield conn, pooled
        finally:
            if conn is not None:
                if not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
                    self._idle.append(conn)
                else:
                    await conn.close()
            in_use.release()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(**self._parameters)
        except psycopg.Error as exc:
            raise sa.exc.DBAPIError.instance(None, None, exc, psycopg.Error, connection_invalidated=True) from exc

    async def _close_idle(self) -> None:
        while self._idle:
            await self._idle.pop().close()

    async def close(self) -> None:
        """Close the pooled connections, when the event loop that opened them stops serving (an async connection
        belongs to its loop: a later loop opens its own)."""
        await self._close_idle()
        self._in_use = None


class _PooledConnectionLost(Exception):
    """A connection from the pool turned out to have been ended by the server, found on its first use."""
