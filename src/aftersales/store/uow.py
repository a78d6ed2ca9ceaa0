"""The unit of work: one transaction, the repositories on it, and the only `commit`."""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType

from sqlalchemy import Connection, Engine
from sqlalchemy.pool import QueuePool

from aftersales.store import db
from aftersales.store.repository import Repository

_pid = os.getpid()  # this process (os.getpid is a system call; a fork updates this)


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


class KeptConnections:
    """One connection per thread, kept open between that thread's units of work.

    Checking a connection out of the pool and back in (with its reset) costs about as much as a
    small command's statements on SQLite; a service runs one unit of work per command, so it
    keeps the connection instead. Every unit of work is still its own transaction (BEGIN ...
    COMMIT/ROLLBACK), and a kept connection is never left inside one.

    A unit of work gets a pooled connection, returned after it as before, when the thread's
    kept connection is busy (a unit of work inside another), when keeping one more would leave
    the pool without a free slot (other threads never wait for connections held by idle ones),
    or when the pool is not a QueuePool. A kept connection goes back to the pool when its
    execution options were changed (the pool resets them), when its thread ends or its owner is
    garbage collected, and at `close()`; one that was closed or invalidated (a disconnect) is
    replaced, one inherited across a fork is left alone. Like pooled connections
    (`db._ping_when_idle`), one that sat unused for PING_AFTER_IDLE_S or more is pinged before
    use and replaced if it is dead (not on SQLite, where there is no server to lose).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._local = threading.local()
        self._ping = engine.dialect.name != "sqlite"

    def acquire(self) -> tuple[Connection, bool]:
        """A connection for one unit of work, and whether it is kept (else: close it after)."""
        local = self._local
        conn: Connection | None = getattr(local, "conn", None)
        if conn is not None:
            if local.pid != _pid:
                local.conn = None  # the parent process's: never use it (nor close it) here
            elif conn.closed or conn.invalidated:
                self._drop()
            elif conn.in_transaction():
                return self.engine.connect(), False  # a unit of work inside another
            elif (self._ping and time.monotonic() - local.idle_since >= db.PING_AFTER_IDLE_S
                  and not self._alive(conn)):
                self._drop()
            else:
                return conn, True
        conn = self.engine.connect()
        pool = self.engine.pool
        if isinstance(pool, QueuePool) and pool.checkedout() < pool.size():
            local.conn, local.pid, local.idle_since = conn, _pid, time.monotonic()
            return conn, True
        return conn, False

    def release(self, conn: Connection) -> None:
        """After a unit of work on a kept connection (its transaction is over)."""
        if conn.get_execution_options() != self.engine.get_execution_options():
            self._drop()  # changed options: back to the pool, which resets the connection
        elif self._ping:
            self._local.idle_since = time.monotonic()

    def _alive(self, conn: Connection) -> bool:
        try:
            dbapi_conn = conn.connection.dbapi_connection
            assert dbapi_conn is not None
            self.engine.dialect.do_ping(dbapi_conn)
        except self.engine.dialect.loaded_dbapi.Error as err:
            conn.invalidate(err)
            return False
        return True

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None and self._local.pid == _pid:
            conn.close()

    def close(self) -> None:
        """Return this thread's kept connection to the pool."""
        self._drop()


class UnitOfWork:
    """One transaction (BEGIN ... COMMIT/ROLLBACK) on a connection, and the repository on it.

    `read_only=True` is for units of work that only read (the API's GETs and access checks).
    On PostgreSQL (psycopg) it runs them in autocommit mode: each statement is its own
    transaction, as under READ COMMITTED anyway, without the BEGIN and ROLLBACK round trips
    (psycopg sends BEGIN on its own before the first statement). The switch is client-side and
    is undone before the connection is released; a connection where that fails is invalidated,
    so it never reaches a later (writing) unit of work in autocommit mode. `commit()` is refused
    in a read-only unit of work. Elsewhere (SQLite) it is an ordinary unit of work.
    """

    def __init__(self, engine: Engine, kept: KeptConnections | None = None, *,
                 read_only: bool = False) -> None:
        self.engine = engine
        self.conn: Connection | None = None
        self.repo: Repository
        self._kept = kept  # where to get a connection, if not checked out of the pool
        self._is_kept = False
        self._read_only = read_only
        self._autocommit = False  # the driver was switched to autocommit for this unit

    def __enter__(self) -> UnitOfWork:
        if self._kept is None:
            self.conn = self.engine.connect()
        else:
            self.conn, self._is_kept = self._kept.acquire()
        try:
            if self._read_only and self.engine.dialect.driver == "psycopg":
                driver = self.conn.connection.driver_connection
                if getattr(driver, "autocommit", None) is False:
                    driver.autocommit = True  # type: ignore[union-attr]
                    self._autocommit = True
            self.conn.begin()
        except BaseException:
            if self._autocommit:
                self._autocommit = False
                self._leave_autocommit(self.conn)
            if self._is_kept:
                assert self._kept is not None
                self._kept.close()
            else:
                self.conn.close()
            self.conn = None
            raise
        self.repo = Repository(self.conn)
        return self

    @staticmethod
    def _leave_autocommit(conn: Connection) -> None:
        """Back to transactions; a connection that cannot be switched back (broken, or left
        inside a transaction) is invalidated rather than reused in autocommit mode."""
        if conn.closed or conn.invalidated:
            return
        driver = conn.connection.driver_connection
        try:
            driver.autocommit = False  # type: ignore[union-attr]
        except Exception as err:
            conn.invalidate(err)

    def commit(self) -> None:
        assert self.conn is not None
        if self._read_only:
            raise RuntimeError("commit() in a read-only unit of work")
        self.conn.commit()

    def rollback(self) -> None:
        assert self.conn is not None
        self.conn.rollback()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self.conn is not None
        try:
            if self.conn.in_transaction():
                self.conn.rollback()  # in autocommit mode: nothing to send
        finally:
            if self._autocommit:
                self._autocommit = False
                self._leave_autocommit(self.conn)
        if self._is_kept:
            assert self._kept is not None
            self._kept.release(self.conn)
        else:
            self.conn.close()
        self.conn = None
