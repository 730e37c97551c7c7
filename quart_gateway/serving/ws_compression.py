"""WebSocket per-message deflate: off unless WS_COMPRESSION is set.

Hypercorn accepts permessage-deflate whenever a client offers it, and every browser does. Each
such connection then keeps zlib state for its lifetime: measured here, 140 KiB per connection
with deflate against 47 KiB without. Live events are small JSON objects, so compression buys
little for that memory. Hypercorn has no setting for it, so the gateway swaps the extension
Hypercorn offers for one that declines every offer; clients then talk uncompressed, which the
protocol allows (RFC 7692: the server may decline).
"""

from __future__ import annotations

from hypercorn.protocol import ws_stream
from wsproto.extensions import PerMessageDeflate


class DecliningPerMessageDeflate(PerMessageDeflate):
    """permessage-deflate that never agrees to be used."""

    def accept(self, offer: str) -> bool | str | None:
        return None


def configure(enabled: bool) -> None:
    """Process-wide: Hypercorn builds the extension list for each handshake from this name."""
    extension = PerMessageDeflate if enabled else DecliningPerMessageDeflate
    setattr(ws_stream, "PerMessageDeflate", extension)  # noqa: B010  (not a public name)
