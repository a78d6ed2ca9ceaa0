"""The unit of work: one transaction, the repositories on it, and the only `commit`."""

from __future__ import annotations

import os
import threading
from types import TracebackType

from sqlalchemy import Connection, Engine
from sqlalchemy.pool import QueuePool

from aftersales.store.repository import Repository

_pid = os.getpid()  # this process (os.getpid is a system call; a fork updates this)


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


class KeptConnections:
    """One connection per thread, kept open between that thread's units of work.

    Checking a connection out of the pool and back in (with its reset) costs about as much as a
    small command's statements on SQLite; a service handles one command per unit of work, so it
    keeps the connection instead. Nothing else changes: every unit of work is still its own
    transaction (BEGIN ... COMMIT/ROLLBACK, `begin` events included), and a kept connection is
    never left inside one. It is not kept (the unit of work checks out and returns a pooled one,
    as before) when the thread's kept connection is busy (a unit of work inside another), when
    keeping it would leave the pool without a free slot (threads never starve for connections),
    when its execution options were changed, or across a fork. A connection that was closed or
    invalidated (disconnect) is replaced. Kept connections go back to the pool when their thread
    ends or the owner is garbage collected, or at `close()`.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._local = threading.local()

    def acquire(self) -> tuple[Connection, bool]:
        """A connection for one unit of work, and whether it is kept (else: close it after)."""
        local = self._local
        conn: Connection | None = getattr(local, "conn", None)
        if conn is not None:
            if local.pid != _pid:
                local.conn = None  # the parent process's: never touch it (nor close it) here
            elif conn.closed or conn.invalidated:
                self._drop()
            elif conn.in_transaction():
                return self.engine.connect(), False  # a unit of work inside another
            else:
                return conn, True
        conn = self.engine.connect()
        pool = self.engine.pool
        if isinstance(pool, QueuePool) and pool.checkedout() < pool.size():
            local.conn, local.pid = conn, _pid
            return conn, True
        return conn, False

    def release(self, conn: Connection) -> None:
        """After a unit of work on a kept connection (its transaction is over)."""
        if conn.get_execution_options() != self.engine.get_execution_options():
            self._drop()  # changed options: back to the pool, which resets the connection

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None and self._local.pid == _pid:
            conn.close()

    def close(self) -> None:
        """Return this thread's kept connection to the pool."""
        self._drop()


class UnitOfWork:
    def __init__(self, engine: Engine, kept: KeptConnections | None = None) -> None:
        self.engine = engine
        self.conn: Connection | None = None
        self.repo: Repository
        self._kept = kept  # where to get a connection, if not checked out of the pool
        self._is_kept = False

    def __enter__(self) -> UnitOfWork:
        if self._kept is None:
            self.conn = self.engine.connect()
        else:
            self.conn, self._is_kept = self._kept.acquire()
        try:
            self.conn.begin()
        except BaseException:
            if self._is_kept:
                assert self._kept is not None
                self._kept.close()
            else:
                self.conn.close()
            self.conn = None
            raise
        self.repo = Repository(self.conn)
        return self

    def commit(self) -> None:
        assert self.conn is not None
        self.conn.commit()

    def rollback(self) -> None:
        assert self.conn is not None
        self.conn.rollback()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self.conn is not None
        if self.conn.in_transaction():
            self.conn.rollback()
        if self._is_kept:
            assert self._kept is not None
            self._kept.release(self.conn)
        else:
            self.conn.close()
        self.conn = None
