"""Streamed chunks stay one line for every line splitter, whatever text a model produces."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import pytest

from mlx_fleet.protocol import Failure
from router.completions import _Frames

# Line breaks for str.splitlines (and so for httpx's aiter_lines) that JSON does not escape.
AWKWARD = ["\x85", "\u2028", "\u2029", "a\u2028b\u2029c\x85d", "“quoted…” — fine", "tab\tnew\nline\rcr"]


def frames(chat: bool) -> _Frames:
    return _Frames(SimpleNamespace(id="chatcmpl-x", created=1, model="m\u2028odel"), chat)  # type: ignore[arg-type]


def lines_as_httpx_reads_them(body: bytes) -> list[str]:
    response = httpx.Response(200, content=body)
    return [line for line in response.iter_lines() if line]


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("text", AWKWARD)
def test_a_text_chunk_is_one_line_and_decodes_to_the_text(chat: bool, text: str) -> None:
    f = frames(chat)
    (line,) = lines_as_httpx_reads_them(f.text(text))
    assert line.startswith("data: ")
    chunk = json.loads(line[len("data: "):])
    choice = chunk["choices"][0]
    assert (choice["delta"]["content"] if chat else choice["text"]) == text
    assert chunk["model"] == "m\u2028odel"


def test_an_error_event_with_awkward_text_is_one_line() -> None:
    failure = Failure("worker_crashed", "boom\u2028and\x85more", 500)
    (line,) = lines_as_httpx_reads_them(_Frames.error(failure))
    assert json.loads(line[len("data: "):])["error"]["message"] == "boom\u2028and\x85more"
