"""Where the markets come from: a list or discovery, never both at one level; a flag overrides the settings."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from apps.kalshi.environments import ConfigurationError
from apps.trader.runtime import load_trader_config

FED = "KXFED-26DEC-T4.25"


def problems(**options: object) -> list[str]:
    try:
        load_trader_config(settings, web=False, **options)
    except ConfigurationError as exc:
        return list(exc.problems)
    return []


@override_settings(TRADER_MARKETS=[FED], TRADER_DISCOVER=5)
def test_both_settings_are_refused_with_what_to_do() -> None:
    assert problems() == [
        "TRADER_DISCOVER picks the markets itself: leave TRADER_MARKETS empty "
        "(or choose on the command line with --markets or --discover)"
    ]


def test_both_flags_are_refused() -> None:
    assert problems(markets=FED, discover=5) == ["--discover picks the markets itself: leave out --markets"]


@override_settings(TRADER_MARKETS=[FED], TRADER_DISCOVER=5)
def test_a_flag_overrides_both_settings() -> None:
    assert load_trader_config(settings, web=False, markets=FED).markets == [FED]
    chosen = load_trader_config(settings, web=False, discover=3)
    assert (chosen.discover, chosen.markets) == (3, [])


@pytest.mark.parametrize(("markets", "discover"), [([FED], 0), ([], 5)])
def test_one_setting_alone_is_fine(markets: list[str], discover: int) -> None:
    with override_settings(TRADER_MARKETS=markets, TRADER_DISCOVER=discover):
        assert problems() == []
