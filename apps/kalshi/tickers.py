"""Kalshi market tickers: the one rule every path that takes a ticker from outside checks first.

Tickers are upper-case letters and digits with ``-``, ``.`` and ``_`` between (``KXFED-26DEC-T4.25``).
Input is normalised to upper case; anything with whitespace, control characters or other punctuation is
refused before it reaches the exchange, a log line or a page.
"""

from __future__ import annotations

import re

MAX_TICKER_LENGTH = 100
_TICKER = re.compile(rf"[A-Z0-9][A-Z0-9._-]{{0,{MAX_TICKER_LENGTH - 1}}}")


class InvalidTicker(ValueError):
    """A string that is not a market ticker; the text says which and why, safe to show."""


def normalize_ticker(raw: object) -> str:
    """The ticker in canonical (upper) case; raises InvalidTicker for anything else."""
    if not isinstance(raw, str):
        raise InvalidTicker(f"a market ticker must be a string; got {type(raw).__name__}")
    ticker = raw.upper()
    if not _TICKER.fullmatch(ticker):
        raise InvalidTicker(
            f"{raw[:40]!r} is not a market ticker (letters, digits, '-', '.' and '_', "
            f"at most {MAX_TICKER_LENGTH} characters)"
        )
    return ticker


def parse_ticker_list(raw: str) -> list[str]:
    """Comma-separated tickers, normalised, in order, without repeats. Empty items are skipped."""
    tickers = [normalize_ticker(item.strip()) for item in raw.split(",") if item.strip()]
    return list(dict.fromkeys(tickers))
