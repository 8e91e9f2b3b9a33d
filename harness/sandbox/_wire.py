"""Length-prefixed JSON frames between the harness and its kernels.

JSON, never pickle: a kernel runs hostile code and may write anything to its end of the socket.
The harness reads a kernel's frames with `read_frame`, which turns everything that is not a small,
shallow JSON object of finite numbers and valid text into a WireError before or while parsing:
an oversized frame, deep nesting and huge number literals (both checked before the parser sees
them), NaN or Infinity, bytes that are not UTF-8. What the object then says is checked field
by field by its reader (_local.result_from_reply).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
from collections.abc import Mapping
from typing import Any

HEADER = struct.Struct("!I")
MAX_FRAME = 8 * 1024 * 1024  # what a kernel may send at most; callers pass a tighter limit
MAX_DEPTH = 8  # a reply is an object of objects and lists: depth 3
NAME_CHARS = 200  # an exception's or thread's name in a reply
MAX_THREADS = 16  # names of threads left running, in a reply
MAX_NUMBER_CHARS = 32  # digits of an int or float literal
_STRINGS = re.compile(r'"(?:[^"\\]++|\\.)*+"')  # possessive: linear on hostile input
_LONG_NUMBER = re.compile(rf"[-+0-9.eE]{{{MAX_NUMBER_CHARS + 1},}}")


class WireError(Exception):
    """The peer sent something that is not a valid frame: treat the kernel as broken."""


def encode(message: dict[str, Any]) -> bytes:
    """A frame of UTF-8 JSON; a lone surrogate (a cell may print one) travels as a \\u escape."""
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")
    return HEADER.pack(len(body)) + body


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise WireError("non-finite number")
    return value


def _constant(name: str):
    raise WireError(f"{name} is not JSON")


def _check_shape(text: str) -> None:
    """Outside strings: nesting at most MAX_DEPTH, number literals at most MAX_NUMBER_CHARS long,
    so the parser never recurses deeply or converts a huge integer. Most replies hold few
    brackets and no long digit run anywhere, strings included, and need no closer look."""
    if text.count("[") + text.count("{") <= MAX_DEPTH and not _LONG_NUMBER.search(text):
        return
    bare = _STRINGS.sub('""', text)
    depth = 0
    for char in bare:
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise WireError(f"frame nested deeper than {MAX_DEPTH}")
        elif char in "]}":
            depth -= 1
    if _LONG_NUMBER.search(bare):
        raise WireError(f"number literal longer than {MAX_NUMBER_CHARS} characters")


def _decode(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")  # strict: an honest kernel sends lone surrogates as \\u escapes
        _check_shape(text)
        message = json.loads(text, parse_float=_float, parse_constant=_constant)
    except WireError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"undecodable frame: {str(exc)[:200]}") from None
    if not isinstance(message, dict):
        raise WireError("frame is not a JSON object")
    return message


def capture_chars(config: Mapping[str, Any]) -> int:
    """Characters a kernel keeps of each end of stdout, stderr and a traceback (and the harness
    accepts): enough for the record and for the model's head and tail."""
    return max(int(config["record_chars"]), int(config["output_head"]), int(config["output_tail"]))


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode(message))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("peer closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv(sock: socket.socket) -> dict[str, Any]:
    """Read one frame from the harness (in a kernel: the harness is trusted)."""
    (size,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    if size > MAX_FRAME:
        raise WireError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    return json.loads(_recv_exactly(sock, size).decode("utf-8"))


async def read_frame(reader: asyncio.StreamReader, limit: int = MAX_FRAME) -> dict[str, Any]:
    """Read one frame of at most `limit` bytes; EOFError when the kernel is gone, WireError when
    it sent anything else than a well-formed frame."""
    try:
        (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
        if size > limit:
            raise WireError(f"frame of {size} bytes exceeds {limit}")
        return _decode(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        raise EOFError("kernel closed the connection") from None
