"""Prometheus metrics: a trader's own port and the web app's /metrics tell what /v3/status tells."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.test import Client, override_settings
from prometheus_client.samples import Sample

from apps.kalshi.environments import ConfigurationError, Environment
from apps.kalshi.feed import FeedEventKind
from apps.marketdata.recorder import DatabaseRecorder
from apps.trader.core.eventbus import EventBus
from apps.trader.core.states import State
from apps.trader.metrics import MetricsServer, TraderCollector, live_shards, on_loop
from apps.trader.runtime import load_trader_config
from tests.support import eventually
from tests.support import metric_one_hot as one_hot
from tests.support import metric_samples as samples
from tests.support import metric_value as value
from tests.trader.builders import MARKETS, MemoryStore, StandInClients, build_coordinator, delta, snapshot
from tests.trader.conftest import EventLog

pytestmark = pytest.mark.django_db(transaction=True)


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


async def scrape(server: MetricsServer) -> list[Sample]:
    # A blocking HTTP request from a thread: the scrape itself waits for this loop to read the trader.
    return samples(await asyncio.to_thread(http_text, f"http://127.0.0.1:{server.port}/metrics"))


async def status_document() -> dict[str, Any]:
    response = await sync_to_async(Client().get)("/v3/status")
    assert response.status_code == 200
    return dict(response.json())


async def web_metrics() -> list[Sample]:
    response = await sync_to_async(Client().get)("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


async def test_it_serves_the_trader_s_figures_as_v3_status_shows_them(bus: EventBus) -> None:
    bus.subscribe("log", EventLog())
    stand_ins = StandInClients()
    recorder = DatabaseRecorder(flush_interval=0.01)
    coordinator = build_coordinator(stand_ins, bus=bus, recorder=recorder)
    run = asyncio.create_task(coordinator.run())
    loop = asyncio.get_running_loop()
    server = MetricsServer(
        TraderCollector(lambda: on_loop(loop, lambda: live_shards(coordinator))), host="127.0.0.1", port=0
    )
    try:
        await eventually(lambda: coordinator.machine.state is State.CONNECTING)
        connecting = await scrape(server)
        assert one_hot(connecting, "trader_state", "state") == ["kalshi_connectivity_orderbook_client"]
        assert value(connecting, "trader_feed_messages_total") == 0

        client = stand_ins.last
        for ticker in MARKETS:
            await client.feed(snapshot(ticker, 1, 1, yes=[("0.4200", "10.00")], no=[("0.5500", "5.00")]))
        await client.event(FeedEventKind.SYNCED, markets=tuple(MARKETS))
        for seq in range(2, 7):
            await client.feed(delta(MARKETS[0], 1, seq, "0.4300", "1.00"))
        client.metrics.errors_by_code.update({25: 2, 10: 1})  # as the client counts the exchange's error frames
        await eventually(lambda: coordinator.machine.state is State.READY)

        async def heartbeat_caught_up() -> bool:
            document = await status_document()
            written = document["metrics"].get("recorder", {}).get("written")
            return bool(document["session"]["counters"]["messages_received"] == 8 and written == 8)

        await eventually(heartbeat_caught_up, what="a heartbeat with every message and row")
        live = await scrape(server)
        status = await status_document()
        web = await web_metrics()
    finally:
        coordinator.request_shutdown("done")
        await run
        await server.close()
        await recorder.close()

    shard = str(status["session"]["id"])
    for found in (live, web):
        assert value(found, "trader_feed_messages_total", shard=shard, environment="sim") == 8
        assert value(found, "trader_feed_snapshots_total") == status["session"]["counters"]["snapshots_received"] == 3
        assert value(found, "trader_feed_deltas_total") == status["session"]["counters"]["deltas_received"] == 5
        assert one_hot(found, "trader_state", "state") == [status["state"]] == ["ready"]
        assert value(found, "trader_markets") == status["market_counts"]["total"] == 3
        assert value(found, "trader_markets_live") == status["market_counts"]["connected"] == 3
        assert value(found, "trader_markets_stale") == 0
        assert value(found, "trader_state_transitions_total", to_state="ready") == 1
        assert one_hot(found, "trader_health", "status") == [status["health"]["status"]]
        assert value(found, "trader_recorder_written_rows_total") == 8
        errors = status["metrics"]["errors_by_code"]
        assert value(found, "trader_feed_errors_total", code="25") == errors["25"] == 2
        assert value(found, "trader_feed_errors_total", code="10") == errors["10"] == 1
        # Every batch write the recorder made is in the histogram's +Inf bucket.
        batches = status["metrics"]["recorder"]["batches"]
        assert value(found, "trader_recorder_write_duration_seconds_bucket", le="+Inf") == batches > 0
        assert value(found, "trader_recorder_write_duration_seconds_count") == batches
    assert value(live, "trader_event_bus_dropped_events_total", subscriber="log") == 0
    assert not [s for s in live if s.name == "trader_heartbeat_age_seconds"]  # the trader has no heartbeat to wait for
    assert value(web, "trader_heartbeat_age_seconds") >= 0
    assert value(web, "trader_consoles_connected") == 0
    assert value(web, "trader_console_missed_events_total") >= 0  # the process's consoles, whatever ran before


def test_the_metrics_port_is_off_unless_asked_for() -> None:
    assert settings.TRADER_METRICS_PORT is None
    assert load_trader_config(settings, web=False).metrics_port is None
    config = load_trader_config(settings, web=False, metrics_port=0)
    assert (config.metrics_host, config.metrics_port) == ("127.0.0.1", 0)


def test_outside_sim_the_metrics_port_goes_beyond_loopback_only_when_asked(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paper = {
        "ENVIRONMENT": Environment.PAPER,
        "KALSHI_API_KEY_ID": "key-id",
        "KALSHI_PRIVATE_KEY_PATH": str(key),
        "KALSHI_WS_URL": "wss://demo-api.kalshi.co/trade-api/ws/v2",
        "KALSHI_API_URL": "https://demo-api.kalshi.co/trade-api/v2",
    }
    with override_settings(**paper):
        with pytest.raises(ConfigurationError) as refused:
            load_trader_config(settings, markets=MARKETS[0], web=False, metrics_port=9106, metrics_host="0.0.0.0")
        assert refused.value.problems == [
            "--metrics-host: 0.0.0.0 is beyond loopback and the metrics port has no login; pass --metrics-expose "
            "(or set TRADER_METRICS_EXPOSE=yes) to serve metrics there anyway"
        ]
        config = load_trader_config(
            settings, markets=MARKETS[0], web=False, metrics_port=9106, metrics_host="0.0.0.0", metrics_expose=True
        )
    assert (config.metrics_host, config.metrics_port) == ("0.0.0.0", 9106)


async def test_a_scrape_before_the_session_exists_shows_no_shard(bus: EventBus) -> None:
    coordinator = build_coordinator(StandInClients(), bus=bus)
    loop = asyncio.get_running_loop()
    server = MetricsServer(
        TraderCollector(lambda: on_loop(loop, lambda: live_shards(coordinator))), host="127.0.0.1", port=0
    )
    try:
        found = await scrape(server)
    finally:
        await server.close()
    assert not [s for s in found if s.name.startswith("trader_")]
    assert value(found, "process_resident_memory_bytes") > 0


async def test_while_the_database_does_not_answer_the_trader_s_own_port_still_tells(bus: EventBus) -> None:
    stand_ins, store = StandInClients(), MemoryStore()
    coordinator = build_coordinator(stand_ins, bus=bus, store=store, database_slow_after=0.2)
    run = asyncio.create_task(coordinator.run())
    loop = asyncio.get_running_loop()
    server = MetricsServer(
        TraderCollector(lambda: on_loop(loop, lambda: live_shards(coordinator))), host="127.0.0.1", port=0
    )
    try:
        await eventually(lambda: coordinator.machine.state is State.CONNECTING)
        client = stand_ins.last
        await client.event(FeedEventKind.SYNCED, markets=tuple(MARKETS))
        await eventually(lambda: coordinator.machine.state is State.READY)
        store.answering.clear()
        await client.feed(snapshot(MARKETS[0], 1, 1, yes=[("0.4200", "10.00")], no=[("0.5500", "5.00")]))

        async def unhealthy() -> bool:
            return one_hot(await scrape(server), "trader_health", "status") == ["unhealthy"]

        await eventually(unhealthy, what="the port to say the trader is unhealthy")
        found = await scrape(server)
        assert one_hot(found, "trader_state", "state") == ["ready"]  # the feed and the books stay live
        assert value(found, "trader_feed_messages_total") == 1
    finally:
        store.answering.set()
        coordinator.request_shutdown("done")
        await run
        await server.close()


async def test_a_gap_shows_as_a_stale_market_and_a_degraded_shard(bus: EventBus) -> None:
    stand_ins = StandInClients()
    coordinator = build_coordinator(stand_ins, bus=bus, store=MemoryStore())
    run = asyncio.create_task(coordinator.run())
    loop = asyncio.get_running_loop()
    server = MetricsServer(
        TraderCollector(lambda: on_loop(loop, lambda: live_shards(coordinator))), host="127.0.0.1", port=0
    )
    try:
        await eventually(lambda: coordinator.machine.state is State.CONNECTING)
        client = stand_ins.last
        for ticker in MARKETS:
            await client.feed(snapshot(ticker, 1, 1, yes=[("0.4200", "10.00")], no=[("0.5500", "5.00")]))
        await client.event(FeedEventKind.SYNCED, markets=tuple(MARKETS))
        await eventually(lambda: coordinator.machine.state is State.READY)
        # The stand-in counts the gap and marks its markets stale, as the client does on a seq jump.
        await client.event(FeedEventKind.GAP, sid=1, expected_seq=2, received_seq=4, markets=(MARKETS[1],))
        client.last_message_at = time.time() - 30  # the exchange has been quiet for half a minute
        found = await scrape(server)
    finally:
        coordinator.request_shutdown("done")
        await run
        await server.close()
    assert value(found, "trader_feed_gaps_total") == 1
    assert (value(found, "trader_markets_live"), value(found, "trader_markets_stale")) == (2, 1)
    assert one_hot(found, "trader_health", "status") == ["degraded"]
    assert value(found, "trader_feed_connected") == 1
    assert value(found, "trader_feed_last_message_age_seconds") >= 30
