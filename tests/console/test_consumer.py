from __future__ import annotations

from datetime import UTC, datetime

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings

from apps.console.presence import console_counts
from apps.trader.broadcast import layer_message
from apps.trader.core.eventbus import Event
from apps.trader.core.statemachine import Transition
from apps.trader.core.states import State
from apps.trader.services import session_heartbeat, session_start, transition_record
from tests.support import ConsoleSocket
from trader_v3.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


def a_session_that_reached_ready() -> int:
    session = session_start(environment="sim", markets=["KXFED-26DEC-T4.25"], exchange_url="ws://127.0.0.1:1/x")
    stamp = datetime(2026, 11, 24, 10, 30, 1, tzinfo=UTC)
    for a, b, context in [
        (State.STARTUP, State.INITIALIZING, "Initializing 1 market(s)"),
        (State.INITIALIZING, State.CONNECTING, "Starting orderbook client for 1 markets"),
        (State.CONNECTING, State.READY, "Orderbooks live for 1 markets"),
    ]:
        transition_record(session_id=session.pk, transition=Transition(a, b, context, stamp, {"deltas_received": 0}))
    session_heartbeat(
        session_id=session.pk,
        state="ready",
        state_entered_at=stamp,
        status={"state": "ready", "metrics": {"deltas_received": 12}},
        counters={"deltas_received": 12},
        console=[{"level": "info", "message": "Session started", "context": "", "timestamp": stamp.isoformat()}],
        tops=[{"market_ticker": "KXFED-26DEC-T4.25"}],
    )
    return session.pk


async def connect() -> WebsocketCommunicator:
    communicator = ConsoleSocket(
        application, "/v3/ws", headers=[(b"origin", b"http://127.0.0.1:8006"), (b"host", b"127.0.0.1:8006")]
    )
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def test_a_new_console_gets_the_session_history_then_live_events() -> None:
    from asgiref.sync import sync_to_async

    session_id = await sync_to_async(a_session_that_reached_ready)()
    communicator = await connect()

    replay = await communicator.receive_json_from()
    assert replay["type"] == "history_replay"
    data = replay["data"]
    assert data["session"]["id"] == session_id
    assert [(t["from_state"], t["to_state"]) for t in data["transitions"]] == [
        ("startup", "initializing"),
        ("initializing", "kalshi_connectivity_orderbook_client"),
        ("kalshi_connectivity_orderbook_client", "ready"),
    ]
    assert data["transitions"][1]["context"] == "Starting orderbook client for 1 markets"
    assert data["status"]["metrics"]["deltas_received"] == 12
    assert data["console"][0]["message"] == "Session started"
    # No books and no market list: the page asks for the rows it shows (request_markets).
    assert "orderbooks" not in data and "markets" not in data["status"]
    assert data["session"]["markets_total"] == 1
    assert data["shards"][0]["market_counts"]["total"] == 1

    layer = get_channel_layer()
    event = {"from_state": "ready", "to_state": "error", "context": "boom", "timestamp": "t", "metrics": {}}
    await layer.group_send(settings.CONSOLE_GROUP, layer_message(Event("state_transition", event)))
    assert await communicator.receive_json_from() == {"type": "state_transition", "data": event}
    for kind in ("trader_status", "console"):
        await layer.group_send(settings.CONSOLE_GROUP, layer_message(Event(kind, {"n": kind})))
        assert await communicator.receive_json_from() == {"type": kind, "data": {"n": kind}}
    books = {"session_id": session_id, "books": [{"market_ticker": "KXFED-26DEC-T4.25", "seq": 7}]}
    await layer.group_send(settings.CONSOLE_GROUP, layer_message(Event("orderbooks", books)))
    assert await communicator.receive_json_from() == {"type": "orderbooks", "data": books}
    await communicator.disconnect()


