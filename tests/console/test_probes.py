from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.trader.core.statemachine import Transition
from apps.trader.core.states import State
from apps.trader.models import TradingSession
from apps.trader.services import session_end, session_heartbeat, session_start, transition_record

# The health view reads on its own thread (its own connection): rows must be committed for it to see them.
pytestmark = pytest.mark.django_db(transaction=True)

LIVE_METRICS = {
    "ws_connection_status": "connected",
    "markets_connected": 2,
    "stale_markets": 0,
    "socket_silent_seconds": 0.4,
}


def a_trader(
    state: str = "ready", metrics: dict | None = None, heartbeat_age: float = 0.0, markets: tuple[str, ...] = ("A", "B")
) -> TradingSession:
    session = session_start(environment="sim", markets=list(markets), exchange_url="ws://127.0.0.1:9/x")
    status = {"state": state, "metrics": metrics if metrics is not None else LIVE_METRICS}
    session_heartbeat(
        session_id=session.pk,
        state=state,
        state_entered_at=timezone.now(),
        status=status,
        counters={"deltas_received": 5},
        console=[],
        tops=[{"market_ticker": markets[0], "yes_bid": {"price": "0.4200", "size": "12.50"}}],
    )
    if heartbeat_age:
        TradingSession.objects.filter(pk=session.pk).update(
            heartbeat_at=timezone.now() - timedelta(seconds=heartbeat_age)
        )
    return session


