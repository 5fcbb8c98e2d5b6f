from __future__ import annotations

import pytest

from apps.kalshi.fixedpoint import FixedPointError, format_price, format_size, parse_price, parse_size


@pytest.mark.parametrize(
    ("text", "units"),
    [("0.4200", 4200), ("0.4250", 4250), ("1.0000", 10000), ("0.01", 100), ("0", 0), ("0.000100", 1)],
)
def test_it_parses_dollar_strings_exactly(text: str, units: int) -> None:
    assert parse_price(text) == units


@pytest.mark.parametrize(("text", "units"), [("12.50", 1250), ("-54.00", -5400), ("0.01", 1), ("300", 30000)])
def test_it_parses_fractional_and_signed_sizes(text: str, units: int) -> None:
    assert parse_size(text) == units


@pytest.mark.parametrize("bad", ["0.42001", "abc", "", "1e-2", "0.4.2", " 0.42", None, 0.42, 42])
def test_it_rejects_what_it_cannot_hold_exactly(bad: object) -> None:
    with pytest.raises(FixedPointError):
        parse_price(bad)


def test_it_formats_the_way_kalshi_writes() -> None:
    assert format_price(4200) == "0.4200"
    assert format_price(10000) == "1.0000"
    assert format_size(1250) == "12.50"
    assert format_size(-5400) == "-54.00"
    assert format_size(1) == "0.01"


def test_round_trip_never_goes_through_float() -> None:
    # 0.1 + 0.2 style errors would show up here if floats were involved.
    total = sum(parse_price("0.1000") for _ in range(3))
    assert format_price(total) == "0.3000"
