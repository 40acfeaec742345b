"""Writing websocket text frames without a coroutine per frame, several per system call.

websockets writes each frame with its own `transport.write` (one system call, one TCP segment
on loopback). A relay answers a group commit with a burst of OKs and events to the same few
connections, and a provider publishes feedback and results in bursts, so both ends frame
their messages at once (`frame_now`) and write what one event-loop turn framed together at its
end (`write_framed`, scheduled once per turn by the caller). The reader at the other end then
gets fewer, fuller reads too. Order is kept: websockets' own sends (back-pressured sends,
pings, close) flush the same queue, in order.
"""

from __future__ import annotations

from typing import Any

from websockets.protocol import State


def can_frame_now(ws: Any) -> bool:
    """True when a frame may skip websockets' send(): open, not back-pressured, no
    fragmented send in progress (otherwise `await ws.send()` waits its turn)."""
    return ws.protocol.state is State.OPEN and not ws.paused and ws.send_in_progress is None


def write_framed(ws: Any) -> bool:
    """Write the frames queued on `ws`'s protocol in one system call; False when the
    transport is gone (the reader sees the close)."""
    try:
        writes = ws.protocol.data_to_send()
        if not writes:
            return True
        if all(writes):
            ws.transport.writelines(writes)  # joined into one write (asyncio, Python 3.11)
        else:  # an end-of-stream marker among them: websockets knows what to do with it
            ws.protocol.writes[:0] = writes
            ws.send_data()
        return True
    except Exception:
        return False
