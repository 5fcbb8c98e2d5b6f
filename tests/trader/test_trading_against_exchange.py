"""The trader trading against the built-in exchange: the trading states, a strategy's orders and fills,
risk limits, the kill switch, shutdown, reconnects and a failing strategy, checked against the exchange's
own books and accounts and against the rows the session recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.backoff import Backoff
from apps.kalshi.environments import Environment, TradingPermission
from apps.kalshi.portfolio import OrderRequest
from apps.kalshi.signing import Credentials
from apps.kalshi.trading import KalshiTradingClient
from apps.trader.config import TradingChoice
from apps.trader.core.coordinator import Coordinator
from apps.trader.core.eventbus import EventBus
from apps.trader.core.states import State
from apps.trader.core.trading.risk import RiskLimits
from apps.trader.core.trading.strategy import CONTRACT, DOLLAR, Strategy
from apps.trader.models import Fill, Order, StateTransition
from apps.trader.runtime import trading_setup
from tests.support import TEST_KEY_ID, StartSim, eventually, sim_trader_config
from tests.trader.builders import MARKETS, coordinator_for
from tests.trader.conftest import EventLog
from tests.trading.strategies import Exploding, RestingBids, TakeOnce

pytestmark = pytest.mark.django_db(transaction=True)

TRADING_PATH = [
    ("kalshi_connectivity_orderbook_client", "ready"),
    ("ready", "trading_client_connect"),
    ("trading_client_connect", "kalshi_data_sync"),
    ("kalshi_data_sync", "trading_ready"),
]


def strategy_path(cls: type[Strategy]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@pytest.fixture
async def trading_exchange(start_sim: StartSim) -> ExchangeSimulator:
    return await start_sim(message_rate=300.0, seed=11)


class Trader:
    """A trading coordinator against ``sim``, built by the composition root's ``trading_setup``."""

    def __init__(self, coordinator: Coordinator, log: EventLog) -> None:
        self.coordinator = coordinator
        self.log = log
        self.run: asyncio.Task[None] = asyncio.create_task(coordinator.run())

    @property
    def engine(self) -> Any:
        assert self.coordinator.trading is not None
        return self.coordinator.trading

    def transitions(self) -> list[tuple[str, str]]:
        return [(t["from_state"], t["to_state"]) for t in self.log.of("state_transition")]

    def lines(self, text: str) -> list[dict[str, Any]]:
        return [line for line in self.log.of("console") if text in line["message"]]

    async def stop(self, reason: str = "test is over") -> None:
        self.coordinator.request_shutdown(reason)
        await asyncio.wait_for(self.run, 30)


@pytest.fixture
async def start_trader(
    trading_exchange: ExchangeSimulator, credentials: Credentials, key_pair: tuple[bytes, bytes], bus: EventBus
) -> AsyncIterator[Callable[..., Trader]]:
    started: list[Trader] = []

    def start(
        strategy: type[Strategy] | str | None,
        params: dict[str, Any] | None = None,
        limits: RiskLimits | None = None,
        cancel_unknown_orders: bool = False,
        account_check_interval: float | None = None,
        **options: Any,
    ) -> Trader:
        path = strategy if isinstance(strategy, str) else strategy_path(strategy) if strategy else ""
        config = sim_trader_config(credentials, key_pair[1])
        choice = TradingChoice(
            permission=TradingPermission(Environment.SIM),
            strategy_path=path,
            strategy_params=params or {},
            limits=limits or RiskLimits(),
            cancel_unknown_orders=cancel_unknown_orders,
        )
        setup = trading_setup(
            replace(config, trading=choice), trading_exchange.ws_url, trading_exchange.api_url.rstrip("/")
        )
        assert setup is not None
        if account_check_interval is not None:
            setup = replace(setup, options=replace(setup.options, account_check_interval=account_check_interval))
        log = EventLog()
        bus.subscribe(f"log-{len(started)}", log)
        coordinator = coordinator_for(trading_exchange.ws_url, credentials, bus, trading=setup, **options)
        trader = Trader(coordinator, log)
        started.append(trader)
        return trader

    yield start
    for trader in started:
        if not trader.run.done():
            await trader.stop()


