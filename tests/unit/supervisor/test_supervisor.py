"""The supervisor's own logic with fake worker processes: routing, memory policy, lifecycle."""

from __future__ import annotations

import asyncio
import time

import msgspec
import psutil
import pytest

from fleet_harness import FAST, MiB, fleet, until
from mlx_fleet.protocol import Done, DryRun, DryRunResult, Failure
from mlx_fleet.supervisor.timeouts import Timeouts


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def mem(mib: int) -> list[str]:
    return ["--memory", str(mib * MiB)]


def test_lru_evicts_the_least_recently_used_idle_model() -> None:
    async def scenario() -> None:
        async with fleet({"a": mem(100), "b": mem(100), "c": mem(100)}, budget=250 * MiB) as f:
            for model in ("a", "b", "a"):
                _, end = await f.ask(model)
                assert isinstance(end, Done), end
            b_pid = f.slot("b").process.pid
            planned = msgspec.convert((await f.client.call(DryRun("c"))).result, DryRunResult)
            assert (planned.fits, planned.fits_now, planned.would_evict) == (True, False, ["b"])
            assert f.states()["b"] == "ready"  # a dry run changes nothing
            _, end = await f.ask("c")
            assert isinstance(end, Done)
            await until(lambda: f.states()["b"] == "stopped")
            assert f.states() == {"a": "ready", "b": "stopped", "c": "ready"}
            counts = {m.id: (m.loads, m.evictions) for m in f.supervisor.status().models}
            assert counts == {"a": (1, 0), "b": (1, 1), "c": (1, 0)}
            assert not psutil.pid_exists(b_pid) or psutil.Process(b_pid).status() == psutil.STATUS_ZOMBIE
            pool = f.supervisor.status().pool
            assert pool.in_use == f.slot("a").measured + f.slot("c").measured
            assert pool.in_use <= pool.budget
    run(scenario())


def test_pinned_model_is_never_evicted_and_no_room_is_503_with_numbers() -> None:
    async def scenario() -> None:
        async with fleet({"p": mem(100), "x": mem(100)}, budget=150 * MiB, preload=("p",)) as f:
            await until(lambda: f.states()["p"] == "ready")
            _, end = await f.ask("x")
            assert isinstance(end, Failure) and end.status == 503 and end.code == "insufficient_memory"
            assert "pinned: p" in end.message and "budget 150.0 MiB" in end.message
            assert f.states()["p"] == "ready" and f.launcher.spawned == ["p"]
    run(scenario())


def test_concurrent_first_requests_share_one_load() -> None:
    async def scenario() -> None:
        async with fleet({"a": [*mem(10), "--load-seconds", "0.3"]}) as f:
            results = await asyncio.gather(*(f.ask("a") for _ in range(10)))
            assert all(isinstance(end, Done) for _, end in results)
            assert f.launcher.spawned == ["a"]
    run(scenario())


def test_busy_victim_is_drained_not_killed() -> None:
    async def scenario() -> None:
        slow = [*mem(100), "--tokens", "20", "--token-interval", "0.02"]
        async with fleet({"a": slow, "b": mem(100)}, budget=150 * MiB) as f:
            stream = f.open("a")
            await until(lambda: f.states()["a"] == "busy")
            text_b, end_b = await f.ask("b")
            text_a, end_a = await f.finish(stream)
            assert isinstance(end_a, Done) and end_a.usage.completion_tokens == 20, end_a
            assert isinstance(end_b, Done)
            assert f.states() == {"a": "stopped", "b": "ready"}
    run(scenario())


def test_estimate_is_corrected_by_measurement_and_remembered(tmp_path) -> None:
    async def scenario() -> None:
        async with fleet({"a": mem(300)}, state_dir=tmp_path) as f:
            await f.ask("a")
            memory = f.slot("a").status(time.time(), 0).memory
            assert memory.measured >= 300 * MiB
            assert memory.estimated < 300 * MiB and not memory.estimate_was_measured
        async with fleet({"a": mem(300)}, state_dir=tmp_path) as f:
            await f.ask("a")
            memory = f.slot("a").status(time.time(), 0).memory
            assert memory.estimate_was_measured
            assert memory.estimated >= 300 * MiB
    run(scenario())


