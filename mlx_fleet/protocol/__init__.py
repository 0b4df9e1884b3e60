"""The wire protocol shared by router, supervisor and workers.

Every ZeroMQ message is a multipart message whose first frame is a one-byte `Kind`, then the
request id, then (optionally) routing frames, then one msgpack-encoded body. Bodies are msgspec
structs; where one kind can carry several message types they form a tagged union. Nothing is
ever pickled, and decoders are typed, so a peer can only ever send us these structs.

Two planes. The control plane goes through the supervisor: requests in, cancels, admin calls,
worker lifecycle, and one copy of each request's END (for its accounting). The data plane does
not: a worker pushes its DELTA and END frames straight to the router's sink (PUSH → PULL), so a
token crosses one process boundary between the model and the HTTP connection, not two.

Frame layouts (the socket's own identity frame, on ROUTER sockets, comes before these):

    router -> supervisor   GENERATE rid model_id body(Generate)    CANCEL rid
                           EMBED    rid model_id body(Embed)
                           COUNT    rid model_id body(Generate)
                           CALL     call_id body(Call)
    supervisor -> worker   GENERATE rid body(Generate)             CANCEL rid
                           EMBED    rid body(Embed)                COUNT rid body(Generate)
                           CONTROL  b"" body(Shutdown | Assign)
    worker -> router sink  START+rid+body(Started)  (once, when a GENERATE is accepted)
                           DELTA+rid+body(Delta)   END+rid+body(Done | Failure | Embeddings | TokenCount)
                           (one frame: kind, the 12-byte request id, the body, concatenated)
    worker -> supervisor   END rid body(...)       (the same END, for accounting)
                           CONTROL b"" body(Spare | Loading | Ready | LoadFailed | MemoryReport)
    supervisor -> router   END rid body(Failure)   (requests the supervisor itself ends)
                           REPLY call_id body(Reply)

Request ids are REQUEST_ID_BYTES long (the router makes them), so a data-plane message can be one
frame: a token then costs one ZeroMQ message part to send and to receive instead of three.

Structs are `array_like` (field order is the wire format: add new fields last); hot-path ones
are `gc=False`. Tags are only unique within a union: the kind frame picks the decoder.

The structs live in one submodule per plane (`frames`, `generation`, `control`, `replies`); every
name is imported from here.
"""

from __future__ import annotations

import msgspec

from mlx_fleet.protocol.control import *  # noqa: F403
from mlx_fleet.protocol.control import Call, Control, Reply
from mlx_fleet.protocol.frames import *  # noqa: F403
from mlx_fleet.protocol.generation import *  # noqa: F403
from mlx_fleet.protocol.generation import Delta, Embed, End, Generate, Started
from mlx_fleet.protocol.replies import *  # noqa: F403

# ---------------------------------------------------------------------------------------------
# Codecs: one encoder and one decoder per body type, built once and reused.

encoder = msgspec.msgpack.Encoder()
encode = encoder.encode

decode_generate = msgspec.msgpack.Decoder(Generate).decode
decode_embed = msgspec.msgpack.Decoder(Embed).decode
decode_started = msgspec.msgpack.Decoder(Started).decode
decode_delta = msgspec.msgpack.Decoder(Delta).decode
decode_end = msgspec.msgpack.Decoder(End).decode
decode_control = msgspec.msgpack.Decoder(Control).decode
decode_call = msgspec.msgpack.Decoder(Call).decode
decode_reply = msgspec.msgpack.Decoder(Reply).decode
