"""The async Kalshi REST client: exchange status, market listing and orderbook snapshots.

Every request is signed over the full path without its query string ("/trade-api/v2/markets"). Kalshi
answers an exhausted rate limit with 429 and no Retry-After, so the client waits with exponential
back-off and jitter and tries again. Other failures raise ``KalshiRestError``, whose text never carries
the key id or key. Prices are ints in 1/10,000 dollar and sizes ints in 1/100 contract, parsed exactly.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from apps.kalshi.backoff import Backoff
from apps.kalshi.fixedpoint import DOLLAR, FixedPointError, parse_price, parse_size, price_field, size_field
from apps.kalshi.orderbook import OrderBook
from apps.kalshi.resterrors import KalshiRestError, MalformedResponse
from apps.kalshi.signing import Credentials

MAX_MARKETS_LIMIT = 1000
"""The largest page GET /markets serves."""

QueryValue = str | int | bool
_MESSAGE_LIMIT = 300


class Retry(Enum):
    """What a request may be sent again after."""

    RATE_LIMIT = "rate_limit"
    """A 429 only (Kalshi refused it before doing anything): market-data reads, as they always were."""
    IDEMPOTENT = "idempotent"
    """A 429, a 5xx or a transport failure: sending it twice does what sending it once does."""
    NEVER = "never"
    """Nothing: a call that must not run twice (a relative decrease, a batch create)."""


def default_backoff() -> Backoff:
    """Back-off for 429s: 0.2 s doubling to 5 s, so eight retries give the bucket about 20 s to refill."""
    return Backoff(initial=0.2, cap=5.0, jitter=0.2)


@dataclass
class RestMetrics:
    requests: int = 0
    """HTTP requests sent, retries included."""
    retries_429: int = 0
    retries_failure: int = 0
    """Idempotent calls sent again after a 5xx or a transport failure."""
    errors: int = 0
    """Calls that ended in KalshiRestError (HTTP errors, transport failures, malformed bodies)."""

    def as_dict(self) -> dict[str, int]:
        """The counts /v3/status shows for market data."""
        return {"requests": self.requests, "retries_429": self.retries_429, "errors": self.errors}


@dataclass(frozen=True, slots=True)
class ExchangeStatus:
    exchange_active: bool
    trading_active: bool
    estimated_resume_time: str | None = None
    """RFC 3339 time the exchange expects to reopen, when it says."""


@dataclass(frozen=True, slots=True)
class MarketInfo:
    """One entry of GET /markets. Sizes in 1/100 contract, prices in 1/10,000 dollar.

    ``status`` is the market's own status (``active`` for an open market), not the filter's value.
    Absent counts read as 0 and absent prices as None; Kalshi writes an empty side's best price as
    0.0000 (bid) or 1.0000 (ask), which is kept as given.
    """

    ticker: str
    event_ticker: str = ""
    status: str = ""
    volume_24h: int = 0
    volume: int = 0
    open_interest: int = 0
    yes_bid: int | None = None
    yes_ask: int | None = None
    close_time: str | None = None

    @classmethod
    def from_json(cls, raw: object) -> MarketInfo:
        """Parse one market object; ValueError naming the field when it is malformed."""
        if not isinstance(raw, dict):
            raise ValueError(f"a market must be an object, got {type(raw).__name__}")
        ticker = _str_field(raw, "ticker")
        if not ticker:
            raise ValueError("ticker is missing or empty")
        return cls(
            ticker=ticker,
            event_ticker=_str_field(raw, "event_ticker") or "",
            status=_str_field(raw, "status") or "",
            volume_24h=_count_field(raw, "volume_24h_fp", "volume_24h"),
            volume=_count_field(raw, "volume_fp", "volume"),
            open_interest=_count_field(raw, "open_interest_fp", "open_interest"),
            yes_bid=_price_field(raw, "yes_bid_dollars", "yes_bid"),
            yes_ask=_price_field(raw, "yes_ask_dollars", "yes_ask"),
            close_time=_str_field(raw, "close_time"),
        )


def _str_field(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return value


def _count_field(raw: Mapping[str, Any], name: str, legacy: str) -> int:
    """A non-negative ``*_fp`` count (the pre-2026 integer field as a fallback); 0 when absent."""
    value = size_field(raw, name, legacy)
    if value is None:
        return 0
    if value < 0:
        used = name if raw.get(name) is not None else legacy
        raise ValueError(f"{used} must not be negative, got {raw[used]!r}")
    return value


def _price_field(raw: Mapping[str, Any], name: str, legacy: str) -> int | None:
    """A ``*_dollars`` price in 0..1 (the pre-2026 integer cents as a fallback); None when absent."""
    value = price_field(raw, name, legacy)
    if value is not None and not 0 <= value <= DOLLAR:
        used = name if raw.get(name) is not None else legacy
        raise ValueError(f"{used} must be between 0 and 1 dollar, got {raw[used]!r}")
    return value


def parse_orderbook(ticker: str, body: object) -> OrderBook:
    """Build an OrderBook from a GET /markets/{ticker}/orderbook body; ValueError naming the field."""
    if not isinstance(body, dict) or not isinstance(body.get("orderbook_fp"), dict):
        raise ValueError("orderbook_fp is missing or not an object")
    raw = body["orderbook_fp"]
    book = OrderBook(ticker)
    for side, key in (("yes", "yes_dollars"), ("no", "no_dollars")):
        levels = raw.get(key)
        if levels is None:
            continue  # tolerated: an empty side
        if not isinstance(levels, list):
            raise ValueError(f"orderbook_fp.{key} must be a list of [price, size] pairs")
        target = book.yes if side == "yes" else book.no
        for index, pair in enumerate(levels):
            field = f"orderbook_fp.{key}[{index}]"
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError(f"{field} must be a [price, size] pair, got {pair!r}")
            try:
                price, size = parse_price(pair[0]), parse_size(pair[1])
            except FixedPointError as exc:
                raise ValueError(f"{field}: {exc}") from None
            if not 0 < price < DOLLAR:
                raise ValueError(f"{field}: price {pair[0]!r} is not strictly between 0 and 1 dollar")
            if size < 0:
                raise ValueError(f"{field}: size {pair[1]!r} is negative")
            if price in target:
                raise ValueError(f"{field}: price {pair[0]!r} appears twice")
            if size:
                target[price] = size
    return book


def _now_ms() -> int:
    return int(time.time() * 1000)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The verifying TLS context every client of this process shares, as httpx makes it by default: making one
    loads the CA bundle, about 50 ms, which httpx would otherwise do for each client."""
    return httpx.create_ssl_context()


