"""Framing: the kind byte, request ids, one-frame data-plane messages, the base of every wire struct."""

from __future__ import annotations

import enum

import msgspec

__all__ = ["Kind", "REQUEST_ID_BYTES", "stream_frame", "split_stream_frame", "MAX_MESSAGE_BYTES"]


class Kind(bytes, enum.Enum):
    """First frame of every message. Members are `bytes`, so they compare equal to received frames."""

    GENERATE = b"G"
    EMBED = b"M"
    COUNT = b"T"  # how many tokens a Generate's prompt is, generating nothing
    CANCEL = b"C"
    START = b"S"  # a generation was accepted: its prompt's size, before any token
    DELTA = b"D"
    END = b"E"
    CALL = b"Q"
    REPLY = b"R"
    CONTROL = b"K"


REQUEST_ID_BYTES = 12


def stream_frame(kind: Kind, rid: bytes, body: bytes) -> bytes:
    """A data-plane message (worker -> router sink) as its one frame."""
    return kind + rid + body


def split_stream_frame(frame: bytes) -> tuple[bytes, bytes, bytes]:
    """(kind, request id, body) of a data-plane frame."""
    return frame[:1], frame[1:1 + REQUEST_ID_BYTES], frame[1 + REQUEST_ID_BYTES:]


class _Wire(msgspec.Struct, array_like=True, frozen=True):
    pass


# The longest message any peer may send (images included); ZeroMQ drops bigger ones unread.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
