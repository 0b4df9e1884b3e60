"""Usage records: one per `/v1` generation or embedding request, written off the request path.

A request's only cost is its record: a small object the middleware creates, the handler fills
(model, tokens, time to first token) and the middleware appends to a deque when the response has
gone out. A background thread takes what has queued, feeds the Prometheus counters, and writes it
to the state database in one transaction; it also deletes rows older than `usage.retention`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Request
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from mlx_fleet.state import db, keys

log = logging.getLogger("mlx_fleet.router")

USAGE_SCOPE_KEY = "mlx_fleet.usage"
# The recorded routes and their endpoint names (which are also the key scopes they need).
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/embeddings": "embeddings",
             "/v1/responses": "responses", "/v1/messages": "messages"}
MAX_QUEUED = 100_000  # a writer that cannot keep up loses the oldest records, never memory

MIGRATIONS = [
    ("usage-1", """
CREATE TABLE usage (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    key_id TEXT,
    model TEXT,
    endpoint TEXT NOT NULL,
    status INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    ttft_ms REAL,
    latency_ms REAL NOT NULL,
    stream INTEGER NOT NULL
);
CREATE INDEX usage_ts ON usage (ts);
CREATE INDEX usage_model_ts ON usage (model, ts);
"""),
    # the key's user and organisation when the request was made (a user may move later)
    ("usage-2", """
ALTER TABLE usage ADD COLUMN user_id TEXT;
ALTER TABLE usage ADD COLUMN org_id TEXT;
"""),
]


class UsageRecord:
    """One request, filled in as it goes. Times are `time.perf_counter()` except `ts` (wall clock)."""

    __slots__ = ("ts", "started", "endpoint", "key_id", "user_id", "org_id", "model", "status", "prompt_tokens", "completion_tokens",
                 "cached_tokens", "first_token", "ended", "stream")

    def __init__(self, endpoint: str) -> None:
        self.ts, self.started = time.time(), time.perf_counter()
        self.endpoint = endpoint
        self.key_id: str | None = None
        self.user_id: str | None = None
        self.org_id: str | None = None
        self.model: str | None = None
        self.status = 0
        self.prompt_tokens = self.completion_tokens = self.cached_tokens = 0
        self.first_token: float | None = None
        self.ended = 0.0
        self.stream = False

    def tokens(self, prompt: int, completion: int, cached: int = 0) -> None:
        self.prompt_tokens, self.completion_tokens, self.cached_tokens = prompt, completion, cached

    def mark_first_token(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()

    @property
    def latency_ms(self) -> float:
        return (self.ended - self.started) * 1000

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token is None else (self.first_token - self.started) * 1000

    def row(self) -> tuple:
        return (self.ts, self.key_id, self.model, self.endpoint, self.status, self.prompt_tokens,
                self.completion_tokens, self.cached_tokens, self.ttft_ms, self.latency_ms, int(self.stream),
                self.user_id, self.org_id)


def usage_record(request: Request, model: str) -> UsageRecord | None:
    """The request's record (None on a route that is not recorded), now knowing its model."""
    record = request.scope.get(USAGE_SCOPE_KEY)  # type: ignore[call-overload]
    if record is not None:
        record.model = model
    return record


class UsageMiddleware:
    """Gives each recorded request its record and queues it once the last byte has been sent."""

    def __init__(self, app: ASGIApp, queue: collections.deque[UsageRecord]) -> None:
        self.app, self.queue = app, queue

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = ENDPOINTS.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        record = UsageRecord(endpoint)
        scope[USAGE_SCOPE_KEY] = record  # type: ignore[literal-required]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            record.ended = time.perf_counter()
            if not record.status:
                record.status = 499  # the client left before any response started
            self.queue.append(record)


def usage_middleware_factory(queue: collections.deque[UsageRecord]) -> Callable[[ASGIApp], ASGIApp]:
    def middleware(app: ASGIApp) -> ASGIApp:
        return UsageMiddleware(app, queue)

    return middleware


def state_db_lifespan(usage: UsageWriter, key_index: keys.KeyIndex):
    """The app's lifespan part for the state database: the writer starts first (it creates the
    tables the key index reads) and, at the end, writes what is queued before it stops."""

    @asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        usage.start()
        key_index.load()
        try:
            yield
        finally:
            await usage.written()
            usage.stop()
            key_index.close()

    return lifespan


class UsageWriter:
    """The thread that empties the queue into the database (and the observers) every `interval`."""

    def __init__(self, state_dir: Path, retention: float, observers: Iterable[Callable[[list[UsageRecord]], None]] = (),
                 interval: float = 1.0, prune_every: float = 3600.0) -> None:
        self.path = db.db_path(state_dir)
        self.retention, self.interval, self.prune_every = retention, interval, prune_every
        self.queue: collections.deque[UsageRecord] = collections.deque(maxlen=MAX_QUEUED)
        self.observers = list(observers)
        self._wake = threading.Event()
        self._stop = False
        self._flushed = threading.Condition()
        self._started = self._written = 0  # cycles begun and finished: flush() waits for the next one
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._conn: sqlite3.Connection | None = None

    def start(self) -> None:
        self._conn = db.connect(self.path)
        db.ensure_schema(self._conn, keys.SCHEMA + MIGRATIONS)
        self._prune()
        self._thread.start()

    def flush(self, timeout: float = 10.0) -> None:
        """Block until everything queued before the call is written (admin reads, /metrics, stop)."""
        with self._flushed:
            target = self._started + 1  # the next cycle to begin takes everything queued by now
            self._wake.set()
            self._flushed.wait_for(lambda: self._written >= target or not self._thread.is_alive(), timeout)

    async def written(self) -> None:
        """`flush()`, awaited from the event loop (in a thread): an answer that reads the usage
        table, or the counters fed with it, counts the requests that have just finished."""
        await asyncio.to_thread(self.flush)

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=10.0)
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        last_prune = time.monotonic()
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stop
            with self._flushed:
                self._started += 1
                batch = self._take()
            try:
                self._write(batch)
                if time.monotonic() - last_prune >= self.prune_every:
                    self._prune()
                    last_prune = time.monotonic()
            except Exception:
                log.exception("usage writer: a batch was lost")
            with self._flushed:
                self._written += 1
                self._flushed.notify_all()
            if stopping:
                return

    def _take(self) -> list[UsageRecord]:
        batch = []
        queue = self.queue
        while queue:
            batch.append(queue.popleft())
        return batch

    def _write(self, batch: list[UsageRecord]) -> None:
        if not batch:
            return
        for observe in self.observers:
            observe(batch)
        uses: dict[str, tuple[int, float]] = {}
        for r in batch:
            if r.key_id is not None and not r.key_id.startswith("config-"):
                n, last = uses.get(r.key_id, (0, 0.0))
                uses[r.key_id] = (n + 1, max(last, r.ts))
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT INTO usage (ts, key_id, model, endpoint, status, prompt_tokens, "
                             "completion_tokens, cached_tokens, ttft_ms, latency_ms, stream, user_id, org_id) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [r.row() for r in batch])
            keys.count_uses(conn, uses)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _prune(self) -> None:
        assert self._conn is not None
        if self.retention > 0:
            self._conn.execute("DELETE FROM usage WHERE ts < ?", (time.time() - self.retention,))
