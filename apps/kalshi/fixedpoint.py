"""Exact fixed-point prices and sizes.

Kalshi writes prices as dollar strings ("0.4200", up to 4 decimals on the book) and contract counts as
strings with 2 decimals ("12.50"; fractional contracts exist). They are held here as integers:
prices in 1/10,000 dollar and sizes in 1/100 contract, so arithmetic is exact and never goes through float.
"""

from __future__ import annotations

import re

DOLLAR = 10_000
"""One dollar in price units (1/10,000 dollar)."""
CONTRACT = 100
"""One contract in size units (1/100 contract)."""

PRICE_DECIMALS = 4
SIZE_DECIMALS = 2

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


def _format(value: int, decimals: int) -> str:
    sign = "-" if value < 0 else ""
    whole, fraction = divmod(abs(value), 10**decimals)
    return f"{sign}{whole}.{fraction:0{decimals}d}"


def format_price(price: int) -> str:
    """Format 1/10,000 dollar units the way Kalshi writes them: 4200 -> "0.4200"."""
    return _format(price, PRICE_DECIMALS)


def format_size(size: int) -> str:
    """Format 1/100 contract units the way Kalshi writes them: 1250 -> "12.50"."""
    return _format(size, SIZE_DECIMALS)