async def test_with_no_session_the_replay_is_empty() -> None:
    communicator = await connect()
    replay = await communicator.receive_json_from()
    assert replay == {
        "type": "history_replay",
        "data": {"session": None, "transitions": [], "status": None, "console": [], "shards": [], "rates": []},
    }
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("sent", "complaint"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2, 3]", "JSON object"),
        ('{"type": "launch_missiles"}', "unknown message type"),
        ("x" * 5000, "at most 4096"),
    ],
)
async def test_bad_client_messages_get_an_error_and_the_socket_stays_up(sent: str, complaint: str) -> None:
    communicator = await connect()
    await communicator.receive_json_from()  # history
    await communicator.send_to(text_data=sent)
    reply = await communicator.receive_json_from()
    assert reply["type"] == "error"
    assert complaint in reply["data"]["message"]
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from() == {"type": "pong", "data": {}}
    await communicator.disconnect()


async def group_size(group: str) -> int:
    """Members of a group, on the in-memory layer or on Redis."""
    layer = get_channel_layer()
    if hasattr(layer, "groups"):
        return len(layer.groups.get(group, {}))
    connection = layer.connection(layer.consistent_hash(group))
    return int(await connection.zcard(layer._group_key(group)))


async def test_leaving_removes_the_console_from_the_group() -> None:
    before = await group_size(settings.CONSOLE_GROUP)
    communicator = await connect()
    await communicator.receive_json_from()
    assert await group_size(settings.CONSOLE_GROUP) == before + 1
    await communicator.disconnect()
    assert await group_size(settings.CONSOLE_GROUP) == before


async def test_a_foreign_origin_is_refused() -> None:
    communicator = ConsoleSocket(application, "/v3/ws", headers=[(b"origin", b"http://evil.example")])
    connected, _ = await communicator.connect()
    assert not connected
    # As the server does once the close is sent: the refused consumer ends rather than being left to the
    # loop's teardown, where cancelling its pending Redis receive can hang.
    await communicator.disconnect()


async def test_live_events_carry_a_running_seq_so_a_console_can_count_what_it_missed() -> None:
    from apps.trader.broadcast import ChannelLayerBroadcaster

    communicator = await connect()
    await communicator.receive_json_from()  # history
    broadcaster = ChannelLayerBroadcaster(get_channel_layer(), settings.CONSOLE_GROUP)
    for n in range(3):
        await broadcaster(Event("console", {"n": n}))
    received = [await communicator.receive_json_from() for _ in range(3)]
    assert [m["seq"] for m in received] == [1, 2, 3]
    assert [m["data"]["n"] for m in received] == [0, 1, 2]
    await communicator.disconnect()


async def test_each_trader_numbers_its_events_under_its_own_origin() -> None:
    from apps.trader.broadcast import ChannelLayerBroadcaster

    communicator = await connect()
    await communicator.receive_json_from()  # history
    shards = [ChannelLayerBroadcaster(get_channel_layer(), settings.CONSOLE_GROUP) for _ in range(2)]
    for shard in (shards[0], shards[1], shards[0]):
        await shard(Event("console", {}))
    received = [await communicator.receive_json_from() for _ in range(3)]
    assert [(m["origin"], m["seq"]) for m in received] == [
        (shards[0].origin, 1),
        (shards[1].origin, 1),
        (shards[0].origin, 2),
    ]
    assert shards[0].origin != shards[1].origin
    await communicator.disconnect()


async def test_events_the_channel_layer_lost_are_counted_for_the_metrics() -> None:
    communicator = await connect()
    await communicator.receive_json_from()  # history
    before = console_counts().missed_events
    layer = get_channel_layer()
    # Trader a's events 2-4 and trader b's 2 never arrive; a restarted trader a starts again from 1.
    for origin, seq in [("a", 1), ("b", 1), ("a", 5), ("b", 3), ("a", 1), ("a", 2)]:
        await layer.group_send(settings.CONSOLE_GROUP, layer_message(Event("console", {}), seq, origin))
    received = [await communicator.receive_json_from() for _ in range(6)]
    assert [m["seq"] for m in received] == [1, 1, 5, 3, 1, 2]
    assert console_counts().missed_events == before + 4
    await communicator.disconnect()


async def test_with_no_trader_a_page_of_markets_is_empty() -> None:
    communicator = await connect()
    assert (await communicator.receive_json_from())["type"] == "history_replay"
    await communicator.send_json_to({"type": "request_markets", "filter": "KX"})
    page = (await communicator.receive_json_from())["data"]
    assert (page["total"], page["markets_total"], page["markets"]) == (0, 0, [])
    await communicator.disconnect()