def resting_of_trader(sim: ExchangeSimulator) -> list[Any]:
    return [o for o in sim.desk.orders(TEST_KEY_ID) if o.remaining_count > 0 and o.status == "resting"]


async def exchange_positions(sim: ExchangeSimulator, credentials: Credentials) -> list[Any]:
    async with KalshiTradingClient(sim.api_url, credentials, TradingPermission(Environment.SIM)) as client:
        return [p async for p in client.positions()]


async def test_a_trader_that_trades_goes_through_the_trading_states_and_records_them(
    start_trader: Callable[..., Trader], trading_exchange: ExchangeSimulator
) -> None:
    trader = start_trader(RestingBids)
    await eventually(lambda: trader.coordinator.machine.state is State.TRADING_READY, what="trading_ready")
    await eventually(lambda: len(resting_of_trader(trading_exchange)) == len(MARKETS), what="one bid per market")
    await trader.stop()

    assert trader.transitions()[2:6] == TRADING_PATH
    rows = [
        (t.from_state, t.to_state)
        async for t in StateTransition.objects.filter(session_id=trader.coordinator.session_id)
    ]
    assert rows == trader.transitions()
    assert rows[-1] == ("trading_ready", "shutdown")
    # Shutdown cancelled every order it placed before the session closed, and the rows say so.
    assert resting_of_trader(trading_exchange) == []
    orders = [o async for o in Order.objects.filter(session_id=trader.coordinator.session_id)]
    assert len(orders) == len(MARKETS)
    assert {o.status for o in orders} == {"canceled"}
    status = trader.log.of("trader_status")[-1]
    assert status["trading"]["enabled"] is True
    assert status["trading"]["strategy"]["name"] == "resting-bids"


async def test_a_risk_limit_refuses_an_order_before_it_leaves(
    start_trader: Callable[..., Trader], trading_exchange: ExchangeSimulator
) -> None:
    trader = start_trader(RestingBids, params={"size": "3"}, limits=RiskLimits(max_order_size=2 * CONTRACT))
    await eventually(lambda: trader.engine.refusals["max_order_size"] == len(MARKETS), what="refusals")
    assert resting_of_trader(trading_exchange) == []
    # A console line says so; refusals by one rule are shown at most once a second, so the burst is one line.
    await eventually(lambda: bool(trader.lines("REFUSED by max_order_size")), what="the console line")
    assert len(trader.lines("REFUSED by max_order_size")) == 1
    assert trader.engine.counters["orders_refused"] == len(MARKETS)
    await trader.stop()
    rows = [o async for o in Order.objects.filter(session_id=trader.coordinator.session_id)]
    assert {(o.status, o.error_code, o.exchange_order_id) for o in rows} == {("refused", "max_order_size", "")}


async def test_the_kill_switch_cancels_every_resting_order_and_stops_the_strategy(
    start_trader: Callable[..., Trader], trading_exchange: ExchangeSimulator
) -> None:
    trader = start_trader(RestingBids)
    await eventually(lambda: len(resting_of_trader(trading_exchange)) == len(MARKETS), what="bids resting")

    cancelled = await trader.coordinator.kill_switch("pressed in the test")

    assert cancelled == len(MARKETS)
    assert resting_of_trader(trading_exchange) == []
    assert trader.engine.host.state == "stopped"
    await eventually(lambda: bool(trader.lines("KILL SWITCH: pressed in the test")), what="the kill switch line")
    # Trading stays stopped: no order leaves after the switch, and the state machine stays live.
    refusal = trader.engine.accepting("resting-bids")
    assert refusal is not None and refusal.rule == "trading_stopped"
    assert trader.coordinator.machine.state is State.TRADING_READY


async def test_a_dropped_connection_reconciles_without_placing_twice(
    start_trader: Callable[..., Trader], trading_exchange: ExchangeSimulator
) -> None:
    trader = start_trader(RestingBids)
    await eventually(lambda: len(resting_of_trader(trading_exchange)) == len(MARKETS), what="bids resting")
    placed = trader.engine.counters["orders_placed"]

    trading_exchange.drop_connections()
    await eventually(lambda: trader.transitions().count(("kalshi_data_sync", "trading_ready")) == 2, seconds=20)

    # The strategy started again and found its bids in the reconciled account: nothing placed twice.
    assert trader.engine.counters["orders_placed"] == placed
    assert len(resting_of_trader(trading_exchange)) == len(MARKETS)
    assert trader.engine.counters["account_syncs"] == 2
    await trader.stop()