def test_growth_past_the_budget_trims_idle_models() -> None:
    async def scenario() -> None:
        async with fleet({"a": mem(100), "b": [*mem(100), "--grow-per-request", str(100 * MiB)]},
                         budget=350 * MiB) as f:
            await f.ask("a")
            await f.ask("b")
            assert f.states() == {"a": "ready", "b": "ready"}
            await f.ask("b")  # b now reports 300 MiB: 400 in use
            await until(lambda: f.states()["a"] == "stopped")
            assert f.states()["b"] == "ready"
    run(scenario())


def test_idle_ttl_ends_idle_worker_but_not_a_busy_one() -> None:
    async def scenario() -> None:
        slow = [*mem(10), "--tokens", "30", "--token-interval", "0.02"]
        async with fleet({"a": mem(10), "s": slow}, idle_ttl="0.2") as f:
            await f.ask("a")
            started = time.monotonic()
            await until(lambda: f.states()["a"] == "stopped", timeout=3)
            assert time.monotonic() - started >= 0.15
            _, end = await f.ask("s")  # 30 tokens x 20 ms: in flight well past the TTL
            assert isinstance(end, Done) and end.usage.completion_tokens == 30
    run(scenario())


def test_preload_policy_serves_only_preloaded() -> None:
    async def scenario() -> None:
        async with fleet({"p": mem(10), "x": mem(10)}, policy="preload", preload=("p",)) as f:
            await until(lambda: f.states()["p"] == "ready")
            _, end = await f.ask("x")
            assert isinstance(end, Failure) and end.code == "model_not_loaded" and end.status == 503
            _, end = await f.ask("p")
            assert isinstance(end, Done)
            assert f.launcher.spawned == ["p"]
    run(scenario())


def test_load_failure_reaches_every_waiter_and_shows_in_status() -> None:
    async def scenario() -> None:
        async with fleet({"bad": ["--fail-load", "weights are corrupt"]}) as f:
            results = await asyncio.gather(*(f.ask("bad") for _ in range(3)))
            for _, end in results:
                assert isinstance(end, Failure) and end.code == "model_load_failed" and end.status == 503
                assert "weights are corrupt" in end.message
            assert f.states()["bad"] == "failed"
            assert "weights are corrupt" in f.supervisor.status().models[0].last_error
    run(scenario())


def test_load_deadline_kills_a_hung_load() -> None:
    async def scenario() -> None:
        timeouts = Timeouts(load=0.3, stop_grace=0.2, drain=1, housekeeping=0.05)
        async with fleet({"h": ["--hang-on-load"]}, timeouts=timeouts) as f:
            _, end = await f.ask("h")
            assert isinstance(end, Failure) and "server.load_timeout" in end.message
            assert f.states()["h"] == "failed"
    run(scenario())


@pytest.mark.parametrize("force", [False, True])
def test_admin_unload_drains_or_forces(force: bool) -> None:
    from mlx_fleet.protocol import UnloadModel

    async def scenario() -> None:
        slow = [*mem(10), "--tokens", "15", "--token-interval", "0.02"]
        async with fleet({"a": slow}) as f:
            stream = f.open("a")
            await until(lambda: f.states()["a"] == "busy")
            reply = await f.client.call(UnloadModel("a", force))
            text, end = await f.finish(stream)
            if force:
                assert reply.result["action"] == "forced" and reply.result["status"] == "unloaded"
                assert isinstance(end, Failure) and end.code == "model_unloaded"
            else:
                assert reply.result["action"] == "drained"
                assert isinstance(end, Done) and end.usage.completion_tokens == 15
            assert reply.result["memory_released"] >= 10 * MiB
            assert f.states()["a"] == "stopped"
    run(scenario())


def test_stop_escalates_to_sigkill_and_reaps_grandchildren() -> None:
    async def scenario() -> None:
        async with fleet({"a": [*mem(10), "--ignore-sigterm", "--spawn-grandchild"]},
                         timeouts=Timeouts(load=10, stop_grace=0.3, drain=1, housekeeping=0.05)) as f:
            await f.ask("a")
            process = f.slot("a").process
            tree = [psutil.Process(process.pid), *process.descendants()]
            assert len(tree) == 2
            started = time.monotonic()
            await f.supervisor.stopper.stop_worker(f.slot("a"), "test")
            assert time.monotonic() - started < 3
            for p in tree:
                assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    run(scenario())


