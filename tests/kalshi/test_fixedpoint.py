from __future__ import annotations

import pytest

from apps.kalshi.fixedpoint import (
    FixedPointError,
    format_price,
    format_size,
    parse_price,
    parse_size,
    price_field,
    size_field,
)


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


def test_it_reads_the_fixed_point_field_before_the_legacy_one() -> None:
    fields = {"yes_bid_dollars": "0.4250", "yes_bid": 41, "volume_fp": "12.50", "volume": 12}
    assert price_field(fields, "yes_bid_dollars", "yes_bid") == 4250
    assert size_field(fields, "volume_fp", "volume") == 1250


def test_it_falls_back_to_the_integer_fields_kalshi_removed() -> None:
    fields = {"yes_bid": 42, "volume": 12}
    assert price_field(fields, "yes_bid_dollars", "yes_bid") == 4200
    assert size_field(fields, "volume_fp", "volume") == 1200
    assert price_field({}, "yes_bid_dollars", "yes_bid") is None
    assert size_field({"volume_fp": None}, "volume_fp", "volume") is None


@pytest.mark.parametrize(
    ("fields", "named"),
    [({"price_dollars": 0.42}, "price_dollars"), ({"price": "42"}, "price"), ({"price": True}, "price")],
)
def test_a_malformed_field_is_named(fields: dict[str, object], named: str) -> None:
    with pytest.raises(FixedPointError, match=named):
        price_field(fields, "price_dollars", "price")
