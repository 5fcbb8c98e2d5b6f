"""Brings the trader's view of the account up to the exchange's, from a REST snapshot of it.

After every (re)connect, and now and then while trading, the private feed reads the account (positions,
resting orders, balance). The first read of a session is the ledger's baseline; every later one books the
fills no message brought (read from REST since the last such read, with a margin, once by trade id), brings
this trader's orders up to date, and compares the exchange's positions with the trader's fills. Resting
orders this trader did not place are reported once, and cancelled only when asked.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from apps.kalshi.fixedpoint import format_money, format_price
from apps.kalshi.portfolio import Balance, KalshiFill, KalshiOrder, MarketPosition
from apps.kalshi.resterrors import KalshiRestError
from apps.trader.core.trading.ledger import Ledger
from apps.trader.core.trading.orders import OrderClient, OrderManager
from apps.trader.core.trading.records import FillRecord

if TYPE_CHECKING:  # the core loads without the network libraries this module brings
    from apps.kalshi.trading import AccountSnapshot

logger = logging.getLogger(__name__)

FILLS_MARGIN_US = 60_000_000
"""Fills are read again from this long before the last read: Kalshi's min_ts is in whole seconds, and a
trade's time is when it was made, not when it became visible."""


class TradingClient(OrderClient, Protocol):
    """What trading asks of the exchange's REST side beyond orders."""

    def fills(self, **filters: Any) -> AsyncIterator[KalshiFill]: ...

    def positions(self, **filters: Any) -> AsyncIterator[MarketPosition]: ...

    async def get_balance(self) -> Balance: ...

    async def aclose(self) -> None: ...