def test_crash_mid_stream_fails_request_and_next_request_gets_a_new_worker() -> None:
    async def scenario() -> None:
        async with fleet({"a": [*mem(10), "--crash-after", "3", "--tokens", "10"]}) as f:
            text, end = await f.ask("a")
            assert isinstance(end, Failure) and end.code == "worker_crashed" and end.status == 500
            assert "exited with code 3" in end.message and "'a'" in end.message
            await until(lambda: f.states()["a"] == "failed")
            text, end = await f.ask("a")  # a first crash costs the next request nothing
            assert f.launcher.spawned == ["a", "a"]
            assert isinstance(end, Failure) and end.code == "worker_crashed"  # it crashes every time
            await until(lambda: f.slot("a").crashes == 2)
    run(scenario())


def test_crash_loop_backs_off_with_retry_after_and_no_spawn() -> None:
    async def scenario() -> None:
        timeouts = Timeouts(load=10, stop_grace=0.3, drain=1, housekeeping=0.05, backoff=0.4, backoff_max=5)
        async with fleet({"bad": ["--fail-load", "boom"]}, timeouts=timeouts) as f:
            for _ in range(2):  # the first failure is retried at once
                _, end = await f.ask("bad")
                assert end.code == "model_load_failed"
            _, end = await f.ask("bad")  # inside the cooldown: refused, nothing spawned
            assert end.code == "model_load_cooldown" and end.status == 503
            assert 0 < end.retry_after <= 0.4 and "boom" in end.message
            assert f.launcher.spawned == ["bad", "bad"]
            await asyncio.sleep(0.45)
            _, end = await f.ask("bad")  # cooldown over: one new attempt, which fails again
            assert end.code == "model_load_failed" and f.launcher.spawned == ["bad", "bad", "bad"]
            _, end = await f.ask("bad")
            assert end.code == "model_load_cooldown" and 0.4 < end.retry_after <= 0.8  # doubled
    run(scenario())


def test_pinned_model_that_keeps_failing_shows_failed_with_reason() -> None:
    async def scenario() -> None:
        async with fleet({"p": ["--fail-load", "no such weights"]}, preload=("p",)) as f:
            await until(lambda: len(f.launcher.spawned) >= 3 and f.states()["p"] == "failed")  # retried by itself
            status = {m.id: m for m in f.supervisor.status().models}["p"]
            assert status.state == "failed" and "no such weights" in status.last_error
            assert f.slot("p").failures >= 3
    run(scenario())


def test_watchdog_kills_a_worker_that_hangs_mid_generation() -> None:
    async def scenario() -> None:
        timeouts = Timeouts(load=10, stop_grace=0.3, drain=1, housekeeping=0.02, progress=0.3, backoff=0.01)
        async with fleet({"h": [*mem(10), "--tokens", "5", "--token-interval", "5"]}, timeouts=timeouts) as f:
            started = time.monotonic()
            _, end = await f.ask("h")
            assert isinstance(end, Failure) and end.code == "worker_hung" and end.status == 500
            assert time.monotonic() - started < 3
            await until(lambda: f.states()["h"] == "stopped")
            assert f.slot("h").process is None
    run(scenario())


def test_cancel_while_loading_removes_the_queued_request() -> None:
    async def scenario() -> None:
        async with fleet({"a": [*mem(10), "--load-seconds", "0.3"]}) as f:
            stream = f.open("a")
            await until(lambda: len(f.slot("a").pending) == 1)
            f.client.cancel(stream)
            await until(lambda: not f.slot("a").pending)
            await until(lambda: f.states()["a"] == "ready")
            assert f.slot("a").inflight == set()
            _, end = await f.ask("a")
            assert isinstance(end, Done)
    run(scenario())


def test_client_cancel_mid_stream_frees_the_slot() -> None:
    async def scenario() -> None:
        async with fleet({"a": [*mem(10), "--tokens", "1000", "--token-interval", "0.005"]}) as f:
            stream = f.open("a")
            await stream.take()
            f.client.cancel(stream)
            await until(lambda: not f.slot("a").inflight and f.states()["a"] == "ready")
            assert f.slot("a").served == 1  # ended as "cancelled", not as a failure
    run(scenario())


