"""The supervisor's two sockets, and everything it sends on them.

Two sockets, both bound here: `frontend` (routers connect) and `backend` (workers connect, each
with its own identity). Tokens never pass through this process: workers push them straight to the
router (see `mlx_fleet.protocol`). What the supervisor sends is requests to workers, the ENDs of
requests that fail before or instead of reaching one, replies to admin calls, and control messages
to workers. What comes in is read by `control.dispatch`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import zmq
import zmq.asyncio

from mlx_fleet.protocol import MAX_MESSAGE_BYTES, Failure, Kind, Reply, Shutdown, encode
from mlx_fleet.supervisor.workers.slot import WorkerSlot
from mlx_fleet.supervisor.workers.slot_table import SlotTable


class Sockets:
    """Owns both sockets; every part that answers a router or tells a worker something sends here."""

    def __init__(self, table: SlotTable, frontend: str, backend: str) -> None:
        self.table = table
        self.worker_endpoint = backend  # where a worker connects: it goes on the worker's command line
        self.ctx = zmq.asyncio.Context()
        self.frontend = self._bind(zmq.ROUTER, frontend)
        self.backend = self._bind(zmq.ROUTER, backend)

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

    # -- supervisor -> worker -----------------------------------------------------------------

    def forward(self, slot: WorkerSlot, kind: bytes, rid: bytes, router: bytes, body: bytes) -> None:
        self.table.routes[rid] = (router, slot)
        slot.on_request(rid)
        self.backend.send_multipart((slot.identity, kind, rid, body))

    def forward_pending(self, slot: WorkerSlot) -> None:
        while slot.pending:
            p = slot.pending.popleft()
            self.forward(slot, p.kind, p.rid, p.router, p.body)

    def cancel(self, identity: bytes, rid: bytes) -> None:
        self.backend.send_multipart((identity, Kind.CANCEL, rid))

    def send_control(self, identity: bytes, message: Any) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.backend.send_multipart((identity, Kind.CONTROL, b"", encode(message)))

    def shutdown_worker(self, slot: WorkerSlot) -> None:
        self.send_control(slot.identity, Shutdown())

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
            route = self.table.routes.pop(rid, None)
            if route is not None:
                self.reply_end(route[0], rid, body)
        slot.inflight.clear()

    def give_up(self, slot: WorkerSlot, failure: Failure) -> None:
        """A load that will not happen: its queued requests and every awaiting caller get `failure`."""
        self.fail_pending(slot, failure)
        slot.resolve(failure)
