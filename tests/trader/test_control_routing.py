"""Which trader a console's request goes to when several shards share the channel layer."""

from __future__ import annotations

import pytest

from apps.trader.control import ControlError, Shard, control_request, route

ALPHA = Shard(3, "specific.a!1", ("KXFED-26DEC-T4.25", "KXCPI-26DEC-T0.3"))
BETA = Shard(5, "specific.b!2", ("KXBTCD-26DEC31-T100000",))


def test_it_sends_a_removal_only_to_the_shard_that_watches_each_market() -> None:
    routing = route("remove_markets", ["KXCPI-26DEC-T0.3", "KXBTCD-26DEC31-T100000", "KXNOPE-1"], [ALPHA, BETA])
    assert routing.targets == [(ALPHA, ["KXCPI-26DEC-T0.3"]), (BETA, ["KXBTCD-26DEC31-T100000"])]
    assert routing.refused == {"KXNOPE-1": "no live trader watches it"}


def test_it_adds_to_the_shard_with_the_fewest_markets() -> None:
    routing = route("add_markets", ["KXNBA-26-LAL"], [ALPHA, BETA])
    assert routing.targets == [(BETA, ["KXNBA-26-LAL"])]


def test_on_a_tie_the_oldest_session_gets_the_market() -> None:
    gamma = Shard(4, "specific.c!3", ("KXNBA-26-LAL",))
    assert route("add_markets", ["KXETHD-26DEC31-T4000"], [BETA, gamma]).targets == [(gamma, ["KXETHD-26DEC31-T4000"])]


def test_a_market_some_shard_watches_is_never_added_twice() -> None:
    routing = route("add_markets", ["KXFED-26DEC-T4.25", "KXNBA-26-LAL"], [ALPHA, BETA])
    assert routing.targets == [(BETA, ["KXNBA-26-LAL"])]
    assert routing.refused == {"KXFED-26DEC-T4.25": "already watched by session 3"}


def test_a_request_may_name_its_shard() -> None:
    assert route("add_markets", ["KXNBA-26-LAL"], [ALPHA, BETA], session_id=3).targets == [(ALPHA, ["KXNBA-26-LAL"])]
    with pytest.raises(ControlError, match="session 9 is not a live trader"):
        route("add_markets", ["KXNBA-26-LAL"], [ALPHA, BETA], session_id=9)


def test_with_no_live_shard_nothing_is_sent() -> None:
    with pytest.raises(ControlError, match="no trader is running"):
        route("add_markets", ["KXNBA-26-LAL"], [])


@pytest.mark.parametrize("raw", ["KXFED-26DEC-T4.25\n", " KXFED", "KX FED", "<script>", "", 42])
def test_requests_use_the_one_ticker_rule(raw: object) -> None:
    with pytest.raises(ControlError):
        control_request("add_markets", [raw])


def test_tickers_are_normalised_and_deduplicated() -> None:
    assert control_request("remove_markets", ["kxfed-26dec-t4.25", "KXFED-26DEC-T4.25"]) == (
        "remove_markets",
        ["KXFED-26DEC-T4.25"],
    )