def test_spare_pool_fills_a_load_takes_a_ready_spare_and_the_pool_refills() -> None:
    async def scenario() -> None:
        async with fleet({"a": mem(10)}, spares=2) as f:
            pool = f.supervisor.spares
            await until(lambda: len(pool.spares) == 2 and all(s.ready.is_set() for s in pool.spares))
            pids = {s.process.pid for s in pool.spares}
            _, end = await f.ask("a")
            assert isinstance(end, Done)
            assert f.slot("a").process.pid in pids and f.launcher.spawned == []  # a spare became a's worker
            await until(lambda: len(pool.spares) == 2 and all(s.ready.is_set() for s in pool.spares))
            assert len(f.launcher.spares) == 3
            status = f.supervisor.status().pool
            assert status.spares_wanted == 2 and len(status.spares) == 2 and status.spare == status.spares[0]
    run(scenario())


def test_a_slow_spare_delays_only_the_load_that_took_it() -> None:
    async def scenario() -> None:
        # The first spare takes 3 s to import; later ones are quick.
        async with fleet({"a": mem(10), "b": mem(10)}, spares=1, spare_flags=[["--import-seconds", "3"], []]) as f:
            await until(lambda: len(f.supervisor.spares.spares) == 1)
            slow = f.open("a")  # a claims the slow spare and waits for it
            await until(lambda: f.states()["a"] == "starting" and not f.supervisor.spares.spares)
            _, end = await f.ask("b")  # b loads in a process of its own meanwhile
            assert isinstance(end, Done)
            assert f.states()["a"] == "starting", "b's load waited for a's spare"
            _, end = await f.finish(slow)
            assert isinstance(end, Done) and f.launcher.spawned == ["b"]
    run(scenario())


def test_a_drain_in_progress_does_not_block_another_models_load() -> None:
    from mlx_fleet.protocol import UnloadModel

    async def scenario() -> None:
        long = [*mem(100), "--tokens", "60", "--token-interval", "0.05"]  # a 3 s stream
        timeouts = Timeouts(load=10, stop_grace=0.5, drain=20, housekeeping=0.05, backoff=0.05)
        async with fleet({"a": long, "b": mem(100)}, budget=250 * MiB, timeouts=timeouts) as f:
            stream = f.open("a")
            await until(lambda: f.states()["a"] == "busy")
            unload = asyncio.create_task(f.client.call(UnloadModel("a"), timeout=30))
            await until(lambda: f.states()["a"] == "draining")
            _, end = await f.ask("b")  # a's 100 MiB still count, and b fits beside them: no wait
            assert isinstance(end, Done)
            assert f.states()["a"] == "draining", "b's load waited for a's drain"
            _, end = await f.finish(stream)
            assert isinstance(end, Done) and end.usage.completion_tokens == 60
            assert (await unload).result["action"] == "drained"
    run(scenario())


def test_a_load_that_runs_out_of_memory_says_so() -> None:
    async def scenario() -> None:
        async with fleet({"big": ["--fail-load", "[metal::malloc] out of memory", "--oom"]}) as f:
            _, end = await f.ask("big")
            assert isinstance(end, Failure) and end.code == "insufficient_memory" and end.status == 503
            assert "out of memory" in end.message
            model = f.supervisor.status().models[0]
            assert model.state == "failed" and model.last_error_out_of_memory
    run(scenario())


def test_the_injected_memory_probe_drives_trimming() -> None:
    async def scenario() -> None:
        grown: set[int] = set()  # pids whose process tree the probe says grew to 400 MiB

        def probe(pid: int) -> int:
            return 400 * MiB if pid in grown else 10 * MiB

        async with fleet({"a": mem(100), "b": mem(10)}, budget=450 * MiB, probe=probe) as f:
            await f.ask("a")
            await f.ask("b")
            grown.add(f.slot("b").process.pid)
            await until(lambda: f.states()["a"] == "stopped")  # b's growth pushed a (LRU) out
            assert f.states()["b"] == "ready" and f.slot("b").measured == 400 * MiB
    run(scenario())
