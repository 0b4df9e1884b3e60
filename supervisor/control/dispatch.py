"""The supervisor's sockets and the loops that read them: requests in, routed to workers; ENDs,
cancels and failures back.

Two sockets, both bound here: `frontend` (routers connect) and `backend` (workers connect, each
with its own identity). Tokens never pass through this process: workers push them straight to the
router (see `mlx_fleet.protocol`); the supervisor gets a copy of each request's END, to count it,
and control messages (loading, ready, memory reports, heartbeats). What a message means for a
model's lifecycle is not decided here: cold requests go to the loader, worker control messages
to whoever owns that identity, admin calls to the admin RPC.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import zmq
import zmq.asyncio

from mlx_fleet.protocol import MAX_MESSAGE_BYTES, Failure, Kind, Reply, Shutdown, decode_end, encode
from mlx_fleet.supervisor.lifecycle.slot_table import SlotTable
from mlx_fleet.supervisor.lifecycle.slot import Pending, WorkerSlot


def failure_body(code: str, message: str, status: int, retry_after: float | None = None) -> bytes:
    return encode(Failure(code, message, status, None, retry_after))


class Dispatcher:
    """Owns both sockets. The hooks are set by the composition root (`fleet.Supervisor`)."""

    def __init__(self, registry: SlotTable, frontend: str, backend: str) -> None:
        self.registry = registry
        self.ctx = zmq.asyncio.Context()
        self.frontend = self._bind(zmq.ROUTER, frontend)
        self.backend = self._bind(zmq.ROUTER, backend)
        # A request for a model without a ready worker: refused now (a Failure), or queued and
        # a load started (the loader's single flight makes that one load for all of them).
        self.refuse_cold: Callable[[WorkerSlot], Failure | None] = lambda slot: None
        self.load: Callable[[WorkerSlot], None] = lambda slot: None
        self.on_worker_control: Callable[[WorkerSlot, bytes], None] = lambda slot, body: None
        self.on_other_control: Callable[[bytes, bytes], bool] = lambda identity, body: False
        self.answer: Callable[[bytes, bytes, bytes], Coroutine[Any, Any, None]] | None = None

    def _bind(self, kind: int, endpoint: str) -> zmq.asyncio.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.bind(endpoint)
        return sock

    def close(self) -> None:
        self.frontend.close(0)
        self.backend.close(0)
        self.ctx.term()

    # -- router -> supervisor -----------------------------------------------------------------

    async def frontend_loop(self) -> None:
        recv = self.frontend.recv_multipart
        while True:
            frames = await recv(copy=True)
            router, kind, rid = frames[0], frames[1], frames[2]
            if kind == Kind.GENERATE or kind == Kind.EMBED or kind == Kind.COUNT:
                self._admit(router, kind, rid, frames[3].decode(), frames[4])
            elif kind == Kind.CANCEL:
                self._cancel(rid)
            elif kind == Kind.CALL and self.answer is not None:
                self.registry.spawn(self.answer(router, rid, frames[3]), "admin-call")

    def _admit(self, router: bytes, kind: bytes, rid: bytes, model: str, body: bytes) -> None:
        slot = self.registry.lookup(model)
        if slot is None:
            self.reply_end(router, rid, failure_body(
                "model_not_found", f"The model `{model}` does not exist or you do not have access to it.", 404))
            return
        if not self.registry.accepting:
            self.reply_end(router, rid, failure_body("shutting_down", "The server is shutting down.", 503, 5))
            return
        if slot.state.serving:
            self.forward(slot, kind, rid, router, body)
            return
        refused = self.refuse_cold(slot)
        if refused is not None:
            self.reply_end(router, rid, encode(refused))
            return
        slot.pending.append(Pending(kind, rid, router, body))
        self.load(slot)

    def forward(self, slot: WorkerSlot, kind: bytes, rid: bytes, router: bytes, body: bytes) -> None:
        self.registry.routes[rid] = (router, slot)
        slot.on_request(rid)
        self.backend.send_multipart((slot.identity, kind, rid, body))

    def forward_pending(self, slot: WorkerSlot) -> None:
        while slot.pending:
            p = slot.pending.popleft()
            self.forward(slot, p.kind, p.rid, p.router, p.body)

    def _cancel(self, rid: bytes) -> None:
        route = self.registry.routes.get(rid)
        if route is not None:
            self.backend.send_multipart((route[1].identity, Kind.CANCEL, rid))
            return
        for slot in self.registry.slots.values():
            for p in slot.pending:
                if p.rid == rid:
                    slot.pending.remove(p)
                    return

    # -- supervisor -> router -----------------------------------------------------------------

    def reply_end(self, router: bytes, rid: bytes, body: bytes) -> None:
        self.frontend.send_multipart((router, Kind.END, rid, body))

    def reply(self, router: bytes, call_id: bytes, reply: Reply) -> None:
        self.frontend.send_multipart((router, Kind.REPLY, call_id, encode(reply)))

    def fail_pending(self, slot: WorkerSlot, failure: Failure) -> None:
        body = encode(failure)
        while slot.pending:
            p = slot.pending.popleft()
            self.reply_end(p.router, p.rid, body)

    def fail_inflight(self, slot: WorkerSlot, failure: Failure) -> None:
        body = encode(failure)
        for rid in list(slot.inflight):
            route = self.registry.routes.pop(rid, None)
            if route is not None:
                self.reply_end(route[0], rid, body)
        slot.inflight.clear()

    def give_up(self, slot: WorkerSlot, failure: Failure) -> None:
        """A load that will not happen: its queued requests and every awaiting caller get `failure`."""
        self.fail_pending(slot, failure)
        slot.resolve(failure)

    # -- workers ------------------------------------------------------------------------------

    def send_control(self, identity: bytes, message: Any) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.backend.send_multipart((identity, Kind.CONTROL, b"", encode(message)))

    def shutdown_worker(self, slot: WorkerSlot) -> None:
        self.send_control(slot.identity, Shutdown())

    async def backend_loop(self) -> None:
        """Control messages and END copies from workers; tokens never come through here."""
        recv = self.backend.recv_multipart
        routes, by_identity = self.registry.routes, self.registry.by_identity
        while True:
            frames = await recv(copy=True)
            identity, kind, rid = frames[0], frames[1], frames[2]
            if kind == Kind.END:
                route = routes.pop(rid, None)
                if route is not None:
                    route[1].on_finished(rid, decode_end(frames[3]))
            elif kind == Kind.CONTROL:
                slot = by_identity.get(identity)
                if slot is not None:
                    self.on_worker_control(slot, frames[3])
                else:
                    self.on_other_control(identity, frames[3])
