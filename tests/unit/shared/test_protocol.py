"""Unit tests for `mlx_fleet.protocol`: round trips, tagged unions, typed decoding, frame kinds."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest

from mlx_fleet import protocol as p
from mlx_fleet.protocol import (
    Call,
    ChatInput,
    Control,
    Delta,
    Done,
    End,
    Failure,
    Generate,
    GetStatus,
    ImageData,
    Kind,
    Loading,
    LoadFailed,
    LoadModel,
    Memory,
    MemoryReport,
    Message,
    Ready,
    Reply,
    Sampling,
    Shutdown,
    TextInput,
    TokensInput,
    UnloadModel,
    Usage,
    decode_call,
    decode_control,
    decode_delta,
    decode_end,
    decode_generate,
    decode_reply,
    encode,
)

ROOT = Path(__file__).resolve().parents[3]

SAMPLING_FULL = Sampling(max_tokens=64, temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, seed=7,
                         stop=("</s>", "\n\n"), repetition_penalty=1.1, frequency_penalty=0.5,
                         presence_penalty=-0.25, max_tokens_is_default=True)
IMAGE = ImageData(width=2, height=1, rgb=bytes([255, 0, 0, 0, 255, 0]))
CHAT = ChatInput(messages=(Message(role="system", content="be brief"),
                           Message(role="user", content="what is this? ✓", images=(IMAGE, IMAGE))))
MEMORY = Memory(rss=123_456_789, mlx_active=1 << 30, mlx_cache=5, mlx_peak=1 << 31)


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("body", [
    Generate(input=CHAT, sampling=SAMPLING_FULL),
    Generate(input=TextInput(prompt="Once upon"), sampling=Sampling(max_tokens=1)),
    Generate(input=TokensInput(tokens=(1, 2, 3, 50_000)), sampling=Sampling(max_tokens=8, seed=None)),
    Generate(input=ChatInput(messages=()), sampling=Sampling(max_tokens=3, stop=("x",))),
], ids=["chat", "text", "tokens", "empty-chat"])
def test_generate_round_trip(body):
    decoded = decode_generate(encode(body))
    assert decoded == body
    assert type(decoded.input) is type(body.input)
    assert type(decoded) is Generate


@pytest.mark.parametrize(("input_", "cls"), [
    (CHAT, ChatInput), (TextInput(prompt="hi"), TextInput), (TokensInput(tokens=(9,)), TokensInput),
])
def test_generate_input_union_decodes_to_right_class(input_, cls):
    decoded = decode_generate(encode(Generate(input=input_, sampling=Sampling(max_tokens=2))))
    assert isinstance(decoded.input, cls)
    assert decoded.input == input_


def test_image_bytes_survive_round_trip():
    decoded = decode_generate(encode(Generate(input=CHAT, sampling=Sampling(max_tokens=1))))
    image = decoded.input.messages[1].images[0]
    assert isinstance(image.rgb, bytes) and image.rgb == IMAGE.rgb
    assert (image.width, image.height) == (2, 1)


@pytest.mark.parametrize("body", [Delta(text="hi"), Delta(text="", tokens=0), Delta(text="héllo 🙂", tokens=3)])
def test_delta_round_trip(body):
    decoded = decode_delta(encode(body))
    assert decoded == body and type(decoded) is Delta


@pytest.mark.parametrize("body", [
    Done(finish_reason="stop", usage=Usage(prompt_tokens=10, completion_tokens=3)),
    Done(finish_reason="length", usage=Usage(prompt_tokens=1, completion_tokens=2, cached_tokens=1)),
    Done(finish_reason="cancelled", usage=Usage(prompt_tokens=0, completion_tokens=0)),
    Failure(code="model_not_found", message="no such model"),
    Failure(code="overloaded", message="busy", status=429, param="model", retry_after=1.5),
])
def test_end_union_round_trip(body):
    decoded = decode_end(encode(body))
    assert decoded == body
    assert type(decoded) is type(body)


@pytest.mark.parametrize("body", [
    Loading(pid=4242),
    Ready(pid=1, memory=MEMORY, context_length=8192, load_seconds=0.25),
    Ready(pid=2, memory=Memory(rss=10), context_length=1, load_seconds=0.0),
    LoadFailed(message="out of memory", out_of_memory=True),
    LoadFailed(message="bad weights"),
    MemoryReport(memory=MEMORY),
    Shutdown(),
])
def test_control_union_round_trip(body):
    decoded = decode_control(encode(body))
    assert decoded == body
    assert type(decoded) is type(body)


@pytest.mark.parametrize("body", [
    GetStatus(), LoadModel(model="m"), LoadModel(model="m", pin=False),
    UnloadModel(model="m"), UnloadModel(model="m", force=True),
])
def test_call_union_round_trip(body):
    decoded = decode_call(encode(body))
    assert decoded == body
    assert type(decoded) is type(body)


@pytest.mark.parametrize("body", [
    Reply(),
    Reply(result={"models": [{"id": "m", "state": "ready", "rss": 12}], "ok": True}),
    Reply(result=[1, "two", None, 3.5]),
    Reply(failure=Failure(code="not_found", message="no model 'x'", status=404, param="model")),
])
def test_reply_round_trip(body):
    decoded = decode_reply(encode(body))
    assert decoded == body
    if body.failure is not None:
        assert type(decoded.failure) is Failure


def test_union_members_are_distinct_types():
    # Each tag maps to exactly one class inside its union.
    for union in (p.Input, End, Control, Call):
        classes = union.__args__
        tags = [c.__struct_config__.tag for c in classes]
        assert len(set(tags)) == len(tags), union


def test_structs_are_frozen():
    with pytest.raises(AttributeError):
        Delta(text="a").text = "b"


# ---------------------------------------------------------------------------------------------
# Typed decoding: a peer can only send the expected structs


@pytest.mark.parametrize(("body", "decoder"), [
    (Delta(text="hi"), decode_control),
    (Delta(text="hi"), decode_end),
    (Delta(text="hi"), decode_call),
    (Delta(text="hi"), decode_generate),
    (Generate(input=TextInput(prompt="x"), sampling=Sampling(max_tokens=1)), decode_call),
    (Generate(input=TextInput(prompt="x"), sampling=Sampling(max_tokens=1)), decode_control),
    (Done(finish_reason="stop", usage=Usage(prompt_tokens=1, completion_tokens=1)), decode_control),
    (GetStatus(), decode_control),
    (Failure(code="c", message="m"), decode_call),
    (Ready(pid=1, memory=MEMORY, context_length=2, load_seconds=0.1), decode_end),
])
def test_wrong_body_type_is_a_validation_error(body, decoder):
    with pytest.raises(msgspec.ValidationError):
        decoder(encode(body))


@pytest.mark.parametrize("decoder", [decode_generate, decode_delta, decode_end, decode_control, decode_call])
@pytest.mark.parametrize("payload", [
    {"__class__": "os.system", "args": ["echo pwned"]},
    "just a string",
    42,
    None,
    msgspec.msgpack.Ext(1, b"\x80\x04payload"),
    [99, "unknown tag"],
], ids=["dict", "str", "int", "nil", "ext", "bad-tag"])
def test_arbitrary_objects_are_refused(decoder, payload):
    with pytest.raises(msgspec.ValidationError):
        decoder(msgspec.msgpack.encode(payload))


def test_unknown_tag_is_refused():
    with pytest.raises(msgspec.ValidationError):
        decode_control(msgspec.msgpack.encode([99, 1]))
    with pytest.raises(msgspec.ValidationError):
        decode_end(msgspec.msgpack.encode([0, "stop", [1, 1, 0]]))


def test_bad_field_value_is_refused():
    with pytest.raises(msgspec.ValidationError):
        decode_end(msgspec.msgpack.encode([1, "finished", [1, 1, 0]]))  # not a FinishReason
    with pytest.raises(msgspec.ValidationError):
        decode_delta(msgspec.msgpack.encode([b"bytes", 1]))  # text must be a str


def test_malformed_bytes_are_a_decode_error():
    with pytest.raises(msgspec.DecodeError):
        decode_delta(b"\xc1")
    with pytest.raises(msgspec.DecodeError):
        decode_call(encode(LoadModel(model="m"))[:-1])


# ---------------------------------------------------------------------------------------------
# Frame kinds and wire size


def test_kind_members_equal_plain_bytes_frames():
    assert b"D" == Kind.DELTA
    assert Kind.DELTA == b"D"
    assert Kind.GENERATE == b"G" and Kind.END == b"E" and Kind.CONTROL == b"K"
    assert Kind.DELTA != b"E"
    assert Kind(b"D") is Kind.DELTA
    assert isinstance(Kind.DELTA, bytes)


def test_kind_members_are_one_distinct_byte():
    values = [bytes(k) for k in Kind]
    assert all(len(k) == 1 for k in Kind)
    assert all(len(v) == 1 for v in values)
    assert len(set(values)) == len(values)


def test_kind_works_as_a_lookup_key_for_received_frames():
    table = {Kind.DELTA: "delta", Kind.END: "end"}
    assert table.get(b"D") == "delta"
    assert b"E" in table
    assert hash(Kind.CALL) == hash(b"Q")


def test_delta_encodes_small():
    wire = encode(Delta(text="hi"))
    assert len(wire) < 10
    # array_like: no field names on the wire
    assert b"text" not in wire and b"tokens" not in wire
    assert msgspec.msgpack.decode(wire)[0] == "hi"


def test_max_message_bytes_is_sane():
    assert 1 << 20 <= p.MAX_MESSAGE_BYTES <= 1 << 30


# ---------------------------------------------------------------------------------------------
# No pickle anywhere

_PICKLE = re.compile(r"\b(c?pickle|cloudpickle|dill|_pickle|recv_pyobj|send_pyobj|marshal)\b")


def _project_sources() -> list[Path]:
    files = [f for d in ("mlx_fleet", "router", "supervisor", "worker") for f in (ROOT / d).rglob("*.py")]
    assert len(files) >= 10, files
    return files


def test_no_pickle_in_project_sources():
    offenders = []
    for path in _project_sources():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _PICKLE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


def test_pickle_scan_would_catch_usage():
    assert _PICKLE.search("import pickle")
    assert _PICKLE.search("obj = sock.recv_pyobj()")
    assert _PICKLE.search("sock.send_pyobj(x)")
    assert not _PICKLE.search("Nothing is ever pickled")