class AccountSync:
    def __init__(
        self,
        *,
        client: TradingClient,
        ledger: Ledger,
        orders: OrderManager,
        book_fill: Callable[[FillRecord], bool],
        console: Callable[..., None],
        counters: Counter[str],
        cancel_unknown_orders: bool,
        clock_us: Callable[[], int],
    ) -> None:
        """``book_fill`` books a fill everywhere it goes (ledger, order, record, strategy) and says whether it
        was new."""
        self._client = client
        self._ledger = ledger
        self._orders = orders
        self._book_fill = book_fill
        self._console = console
        self._counters = counters
        self._cancel_unknown_orders = cancel_unknown_orders
        self._clock_us = clock_us
        self.started_us = clock_us()
        self.balance: Balance | None = None
        self.synced = False
        """The session's first read is done: the ledger has its baseline."""
        self._fills_read_at_us = self.started_us
        self._position_doubts: set[str] = set()
        self._strangers_reported: set[str] = set()
        self._strangers_cancelled: set[str] = set()

    async def apply(self, snapshot: AccountSnapshot, *, checking: bool) -> None:
        """Take in one read of the account; ``checking``: a read while trading, quiet unless something was
        missing (a read after a connect always says what it found)."""
        first = not self.synced
        missed = 0
        if first:
            # Fills already in the positions read must not be booked again when their message comes late.
            self._ledger.load(snapshot.positions, trade_ids=await self._fill_ids_since(self.started_us))
        else:
            missed = await self._catch_up_fills()
        changed, strangers = self._orders.on_resting(snapshot.open_orders)
        settled = await self._orders.settle_missing(
            {o.order_id for o in snapshot.open_orders}, reason="not resting on the exchange any more"
        )
        self.balance = snapshot.balance
        await self._strangers(strangers)
        if not first:
            self._compare_positions(snapshot.positions)
        self.synced = True
        self._counters["account_syncs"] += 1
        brought = len(changed) + len(settled)
        if checking and not (brought or missed):
            return
        self._console(
            "warning" if checking else "info",
            f"ACCOUNT: balance {format_money(snapshot.balance.balance)}, "
            f"{len([p for p in snapshot.positions if p.position])} position(s), "
            f"{len(snapshot.open_orders)} resting order(s)",
            f"{brought} of this trader's orders brought up to date" if brought else "",
        )

    async def stranger_seen(self, order_id: str) -> None:
        """A ``user_order`` message of a resting order this trader did not place: reported once (a sync
        cancels it when asked)."""
        if order_id not in self._strangers_reported:
            self._strangers_reported.add(order_id)
            self._console("warning", f"ACCOUNT: order {order_id} rests on the account and is not this trader's")

    def _compare_positions(self, positions: Sequence[MarketPosition]) -> None:
        """Say so when the exchange's positions differ from the trader's fills on two reads in a row: a fill
        between the positions read and the fills read differs once, a lost one stays."""
        differences = self._ledger.differences(positions)
        lasting = [line for line in differences if line in self._position_doubts]
        self._position_doubts = set(differences)
        if lasting:
            self._counters["position_differences"] += 1
            self._console(
                "error", "POSITIONS: the exchange's positions differ from the trader's fills", "; ".join(lasting[:5])
            )

    async def _fill_ids_since(self, since_us: int) -> list[str]:
        return [fill.fill_id async for fill in self._client.fills(min_ts=since_us // 1_000_000)]

    async def _catch_up_fills(self) -> int:
        """Book the fills of the account that no message brought (REST since the last such read, with a
        margin); returns how many. The ledger follows the whole account, as the positions REST reports do,
        so another program's fills on it count too (without an order of this trader's)."""
        missed = 0
        since, self._fills_read_at_us = self._fills_read_at_us, self._clock_us()
        try:
            async for fill in self._client.fills(min_ts=max(self.started_us, since - FILLS_MARGIN_US) // 1_000_000):
                order = self._orders.by_order_id(fill.order_id)
                signed = fill.count if fill.book_side == "bid" else -fill.count
                missed += self._book_fill(
                    FillRecord(
                        trade_id=fill.fill_id,
                        order_id=fill.order_id,
                        client_order_id=order.client_order_id if order is not None else "",
                        ticker=fill.ticker,
                        side=fill.book_side,
                        yes_price=fill.yes_price,
                        count=fill.count,
                        fee=fill.fee_cost,
                        is_taker=fill.is_taker,
                        post_position=self._ledger.position(fill.ticker) + signed,
                        ts_ms=_epoch_ms(fill.created_time),
                        received_us=self._clock_us(),
                    )
                )
        except KalshiRestError as exc:
            self._fills_read_at_us = since  # read them again next time
            self._console("error", f"ACCOUNT: reading missed fills failed: {exc}")
            raise
        if missed:
            self._console("warning", f"ACCOUNT: booked {missed} fill(s) on the account that no message brought")
        return missed

    async def _strangers(self, strangers: Sequence[KalshiOrder]) -> None:
        """Resting orders of the account that this trader did not place: reported once, cancelled at a sync
        if asked (also one first reported by a message, and again at the next sync when a cancel failed)."""
        if not self._cancel_unknown_orders:
            fresh = [o for o in strangers if o.order_id not in self._strangers_reported]
            if not fresh:
                return
            self._strangers_reported.update(o.order_id for o in fresh)
            self._console(
                "warning",
                f"ACCOUNT: {len(fresh)} resting order(s) this trader did not place; left alone",
                f"{_listed(fresh)}; pass --cancel-unknown-orders to cancel them at sync",
            )
            return
        due = [o for o in strangers if o.order_id not in self._strangers_cancelled]
        if not due:
            return
        self._strangers_reported.update(o.order_id for o in due)
        cancelled = 0
        for order in due:
            try:
                await self._client.cancel_order(order.order_id)
                cancelled += 1
                self._strangers_cancelled.add(order.order_id)
            except KalshiRestError as exc:
                logger.warning("cancelling unknown order %s failed: %s", order.order_id, exc)
        self._console("warning", f"ACCOUNT: cancelled {cancelled} of {len(due)} unknown resting order(s)", _listed(due))


def _listed(orders: Sequence[KalshiOrder]) -> str:
    return ", ".join(f"{o.ticker} {o.book_side} {format_price(o.yes_price)}" for o in orders[:5])


def _epoch_ms(iso: str | None) -> int:
    """An RFC 3339 time of Kalshi's as milliseconds since the epoch; 0 when it is missing or unreadable."""
    if not iso:
        return 0
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0
