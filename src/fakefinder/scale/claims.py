"""Exactly-once work across processes and machines that share one SQL database (SQLite, PostgreSQL, ...).

A unit of work is a row (study, key). Claiming it is one INSERT, so the database's unique key decides who runs
it; the owner keeps it alive with heartbeats (the database's own clock, so machines need not agree on the time);
a row whose owner stopped beating for `GRACE_S` is taken over with one conditional UPDATE, so only one taker
wins; the result is stored with the row. A unit that failed is retried by a later command (`round`), up to
`MAX_ATTEMPTS`, never by the command that saw it fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

HEARTBEAT_S = 2.0
GRACE_S = 10.0
MAX_ATTEMPTS = 3
TABLE = "fakefinder_claims"


@dataclass(frozen=True)
class Claim:
    key: str
    state: str  # running | done | failed
    owner: str
    attempts: int
    result: dict | None
    reason: str


def engine_options(url: str) -> dict:
    """How fakefinder connects to a study's database (claims and Optuna's storage alike): connections checked
    before use, and SQLite writers waiting up to a minute for the lock instead of failing."""
    options: dict = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        options["connect_args"] = {"timeout": 60}
    return options


def _engine(url: str):
    import sqlalchemy

    return sqlalchemy.create_engine(url, **engine_options(url))


def _now(dialect: str):
    """The database's clock as seconds since the epoch, as an SQL expression."""
    import sqlalchemy

    if dialect == "sqlite":
        return sqlalchemy.literal_column("((julianday('now') - 2440587.5) * 86400.0)")
    if dialect == "postgresql":
        return sqlalchemy.func.extract("epoch", sqlalchemy.func.clock_timestamp())
    return sqlalchemy.func.unix_timestamp(sqlalchemy.func.now(6))  # MySQL and MariaDB


class Claims:
    """The claims of one study in the database at `url` (the table is made on first use)."""

    def __init__(self, url: str, study: str, *, round_id: str | None = None, grace: float = GRACE_S) -> None:
        import sqlalchemy as sa

        self.url, self.study, self.grace = url, study, grace
        self.round = round_id or uuid.uuid4().hex
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.engine = _engine(url)
        meta = sa.MetaData()
        self.table = sa.Table(
            TABLE, meta, sa.Column("study", sa.String(512), primary_key=True),
            sa.Column("key", sa.String(512), primary_key=True), sa.Column("owner", sa.String(256)),
            sa.Column("round", sa.String(64)), sa.Column("state", sa.String(16)), sa.Column("attempts", sa.Integer),
            sa.Column("heartbeat", sa.Float), sa.Column("result", sa.Text), sa.Column("reason", sa.Text))
        for _ in range(5):  # several processes may create the table at once
            try:
                meta.create_all(self.engine, checkfirst=True)
                break
            except sa.exc.DatabaseError:
                time.sleep(0.2)
        self.now = _now(self.engine.dialect.name)

    def _where(self, key: str):
        return (self.table.c.study == self.study) & (self.table.c.key == key)

    def claim(self, key: str) -> bool:
        """Take `key` if nobody holds it: new, abandoned (no heartbeat for `grace`), or failed in an earlier
        command with attempts left. True when this process now owns it."""
        import sqlalchemy as sa

        t = self.table
        try:
            with self.engine.begin() as conn:
                conn.execute(t.insert().values(study=self.study, key=key, owner=self.owner, round=self.round,
                                               state="running", attempts=1, heartbeat=self.now, reason=""))
            return True
        except sa.exc.IntegrityError:
            pass
        takeable = (((t.c.state == "running") & (t.c.heartbeat < self.now - self.grace))
                    | ((t.c.state == "failed") & (t.c.round != self.round) & (t.c.attempts < MAX_ATTEMPTS)))
        with self.engine.begin() as conn:
            taken = conn.execute(t.update().where(self._where(key) & takeable).values(
                owner=self.owner, round=self.round, state="running", attempts=t.c.attempts + 1,
                heartbeat=self.now, reason=""))
        return taken.rowcount == 1

    def beat(self, keys: list[str]) -> None:
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(t.update().where((t.c.study == self.study) & t.c.key.in_(keys) & (t.c.owner == self.owner)
                                          & (t.c.state == "running")).values(heartbeat=self.now))

    def finish(self, key: str, result: dict) -> bool:
        """Record the result; False when another process took the unit over meanwhile (its run counts)."""
        t = self.table
        with self.engine.begin() as conn:
            done = conn.execute(t.update().where(self._where(key) & (t.c.owner == self.owner)).values(
                state="done", result=json.dumps(result), heartbeat=self.now))
        return done.rowcount == 1

    def release(self, key: str) -> None:
        """Give a running unit up (interrupted, not failed): anyone may take it at once."""
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(t.update().where(self._where(key) & (t.c.owner == self.owner) & (t.c.state == "running"))
                         .values(heartbeat=0.0))

    def fail(self, key: str, reason: str) -> None:
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(t.update().where(self._where(key) & (t.c.owner == self.owner)).values(
                state="failed", reason=reason[:2000], heartbeat=self.now))

    def all(self) -> dict[str, Claim]:
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(t.select().where(t.c.study == self.study)).fetchall()
        return {r.key: Claim(r.key, r.state, r.owner, r.attempts, json.loads(r.result) if r.result else None,
                             r.reason or "") for r in rows}

    def alive(self, key: str) -> bool:
        """Whether `key` is running with a fresh heartbeat."""
        import sqlalchemy as sa

        t = self.table
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(t.c.key).where(self._where(key) & (t.c.state == "running")
                                                          & (t.c.heartbeat >= self.now - self.grace))).first()
        return found is not None

    @contextlib.contextmanager
    def holding(self, key: str) -> Iterator[None]:
        """Beat for `key` from a thread while the body runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_S):
                with contextlib.suppress(Exception):  # a missed beat is survivable; the next one catches up
                    self.beat([key])

        thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat {key[:40]}")
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def dispose(self) -> None:
        self.engine.dispose()
