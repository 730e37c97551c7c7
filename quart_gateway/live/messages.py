"""The messages the gateway itself sends on a stream, built from their `events` models.

`connected`, `ping`, `resync` and `disconnect` are part of the client contract
(`docs/protocol.md`), and `events.catalog` defines them for clients and publishers alike.
Building each frame through its model means the gateway cannot send a field, a type or a
`resync` reason that the published schema does not have. No I/O here.
"""

from __future__ import annotations

import json
from typing import Literal

from events import Connected, Disconnect, Event, Ping, Resync
from quart_gateway.live.disconnect import Ending
from quart_gateway.live.wire import Frame, make_frame


def connected_frame(
    conn_id: str,
    transport: Literal["ws", "sse"],
    heartbeat_interval: float,
    cursor: str | None = None,
) -> Frame:
    """The first message of every stream. Built once per connection: validating it costs a
    few microseconds, less than `model_construct` would. The cursor is also the SSE `id:`."""
    model = Connected(
        connection_id=conn_id,
        transport=transport,
        heartbeat_interval=heartbeat_interval,
        cursor=cursor,
    )
    return _encode(model, cursor)


def ping_frame() -> Frame:
    """One frame per heartbeat tick, shared by every connection of that tick."""
    return _encode(Ping())


def resync_frame(
    reason: Literal["redis_reconnected", "history_unavailable"], cursor: str | None = None
) -> Frame:
    return _encode(Resync(reason=reason, cursor=cursor), cursor)


def disconnect_frame(ending: Ending, retry_ms: int | None = None) -> Frame:
    model = Disconnect(
        code=ending.code, reason=ending.reason, reconnect=ending.reconnect, retry_ms=retry_ms
    )
    return _encode(model)


def _encode(model: Event, sse_id: str | None = None) -> Frame:
    payload = model.model_dump(mode="json", exclude_none=True)  # system events have no `id`
    # The model declares `timestamp` before its own fields; on the wire it has always come last.
    payload["timestamp"] = payload.pop("timestamp")
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return make_frame(text, sse_id)
