"""The async Kalshi V2 order client: place, amend, decrease and cancel orders; read orders, positions, fills,
balance and settlements; reconcile the account from REST.

It shares its HTTP, signing and retry plumbing with the market-data client (``KalshiRestClient``) and adds
the trading rules: the URL is checked when the client is built and again before every request
(``check_trading_url``). Retries follow what a call does twice: reads, cancels, absolute amends and
decreases are idempotent and retried after a 429, a 5xx or a timeout; a create is made idempotent by its
``client_order_id`` (the same id goes again, and a 409 duplicate resolves to the order already placed); a
relative decrease and a batch create are sent once. The account-wide cancel-all goes out only from
``cancel_all_orders_account_wide``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from apps.kalshi.backoff import Backoff
from apps.kalshi.environments import TradingPermission, TradingRefused, check_trading_url
from apps.kalshi.portfolio import (
    AmendRequest,
    AmendResult,
    Balance,
    BatchPlacement,
    CancelRequest,
    CancelResult,
    DecreaseRequest,
    DecreaseResult,
    EventPosition,
    Fields,
    KalshiFill,
    KalshiOrder,
    MarketPosition,
    OrderRequest,
    OrderStatus,
    Page,
    Placement,
    PositionsPage,
    Settlement,
    order_error_from_json,
    placement_from_json,
)
from apps.kalshi.rest import KalshiRestClient, QueryValue, Retry
from apps.kalshi.resterrors import KalshiRestError, MalformedResponse
from apps.kalshi.signing import Credentials

ORDERS_PATH = "/portfolio/events/orders"
BATCH_PATH = "/portfolio/events/orders/batched"
MAX_PAGE = 1000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    """The account as REST says it is now: what a (re)connect or an on-demand reconcile starts from."""

    open_orders: tuple[KalshiOrder, ...]
    positions: tuple[MarketPosition, ...]
    balance: Balance


class KalshiTradingClient:
    """Signed V2 trading over REST under ``base_url`` (e.g. ".../trade-api/v2"), within ``permission``.

    Building it raises TradingRefused when the environment may not trade with that URL (``local`` never
    may). Use as ``async with`` or call ``aclose()``; ``transport`` replaces the network in tests.
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        permission: TradingPermission,
        *,
        backoff: Backoff | None = None,
        max_retries_429: int = 8,
        max_retries_failure: int = 3,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        check_trading_url(permission, base_url)
        self.permission = permission
        self.rest = KalshiRestClient(
            base_url,
            credentials,
            backoff=backoff,
            max_retries_429=max_retries_429,
            max_retries_failure=max_retries_failure,
            timeout=timeout,
            transport=transport,
            guard=self._check_url,
        )

    def _check_url(self, url: str) -> None:
        check_trading_url(self.permission, url)

    async def __aenter__(self) -> KalshiTradingClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.rest.aclose()

    # ----------------------------------------------------------------------------------------- orders

    async def create_order(self, request: OrderRequest) -> Placement:
        """Place one order. After a 5xx or a timeout the same request (same client_order_id) goes again; a
        409 then means the first one was placed, and that order is looked up and returned (``recovered``)."""
        try:
            body = await self._send("POST", ORDERS_PATH, body=request.to_json(), retry=Retry.IDEMPOTENT)
        except KalshiRestError as exc:
            if exc.status != 409:
                raise
            existing = await self.find_order_by_client_id(
                request.client_order_id, ticker=request.ticker, subaccount=request.subaccount
            )
            if existing is None:
                raise
            return existing.placement()
        return self._parse(body, ORDERS_PATH, placement_from_json)

    async def create_orders(self, requests: Sequence[OrderRequest]) -> list[BatchPlacement]:
        """Batch create: one result per request, in order, each a placement or Kalshi's error for it.

        Sent once (never retried): after a lost answer, ``reconcile`` or ``find_order_by_client_id`` says
        which of the batch were placed.
        """
        if not requests:
            return []
        body = await self._send("POST", BATCH_PATH, body={"orders": [r.to_json() for r in requests]}, retry=Retry.NEVER)

        def parse(raw: dict[str, Any]) -> list[BatchPlacement]:
            items = Fields(raw, "batch").items("orders")
            if len(items) != len(requests):
                raise ValueError(f"orders has {len(items)} items for {len(requests)} requests")
            results = []
            for index, (request, item) in enumerate(zip(requests, items, strict=True)):
                error = item.get("error") if isinstance(item, dict) else None
                if error is not None:
                    results.append(BatchPlacement(request, None, order_error_from_json(error)))
                else:
                    results.append(BatchPlacement(request, placement_from_json(item, f"orders[{index}]")))
            return results

        return self._parse(body, BATCH_PATH, parse)

    async def cancel_order(
        self,
        order_id: str,
        *,
        market_ticker: str | None = None,
        subaccount: int | None = None,
        exchange_index: int | None = None,
    ) -> CancelResult:
        """Cancel one order (DELETE /portfolio/events/orders/{id}); ``market_ticker`` lets Kalshi route it."""
        request = CancelRequest(order_id, market_ticker, subaccount, exchange_index)
        path = f"{ORDERS_PATH}/{quote(request.order_id, safe='')}"
        params = {"market_ticker": market_ticker, "subaccount": subaccount, "exchange_index": exchange_index}
        try:
            body = await self._send("DELETE", path, params=params, retry=Retry.IDEMPOTENT)
        except KalshiRestError as exc:
            order = await self._order_after_lost_answer(exc, request.order_id)
            if order is None or order.status != "canceled":
                raise
            # The lost attempt cancelled it (how much it took off, the order no longer says).
            return CancelResult(order.order_id, order.client_order_id or None, None, recovered=True)
        return self._parse(body, path, _cancel_result)

    async def cancel_orders(self, requests: Iterable[CancelRequest | str]) -> list[CancelResult]:
        """Batch cancel the given orders, one result each (``error`` set where that cancel failed).

        An empty list sends nothing: it never widens into the account-wide cancel-all.
        """
        cancels = [CancelRequest(r) if isinstance(r, str) else r for r in requests]
        if not cancels:
            return []
        body = await self._send(
            "DELETE", BATCH_PATH, body={"orders": [c.to_json() for c in cancels]}, retry=Retry.IDEMPOTENT
        )

        def parse(raw: dict[str, Any]) -> list[CancelResult]:
            return [_cancel_result(item) for item in Fields(raw, "batch").items("orders")]

        return self._parse(body, BATCH_PATH, parse)

    async def cancel_all_orders_account_wide(self, *, subaccount: int | None = None) -> None:
        """Kalshi's Cancel All: every resting order of the account on every shard (of every subaccount
        unless one is given), and maybe orders placed in the minute after. Sent once, only from here."""
        await self._send("DELETE", ORDERS_PATH, params={"subaccount": subaccount}, retry=Retry.NEVER, cancel_all=True)

    async def amend_order(self, request: AmendRequest) -> AmendResult:
        """Change an order's price and/or total count (an absolute end state, so retried like a read)."""
        path = f"{ORDERS_PATH}/{quote(request.order_id, safe='')}/amend"
        try:
            body = await self._send(
                "POST", path, params={"subaccount": request.subaccount}, body=request.to_json(), retry=Retry.IDEMPOTENT
            )
        except KalshiRestError as exc:
            order = await self._order_after_lost_answer(exc, request.order_id)
            if order is None or (order.yes_price, order.fill_count + order.remaining_count) != (
                request.price,
                request.count,
            ):
                raise
            # The lost attempt amended it: the order is in the state asked for.
            return AmendResult(order.order_id, order.client_order_id or None, order.remaining_count, recovered=True)

        def parse(raw: dict[str, Any]) -> AmendResult:
            f = Fields(raw, "amend")
            return AmendResult(
                order_id=f.text("order_id"),
                client_order_id=f.opt_text("client_order_id"),
                remaining_count=f.opt_count("remaining_count"),
                fill_count=f.opt_count("fill_count"),
                average_fill_price=f.opt_money("average_fill_price"),
                average_fee_paid=f.opt_money("average_fee_paid"),
                ts_ms=f.opt_integer("ts_ms"),
            )

        return self._parse(body, path, parse)

    async def decrease_order(self, request: DecreaseRequest) -> DecreaseResult:
        """Reduce an order's resting size; ``reduce_to`` is retried like a read, ``reduce_by`` is sent once."""
        path = f"{ORDERS_PATH}/{quote(request.order_id, safe='')}/decrease"
        retry = Retry.IDEMPOTENT if request.idempotent else Retry.NEVER
        try:
            body = await self._send("POST", path, body=request.to_json(), retry=retry)
        except KalshiRestError as exc:
            order = await self._order_after_lost_answer(exc, request.order_id)
            if order is None or request.reduce_to is None or order.remaining_count > request.reduce_to:
                raise
            # The lost attempt decreased it (to nothing, it is cancelled): it rests with what was asked, or less.
            return DecreaseResult(order.order_id, order.client_order_id or None, order.remaining_count, recovered=True)

        def parse(raw: dict[str, Any]) -> DecreaseResult:
            f = Fields(raw, "decrease")
            return DecreaseResult(
                order_id=f.text("order_id"),
                client_order_id=f.opt_text("client_order_id"),
                remaining_count=f.count("remaining_count"),
                ts_ms=f.opt_integer("ts_ms"),
            )

        return self._parse(body, path, parse)

    # ----------------------------------------------------------------------------------------- reads

    async def get_orders(
        self,
        *,
        ticker: str | None = None,
        event_ticker: str | None = None,
        status: OrderStatus | None = None,
        min_ts: int | None = None,
        max_ts: int | None = None,
        subaccount: int | None = None,
        exchange_index: int | None = None,
        limit: int = 100,
        cursor: str = "",
    ) -> Page[KalshiOrder]:
        """One page of GET /portfolio/orders."""
        params = {
            "ticker": ticker,
            "event_ticker": event_ticker,
            "status": status,
            "min_ts": min_ts,
            "max_ts": max_ts,
            "subaccount": subaccount,
            "exchange_index": exchange_index,
        }
        return await self._page("/portfolio/orders", "orders", KalshiOrder.from_json, params, limit, cursor)

    async def orders(self, **filters: Any) -> AsyncIterator[KalshiOrder]:
        """Every order matching the filters of ``get_orders``, page after page."""
        async for order in self._all_pages(self.get_orders, filters):
            yield order

    async def get_order(self, order_id: str) -> KalshiOrder:
        path = f"/portfolio/orders/{quote(CancelRequest(order_id).order_id, safe='')}"
        body = await self._send("GET", path, retry=Retry.IDEMPOTENT)
        return self._parse(body, path, lambda raw: KalshiOrder.from_json(raw.get("order")))

    async def find_order_by_client_id(
        self, client_order_id: str, *, ticker: str | None = None, subaccount: int | None = None
    ) -> KalshiOrder | None:
        """The order placed with ``client_order_id`` (GET /portfolio/orders has no such filter: the pages are
        searched, narrowed by ticker), or None."""
        async for order in self.orders(ticker=ticker, subaccount=subaccount, limit=MAX_PAGE):
            if order.client_order_id == client_order_id:
                return order
        return None

    async def get_positions(
        self,
        *,
        ticker: str | None = None,
        event_ticker: str | None = None,
        count_filter: str | None = None,
        settlement_status: str | None = None,
        subaccount: int | None = None,
        exchange_index: int | None = None,
        limit: int = 100,
        cursor: str = "",
    ) -> PositionsPage:
        """One page of GET /portfolio/positions (market and event positions)."""
        path = "/portfolio/positions"
        params: dict[str, QueryValue | None] = {
            "ticker": ticker,
            "event_ticker": event_ticker,
            "count_filter": count_filter,
            "settlement_status": settlement_status,
            "subaccount": subaccount,
            "exchange_index": exchange_index,
            "limit": _limit(limit),
            "cursor": cursor or None,
        }
        body = await self._send("GET", path, params=params, retry=Retry.IDEMPOTENT)

        def parse(raw: dict[str, Any]) -> PositionsPage:
            f = Fields(raw, "positions")
            return PositionsPage(
                market_positions=tuple(MarketPosition.from_json(p) for p in f.items("market_positions")),
                event_positions=tuple(EventPosition.from_json(p) for p in f.items("event_positions")),
                cursor=f.opt_text("cursor") or "",
            )

        return self._parse(body, path, parse)

    async def positions(self, **filters: Any) -> AsyncIterator[MarketPosition]:
        """Every market position matching the filters of ``get_positions``, page after page."""

        async def market_page(**arguments: Any) -> Page[MarketPosition]:
            page = await self.get_positions(**arguments)
            return Page(page.market_positions, page.cursor)

        async for position in self._all_pages(market_page, filters):
            yield position

    async def get_fills(
        self,
        *,
        ticker: str | Sequence[str] | None = None,
        order_id: str | None = None,
        min_ts: int | None = None,
        max_ts: int | None = None,
        subaccount: int | None = None,
        exchange_index: int | None = None,
        limit: int = 100,
        cursor: str = "",
    ) -> Page[KalshiFill]:
        """One page of GET /portfolio/fills; ``ticker`` may list up to 100 markets."""
        tickers = ticker if ticker is None or isinstance(ticker, str) else ",".join(ticker)
        params = {
            "ticker": tickers,
            "order_id": order_id,
            "min_ts": min_ts,
            "max_ts": max_ts,
            "subaccount": subaccount,
            "exchange_index": exchange_index,
        }
        return await self._page("/portfolio/fills", "fills", KalshiFill.from_json, params, limit, cursor)

    async def fills(self, **filters: Any) -> AsyncIterator[KalshiFill]:
        async for fill in self._all_pages(self.get_fills, filters):
            yield fill

    async def get_balance(self, *, subaccount: int | None = None, exchange_index: int | None = None) -> Balance:
        path = "/portfolio/balance"
        params = {"subaccount": subaccount, "exchange_index": exchange_index}
        body = await self._send("GET", path, params=params, retry=Retry.IDEMPOTENT)
        return self._parse(body, path, Balance.from_json)

    async def get_settlements(
        self,
        *,
        ticker: str | None = None,
        event_ticker: str | None = None,
        min_ts: int | None = None,
        max_ts: int | None = None,
        subaccount: int | None = None,
        limit: int = 100,
        cursor: str = "",
    ) -> Page[Settlement]:
        params = {
            "ticker": ticker,
            "event_ticker": event_ticker,
            "min_ts": min_ts,
            "max_ts": max_ts,
            "subaccount": subaccount,
        }
        return await self._page("/portfolio/settlements", "settlements", Settlement.from_json, params, limit, cursor)

    async def reconcile(self, *, subaccount: int | None = None) -> AccountSnapshot:
        """The resting orders, the open positions and the balance, read fresh from REST.

        The private channels carry no ``seq``, so a message lost while disconnected cannot be noticed: call
        this after every (re)connect, and whenever the account's state is in doubt.
        """
        open_orders = [o async for o in self.orders(status="resting", subaccount=subaccount, limit=MAX_PAGE)]
        positions = [p async for p in self.positions(subaccount=subaccount, limit=MAX_PAGE)]
        balance = await self.get_balance(subaccount=subaccount)
        return AccountSnapshot(tuple(open_orders), tuple(positions), balance)

    # ----------------------------------------------------------------------------------------- plumbing

    async def _order_after_lost_answer(self, error: KalshiRestError, order_id: str) -> KalshiOrder | None:
        """After a change to an order was refused on a retry whose earlier attempt lost its answer, the order
        as it is now (the refusal may be about what that attempt did); None when there is nothing to check."""
        if not error.after_lost_answer or not 400 <= error.status < 500 or error.status == 429:
            return None
        try:
            return await self.get_order(order_id)
        except KalshiRestError:
            return None

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, QueryValue | None] | None = None,
        body: dict[str, Any] | None = None,
        retry: Retry,
        cancel_all: bool = False,
    ) -> dict[str, Any]:
        # The last line of defence for the account-wide cancel: only the method named for it sends it.
        if method == "DELETE" and path.rstrip("/") == ORDERS_PATH and not cancel_all:
            raise TradingRefused("trading rule: the account-wide cancel-all goes only through its own method")
        return await self.rest.request_json(method, path, params=params, body=body, retry=retry)

    def _parse(self, body: dict[str, Any], path: str, parse: Callable[[dict[str, Any]], T]) -> T:
        try:
            return parse(body)
        except ValueError as exc:
            self.rest.metrics.errors += 1
            raise MalformedResponse(200, self.rest.full_path(path), str(exc)) from None

    async def _page(
        self,
        path: str,
        key: str,
        parse_item: Callable[[object], T],
        params: Mapping[str, QueryValue | None],
        limit: int,
        cursor: str,
    ) -> Page[T]:
        query = {**params, "limit": _limit(limit), "cursor": cursor or None}
        body = await self._send("GET", path, params=query, retry=Retry.IDEMPOTENT)

        def parse(raw: dict[str, Any]) -> Page[T]:
            f = Fields(raw, key)
            return Page(tuple(parse_item(item) for item in f.items(key)), f.opt_text("cursor") or "")

        return self._parse(body, path, parse)

    async def _all_pages(self, fetch: Callable[..., Awaitable[Page[T]]], filters: dict[str, Any]) -> AsyncIterator[T]:
        seen: set[str] = set()
        cursor = ""
        while True:
            page = await fetch(**{**filters, "cursor": cursor})
            for item in page.items:
                yield item
            cursor = page.cursor
            if not cursor:
                return
            # A server that hands back a cursor it already gave would page forever.
            if cursor in seen:
                raise MalformedResponse(200, "", "the cursor repeats an earlier page")
            seen.add(cursor)


def _cancel_result(raw: object) -> CancelResult:
    f = Fields(raw, "cancel")
    error = f.raw.get("error")
    return CancelResult(
        order_id=f.text("order_id"),
        client_order_id=f.opt_text("client_order_id"),
        reduced_by=f.opt_count("reduced_by") or 0,
        ts_ms=f.opt_integer("ts_ms"),
        error=None if error is None else order_error_from_json(error),
    )


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
    return limit
