"""Minimal clients as asyncio Protocols: HTTP/1.1 SSE (chunked) and WebSocket (RFC 6455).

Only what the benchmark needs: one GET, a status check, then message payloads handed to a
`Recorder`. No per-connection task or StreamReader, so tens of thousands of connections stay
cheap for the load generator.
"""

from __future__ import annotations

import asyncio
from typing import Literal, cast

from bench.recorder import ConnState, Recorder

Transport = Literal["ws", "sse"]

_WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # any 16-byte base64 value; the server only hashes it
_ZERO_MASK = b"\x00\x00\x00\x00"  # client frames must be masked; a zero key is a valid key


def request_bytes(
    transport: Transport, host: str, port: int, query: str, headers: tuple[str, ...] = ()
) -> bytes:
    if transport == "ws":
        lines = [
            f"GET /ws?{query} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {_WS_KEY}",
            "Sec-WebSocket-Version: 13",
        ]
    else:
        lines = [
            f"GET /events?{query} HTTP/1.1",
            f"Host: {host}:{port}",
            "Accept: text/event-stream",
        ]
    lines += headers
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class StreamClient(asyncio.Protocol):
    """One live connection. `state.connected` resolves on the `connected` message."""

    def __init__(self, transport: Transport, request: bytes, state: ConnState, rec: Recorder):
        self.kind = transport
        self.request = request
        self.state = state
        self.rec = rec
        self.sock: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head_done = False
        self.chunked = False
        self.sse = bytearray()  # de-chunked SSE text not yet split into events
        self.ended = False  # a state may outlive this client (reconnects): report one end

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but have its methods.
        self.sock = cast(asyncio.Transport, transport)
        self.sock.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed("connection lost")

    def data_received(self, data: bytes) -> None:
        if self.ended:
            return
        self.buf += data
        if not self.head_done and not self._head():
            return
        if self.kind == "ws":
            self._ws_frames()
        else:
            self._sse_chunks()

    # --- parsing ---

    def _head(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buf[:end]).lower()
        del self.buf[: end + 4]
        status = head.split(b"\r\n", 1)[0]
        want = b" 101" if self.kind == "ws" else b" 200"
        if want not in status:
            self.state.status = status.decode(errors="replace")
            self._closed(self.state.status)
            return False
        self.chunked = b"transfer-encoding: chunked" in head
        self.head_done = True
        return True

    def _ws_frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            length = buf[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = int.from_bytes(buf[2:4], "big")
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = int.from_bytes(buf[2:10], "big")
                offset = 10
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset : offset + length])
            del buf[: offset + length]
            if opcode == 1:
                self.rec.on_message(self.state, payload)
            elif opcode == 9:
                self._send_ws(0xA, payload)
            elif opcode == 8:
                if len(payload) >= 2:
                    self.state.close_code = int.from_bytes(payload[:2], "big")
                self._closed("close frame")
                if self.sock is not None:
                    self.sock.close()
                return

    def _sse_chunks(self) -> None:
        last_chunk = False
        if self.chunked:
            buf = self.buf
            while True:
                line_end = buf.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(bytes(buf[:line_end]).split(b";", 1)[0], 16)
                if size == 0:
                    # The events before the last chunk (a farewell with its `retry:`) often
                    # arrive in the same read: read them before reporting the end.
                    last_chunk = True
                    break
                if len(buf) < line_end + 2 + size + 2:
                    break
                self.sse += buf[line_end + 2 : line_end + 2 + size]
                del buf[: line_end + 2 + size + 2]
        else:
            self.sse += self.buf
            self.buf.clear()
        sse = self.sse
        while True:
            end = sse.find(b"\n\n")
            if end < 0:
                break
            block = bytes(sse[:end])
            del sse[: end + 2]
            for line in block.split(b"\n"):
                if line.startswith(b"data: "):
                    self.rec.on_message(self.state, line[6:])
                elif line.startswith(b"retry: "):
                    self.state.retry_ms = int(line[7:])
        if last_chunk:
            self._closed("end of stream")

    # --- helpers ---

    def _send_ws(self, opcode: int, payload: bytes) -> None:
        if self.sock is None or self.sock.is_closing() or len(payload) > 125:
            return
        self.sock.write(bytes((0x80 | opcode, 0x80 | len(payload))) + _ZERO_MASK + payload)

    def _closed(self, why: str) -> None:
        if self.ended:
            return
        self.ended = True
        state = self.state
        state.closed = True
        if not state.connected.done():
            state.connected.set_exception(ConnectionError(why))
            # Marked as retrieved: a reconnecting client may have stopped waiting for it, and
            # the close is counted by whoever does wait, not worth a traceback in the log.
            state.connected.exception()
        if state.gone is not None and not state.gone.done():
            state.gone.set_result(why)

    def close(self) -> None:
        if self.sock is not None and not self.sock.is_closing():
            self.sock.abort()


async def open_stream(
    transport: Transport,
    host: str,
    port: int,
    query: str,
    state: ConnState,
    rec: Recorder,
    *,
    local_host: str | None = None,
    timeout: float = 15.0,
    headers: tuple[str, ...] = (),
) -> StreamClient:
    """Connect and wait for the `connected` message; raises on failure or timeout."""
    loop = asyncio.get_running_loop()
    request = request_bytes(transport, host, port, query, headers)
    local = (local_host, 0) if local_host else None
    async with asyncio.timeout(timeout):
        _, client = await loop.create_connection(
            lambda: StreamClient(transport, request, state, rec), host, port, local_addr=local
        )
        try:
            await state.connected
        except BaseException:
            client.close()
            raise
    return client
