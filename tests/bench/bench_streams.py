"""The benchmarks' streaming client: request bodies for each API, `stream_chat` (one streamed answer,
timed as the client sees it), waves of concurrent streams, and the prompts they send.

Not a test module. It needs only the standard library, httpx (for URLs) and msgspec.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from dataclasses import dataclass

import httpx
import msgspec


@dataclass
class Stream:
    """One streamed answer (chat, Responses or Messages), as the client saw it (times in seconds
    from the send)."""

    ok: bool = False
    status: int | None = None
    error: str | None = None
    ttft: float | None = None       # the first chunk that carries text
    t_finish: float | None = None   # the chunk that carries finish_reason (the stop reason)
    t_end: float | None = None      # data: [DONE] (or the API's last event)
    t_stop: float | None = None     # when the client was done with it, failed or not
    completion_tokens: int | None = None  # from the usage chunk (stream_options.include_usage)
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    text: str = ""

    @property
    def decode_tps(self) -> float | None:
        if not self.ok or self.ttft is None or self.t_finish is None or (self.completion_tokens or 0) < 2:
            return None
        span = self.t_finish - self.ttft
        return (self.completion_tokens - 1) / span if span > 0 else None


_decode_chunk = msgspec.json.Decoder().decode


def chat_body(model: str, messages: list[dict], max_tokens: int) -> dict:
    return {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0,
            "stream": True, "stream_options": {"include_usage": True}}


def responses_body(model: str, messages: list[dict], max_tokens: int) -> dict:
    """The same request for OpenAI's Responses API (chat messages are valid `input` items)."""
    return {"model": model, "input": messages, "max_output_tokens": max_tokens, "temperature": 0.0, "stream": True}


def messages_body(model: str, messages: list[dict], max_tokens: int) -> dict:
    """The same request for Anthropic's Messages API (the system message goes on its own)."""
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    return {"model": model, "system": system, "messages": [m for m in messages if m["role"] != "system"],
            "max_tokens": max_tokens, "temperature": 0.0, "stream": True}


def _read_chat(event: dict, s: Stream, now: float, pieces: list[str]) -> None:
    usage = event.get("usage")
    if usage:
        s.completion_tokens, s.prompt_tokens = usage.get("completion_tokens"), usage.get("prompt_tokens")
    for choice in event.get("choices") or ():
        content = (choice.get("delta") or {}).get("content")
        if content:
            pieces.append(content)
        if choice.get("finish_reason") is not None:
            s.t_finish, s.finish_reason = now, choice["finish_reason"]


def _read_responses(event: dict, s: Stream, now: float, pieces: list[str]) -> None:
    kind = event.get("type")
    if kind == "response.output_text.delta":
        pieces.append(event["delta"])
    elif kind in ("response.completed", "response.incomplete"):
        response = event["response"]
        s.t_finish = s.t_end = now
        s.finish_reason = (response.get("incomplete_details") or {}).get("reason") or response["status"]
        s.completion_tokens, s.prompt_tokens = response["usage"]["output_tokens"], response["usage"]["input_tokens"]
    elif kind == "response.failed":
        s.error = f"response.failed: {event['response'].get('error')}"


def _read_messages(event: dict, s: Stream, now: float, pieces: list[str]) -> None:
    kind = event.get("type")
    if kind == "content_block_delta":
        pieces.append(event["delta"].get("text", ""))
    elif kind == "message_delta":
        usage = event["usage"]
        s.t_finish, s.finish_reason = now, event["delta"]["stop_reason"]
        s.completion_tokens = usage["output_tokens"]
        s.prompt_tokens = usage.get("input_tokens", 0) + usage.get("cache_read_input_tokens", 0)
    elif kind == "message_stop":
        s.t_end = now
    elif kind == "error":
        s.error = f"error event: {event['error']}"


# Each API's route and how to read one of its events into a Stream.
APIS = {"chat": ("/v1/chat/completions", _read_chat), "responses": ("/v1/responses", _read_responses),
        "messages": ("/v1/messages", _read_messages)}
API_BODIES = {"chat": chat_body, "responses": responses_body, "messages": messages_body}


