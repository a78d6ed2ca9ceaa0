"""The unit of work: one transaction, the repositories on it, and the only `commit`."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import Connection, Engine

from aftersales.store.repository import Repository


class UnitOfWork:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.conn: Connection | None = None
        self.repo: Repository

    def __enter__(self) -> UnitOfWork:
        self.conn = self.engine.connect()
        self.conn.begin()
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
        self.conn.close()
        self.conn = None
