"""WorkerSlot's transitions: each move checks the state it expects and brings its own bookkeeping."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from mlx_fleet.config import ModelConfig
from mlx_fleet.protocol import Done, Failure, Memory, Ready, Usage
from mlx_fleet.supervisor.workers.slot import WorkerSlot
from mlx_fleet.supervisor.workers.state import InvalidTransition, StateMismatch, WorkerState

S = WorkerState


def slot(**kw) -> WorkerSlot:
    return WorkerSlot(ModelConfig(id="m", path="/x", type="embeddings", **kw))


def loaded() -> WorkerSlot:
    s = slot()
    s.begin_start(100, False)
    s.adopt(SimpleNamespace(pid=4242), b"m#1")  # type: ignore[arg-type]
    s.on_loading()
    assert s.on_ready(Ready(4242, Memory(rss=300, mlx_active=250, mlx_cache=50), 512, 0.5), 280)
    return s


def test_a_load_reserves_room_then_reports_what_it_measured() -> None:
    s = slot()
    s.begin_start(100, True)
    assert s.state == S.STARTING and s.footprint == 100 and s.estimate_measured
    with pytest.raises(StateMismatch):
        s.begin_start(100, True)  # one load at a time
    assert not s.on_ready(Ready(1, Memory(rss=1), 8, 0.1), 1)  # no process yet: a stale report
    s.adopt(SimpleNamespace(pid=7), b"m#1")  # type: ignore[arg-type]
    assert s.on_ready(Ready(7, Memory(rss=300), 512, 0.5), 280)  # straight from STARTING
    assert s.state == S.READY and s.measured == 300 and s.context_length == 512 and s.loaded_at
    assert not s.on_ready(Ready(7, Memory(rss=300), 512, 0.5), 280)  # already ready


def test_requests_flip_ready_and_busy_and_count() -> None:
    s = loaded()
    s.on_request(b"r1")
    s.on_request(b"r2")
    assert s.state == S.BUSY and s.inflight == {b"r1", b"r2"}
    s.on_finished(b"r1", Done("stop", Usage(3, 7)))
    assert s.state == S.BUSY
    s.failures = 2
    s.on_finished(b"r2", Failure("x", "y"))
    assert s.state == S.READY and s.served == 1 and s.tokens == 7 and s.failures == 2
    s.on_request(b"r3")
    s.on_finished(b"r3", Done("length", Usage(1, 1)))
    assert s.failures == 0  # a served request ends the backoff


def test_drain_then_stop_sets_its_events() -> None:
    s = loaded()
    s.on_request(b"r1")
    s.begin_drain()
    assert s.state == S.DRAINING and not s.gone.is_set()
    s.drained = asyncio.Event()
    s.on_finished(b"r1", Done("stop", Usage(1, 1)))
    assert s.drained.is_set() and s.state == S.DRAINING
    process = s.process
    assert s.begin_stop() == S.DRAINING and s.state == S.STOPPING
    assert s.begin_stop() is None  # stopping already
    s.on_stopped(process)
    assert s.state == S.STOPPED and s.gone.is_set() and s.process is None and s.footprint == 100


def test_a_crash_fails_the_slot_and_releases_whoever_waits_for_it() -> None:
    s = loaded()
    s.on_request(b"r1")
    s.begin_drain()
    s.drained = asyncio.Event()
    assert s.on_exit() == S.DRAINING
    assert s.state == S.FAILED and s.gone.is_set() and s.drained.is_set() and s.process is None
    assert s.begin_stop() is None and s.state == S.STOPPED  # a failed slot is cleared, not stopped


def test_failures_back_off_exponentially_from_the_second() -> None:
    s = slot()
    s.begin_start(100, False)
    s.fail_load("boom", True, backoff=1.0, backoff_max=3.0)
    assert s.state == S.FAILED and s.out_of_memory and s.cooldown_left() <= 0  # first: retried at once
    s.record_failure("again", 1.0, 3.0)
    assert 0.9 < s.cooldown_left() <= 1.0
    s.record_failure("again", 1.0, 3.0)
    s.record_failure("again", 1.0, 3.0)
    assert 2.9 < s.cooldown_left() <= 3.0 and s.last_error == "again"


def test_no_room_returns_a_start_to_stopped_and_illegal_moves_are_refused() -> None:
    s = slot()
    s.begin_start(100, False)
    s.cancel_start("no room")
    assert s.state == S.STOPPED and s.last_error == "no room"
    with pytest.raises(InvalidTransition):
        s.lifecycle.swap(S.STOPPED, S.READY)
    with pytest.raises(StateMismatch):
        s.cancel_start("again")


def test_status_carries_the_design_documents_names() -> None:
    s = loaded()
    s.pinned = True
    m = s.status(time.time(), 60)
    assert (m.model_id, m.model_type, m.preloaded, m.pid, m.state) == ("m", "embeddings", True, 4242, "ready")
    assert m.size_gb == round(300 / 1e9, 3) and m.memory.mlx_active == 250 and m.ttl_remaining is None  # pinned
    s.pinned = False
    assert 59 < s.status(time.time(), 60).ttl_remaining <= 60
    assert slot().status(time.time(), 0).size_gb is None
