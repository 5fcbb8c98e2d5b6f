"""Exact fixed-point prices and sizes.

Kalshi writes prices as dollar strings ("0.4200", up to 4 decimals on the book) and contract counts as
strings with 2 decimals ("12.50"; fractional contracts exist). They are held here as integers:
prices in 1/10,000 dollar and sizes in 1/100 contract, so arithmetic is exact and never goes through float.
Money (costs, fees, P&L, balances: dollar strings with up to 6 decimals) is held in micro-dollars; a size
times a price is exactly that.

Kalshi removed its integer fields (whole cents, whole contracts) on 2026-03-12; ``price_field`` and
``size_field`` still read them when the fixed-point field is absent, so old recordings and answers load.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

DOLLAR = 10_000
"""One dollar in price units (1/10,000 dollar)."""
CONTRACT = 100
"""One contract in size units (1/100 contract)."""

MICRO_DOLLAR = 1_000_000
"""One dollar in money units (1/1,000,000 dollar)."""

PRICE_DECIMALS = 4
SIZE_DECIMALS = 2
MONEY_DECIMALS = 6

_NUMBER = re.compile(r"^(-?)(\d+)(?:\.(\d+))?$")


class FixedPointError(ValueError):
    """A number string that cannot be represented exactly at the required precision."""


def _parse(text: object, decimals: int, what: str) -> int:
    if not isinstance(text, str):
        raise FixedPointError(f"{what} must be a string, got {type(text).__name__}")
    # The wire's own shape ("0.4200", "-54.00": ASCII digits, exactly ``decimals`` of them) costs a few
    # string operations instead of a regex match; anything else takes the general path below.
    whole, _, fraction = text.partition(".")
    if len(fraction) == decimals and text.isascii():
        negative = whole.startswith("-")
        if negative:
            whole = whole[1:]
        if whole.isdigit() and fraction.isdigit():
            units = int(whole + fraction)
            return -units if negative else units
    match = _NUMBER.match(text)
    if match is None:
        raise FixedPointError(f"{what} {text!r} is not a decimal number")
    sign, whole, fraction = match.groups()
    fraction = fraction or ""
    if len(fraction) > decimals:
        extra = fraction[decimals:]
        if extra.strip("0"):
            raise FixedPointError(f"{what} {text!r} has more than {decimals} decimals")
        fraction = fraction[:decimals]
    value: int = int(whole) * 10**decimals + int(fraction.ljust(decimals, "0") or "0")
    return -value if sign else value


def parse_price(text: object) -> int:
    """Parse a dollar string such as "0.4200" into 1/10,000 dollar units (4200)."""
    return _parse(text, PRICE_DECIMALS, "price")


def parse_size(text: object) -> int:
    """Parse a contract count string such as "12.50" or "-54.00" into 1/100 contract units."""
    return _parse(text, SIZE_DECIMALS, "size")


def parse_money(text: object) -> int:
    """Parse a dollar amount such as "-12.345678" (fees, costs, P&L, balances) into micro-dollars."""
    return _parse(text, MONEY_DECIMALS, "amount")


def money_from_cents(cents: object, what: str = "amount") -> int:
    """An integer amount in cents (Kalshi's ``balance``, ``revenue``) as micro-dollars."""
    return _whole(cents, what) * (MICRO_DOLLAR // 100)


def price_from_cents(cents: object, what: str = "price") -> int:
    """A pre-2026 integer price in cents (42) as 1/10,000 dollar units (4200)."""
    return _whole(cents, what) * (DOLLAR // 100)


def size_from_contracts(count: object, what: str = "size") -> int:
    """A pre-2026 integer count of whole contracts (12) as 1/100 contract units (1200)."""
    return _whole(count, what) * CONTRACT


def _whole(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FixedPointError(f"{what} must be an integer, got {type(value).__name__}")
    return value


def price_field(fields: Mapping[str, Any], name: str, legacy: str) -> int | None:
    """The price in ``fields[name]`` (a dollar string) or, when that is absent, in ``fields[legacy]`` (the
    pre-2026 integer cents); None when neither is there. FixedPointError naming the field when malformed."""
    return _field(fields, name, parse_price, legacy, price_from_cents)


def size_field(fields: Mapping[str, Any], name: str, legacy: str) -> int | None:
    """The size in ``fields[name]`` (a contract string) or, when that is absent, in ``fields[legacy]`` (the
    pre-2026 whole contracts); None when neither is there. FixedPointError naming the field when malformed."""
    return _field(fields, name, parse_size, legacy, size_from_contracts)


def _field(
    fields: Mapping[str, Any],
    name: str,
    parse: Callable[[object], int],
    legacy: str,
    from_legacy: Callable[[object, str], int],
) -> int | None:
    text = fields.get(name)
    if text is not None:
        try:
            return parse(text)
        except FixedPointError as exc:
            raise FixedPointError(f"{name}: {exc}") from None
    value = fields.get(legacy)
    return None if value is None else from_legacy(value, legacy)


def _format(value: int, decimals: int) -> str:
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(value), 10**decimals)
    return f"{sign}{whole}.{fraction:0{decimals}d}"


def format_price(price: int) -> str:
    """Format 1/10,000 dollar units the way Kalshi writes them: 4200 -> "0.4200"."""
    return _format(price, PRICE_DECIMALS)


def format_money(amount: int) -> str:
    """Format micro-dollars with 6 decimals: 3_638 -> "0.003638"."""
    return _format(amount, MONEY_DECIMALS)


def format_size(size: int) -> str:
    """Format 1/100 contract units the way Kalshi writes them: 1250 -> "12.50"."""
    return _format(size, SIZE_DECIMALS)
