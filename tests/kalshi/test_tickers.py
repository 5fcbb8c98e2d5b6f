"""The ticker rule: what is a market ticker, and what never reaches the exchange."""

from __future__ import annotations

import pytest

from apps.kalshi.tickers import InvalidTicker, normalize_ticker, parse_ticker_list


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("KXFED-26DEC-T4.25", "KXFED-26DEC-T4.25"),
        ("kxfed-26dec-t4.25", "KXFED-26DEC-T4.25"),
        ("KXBTCD-26DEC31-T100000", "KXBTCD-26DEC31-T100000"),
        ("A_B", "A_B"),
        ("X" * 100, "X" * 100),
    ],
)
def test_it_accepts_tickers_in_canonical_case(raw: str, expected: str) -> None:
    assert normalize_ticker(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "KXFED-26DEC-T4.25\n",
        " KXFED",
        "KX FED",
        "KX\tFED",
        "KX\x00FED",
        "KX\x7fFED",
        "-KXFED",
        ".KXFED",
        "<script>",
        "KXFED;DROP",
        "KX/FED",
        "X" * 101,
        "KXFÉD",
    ],
)
def test_it_refuses_anything_else(raw: str) -> None:
    with pytest.raises(InvalidTicker, match="is not a market ticker"):
        normalize_ticker(raw)


@pytest.mark.parametrize("raw", [None, 42, ["KXFED"]])
def test_it_refuses_what_is_not_a_string(raw: object) -> None:
    with pytest.raises(InvalidTicker, match="must be a string"):
        normalize_ticker(raw)


def test_a_list_is_trimmed_normalised_and_deduplicated() -> None:
    assert parse_ticker_list(" kxfed-26dec-t4.25, KXCPI-26DEC-T0.3,,KXFED-26DEC-T4.25 ") == [
        "KXFED-26DEC-T4.25",
        "KXCPI-26DEC-T0.3",
    ]


def test_a_list_names_the_bad_item() -> None:
    with pytest.raises(InvalidTicker, match="'<script>'"):
        parse_ticker_list("KXFED-26DEC-T4.25,<script>")
