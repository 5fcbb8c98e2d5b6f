"""This trader's orders: sends creates, amends and cancels to the exchange and keeps each order's latest record.

Every order is known by its ``client_order_id`` (made here before the request leaves, so a lost answer and a
retry are the same order) and, once the exchange has answered, by its ``order_id``. Each change, whether it
comes from a REST answer, a ``user_order`` message, a fill or a REST snapshot, produces a new OrderRecord
with its reason, handed to ``on_change`` (recording, console, the strategy). Answers and messages may come
in any order, so a change never takes an order back: a final state stays final and ``fill_count`` only
grows. The risk limits are checked by the caller before ``place`` and ``amend``; cancels are never refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable
from typing import Protocol

from apps.kalshi.fixedpoint import format_price, format_size
from apps.kalshi.portfolio import (
    AmendRequest,
    AmendResult,
    CancelResult,
    KalshiOrder,
    OrderRequest,
    Placement,
    new_client_order_id,
)
from apps.kalshi.privatemessages import UserOrderMessage
from apps.kalshi.resterrors import KalshiRestError
from apps.trader.core.trading.records import FINAL_ORDER_STATES, FillRecord, OrderRecord, OrderState
from apps.trader.core.trading.risk import OrderIntent

WORKING_STATES: frozenset[str] = frozenset({"submitted", "resting", "unknown"})
"""States of an order that may still trade: counted against the limits and cancelled by the kill switch."""


class OrderClient(Protocol):
    """The order side of the exchange: KalshiTradingClient, or a stand-in in tests."""

    async def create_order(self, request: OrderRequest) -> Placement: ...

    async def amend_order(self, request: AmendRequest) -> AmendResult: ...

    async def cancel_order(self, order_id: str) -> CancelResult: ...

    async def get_order(self, order_id: str) -> KalshiOrder: ...

    async def find_order_by_client_id(
        self, client_order_id: str, *, ticker: str | None = None
    ) -> KalshiOrder | None: ...


class OrderManager:
    """Places, amends and cancels this trader's orders and follows each one to its end."""

    def __init__(
        self,
        client: OrderClient,
        *,
        on_change: Callable[[OrderRecord], None],
        clock_us: Callable[[], int],
    ) -> None:
        self._client = client
        self._on_change = on_change
        self._clock_us = clock_us
        self._orders: dict[str, OrderRecord] = {}
        """Every order of this session by client_order_id, as it stands."""
        self._by_order_id: dict[str, str] = {}
        self._traded: dict[str, int] = {}
        """Contracts filled per order as the fills seen so far add up."""
        self._fees_paid: dict[str, int] = {}
        """Fees per order as the fills seen so far add up."""
        self._placing: dict[str, asyncio.Event] = {}
        """Orders whose create is in flight, set when its answer (or its fate) is known."""

    # ------------------------------------------------------------------------------------------ reading

    def get(self, client_order_id: str) -> OrderRecord | None:
        return self._orders.get(client_order_id)

    def by_order_id(self, order_id: str) -> OrderRecord | None:
        client_order_id = self._by_order_id.get(order_id)
        return self._orders.get(client_order_id) if client_order_id is not None else None

    def working(self, *, strategy: str | None = None, ticker: str | None = None) -> list[OrderRecord]:
        """Orders that may still trade, oldest first."""
        return [
            order
            for order in self._orders.values()
            if order.status in WORKING_STATES
            and (strategy is None or order.strategy == strategy)
            and (ticker is None or order.ticker == ticker)
        ]

    def all(self) -> list[OrderRecord]:
        return list(self._orders.values())

    # ------------------------------------------------------------------------------------------ sending

    def refuse(self, intent: OrderIntent, *, strategy: str, rule: str, message: str) -> OrderRecord:
        """Record an order a risk limit stopped before it left the process."""
        record = self._new(intent, strategy=strategy, status="refused", reason=f"refused: {message}")
        return self._change(dataclasses.replace(record, remaining_count=0, error_code=rule))

    async def place(self, intent: OrderIntent, *, strategy: str, reason: str) -> OrderRecord:
        """Send a create; returns the order once the exchange answered (or once its fate is known)."""
        record = self._change(self._new(intent, strategy=strategy, status="submitted", reason=reason))
        answered = self._placing[record.client_order_id] = asyncio.Event()
        try:
            return await self._send_create(record, intent)
        finally:
            del self._placing[record.client_order_id]
            answered.set()

    async def _send_create(self, record: OrderRecord, intent: OrderIntent) -> OrderRecord:
        request = OrderRequest(
            ticker=intent.ticker,
            side=intent.side,
            count=intent.count,
            price=intent.yes_price,
            time_in_force=intent.time_in_force,
            client_order_id=record.client_order_id,
            post_only=intent.post_only,
            reduce_only=intent.reduce_only,
        )
        try:
            placement = await self._client.create_order(request)
        except KalshiRestError as exc:
            if _refused_outright(exc):
                return self._update(record, status="rejected", reason=f"rejected: {_error_text(exc)}", error=exc.code)
            return await self._recover(record, f"the create's answer was lost ({_error_text(exc)})")
        return self._placed(record, placement)

    async def amend(self, order: OrderRecord, *, price: int, count: int, reason: str) -> OrderRecord:
        """Move a resting order to ``price`` with ``count`` in all (filled included)."""
        current = self._orders.get(order.client_order_id, order)
        if current.status in FINAL_ORDER_STATES or not current.order_id:
            return current
        request = AmendRequest(
            order_id=current.order_id,
            ticker=current.ticker,
            side=current.side,
            price=price,
            count=count,
            client_order_id=current.client_order_id,
            updated_client_order_id=current.client_order_id,
        )
        try:
            result = await self._client.amend_order(request)
        except KalshiRestError as exc:
            latest = self._orders[current.client_order_id]
            if _refused_outright(exc):
                # The order stands as it was: the refusal is a reason on an unchanged order.
                return self._change(
                    dataclasses.replace(
                        latest, reason=f"amend rejected: {_error_text(exc)}", error_code=exc.code, at_us=self._now()
                    )
                )
            return await self._recover(latest, f"the amend's answer was lost ({_error_text(exc)})")
        latest = self._orders[current.client_order_id]
        moved = f"amended to {format_size(count)} at {format_price(price)}"
        if result.recovered:
            return await self._recover(latest, f"{moved} (recovered after a lost answer)")
        # ``count`` is the new total and ``remaining_count`` is after the amend's own match, so their
        # difference is everything filled (the answer's ``fill_count`` may be only what the amend filled).
        answered = count - result.remaining_count if result.remaining_count is not None else result.fill_count or 0
        fill_count = max(latest.fill_count, answered)
        remaining = max(0, count - fill_count)
        status: OrderState = "resting" if remaining > 0 else "executed"
        return self._update(
            latest,
            status=status,
            reason=f"{moved}: {reason}" if reason else moved,
            yes_price=price,
            initial_count=count,
            fill_count=fill_count,
            remaining_count=remaining,
        )

    async def cancel(self, order: OrderRecord, *, reason: str) -> OrderRecord:
        """Cancel a working order; the answer (or, after a lost answer, the order read back) says how it ended.
        A cancel the exchange would not answer leaves the order as it was, with the failure as its reason."""
        current = self._orders.get(order.client_order_id, order)
        if current.status in FINAL_ORDER_STATES:
            return current
        placing = self._placing.get(current.client_order_id)
        if placing is not None:
            # Read back now, an order the exchange has not taken in yet looks never placed, and would be
            # left resting when it lands: its answer says where it went.
            await placing.wait()
            current = self._orders[current.client_order_id]
            if current.status in FINAL_ORDER_STATES:
                return current
        if not current.order_id:
            current = await self._recover(current, "cancel asked before the create was answered")
            if current.status in FINAL_ORDER_STATES or not current.order_id:
                return current
        try:
            result = await self._client.cancel_order(current.order_id)
        except KalshiRestError as exc:
            if exc.status == 404:
                return await self._recover(current, f"cancel: the exchange has no such resting order ({exc.code})")
            # Still working as far as anyone knows: the caller (a strategy, the kill switch) sees it so.
            latest = self._orders[current.client_order_id]
            return self._change(
                dataclasses.replace(latest, reason=f"cancel failed: {_error_text(exc)}", at_us=self._now())
            )
        latest = self._orders[current.client_order_id]
        if result.error is not None:
            return await self._recover(latest, f"cancel refused: {result.error.code} {result.error.message}".strip())
        return self._update(latest, status="canceled", reason=f"cancelled: {reason}", remaining_count=0)

    # ------------------------------------------------------------------------------------------ news

    def on_user_order(self, message: UserOrderMessage) -> OrderRecord | None:
        """A ``user_order`` message: the order's new state. None when the order is not this trader's."""
        record = self._orders.get(message.client_order_id) or self.by_order_id(message.order_id)
        if record is None:
            return None
        status: OrderState = "resting" if message.status == "resting" else message.status
        why = message.last_update_reason or status
        return self._update(
            record,
            status=status,
            reason=f"exchange: {why}",
            order_id=message.order_id,
            yes_price=message.yes_price,
            initial_count=message.initial_count,
            fill_count=message.fill_count,
            remaining_count=message.remaining_count,
            fees=message.taker_fees + message.maker_fees,
        )

    def on_fill(self, fill: FillRecord) -> OrderRecord | None:
        """A fill of one of this trader's orders: counts move now, before the ``user_order`` that follows."""
        record = self._orders.get(fill.client_order_id) or self.by_order_id(fill.order_id)
        if record is None:
            return None
        # Fills add up per order; a user_order message carries the total, and may come first.
        key = record.client_order_id
        traded = self._traded[key] = self._traded.get(key, 0) + fill.count
        # A user_order may have brought this fill's fee already (in its total): the larger sum holds it once.
        fees_paid = self._fees_paid[key] = self._fees_paid.get(key, 0) + fill.fee
        fill_count = max(record.fill_count, traded)
        remaining = max(0, record.initial_count - fill_count)
        status: OrderState = "executed" if remaining == 0 else record.status
        return self._update(
            record,
            status=status,
            reason=f"filled {format_size(fill.count)} at {format_price(fill.yes_price)}"
            + (" (taker)" if fill.is_taker else " (maker)"),
            order_id=fill.order_id,
            fill_count=fill_count,
            remaining_count=remaining,
            fees=fees_paid,
        )

    def on_resting(self, orders: Iterable[KalshiOrder]) -> tuple[list[OrderRecord], list[KalshiOrder]]:
        """A REST snapshot of the account's resting orders: (this trader's orders it changed, the orders
        that are not this trader's)."""
        changed: list[OrderRecord] = []
        strangers: list[KalshiOrder] = []
        for order in orders:
            record = self._orders.get(order.client_order_id) or self.by_order_id(order.order_id)
            if record is None:
                strangers.append(order)
                continue
            updated = self._from_order(record, order, "reconciled from the exchange")
            if updated is not record:
                changed.append(updated)
        return changed, strangers

    async def settle_missing(self, resting_ids: set[str], *, reason: str) -> list[OrderRecord]:
        """Orders this trader thinks are working but a snapshot does not list as resting: read each back
        from the exchange (it filled or was cancelled while nobody listened)."""
        settled = []
        for record in self.working():
            if record.order_id in resting_ids or record.client_order_id in self._placing:
                continue  # resting, or its create's answer will say
            settled.append(await self._recover(record, reason))
        return settled

    # ------------------------------------------------------------------------------------------ the records

    def _new(self, intent: OrderIntent, *, strategy: str, status: OrderState, reason: str) -> OrderRecord:
        return OrderRecord(
            client_order_id=new_client_order_id(),
            order_id="",
            ticker=intent.ticker,
            side=intent.side,
            yes_price=intent.yes_price,
            initial_count=intent.count,
            fill_count=0,
            remaining_count=intent.count,
            time_in_force=intent.time_in_force,
            status=status,
            fees=0,
            reason=reason,
            strategy=strategy,
            at_us=self._now(),
        )

    def _placed(self, record: OrderRecord, placement: Placement) -> OrderRecord:
        latest = self._orders[record.client_order_id]
        fill_count = max(latest.fill_count, placement.fill_count)
        remaining = (
            min(latest.remaining_count, placement.remaining_count) if latest.order_id else placement.remaining_count
        )
        if remaining > 0:
            status: OrderState = "resting"
        elif fill_count >= latest.initial_count:
            status = "executed"
        else:
            status = "canceled"  # an IOC's unfilled rest, or a post-only that did not rest
        why = "placed" + (" (recovered after a lost answer)" if placement.recovered else "")
        if status == "canceled":
            why += f"; {format_size(latest.initial_count - fill_count)} not filled and not resting"
        # Fees come with the fills and user_order messages, which say them exactly.
        return self._update(
            latest,
            status=status,
            reason=why,
            order_id=placement.order_id,
            fill_count=fill_count,
            remaining_count=remaining,
        )

    async def _recover(self, record: OrderRecord, why: str) -> OrderRecord:
        """Learn an order's fate from the exchange after a lost answer; ``unknown`` when even that fails
        (the next snapshot settles it)."""
        try:
            if record.order_id:
                order: KalshiOrder | None = await self._client.get_order(record.order_id)
            else:
                order = await self._client.find_order_by_client_id(record.client_order_id, ticker=record.ticker)
        except KalshiRestError as exc:
            return self._update(record, status="unknown", reason=f"{why}; reading it back failed: {_error_text(exc)}")
        latest = self._orders[record.client_order_id]
        if order is None:
            # Never placed: the create did not reach the exchange.
            return self._update(latest, status="rejected", reason=f"{why}; the exchange has no such order")
        return self._from_order(latest, order, why)

    def _from_order(self, record: OrderRecord, order: KalshiOrder, why: str) -> OrderRecord:
        return self._update(
            record,
            status=order.status,
            reason=why,
            order_id=order.order_id,
            yes_price=order.yes_price,
            initial_count=order.initial_count,
            fill_count=order.fill_count,
            remaining_count=order.remaining_count,
            fees=order.taker_fees + order.maker_fees,
        )

    def _update(
        self,
        record: OrderRecord,
        *,
        status: OrderState,
        reason: str,
        error: str | None = None,
        order_id: str | None = None,
        yes_price: int | None = None,
        initial_count: int | None = None,
        fill_count: int | None = None,
        remaining_count: int | None = None,
        fees: int | None = None,
    ) -> OrderRecord:
        """The order after one change, recorded when anything moved; a change never takes an order back."""
        latest = self._orders.get(record.client_order_id, record)
        # A create thought never placed (its lookup ran before the exchange took it in) that the exchange
        # now shows by id is the exchange's word: it works, and must be counted and cancellable.
        landed = latest.status == "rejected" and not latest.order_id and bool(order_id)
        if latest.status in FINAL_ORDER_STATES and status not in FINAL_ORDER_STATES and not landed:
            return latest
        if fill_count is not None and fill_count < latest.fill_count:
            return latest  # an older view of the order than the one held
        updated = dataclasses.replace(
            latest,
            status=status,
            reason=reason,
            order_id=order_id or latest.order_id,
            yes_price=latest.yes_price if yes_price is None else yes_price,
            initial_count=latest.initial_count if initial_count is None else initial_count,
            fill_count=latest.fill_count if fill_count is None else fill_count,
            remaining_count=0
            if status in FINAL_ORDER_STATES
            else (latest.remaining_count if remaining_count is None else remaining_count),
            fees=latest.fees if fees is None else max(fees, latest.fees),
            error_code=latest.error_code if error is None else error,
            at_us=self._now(),
        )
        if _same_state(updated, latest):
            return latest
        return self._change(updated)

    def _change(self, record: OrderRecord) -> OrderRecord:
        self._orders[record.client_order_id] = record
        if record.order_id:
            self._by_order_id[record.order_id] = record.client_order_id
        self._on_change(record)
        return record

    def _now(self) -> int:
        return self._clock_us()


def _same_state(a: OrderRecord, b: OrderRecord) -> bool:
    return (a.status, a.order_id, a.yes_price, a.initial_count, a.fill_count, a.remaining_count, a.fees) == (
        b.status,
        b.order_id,
        b.yes_price,
        b.initial_count,
        b.fill_count,
        b.remaining_count,
        b.fees,
    )


def _refused_outright(error: KalshiRestError) -> bool:
    """The exchange answered and said no (a 4xx other than a rate limit): nothing was carried out."""
    return 400 <= error.status < 500 and error.status != 429 and not error.after_lost_answer


def _error_text(error: KalshiRestError) -> str:
    parts = [error.code or f"HTTP {error.status}" if error.status else "no answer", error.message]
    return " ".join(p for p in parts if p)