async def test_a_strategy_that_raises_is_stopped_while_the_feed_and_recording_go_on(
    start_trader: Callable[..., Trader], trading_exchange: ExchangeSimulator
) -> None:
    trader = start_trader(Exploding)
    await eventually(lambda: trader.engine.host is not None and trader.engine.host.state == "failed", what="failed")
    await eventually(lambda: resting_of_trader(trading_exchange) == [], what="its order cancelled")
    await eventually(
        lambda: bool(trader.lines("STRATEGY exploding: cancelled 1 of its 1 working order(s)")), what="line"
    )
    failed = trader.lines("strategy exploding failed in on_book")
    assert failed and "RuntimeError: the strategy has a bug" in failed[0]["message"]
    assert failed[0]["level"] == "error" and "Traceback" in failed[0]["context"]
    client = trader.coordinator.client
    assert client is not None
    before = client.feed_status().counters.deltas_received
    await eventually(lambda: client.feed_status().counters.deltas_received > before + 50, what="the feed going on")
    assert trader.coordinator.machine.state is State.TRADING_READY
    await trader.stop()
    assert trader.coordinator.session_id is not None


async def test_the_quoter_trades_and_its_positions_equal_the_exchanges(
    start_trader: Callable[..., Trader], trading_exchange: ExchangeSimulator, credentials: Credentials
) -> None:
    trader = start_trader(
        "apps.strategies.quoter.Quoter",
        params={"spread": "0.01", "size": "1", "max_position": "3", "unwind_above": "0"},
        limits=RiskLimits(max_position=5 * CONTRACT, max_open_orders=12, max_orders_per_second=50),
    )
    await eventually(lambda: trader.coordinator.machine.state is State.TRADING_READY, what="trading_ready")
    # Its quotes fill when the market trades through them (maker); it unwinds any position at once (taker).
    await eventually(
        lambda: trader.engine.counters["maker_fills"] >= 2 and trader.engine.counters["taker_fills"] >= 1,
        seconds=40,
        what="maker and taker fills",
    )
    await trader.stop()

    theirs = await exchange_positions(trading_exchange, credentials)
    assert theirs and all(p.total_traded > 0 for p in theirs)  # the exchange lists the markets it traded
    assert trader.engine.ledger.differences(theirs) == []
    await eventually(lambda: bool(trader.lines("POSITIONS: equal to the exchange's")), what="the positions line")
    fills = [f async for f in Fill.objects.filter(session_id=trader.coordinator.session_id)]
    assert len(fills) == trader.engine.counters["fills"]
    assert resting_of_trader(trading_exchange) == []