async def stream_chat(base_url: str, body: dict, api: str = "chat") -> tuple[float, Stream]:
    """POST a streamed request (a chat completion, or the same as a Responses or Anthropic Messages
    request) on a new connection; returns (the send time, what came back).

    A minimal HTTP/1.1 client on asyncio's streams rather than httpx: on a 2-core machine the
    client shares the cores with the server it measures, and httpx's per-chunk Python cost
    (h11, anyio, line splitting) delayed its own reading of the first chunk by up to 0.1 s while
    the model decoded (the server's trace showed the chunk written ~15 ms after the send). Both
    sides of every comparison use this client.
    """
    s = Stream()
    url = httpx.URL(base_url)
    request = _request_bytes(url, APIS[api][0], body)
    started = time.perf_counter()
    pieces: list[str] = []
    writer = None
    try:
        reader, writer = await asyncio.open_connection(url.host, url.port, limit=2**20)
        writer.write(request)
        chunked = await _read_head(reader, s)
        if s.status != 200:
            s.error = f"HTTP {s.status}: {(await reader.read(300)).decode(errors='replace')}"
            return started, s
        await _read_events(reader, chunked, api, s, started, pieces)
    except (OSError, ValueError, asyncio.IncompleteReadError) as e:
        s.error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    finally:
        if writer is not None:
            writer.close()
    _finish(s, started, pieces)
    return started, s


def _request_bytes(url: httpx.URL, path: str, body: dict) -> bytes:
    """The whole HTTP/1.1 POST of `body` to `path`, on a connection the server closes after it."""
    payload = msgspec.json.encode(body)
    head = (f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
    return head.encode() + payload


async def _read_head(reader: asyncio.StreamReader, s: Stream) -> bool:
    """Reads the status line (into `s.status`) and the headers; returns whether the body is chunked."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection before answering")
    s.status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    return headers.get("transfer-encoding") == "chunked"


async def _read_events(reader: asyncio.StreamReader, chunked: bool, api: str, s: Stream, started: float,
                       pieces: list[str]) -> None:
    """Reads `api`'s events into `s` (times from `started`, text into `pieces`) until its last one."""
    read = APIS[api][1]
    async for line in _sse_lines(reader, chunked):
        now = time.perf_counter() - started
        if line == b"[DONE]":
            s.t_end = now
            break
        event = _decode_chunk(line)
        if api == "chat" and event.get("error"):
            s.error = f"error event: {event['error']}"
        # The first event marks the first token (the fleet sends its opening events with the
        # first token, text or not; tokens that end mid-character carry no text).
        if s.ttft is None and (api != "chat" or event.get("choices")):
            s.ttft = now
        read(event, s, now, pieces)
        if s.t_end is not None:
            break


def _finish(s: Stream, started: float, pieces: list[str]) -> None:
    """The text and the stop time of a stream the client is done with, and whether it went well."""
    s.text = "".join(pieces)
    s.t_stop = time.perf_counter() - started
    if s.error is None:
        if s.t_end is None:
            s.error = "the stream ended without its last event"
        elif s.completion_tokens is None:
            s.error = "no usage chunk"
    s.ok = s.error is None


async def _sse_lines(reader: asyncio.StreamReader, chunked: bool):
    """The payloads of a response body's `data:` lines, as they arrive."""
    buffer = b""
    while True:
        if chunked:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                return
            data = (await reader.readexactly(size + 2))[:-2]
        else:
            data = await reader.read(65536)
            if not data:
                return
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()


@dataclass
class Wave:
    streams: list[Stream]
    wall: float  # from the first send to the last [DONE] (or failure)

    @property
    def ok(self) -> list[Stream]:
        return [s for s in self.streams if s.ok]

    @property
    def failed(self) -> list[Stream]:
        return [s for s in self.streams if not s.ok]

    @property
    def tokens(self) -> int:
        return sum(s.completion_tokens or 0 for s in self.ok)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall if self.wall > 0 else 0.0


async def _wave(base_url: str, bodies: list[dict], api: str) -> Wave:
    results = await asyncio.gather(*(stream_chat(base_url, b, api) for b in bodies))
    first = min(t for t, _ in results)
    last = max(t + (s.t_stop or 0.0) for t, s in results)
    return Wave([s for _, s in results], last - first)


def wave(base_url: str, bodies: list[dict], api: str = "chat") -> Wave:
    """All `bodies` sent at once, each on its own new connection. The client's own garbage
    collector is held off while it times (a full pass over pytest's heap takes ~0.1 s here, and
    would count against the server)."""
    gc.collect()
    gc.disable()
    try:
        return asyncio.run(_wave(base_url, bodies, api))
    finally:
        gc.enable()


def one(base_url: str, body: dict, api: str = "chat") -> Stream:
    return wave(base_url, [body], api).streams[0]


_prompt_counter = itertools.count()


def story_prompt(unique: bool = True) -> list[dict]:
    """A prompt that makes a real model write at length. Both servers keep a prompt cache (an LRU
    of KV caches, reused for the longest common prefix), so `unique` opens the prompt with a fresh
    tag in the system message: no request then shares more than the template's first tokens with
    an earlier one, and every request pays its whole prefill, as distinct users' requests do."""
    system = f"Session {next(_prompt_counter)}. You are a helpful assistant." if unique \
        else "You are a helpful assistant."
    return [{"role": "system", "content": system},
            {"role": "user", "content": "Write a long story about a robot who learns to paint."}]