class KalshiRestClient:
    """Signed async access to Kalshi's REST API under ``base_url`` (e.g. ".../trade-api/v2").

    Use as ``async with KalshiRestClient(url, credentials) as rest:`` or call ``aclose()``. Calls may run
    concurrently; each has its own back-off. ``transport`` replaces httpx's network transport (tests).
    ``guard`` is called with the full URL before every attempt and may raise to stop it (the trading rules).
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        backoff: Backoff | None = None,
        max_retries_429: int = 8,
        max_retries_failure: int = 3,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        guard: Callable[[str], None] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"base_url must be an http(s) URL without query or fragment; got {base_url!r}")
        if max_retries_429 < 0 or max_retries_failure < 0:
            raise ValueError("max_retries_429 and max_retries_failure must not be negative")
        self.base_url = base_url.rstrip("/")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base_path = parts.path.rstrip("/")
        self._credentials = credentials
        self._backoff = backoff if backoff is not None else default_backoff()
        self.max_retries_429 = max_retries_429
        self.max_retries_failure = max_retries_failure
        self._guard = guard
        self.metrics = RestMetrics()
        # Redirects are refused: the signature covers the path, and the key must not follow them elsewhere.
        self._http = httpx.AsyncClient(
            timeout=timeout,
            verify=_tls_context(),
            transport=transport,
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )

    async def __aenter__(self) -> KalshiRestClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Safe to call more than once."""
        await self._http.aclose()

    def full_path(self, path: str) -> str:
        """The path that is requested and signed: "/markets" -> "/trade-api/v2/markets"."""
        return self._base_path + (path if path.startswith("/") else "/" + path)

    async def get_json(self, path: str, params: Mapping[str, QueryValue | None] | None = None) -> dict[str, Any]:
        """GET ``path`` (relative to ``base_url``) and return its JSON object; None params are left out."""
        return await self.request_json("GET", path, params=params)

    async def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, QueryValue | None] | None = None,
        body: Mapping[str, Any] | None = None,
        retry: Retry = Retry.RATE_LIMIT,
    ) -> dict[str, Any]:
        """Send a signed ``method`` request for ``path`` and return its JSON object ({} for a 204).

        ``retry`` says what may be sent again, with back-off: a 429 under RATE_LIMIT, also a 5xx or a transport
        failure (a timeout: the request may have been executed) under IDEMPOTENT, nothing under NEVER. A 2xx
        whose body carries an ``error`` is a failure: Kalshi answers some refusals that way.
        """
        method = method.upper()
        full_path = self.full_path(path)
        url = self._origin + full_path
        query = {name: _query_value(value) for name, value in (params or {}).items() if value is not None}
        backoff = replace(self._backoff, attempt=0)
        retries_429 = retries_failure = 0
        while True:
            if self._guard is not None:
                self._guard(url)
            self.metrics.requests += 1
            headers = self._credentials.headers(method, full_path, _now_ms())
            try:
                response = await self._http.request(
                    method, url, params=query, headers=headers, json=None if body is None else dict(body)
                )
            except httpx.HTTPError as exc:
                if retry is Retry.IDEMPOTENT and retries_failure < self.max_retries_failure:
                    retries_failure += 1
                    self.metrics.retries_failure += 1
                    await asyncio.sleep(backoff.next_delay())
                    continue
                raise self._error(0, full_path, f"request failed: {type(exc).__name__}: {exc}", method=method) from None
            status = response.status_code
            if status == 429 and retry is not Retry.NEVER:
                if retries_429 >= self.max_retries_429:
                    raise self._error(
                        429, full_path, f"rate limited; gave up after {retries_429} retries", method=method
                    )
                retries_429 += 1
                self.metrics.retries_429 += 1
                await asyncio.sleep(backoff.next_delay())
                continue
            if status >= 500 and retry is Retry.IDEMPOTENT and retries_failure < self.max_retries_failure:
                retries_failure += 1
                self.metrics.retries_failure += 1
                await asyncio.sleep(backoff.next_delay())
                continue
            if not 200 <= status < 300:
                code, message, details = error_fields(response)
                raise self._error(
                    status,
                    full_path,
                    message,
                    method=method,
                    code=code,
                    details=details,
                    after_lost_answer=retries_failure > 0,
                )
            if status == 204 and not response.content:
                return {}
            try:
                parsed = response.json()
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise self._error(status, full_path, "the response is not a JSON object", malformed=True, method=method)
            if parsed.get("error") is not None:
                code, message, details = error_fields(response)
                raise self._error(status, full_path, message, method=method, code=code, details=details)
            return parsed

    def _error(
        self,
        status: int,
        path: str,
        message: str,
        *,
        malformed: bool = False,
        method: str = "GET",
        code: str = "",
        details: str = "",
        after_lost_answer: bool = False,
    ) -> KalshiRestError:
        self.metrics.errors += 1
        message, details = self._redact(message), self._redact(details)
        if malformed:
            return MalformedResponse(status, path, message, method=method)
        return KalshiRestError(
            status, path, message, method=method, code=code, details=details, after_lost_answer=after_lost_answer
        )

    def _redact(self, text: str) -> str:
        key_id = self._credentials.key_id
        if key_id:
            text = text.replace(key_id, "<key id>")
        return text[:_MESSAGE_LIMIT]

    async def exchange_status(self) -> ExchangeStatus:
        """GET /exchange/status."""
        body = await self.get_json("/exchange/status")
        try:
            active, trading = body.get("exchange_active"), body.get("trading_active")
            if not isinstance(active, bool):
                raise ValueError(f"exchange_active must be a boolean, got {active!r}")
            if not isinstance(trading, bool):
                raise ValueError(f"trading_active must be a boolean, got {trading!r}")
            resume = _str_field(body, "exchange_estimated_resume_time")
        except ValueError as exc:
            raise self._error(200, self.full_path("/exchange/status"), str(exc), malformed=True) from None
        return ExchangeStatus(exchange_active=active, trading_active=trading, estimated_resume_time=resume)

    async def markets(
        self,
        *,
        status: str | None = "open",
        mve_filter: str | None = "exclude",
        limit: int = MAX_MARKETS_LIMIT,
        **filters: QueryValue | None,
    ) -> AsyncIterator[MarketInfo]:
        """Every market matching the filters, following ``cursor`` page by page until it is empty.

        ``status`` is the filter value (unopened, open, paused, closed, settled); other GET /markets
        filters (series_ticker, event_ticker, tickers, ...) pass through ``filters``.
        """
        if not 1 <= limit <= MAX_MARKETS_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_MARKETS_LIMIT}")
        path = "/markets"
        seen_cursors: set[str] = set()
        cursor = ""
        while True:
            params: dict[str, QueryValue | None] = {"status": status, "mve_filter": mve_filter, "limit": limit}
            params.update(filters)
            if cursor:
                params["cursor"] = cursor
            body = await self.get_json(path, params)
            page, cursor = self._market_page(body)
            for market in page:
                yield market
            if not cursor:
                return
            # A server that hands back a cursor it already gave would page forever.
            if cursor in seen_cursors:
                raise self._error(200, self.full_path(path), "the cursor repeats an earlier page", malformed=True)
            seen_cursors.add(cursor)

    def _market_page(self, body: dict[str, Any]) -> tuple[list[MarketInfo], str]:
        path = self.full_path("/markets")
        raw_markets, cursor = body.get("markets"), body.get("cursor")
        if raw_markets is None:
            raw_markets = []
        if not isinstance(raw_markets, list):
            raise self._error(200, path, "markets must be a list", malformed=True)
        if cursor is not None and not isinstance(cursor, str):
            raise self._error(200, path, "cursor must be a string", malformed=True)
        page: list[MarketInfo] = []
        for index, raw in enumerate(raw_markets):
            try:
                page.append(MarketInfo.from_json(raw))
            except ValueError as exc:
                ticker = raw.get("ticker") if isinstance(raw, dict) else None
                label = f"markets[{index}]" + (f" ({ticker})" if isinstance(ticker, str) and ticker else "")
                raise self._error(200, path, f"{label}: {exc}", malformed=True) from None
        return page, cursor or ""

    async def orderbook(self, ticker: str, depth: int = 0) -> OrderBook:
        """GET /markets/{ticker}/orderbook: the resting YES and NO bids (``depth`` per side, 0 = all)."""
        if not 0 <= depth <= 100:
            raise ValueError("depth must be between 0 and 100")
        path = f"/markets/{quote(ticker, safe='')}/orderbook"
        body = await self.get_json(path, {"depth": depth} if depth else None)
        try:
            return parse_orderbook(ticker, body)
        except ValueError as exc:
            raise self._error(200, self.full_path(path), str(exc), malformed=True) from None


def _query_value(value: QueryValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def error_fields(response: httpx.Response) -> tuple[str, str, str]:
    """(code, message, details) of Kalshi's error body: the wrapped ``{"error": {...}}``, the bare 429
    ``{"error": "too many requests"}``, the flat documented ``{code, message, details}``, a short plain-text
    body, or the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, str) and error:
            return "", error, ""
        fields = error if isinstance(error, dict) else body
        code, message, details = (fields.get(k) for k in ("code", "message", "details"))
        code = code if isinstance(code, str) else ""
        details = details if isinstance(details, str) else ""
        if isinstance(message, str) and message:
            return code, f"{code}: {message}" if code else message, details
        if code:
            return code, code + (f": {details}" if details else ""), details
    text = response.text.strip()
    return "", text.splitlines()[0] if text else response.reason_phrase or "error", ""
