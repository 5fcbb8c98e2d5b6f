"""The simulator's commands: subscribe, unsubscribe, update_subscription and list_subscriptions.

Each command a connection sends is checked as Kalshi checks it and answered with the same replies and
error codes (``apps.kalshi.messages``); a subscription to the orderbook channel starts with one snapshot
per market, and so does a market added later or a ``get_snapshot``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from apps.exchange.connections import Connection, Connections, Subscription
from apps.exchange.counts import TrafficCounts
from apps.exchange.market import SimMarket
from apps.exchange.sequencing import Sequencer
from apps.kalshi.fixedpoint import DOLLAR
from apps.kalshi.messages import (
    CHANNEL_ORDERBOOK,
    CHANNELS,
    ERROR_ACTION_REQUIRED,
    ERROR_CHANNELS_REQUIRED,
    ERROR_EXACTLY_ONE_SID,
    ERROR_INVALID_PARAMETER,
    ERROR_MARKET_TICKER_REQUIRED,
    ERROR_PARAMS_REQUIRED,
    ERROR_SIDS_REQUIRED,
    ERROR_UNABLE_TO_PROCESS,
    ERROR_UNKNOWN_CHANNEL,
    ERROR_UNKNOWN_COMMAND,
    ERROR_UNKNOWN_SID,
    ERROR_UNSUPPORTED_ACTION,
    OrderbookSnapshot,
    SubscriptionInfo,
    error_frame,
    list_subscriptions_frame,
    ok_frame,
    snapshot_frame,
    subscribed_frame,
    unsubscribed_frame,
)

logger = logging.getLogger(__name__)


class CommandError(Exception):
    """A command refused with a Kalshi error code (and, for code 11, the tickers at fault)."""

    def __init__(self, code: int, market_tickers: list[str] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.market_tickers = market_tickers


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


Handler = Callable[[Connection, int | None, object], None]


class Commands:
    """Handles the commands of every connection of one exchange."""

    def __init__(
        self,
        *,
        markets: Mapping[str, SimMarket],
        connections: Connections,
        sequencer: Sequencer,
        traffic: TrafficCounts,
    ) -> None:
        self._markets = markets
        self._connections = connections
        self._sequencer = sequencer
        self._traffic = traffic
        self._handlers: dict[str, Handler] = {
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "update_subscription": self._update_subscription,
            "list_subscriptions": self._list_subscriptions,
        }

    def on_message(self, connection: Connection, message: str | bytes) -> None:
        """Handle one text or binary message from ``connection``: a command, or something to refuse."""
        self._traffic.commands += 1
        enqueue = self._connections.enqueue
        try:
            command = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            enqueue(connection, error_frame(None, ERROR_UNABLE_TO_PROCESS))
            return
        if not isinstance(command, dict):
            enqueue(connection, error_frame(None, ERROR_UNABLE_TO_PROCESS))
            return
        command_id = command.get("id")
        if command_id is not None and (not _is_int(command_id) or command_id < 0):
            enqueue(connection, error_frame(None, ERROR_UNABLE_TO_PROCESS))
            return
        name = command.get("cmd")
        handler = self._handlers.get(name) if isinstance(name, str) else None
        try:
            if handler is None:
                raise CommandError(ERROR_UNKNOWN_COMMAND)
            handler(connection, command_id, command.get("params"))
        except CommandError as exc:
            enqueue(connection, error_frame(command_id, exc.code, market_tickers=exc.market_tickers))
        except Exception:
            logger.exception("exchange simulator: command %r failed", name)
            enqueue(connection, error_frame(command_id, ERROR_UNABLE_TO_PROCESS))

    # ------------------------------------------------------------------------------------------ parameters

    def _market_tickers_param(self, params: dict[str, Any]) -> list[str] | None:
        """market_ticker or market_tickers (not both), every one a known market; None if neither given."""
        one = params.get("market_ticker")
        many = params.get("market_tickers")
        if one is not None and many is not None:
            raise CommandError(ERROR_INVALID_PARAMETER)
        if one is not None:
            if not isinstance(one, str) or not one:
                raise CommandError(ERROR_INVALID_PARAMETER)
            tickers = [one]
        elif many is not None:
            if not isinstance(many, list) or not many or not all(isinstance(t, str) and t for t in many):
                raise CommandError(ERROR_INVALID_PARAMETER)
            tickers = list(dict.fromkeys(many))
        else:
            return None
        unknown = [t for t in tickers if t not in self._markets]
        if unknown:
            raise CommandError(ERROR_INVALID_PARAMETER, unknown)
        return tickers

    @staticmethod
    def _bool_param(params: dict[str, Any], name: str) -> bool:
        value = params.get(name, False)
        if not isinstance(value, bool):
            raise CommandError(ERROR_INVALID_PARAMETER)
        return value

    @staticmethod
    def _one_sid(params: dict[str, Any]) -> int:
        sid = params.get("sid")
        sids = params.get("sids")
        if (sid is None) == (sids is None):
            raise CommandError(ERROR_EXACTLY_ONE_SID)
        if sids is not None:
            if not isinstance(sids, list) or len(sids) != 1:
                raise CommandError(ERROR_EXACTLY_ONE_SID)
            sid = sids[0]
        if not _is_int(sid):
            raise CommandError(ERROR_EXACTLY_ONE_SID)
        assert isinstance(sid, int)
        return sid

    # ------------------------------------------------------------------------------------------ handlers

    def _subscribe(self, connection: Connection, command_id: int | None, params: object) -> None:
        if not isinstance(params, dict):
            raise CommandError(ERROR_PARAMS_REQUIRED)
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels:
            raise CommandError(ERROR_CHANNELS_REQUIRED)
        if not all(isinstance(c, str) and c in CHANNELS for c in channels):
            raise CommandError(ERROR_UNKNOWN_CHANNEL)
        tickers = self._market_tickers_param(params)
        if CHANNEL_ORDERBOOK in channels and tickers is None:
            raise CommandError(ERROR_MARKET_TICKER_REQUIRED)
        skip_ticker_ack = self._bool_param(params, "skip_ticker_ack")
        use_yes_price = self._bool_param(params, "use_yes_price")
        for channel in dict.fromkeys(channels):
            sid, log = self._sequencer.new_sid()
            sub = Subscription(
                sid=sid,
                channel=channel,
                connection=connection,
                log=log,
                tickers=list(tickers or []),
                skip_ticker_ack=skip_ticker_ack,
                use_yes_price=use_yes_price,
            )
            connection.subs[sid] = sub
            self._connections.enqueue(connection, subscribed_frame(command_id, channel, sid))
            if channel == CHANNEL_ORDERBOOK:
                for ticker in sub.tickers:
                    self._send_snapshot(sub, ticker, None)

    def _unsubscribe(self, connection: Connection, command_id: int | None, params: object) -> None:
        if not isinstance(params, dict):
            raise CommandError(ERROR_PARAMS_REQUIRED)
        sids = params.get("sids")
        if not isinstance(sids, list) or not sids or not all(_is_int(s) for s in sids):
            raise CommandError(ERROR_SIDS_REQUIRED)
        # All or nothing: one unknown sid rejects the whole command.
        if any(sid not in connection.subs for sid in sids):
            raise CommandError(ERROR_UNKNOWN_SID)
        for sid in dict.fromkeys(sids):
            sub = connection.subs.pop(sid)
            sub.active = False
            seq = self._sequencer.issue(sub.log)
            self._connections.enqueue(connection, unsubscribed_frame(command_id, sid, seq))

    def _update_subscription(self, connection: Connection, command_id: int | None, params: object) -> None:
        if not isinstance(params, dict):
            raise CommandError(ERROR_PARAMS_REQUIRED)
        action = params.get("action")
        if action is None:
            raise CommandError(ERROR_ACTION_REQUIRED)
        if action not in ("add_markets", "delete_markets", "get_snapshot"):
            raise CommandError(ERROR_UNSUPPORTED_ACTION)
        sid = self._one_sid(params)
        sub = connection.subs.get(sid)
        if sub is None:
            raise CommandError(ERROR_UNKNOWN_SID)
        tickers = self._market_tickers_param(params)
        if tickers is None:
            raise CommandError(ERROR_MARKET_TICKER_REQUIRED)
        if action == "get_snapshot":
            if sub.channel != CHANNEL_ORDERBOOK:
                raise CommandError(ERROR_UNSUPPORTED_ACTION)
            missing = [t for t in tickers if t not in sub.tickers]
            if missing:
                raise CommandError(ERROR_INVALID_PARAMETER, missing)
            for ticker in tickers:
                self._send_snapshot(sub, ticker, command_id)
            return
        if action == "add_markets":
            added = [t for t in tickers if t not in sub.tickers]
            sub.tickers.extend(added)
        else:
            added = []
            sub.tickers = [t for t in sub.tickers if t not in tickers]
        seq = self._sequencer.issue(sub.log)
        listed = None if sub.skip_ticker_ack else list(sub.tickers)
        self._connections.enqueue(connection, ok_frame(command_id, sid=sid, seq=seq, market_tickers=listed))
        if sub.channel == CHANNEL_ORDERBOOK:
            for ticker in added:
                self._send_snapshot(sub, ticker, None)

    def _list_subscriptions(self, connection: Connection, command_id: int | None, params: object) -> None:
        infos = [SubscriptionInfo(channel=s.channel, sid=s.sid) for s in connection.subs.values()]
        self._connections.enqueue(connection, list_subscriptions_frame(command_id, infos))

    def _send_snapshot(self, sub: Subscription, ticker: str, command_id: int | None) -> None:
        market = self._markets[ticker]
        seq = self._sequencer.issue(sub.log)
        no = sorted(market.no.items())
        if sub.use_yes_price:
            no = sorted((DOLLAR - price, size) for price, size in no)
        snapshot = OrderbookSnapshot(
            sid=sub.sid,
            seq=seq,
            market_ticker=ticker,
            market_id=market.market_id,
            yes=sorted(market.yes.items()),
            no=no,
            id=command_id,
        )
        self._traffic.snapshots_sent += 1
        self._connections.enqueue(sub.connection, snapshot_frame(snapshot), sub.sid)