def test_health_is_200_when_ready_with_a_fresh_heartbeat_and_a_live_socket(client: Client) -> None:
    a_trader()
    response = client.get("/v3/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "reason": "ready; 2 markets live"}


@pytest.mark.parametrize(
    ("trader", "reason"),
    [
        ({"state": "kalshi_connectivity_orderbook_client"}, "trader is connecting to the exchange"),
        ({"state": "error"}, "trader is recovering from an error"),
        ({"heartbeat_age": 30.0}, "trader heartbeat is 30."),
        ({"metrics": {**LIVE_METRICS, "ws_connection_status": "connecting"}}, "exchange socket is connecting"),
        ({"metrics": {**LIVE_METRICS, "socket_silent_seconds": 45.0}}, "exchange socket silent for 45.0 s"),
    ],
)
def test_health_is_503_with_the_reason_otherwise(client: Client, trader: dict, reason: str) -> None:
    a_trader(**trader)
    response = client.get("/v3/health")
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert response.json()["reason"].startswith(reason)


def test_health_is_200_as_soon_as_ready_is_recorded_before_the_next_heartbeat(client: Client) -> None:
    session = a_trader("kalshi_connectivity_orderbook_client", {**LIVE_METRICS, "ws_connection_status": "connecting"})
    assert client.get("/v3/health").status_code == 503
    transition_record(
        session_id=session.pk,
        transition=Transition(
            State.CONNECTING,
            State.READY,
            "Orderbooks live",
            timezone.now(),
            {"ws_connection_status": "connected", "markets_connected": 2, "stale_markets": 0},
        ),
    )
    response = client.get("/v3/health")
    assert response.status_code == 200, response.json()
    assert response.json() == {"status": "healthy", "reason": "ready; 2 markets live"}
    # The transition adds to the heartbeat's metrics; it does not drop what only heartbeats carry.
    assert TradingSession.objects.get(pk=session.pk).latest_metrics["socket_silent_seconds"] == 0.4


def test_stale_books_are_degraded_but_up(client: Client) -> None:
    a_trader(metrics={**LIVE_METRICS, "stale_markets": 1})
    response = client.get("/v3/health")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"


def test_health_without_any_session_or_after_shutdown(client: Client) -> None:
    assert client.get("/v3/health").status_code == 503
    session = a_trader()
    session_end(session_id=session.pk, failed=False, error="")
    response = client.get("/v3/health")
    assert response.status_code == 503
    assert response.json()["reason"] == "the latest session is stopped"


def test_status_describes_the_trader_from_its_rows(client: Client) -> None:
    session = a_trader()
    document = client.get("/v3/status").json()
    assert document["environment"] == "sim"
    assert document["state"] == "ready"
    assert document["time_in_state"] >= 0
    assert document["session"]["id"] == session.pk
    assert document["session"]["markets_total"] == 2
    assert document["market_counts"] == {"total": 2, "connected": 2, "stale": 0}
    assert client.get("/v3/status?market=A").json()["book"]["yes_bid"] == {"price": "0.4200", "size": "12.50"}
    assert document["metrics"]["ws_connection_status"] == "connected"


def test_two_healthy_shards_are_one_healthy_fleet_and_status_lists_both(client: Client) -> None:
    first, second = a_trader(markets=("A", "B")), a_trader(markets=("C",))
    response = client.get("/v3/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "reason": "ready; 2 shards, 3 markets live"}
    document = client.get("/v3/status").json()
    assert {shard["session"]["id"] for shard in document["shards"]} == {first.pk, second.pk}
    assert all(shard["state"] == "ready" and shard["health"]["status"] == "healthy" for shard in document["shards"])
    assert document["market_counts"]["total"] == 3
    page = client.get("/v3/status?markets=1").json()
    assert [book["market_ticker"] for book in page["markets"]] == ["A", "B", "C"]
    assert [book["yes_bid"] is None for book in page["markets"]] == [False, True, False]  # B has no top yet
    assert client.get("/v3/status?market=C").json()["session_id"] == second.pk


def test_one_unhealthy_shard_makes_the_fleet_unhealthy_and_is_named(client: Client) -> None:
    a_trader(markets=("A",))
    broken = a_trader(markets=("C",), state="kalshi_connectivity_orderbook_client")
    response = client.get("/v3/health")
    assert response.status_code == 503
    assert response.json()["reason"] == f"session {broken.pk}: trader is connecting to the exchange"


def test_a_shard_that_stopped_shows_until_its_markets_are_watched_again(client: Client) -> None:
    a_trader(markets=("A",))
    gone = a_trader(markets=("C",))
    session_end(session_id=gone.pk, failed=False, error="")
    response = client.get("/v3/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "degraded",
        "reason": f"session {gone.pk} stopped; its markets are not watched",
    }
    stopped = [shard for shard in client.get("/v3/status").json()["shards"] if shard["session"]["id"] == gone.pk]
    assert stopped[0]["session"]["status"] == "stopped"

    a_trader(markets=("C",))  # the shard is back under a new session
    assert client.get("/v3/health").json()["status"] == "healthy"


def test_a_shard_that_stopped_long_ago_is_no_longer_shown(client: Client) -> None:
    a_trader(markets=("A",))
    gone = a_trader(markets=("C",))
    session_end(session_id=gone.pk, failed=False, error="")
    TradingSession.objects.filter(pk=gone.pk).update(ended_at=timezone.now() - timedelta(minutes=11))
    assert client.get("/v3/health").json()["status"] == "healthy"
    assert gone.pk not in {shard["session"]["id"] for shard in client.get("/v3/status").json()["shards"]}


def test_status_never_shows_secrets(client: Client, settings: object) -> None:
    from django.conf import settings as django_settings

    a_trader()
    body = client.get("/v3/status").content.decode()
    assert django_settings.SECRET_KEY not in body
    page = client.get("/v3-trader").content.decode()
    assert django_settings.SECRET_KEY not in page


def test_the_console_page_renders_state_and_environment(client: Client) -> None:
    a_trader()
    response = client.get("/v3-trader")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-ws-path="/v3/ws"' in html
    assert 'id="state-badge"' in html
    assert "ready" in html
    assert '<script type="module" src="/static/console/main.js">' in html
    assert 'data-ticker="A"' in html  # the first page of markets, before any script runs


def test_the_admin_lists_sessions_newest_first_with_transitions_inline(admin_client: Client) -> None:
    older = a_trader()
    newer = a_trader()
    listing = admin_client.get("/admin/trader/tradingsession/")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert html.index(f"/admin/trader/tradingsession/{newer.pk}/change/") < html.index(
        f"/admin/trader/tradingsession/{older.pk}/change/"
    )
    assert (
        admin_client.get("/admin/trader/tradingsession/?environment__exact=sim&status__exact=running").status_code
        == 200
    )
    assert admin_client.get("/admin/trader/tradingsession/?q=A").status_code == 200
    detail = admin_client.get(f"/admin/trader/tradingsession/{newer.pk}/change/")
    assert detail.status_code == 200
