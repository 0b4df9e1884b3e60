"""The router's connection to the fleet, against a scripted supervisor socket and worker sink:
health pings share one round trip, and data-plane frames reach their streams in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import zmq
import zmq.asyncio

from mlx_fleet.protocol import (
    REQUEST_ID_BYTES,
    Delta,
    Done,
    Kind,
    Reply,
    Usage,
    decode_call,
    decode_delta,
    decode_end,
    encode,
    stream_frame,
)
from mlx_fleet.runtime import Endpoints, make_runtime_dir, remove_runtime_dir
from mlx_fleet.router.fleet.client import FleetClient, SupervisorUnavailable


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


class ScriptedSupervisor:
    """A ROUTER socket that counts the calls it gets and answers them when told to; requests it
    takes and leaves alone."""

    def __init__(self, endpoint: str) -> None:
        self.sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        self.calls: list[tuple[bytes, bytes]] = []
        self.answer = asyncio.Event()
        self.answer.set()
        self._task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            router, kind, call_id, *rest = await self.sock.recv_multipart()
            if kind != Kind.CALL:
                continue  # requests: their frames come from the test's own sink socket
            decode_call(rest[-1])
            self.calls.append((router, call_id))
            await self.answer.wait()
            await self.sock.send_multipart((router, Kind.REPLY, call_id, encode(Reply(result="pong"))))

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sock.close(0)


@contextlib.asynccontextmanager
async def connected() -> AsyncIterator[tuple[FleetClient, ScriptedSupervisor, Endpoints]]:
    runtime = make_runtime_dir()
    endpoints = Endpoints(runtime)
    supervisor = ScriptedSupervisor(endpoints.frontend)
    client = FleetClient(endpoints.frontend, endpoints.sink)
    client.start()
    try:
        yield client, supervisor, endpoints
    finally:
        await client.close()
        await supervisor.close()
        remove_runtime_dir(runtime)


def test_concurrent_pings_share_one_round_trip_and_a_later_one_asks_again() -> None:
    async def scenario() -> None:
        async with connected() as (client, supervisor, _):
            supervisor.answer.clear()
            pings = [asyncio.create_task(client.ping(timeout=5.0)) for _ in range(20)]
            await asyncio.sleep(0.1)
            assert len(supervisor.calls) == 1
            assert not any(p.done() for p in pings)  # nobody is answered before the supervisor is
            supervisor.answer.set()
            await asyncio.gather(*pings)
            await client.ping(timeout=5.0)
            assert len(supervisor.calls) == 2  # no cached answer: a new ping is a new round trip

    run(scenario())


def test_a_silent_supervisor_fails_every_waiting_ping() -> None:
    async def scenario() -> None:
        async with connected() as (client, supervisor, _):
            supervisor.answer.clear()
            results = await asyncio.gather(*(client.ping(timeout=0.2) for _ in range(5)), return_exceptions=True)
            assert all(isinstance(r, SupervisorUnavailable) for r in results), results
            assert len(supervisor.calls) == 1

    run(scenario())


def test_a_cancelled_caller_does_not_cancel_the_shared_ping() -> None:
    async def scenario() -> None:
        async with connected() as (client, supervisor, _):
            supervisor.answer.clear()
            first = asyncio.create_task(client.ping(timeout=5.0))
            second = asyncio.create_task(client.ping(timeout=5.0))
            await asyncio.sleep(0.05)
            first.cancel()
            supervisor.answer.set()
            await second
            with pytest.raises(asyncio.CancelledError):
                await first

    run(scenario())


def test_sink_frames_reach_their_streams_in_order_and_strays_are_dropped() -> None:
    async def scenario() -> None:
        async with connected() as (client, _, endpoints):
            streams = [client.open("m", b"") for _ in range(3)]
            assert all(len(s.rid) == REQUEST_ID_BYTES for s in streams)
            push = zmq.asyncio.Context.instance().socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 0)
            push.connect(endpoints.sink)
            try:
                stray = b"\0" * REQUEST_ID_BYTES
                for i in range(200):  # interleaved, as a batch step emits them
                    for n, s in enumerate(streams):
                        await push.send(stream_frame(Kind.DELTA, s.rid, encode(Delta(f"{n}:{i} "))))
                    await push.send(stream_frame(Kind.DELTA, stray, encode(Delta("lost"))))
                for s in streams:
                    await push.send(stream_frame(Kind.END, s.rid, encode(Done("length", Usage(1, 200)))))
                for n, s in enumerate(streams):
                    texts, end = [], None
                    while end is None:
                        for kind, body in await s.take():
                            if kind == Kind.DELTA:
                                texts.append(decode_delta(body).text)
                            else:
                                end = decode_end(body)
                    assert "".join(texts) == "".join(f"{n}:{i} " for i in range(200))
                    assert end == Done("length", Usage(1, 200))
                assert client.streams == {}
            finally:
                push.close(0)

    run(scenario())
