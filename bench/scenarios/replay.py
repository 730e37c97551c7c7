"""Resume: 1,000 events published while a client is away, replayed on reconnect.

The client reconnects with `?last_event_id=` and the time runs from the start of the TCP
connect to the arrival of the last missed event (and, separately, from `connected` on).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench.context import Context
from bench.fleet import make_token
from bench.protocol import open_stream
from bench.recorder import ConnState, Recorder
from bench.servers import SystemServer

REPEATS = 3


async def once(ctx: Context, server: SystemServer, user: str, missed: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    transport = ctx.options.transport
    token = make_token(user)
    rec = Recorder()
    rec.keep_ids = True
    state = ConnState(user, loop.create_future())
    first = rec.when_received(1)
    client = await open_stream(transport, "127.0.0.1", server.port, f"token={token}", state, rec)
    await ctx.loader.publish_one("publisher", user)
    await asyncio.wait_for(first, 10)
    last_id = state.last_id
    client.close()
    await asyncio.sleep(0.2)

    seq_lo = ctx.loader.peek()
    for _ in range(missed):
        await ctx.loader.publish_one("publisher", user)
    rec.reset(seq_lo)
    rec.keep_ids = False
    done = rec.when_received(missed)
    state = ConnState(user, loop.create_future())
    started = time.time()
    query = f"token={token}&last_event_id={last_id}"
    client = await open_stream(transport, "127.0.0.1", server.port, query, state, rec)
    connected = time.time()
    try:
        finished = await asyncio.wait_for(done, 30)
    except TimeoutError:
        finished = None
    finally:
        client.close()
    return {
        "received": rec.received,
        "lost": missed - rec.received,
        "duplicates": rec.duplicates,
        "out_of_order": rec.out_of_order,
        "resyncs": rec.resyncs,
        "total_ms": round(1000 * (finished - started), 2) if finished else None,
        "after_connected_ms": round(1000 * (finished - connected), 2) if finished else None,
    }


async def run(ctx: Context, server: SystemServer) -> dict[str, Any]:
    missed = ctx.options.replay_events
    runs = [await once(ctx, server, f"replay-{i}", missed) for i in range(REPEATS)]
    totals = [r["total_ms"] for r in runs if r["total_ms"] is not None]
    return {
        "missed_events": missed,
        "runs": runs,
        "median_total_ms": round(statistics.median(totals), 2) if totals else None,
        "complete": all(r["lost"] == 0 and r["resyncs"] == 0 for r in runs),
    }
