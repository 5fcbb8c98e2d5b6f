"""A trading block of the status document, shaped as the trading engine writes it, for page and API tests."""

from __future__ import annotations

from typing import Any


def trading_block(*, orders: int = 3, fills: int = 2, killed: str = "") -> dict[str, Any]:
    """``orders`` open orders (the status lists the latest 50 and counts all), ``fills`` recent fills."""
    open_orders = [
        {
            "client_order_id": f"quoter-{n}",
            "order_id": f"ord-{n}",
            "ticker": "KXFED-26DEC-T4.25" if n % 2 else "KXCPI-26DEC-T0.3",
            "side": "bid" if n % 2 else "ask",
            "yes_price": f"0.{40 + n % 20:02d}00",
            "initial_count": "5.00",
            "fill_count": "1.00" if n == 1 else "0.00",
            "remaining_count": "4.00" if n == 1 else "5.00",
            "status": "resting",
            "time_in_force": "good_till_canceled",
            "strategy": "quoter",
        }
        for n in range(1, orders + 1)
    ]
    return {
        "enabled": True,
        "ready": not killed,
        "killed": killed,
        "strategy": {
            "name": "quoter",
            "path": "apps.strategies.quoter.Quoter",
            "params": {"spread": "0.02", "size": "5.00"},
            "state": "stopped" if killed else "running",
            "error": "",
        },
        "balance": "9987.250000",
        "exposure": "42.500000",
        "realized_pnl": "1.250000",
        "unrealized_pnl": "-0.300000",
        "fees": "0.070000",
        "total_pnl": "0.950000",
        "session_pnl": "0.880000",
        "positions": [
            {
                "ticker": "KXFED-26DEC-T4.25",
                "position": "3.00",
                "cost": "1.260000",
                "realized_pnl": "0.000000",
                "fees_paid": "0.030000",
                "mark_price": "0.4150",
                "unrealized_pnl": "-0.015000",
            },
            {
                "ticker": "KXCPI-26DEC-T0.3",
                "position": "-2.00",
                "cost": "1.100000",
                "realized_pnl": "1.250000",
                "fees_paid": "0.040000",
                "mark_price": None,
                "unrealized_pnl": None,
            },
        ],
        "open_orders": open_orders[-50:],
        "open_orders_total": orders,
        "recent_fills": [
            {
                "trade_id": f"t-{n}",
                "ticker": "KXFED-26DEC-T4.25",
                "side": "bid",
                "yes_price": "0.4200",
                "count": "1.00",
                "fee": "0.010000",
                "is_taker": n == 1,
                "ts_ms": 1_767_000_000_000 + n,
            }
            for n in range(fills, 0, -1)
        ],
        "limits": {"max_position": "10.00 contracts per market", "max_open_orders": "20"},
        "refusals": {"max_position": 2, "price_band": 1},
        "counters": {
            "orders_placed": orders + 4,
            "orders_amended": 1,
            "orders_filled": 1,
            "orders_cancelled": 3,
            "orders_rejected": 0,
            "orders_refused": 3,
            "fills": fills,
            "maker_fills": fills - 1,
            "taker_fills": 1,
            "account_syncs": 1,
            "kill_switch": 1 if killed else 0,
            "strategy_failures": 0,
        },
    }
