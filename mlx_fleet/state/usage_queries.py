"""Reading the usage table: rows, totals by a dimension, latency percentiles, time series, CSV.

Plain functions of a SQLite connection, run in a worker thread by the admin routes. Percentiles
use the nearest-rank method on the matching rows (SQLite has no percentile function, and the
number of rows in a window an operator asks about is small enough to sort).
"""

from __future__ import annotations

import csv
import io
import math
import re
import sqlite3
import time
from typing import Literal

import msgspec

from mlx_fleet.units import Duration

GroupBy = Literal["model", "key", "endpoint", "user", "org"]
Bucket = Literal["1m", "1h", "1d"]
_BUCKET_SECONDS = {"1m": 60, "1h": 3600, "1d": 86400}
_GROUP_COLUMNS = {"model": "model", "key": "key_id", "endpoint": "endpoint", "user": "user_id", "org": "org_id"}
COLUMNS = ("ts", "key_id", "user_id", "org_id", "model", "endpoint", "status", "prompt_tokens", "completion_tokens",
           "cached_tokens", "ttft_ms", "latency_ms", "stream")


class UsageRow(msgspec.Struct, kw_only=True):
    ts: float
    key_id: str | None
    user_id: str | None
    org_id: str | None
    model: str | None
    endpoint: str
    status: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    ttft_ms: float | None
    latency_ms: float
    stream: bool


class UsageRows(msgspec.Struct, kw_only=True):
    data: list[UsageRow]


class Counts(msgspec.Struct, kw_only=True):
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int


class Totals(Counts, kw_only=True):
    group: str | None
    cached_tokens: int


class Aggregate(msgspec.Struct, kw_only=True):
    by: str
    since: float | None
    data: list[Totals]


class Percentiles(msgspec.Struct, kw_only=True):
    p50: float | None
    p95: float | None
    p99: float | None


class Latency(msgspec.Struct, kw_only=True):
    model: str | None
    since: float | None
    requests: int
    latency_ms: Percentiles
    ttft_ms: Percentiles
    decode_tokens_per_second: float | None


class SeriesPoint(Counts, kw_only=True):
    start: float


class Series(msgspec.Struct, kw_only=True):
    bucket: str
    since: float | None
    data: list[SeriesPoint]


class Throughput(msgspec.Struct, kw_only=True):
    """Completion tokens per second over the last 1, 5 and 15 minutes, and requests per minute."""

    tokens_per_second_1m: float
    tokens_per_second_5m: float
    tokens_per_second_15m: float
    requests_1m: int
    requests_5m: int
    requests_15m: int


def parse_time(text: str | None, now: float | None = None) -> float | None:
    """A bound: unix seconds (`1732900000`), or a duration back from now (`90m`, `1h`, `7d`)."""
    if text is None or not text.strip():
        return None
    if re.fullmatch(r"\s*\d{9,}(\.\d+)?\s*", text):
        return float(text)
    return (time.time() if now is None else now) - Duration(text)


def _where(model: str | None = None, key: str | None = None, since: float | None = None,
           until: float | None = None) -> tuple[str, list]:
    clauses, params = [], []
    for column, value, op in (("model", model, "="), ("key_id", key, "="), ("ts", since, ">="), ("ts", until, "<")):
        if value is not None:
            clauses.append(f"{column} {op} ?")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def rows(conn: sqlite3.Connection, model: str | None = None, key: str | None = None, since: float | None = None,
         until: float | None = None, limit: int | None = 100, offset: int = 0) -> list[UsageRow]:
    """Newest first."""
    where, params = _where(model, key, since, until)
    cursor = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM usage{where} ORDER BY ts DESC, id DESC "
                          f"LIMIT ? OFFSET ?", (*params, -1 if limit is None else limit, offset))
    return [UsageRow(**dict(zip(COLUMNS, r[:-1])), stream=bool(r[-1])) for r in cursor]


def aggregate(conn: sqlite3.Connection, by: GroupBy, since: float | None = None) -> list[Totals]:
    column = _GROUP_COLUMNS[by]
    where, params = _where(since=since)
    cursor = conn.execute(
        f"SELECT {column}, count(*), sum(status >= 400), sum(prompt_tokens), sum(completion_tokens), "
        f"sum(cached_tokens) FROM usage{where} GROUP BY {column} ORDER BY count(*) DESC, {column}", params)
    return [Totals(group=g, requests=n, errors=e, prompt_tokens=p, completion_tokens=c, cached_tokens=k)
            for g, n, e, p, c, k in cursor]


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def _percentiles(values: list[float]) -> Percentiles:
    values.sort()
    return Percentiles(p50=percentile(values, 50), p95=percentile(values, 95), p99=percentile(values, 99))


def latency(conn: sqlite3.Connection, model: str | None = None, since: float | None = None) -> Latency:
    """Over successful requests: latency and time to first token percentiles, and the decode rate
    (tokens after the first, over the time after the first token, summed over every request)."""
    where, params = _where(model, since=since)
    where = (where + " AND" if where else " WHERE") + " status < 400"
    got = conn.execute(f"SELECT latency_ms, ttft_ms, completion_tokens FROM usage{where}", params).fetchall()
    decode_tokens = sum(c - 1 for _, t, c in got if t is not None and c > 1)
    decode_ms = sum(lat - t for lat, t, c in got if t is not None and c > 1)
    return Latency(model=model, since=since, requests=len(got), latency_ms=_percentiles([r[0] for r in got]),
                   ttft_ms=_percentiles([r[1] for r in got if r[1] is not None]),
                   decode_tokens_per_second=decode_tokens / (decode_ms / 1000) if decode_ms > 0 else None)


def series(conn: sqlite3.Connection, bucket: Bucket, since: float | None = None) -> list[SeriesPoint]:
    width = _BUCKET_SECONDS[bucket]
    cursor = conn.execute(
        "SELECT CAST(ts / ? AS INTEGER) * ? AS start, count(*), sum(status >= 400), sum(prompt_tokens), "
        "sum(completion_tokens) FROM usage WHERE ts >= ? GROUP BY start ORDER BY start",
        (width, width, since or 0.0))
    return [SeriesPoint(start=float(s), requests=n, errors=e, prompt_tokens=p, completion_tokens=c)
            for s, n, e, p, c in cursor]


def throughput(conn: sqlite3.Connection, now: float | None = None) -> Throughput:
    now = time.time() if now is None else now
    figures = {}
    for minutes in (1, 5, 15):
        n, tokens = conn.execute("SELECT count(*), coalesce(sum(completion_tokens), 0) FROM usage WHERE ts >= ?",
                                 (now - minutes * 60,)).fetchone()
        figures[f"tokens_per_second_{minutes}m"] = tokens / (minutes * 60)
        figures[f"requests_{minutes}m"] = n
    return Throughput(**figures)


def export_csv(conn: sqlite3.Connection, model: str | None = None, key: str | None = None,
               since: float | None = None, until: float | None = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in rows(conn, model, key, since, until, limit=None):
        writer.writerow(msgspec.structs.astuple(row))
    return out.getvalue()
