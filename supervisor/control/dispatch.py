"""The loops that read the supervisor's two sockets: requests in, routed to workers; cancels, ENDs,
control messages and admin calls to whoever owns them.

The supervisor gets a copy of each request's END from its worker, to count it, and the workers'
control messages (loading, ready, memory reports, heartbeats). What a message means for a model's
lifecycle is not decided here: a request for a cold model goes to the loader, a worker's control
message to whoever owns that identity, an admin call to the admin RPC. Each of them is a listener
the dispatcher is built with, so none can be missing.
"""

from __future__ import annotations

from typing import Protocol

from mlx_fleet.protocol import Failure, Kind, decode_end, encode
from mlx_fleet.supervisor.workers.context import FleetContext
from mlx_fleet.supervisor.workers.slot import Pending, WorkerSlot


class LoadListener(Protocol):
    """The loader: what becomes of a request for a model without a ready worker, and what the
    model's worker says while it loads and serves."""

    def refuse(self, slot: WorkerSlot) -> Failure | None:
        """Why the request is answered now instead of starting a load; None: queue it and `request`."""

    def request(self, slot: WorkerSlot) -> None:
        """A request is queued for this model: one load for all of them."""

    def on_control(self, slot: WorkerSlot, body: bytes) -> None:
        """A control message from the worker of this slot."""


class SpareListener(Protocol):
    """The spare pool: control messages from identities no slot owns."""

    def on_control(self, identity: bytes, body: bytes) -> bool:
        """False if `identity` is none of its spares either."""


class CallListener(Protocol):
    """The admin RPC: answers a call with a reply on the frontend socket."""

    async def answer(self, router: bytes, call_id: bytes, body: bytes) -> None: ...


def failure_body(code: str, message: str, status: int, retry_after: float | None = None) -> bytes:
    return encode(Failure(code, message, status, None, retry_after))


class Dispatcher:
    def __init__(self, ctx: FleetContext, loads: LoadListener, spares: SpareListener, calls: CallListener) -> None:
        self.table, self.sockets = ctx.table, ctx.sockets
        self.loads, self.spares, self.calls = loads, spares, calls

    # -- router -> supervisor -----------------------------------------------------------------

    async def frontend_loop(self) -> None:
        recv = self.sockets.frontend.recv_multipart
        while True:
            frames = await recv(copy=True)
            router, kind, rid = frames[0], frames[1], frames[2]
            if kind == Kind.GENERATE or kind == Kind.EMBED or kind == Kind.COUNT:
                self._admit(router, kind, rid, frames[3].decode(), frames[4])
            elif kind == Kind.CANCEL:
                self._cancel(rid)
            elif kind == Kind.CALL:
                self.table.spawn(self.calls.answer(router, rid, frames[3]), "admin-call")

    def _admit(self, router: bytes, kind: bytes, rid: bytes, model: str, body: bytes) -> None:
        slot = self.table.lookup(model)
        if slot is None:
            self.sockets.reply_end(router, rid, failure_body(
                "model_not_found", f"The model `{model}` does not exist or you do not have access to it.", 404))
            return
        if not self.table.accepting:
            self.sockets.reply_end(router, rid, failure_body("shutting_down", "The server is shutting down.", 503, 5))
            return
        if slot.state.serving:
            self.sockets.forward(slot, kind, rid, router, body)
            return
        refused = self.loads.refuse(slot)
        if refused is not None:
            self.sockets.reply_end(router, rid, encode(refused))
            return
        slot.pending.append(Pending(kind, rid, router, body))
        self.loads.request(slot)

    def _cancel(self, rid: bytes) -> None:
        route = self.table.routes.get(rid)
        if route is not None:
            self.sockets.cancel(route[1].identity, rid)
            return
        for slot in self.table.slots.values():
            for p in slot.pending:
                if p.rid == rid:
                    slot.pending.remove(p)
                    return

    # -- workers -> supervisor ----------------------------------------------------------------

    async def backend_loop(self) -> None:
        """Control messages and END copies from workers; tokens never come through here."""
        recv = self.sockets.backend.recv_multipart
        routes, by_identity = self.table.routes, self.table.by_identity
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
                    self.loads.on_control(slot, frames[3])
                else:
                    self.spares.on_control(identity, frames[3])
