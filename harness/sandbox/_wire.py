"""Length-prefixed JSON frames between the harness and its kernels.

JSON, never pickle: a kernel runs hostile code and may write anything to its end of the socket,
so the harness only ever parses size-capped, schema-checked JSON from it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

HEADER = struct.Struct("!I")
MAX_FRAME = 8 * 1024 * 1024  # a kernel reply is bounded by SandboxConfig.record_chars; this is generous


class WireError(Exception):
    """The peer sent something that is not a valid frame: treat the kernel as broken."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return HEADER.pack(len(body)) + body


def _decode(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body.decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"undecodable frame: {exc}") from None
    if not isinstance(message, dict):
        raise WireError("frame is not a JSON object")
    return message


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
    (size,) = HEADER.unpack(_recv_exactly(sock, HEADER.size))
    if size > MAX_FRAME:
        raise WireError(f"frame of {size} bytes exceeds {MAX_FRAME}")
    return _decode(_recv_exactly(sock, size))


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    """Read one frame; EOFError when the kernel is gone, WireError when it sent garbage."""
    try:
        (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
        if size > MAX_FRAME:
            raise WireError(f"frame of {size} bytes exceeds {MAX_FRAME}")
        return _decode(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        raise EOFError("kernel closed the connection") from None