async def place_elsewhere(sim: ExchangeSimulator, credentials: Credentials, ticker: str) -> str:
    """A bid on the trader's account placed by another program (same key), before the trader starts."""
    async with KalshiTradingClient(sim.api_url, credentials, TradingPermission(Environment.SIM)) as client:
        top = sim.true_book(ticker).top()
        assert top.yes_bid is not None
        placed = await client.create_order(OrderRequest.buy_yes(ticker, CONTRACT, top.yes_bid[0] - 9 * DOLLAR // 100))
        return placed.order_id


@pytest.mark.parametrize("cancel", [False, True], ids=["reported", "cancelled"])
async def test_resting_orders_it_did_not_place_are_reported_and_cancelled_only_when_asked(
    start_trader: Callable[..., Trader],
    trading_exchange: ExchangeSimulator,
    credentials: Credentials,
    cancel: bool,
) -> None:
    stranger = await place_elsewhere(trading_exchange, credentials, MARKETS[1])
    trader = start_trader(None, cancel_unknown_orders=cancel)
    await eventually(lambda: trader.coordinator.machine.state is State.TRADING_READY, what="trading_ready")
    text = "cancelled 1 of 1 unknown resting order(s)" if cancel else "1 resting order(s) this trader did not place"
    await eventually(lambda: bool(trader.lines(text)), what="the account line")
    still = [o.order_id for o in resting_of_trader(trading_exchange)]
    assert still == ([] if cancel else [stranger])
    await trader.stop()
    # Shutdown cancels this trader's orders only: another program's order stays unless asked.
    assert [o.order_id for o in resting_of_trader(trading_exchange)] == ([] if cancel else [stranger])


async def test_entering_error_cancels_its_orders_and_trading_resumes_with_a_new_strategy(
    start_trader: Callable[..., Trader], trading_exchange: ExchangeSimulator
) -> None:
    trader = start_trader(RestingBids, error_backoff=Backoff(initial=0.05, cap=0.1))
    await eventually(lambda: len(resting_of_trader(trading_exchange)) == len(MARKETS), what="bids resting")
    first = trader.engine.host

    trading_exchange.faults.reject_handshake = True  # the reconnect is refused: the trader goes to error
    trading_exchange.drop_connections()
    await eventually(lambda: ("kalshi_connectivity_orderbook_client", "error") in trader.transitions(), what="error")
    await eventually(lambda: resting_of_trader(trading_exchange) == [], what="its bids cancelled")
    assert first.state == "stopped"

    trading_exchange.faults.reject_handshake = False
    await eventually(lambda: trader.transitions().count(("kalshi_data_sync", "trading_ready")) == 2, seconds=20)
    await eventually(lambda: len(resting_of_trader(trading_exchange)) == len(MARKETS), what="bids again")
    assert trader.engine.host is not first and trader.engine.host.state == "running"
    await trader.stop()


async def test_a_create_whose_answer_was_lost_is_placed_once(
    start_trader: Callable[..., Trader], trading_exchange: ExchangeSimulator
) -> None:
    trading_exchange.faults.accept_then_5xx = 1  # the first create is carried out, then answered 500
    trader = start_trader(RestingBids, markets=MARKETS[:1])
    await eventually(lambda: trader.engine.counters["orders_placed"] == 1, what="the bid")
    await eventually(lambda: bool(trader.engine.orders.working()), what="the bid working")
    (order,) = trader.engine.orders.all()
    await eventually(lambda: trader.engine.orders.get(order.client_order_id).status == "resting", what="resting")
    (resting,) = resting_of_trader(trading_exchange)
    assert resting.client_order_id == order.client_order_id
    assert trading_exchange.stats["faults"]["accept_then_5xx"] == 1
    await trader.stop()


async def test_a_fill_whose_messages_the_exchange_never_sent_is_booked_by_the_account_check(
    start_trader: Callable[..., Trader], trading_exchange: ExchangeSimulator, credentials: Credentials
) -> None:
    trading_exchange.faults.drop_private = 1_000  # no fill, user_order or market_position message at all
    trader = start_trader(TakeOnce, account_check_interval=0.2)
    await eventually(lambda: trader.engine.counters["orders_filled"] == 1, what="the create's answer: executed")
    await eventually(lambda: trader.engine.counters["fills"] == 1, what="the fill booked from REST")
    assert trader.engine.ledger.differences(await exchange_positions(trading_exchange, credentials)) == []
    await eventually(lambda: bool(trader.lines("no message brought")), what="the account line")
    await trader.stop()
    fills = [f async for f in Fill.objects.filter(session_id=trader.coordinator.session_id)]
    assert len(fills) == 1 and fills[0].is_taker


async def test_the_session_loss_limit_pulls_the_kill_switch(
    start_trader: Callable[..., Trader], trading_exchange: ExchangeSimulator
) -> None:
    # Buying at the ask is marked at the mid at once: the spread and the fee are the session's loss.
    trader = start_trader(TakeOnce, limits=RiskLimits(max_session_loss=1))
    await eventually(lambda: bool(trader.engine.killed), what="the kill switch")
    assert trader.engine.killed.startswith("session loss limit: max_session_loss: session P&L -")
    await eventually(lambda: trader.engine.host.state == "stopped", what="the strategy stopped")
    refusal = trader.engine.accepting("take-once")
    assert refusal is not None and refusal.rule == "trading_stopped"
    await trader.stop()
