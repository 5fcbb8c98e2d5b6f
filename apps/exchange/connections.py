"""The simulator's connections: per-connection state, the ordered outbound queue, sending and heartbeat pings.

Each connection has one writer task that sends its queued frames in order, so a client that reads slowly
makes its own queue grow; past ``outbound_limit`` data frames its subscription ends with error 25, as
Kalshi's does. The per-frame faults (malformed and oversized frames) and the ping faults apply here.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from apps.exchange.config import SimulatorConfig
from apps.exchange.counts import FaultCounts, TrafficCounts
from apps.exchange.sequencing import SeqLog
from apps.kalshi.messages import ERROR_BUFFER_OVERFLOW, error_frame
from apps.kalshi.signing import HEADER_KEY

# Malformed frames sent by the malformed_every fault, in rotation.
MALFORMED_FRAMES = (
    '{"type":"orderbook_delta","sid":',
    '["orderbook_delta",1,2]',
    '{"type":"orderbook_delta","msg":{"side":"yes"}}',
)


class Connection:
    """One WebSocket connection: its subscriptions and its outbound queue."""

    def __init__(self, number: int, ws: ServerConnection) -> None:
        self.number = number
        self.ws = ws
        self.subs: dict[int, Subscription] = {}
        self.outbox: deque[tuple[str, int | None]] = deque()
        """Frames as text, each with the sid it belongs to (None: a command reply)."""
        self.wake = asyncio.Event()
        self.sent = 0
        self.malformed = 0
        self.closed = False
        request = ws.request
        self.owner = request.headers.get(HEADER_KEY, "") if request is not None else ""
        """The handshake's API key id: the account whose private channels this connection may read."""


@dataclass(eq=False)
class Subscription:
    sid: int
    channel: str
    connection: Connection
    log: SeqLog
    tickers: list[str]
    skip_ticker_ack: bool = False
    use_yes_price: bool = False
    deltas: int = 0
    active: bool = True


MessageHandler = Callable[[Connection, str | bytes], None]


class Connections:
    """Every open connection of one exchange, and the sending side of each."""

    def __init__(self, config: SimulatorConfig, *, traffic: TrafficCounts, fault_counts: FaultCounts) -> None:
        self._config = config
        """Read at every use, so changed settings and fault switches take effect at once."""
        self._traffic = traffic
        self._fault_counts = fault_counts
        self.open: dict[int, Connection] = {}
        self._next_number = 1
        self._oversized_cache: tuple[int, str] | None = None

    def subscriptions(self) -> list[Subscription]:
        """Every subscription of every open connection (a copy: ending one while iterating is safe)."""
        return [sub for connection in self.open.values() for sub in connection.subs.values()]

    async def serve(self, ws: ServerConnection, on_message: MessageHandler) -> None:
        """Run one connection until it closes: ``on_message`` handles each command it sends."""
        send_buffer = self._config.socket_send_buffer
        if send_buffer:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        connection = Connection(self._next_number, ws)
        self._next_number += 1
        self.open[connection.number] = connection
        self._traffic.connections_total += 1
        tasks = [asyncio.create_task(self._write_loop(connection))]
        if self._config.ping_interval > 0:
            tasks.append(asyncio.create_task(self._ping_loop(connection)))
        try:
            async for message in ws:
                on_message(connection, message)
        except ConnectionClosed:
            pass
        finally:
            connection.closed = True
            for sub in connection.subs.values():
                sub.active = False
            connection.subs.clear()
            self.open.pop(connection.number, None)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def abort_all(self) -> int:
        """Abort every open connection without a close frame; returns how many there were."""
        connections = list(self.open.values())
        for connection in connections:
            connection.ws.transport.abort()
        return len(connections)

    def enqueue(self, connection: Connection, frame: dict[str, Any], sid: int | None = None) -> None:
        """Queue a frame. Data frames (``sid`` given) beyond ``outbound_limit`` end that subscription
        with error 25, as Kalshi does when a client does not keep up."""
        if connection.closed:
            return
        if sid is not None and len(connection.outbox) >= self._config.outbound_limit:
            sub = connection.subs.get(sid)
            if sub is not None:
                self._fault_counts.buffer_overflow += 1
                self.end_subscription(sub, ERROR_BUFFER_OVERFLOW, discard_queued=True)
            return
        connection.outbox.append((json.dumps(frame, separators=(",", ":")), sid))
        connection.wake.set()

    def end_subscription(self, sub: Subscription, code: int, *, discard_queued: bool = False) -> None:
        """End a subscription server-side with a terminal error.

        On overflow (``discard_queued``) its frames still queued are lost, as a dropped buffer would be;
        otherwise everything queued before the error is still delivered.
        """
        if not sub.active:
            return
        sub.active = False
        connection = sub.connection
        connection.subs.pop(sub.sid, None)
        if discard_queued:
            kept = [item for item in connection.outbox if item[1] != sub.sid]
            connection.outbox.clear()
            connection.outbox.extend(kept)
        self.enqueue(connection, error_frame(None, code, sid=sub.sid))

    async def _write_loop(self, connection: Connection) -> None:
        """Send queued frames in order; a client that reads slowly makes the queue grow (see enqueue)."""
        ws = connection.ws
        try:
            while True:
                if not connection.outbox:
                    connection.wake.clear()
                    await connection.wake.wait()
                    continue
                text, _ = connection.outbox.popleft()
                await ws.send(text)
                self._traffic.messages_sent += 1
                connection.sent += 1
                faults = self._config.faults
                if faults.malformed_every and connection.sent % faults.malformed_every == 0:
                    await ws.send(MALFORMED_FRAMES[connection.malformed % len(MALFORMED_FRAMES)])
                    connection.malformed += 1
                    self._fault_counts.malformed += 1
                if faults.oversized_every and connection.sent % faults.oversized_every == 0:
                    await ws.send(self._oversized_frame(faults.oversized_bytes))
                    self._fault_counts.oversized += 1
        except ConnectionClosed:
            pass

    def _oversized_frame(self, size: int) -> str:
        if self._oversized_cache is None or self._oversized_cache[0] != size:
            head, tail = '{"type":"padding","msg":{"pad":"', '"}}'
            self._oversized_cache = (size, head + "x" * max(0, size - len(head) - len(tail)) + tail)
        return self._oversized_cache[1]

    async def _ping_loop(self, connection: Connection) -> None:
        ws = connection.ws
        try:
            while True:
                await asyncio.sleep(self._config.ping_interval)
                if self._config.faults.no_ping:
                    self._fault_counts.no_ping += 1
                    continue
                # Sent raw: ws.ping() refuses a second ping with the same body while a pong is pending.
                async with ws.send_context():
                    ws.protocol.send_ping(b"heartbeat")
                self._traffic.pings_sent += 1
        except ConnectionClosed:
            pass
