"""replaysession: a market's book rebuilt at any recorded seq, and a whole session served by the exchange."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command

from apps.exchange.config import SimulatorConfig
from apps.exchange.simulator import ExchangeSimulator
from apps.marketdata.recorder import DatabaseRecorder
from apps.marketdata.selectors import Gap, Recorded, book_at, recorded_markets
from apps.trader.models import StateTransition, TradingSession
from apps.trader.runtime import TraderRuntime, load_trader_config
from apps.trader.selectors import session_summary
from apps.trader.services import session_end, session_start
from apps.workbench.replay import SessionReplay, replay_through_trader
from tests.marketdata.conftest import SCRIPT, a_new_session, at, record_script, recorded_session
from tests.marketdata.harness import live, recording_coordinator
from tests.support import eventually

pytestmark = pytest.mark.django_db(transaction=True)

gap_item = Gap(kind="seq", sid=1, expected_seq=1, received_seq=2, markets=(), detected_at=at(0), healed_at=None)


def replay(*args: str) -> tuple[object, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("replaysession", *args, stdout=out, stderr=err)
    return json.loads(out.getvalue()), err.getvalue()


def test_it_prints_the_book_at_the_end_of_the_recording_best_first() -> None:
    session = recorded_session()
    book, err = replay(str(session.pk), "--market", "KXB")
    assert book == {"yes": [["0.0155", "100.00"]], "no": [["0.9800", "2.50"]]}
    assert err == ""
    book, _ = replay("latest", "--market", "KXA")
    assert book == {"yes": [], "no": []}


def test_it_rebuilds_the_book_at_a_seq_of_one_subscription() -> None:
    session = recorded_session()
    book, err = replay(str(session.pk), "--market", "KXA", "--at-seq", "5", "--sid", "1")
    assert book == {"yes": [["0.4300", "5.00"], ["0.4100", "3.00"]], "no": [["0.5500", "20.00"]]}
    assert err == ""
    # Seq 4 was KXB's delta: KXA's book then is the one after its own seq 3.
    book, _ = replay(str(session.pk), "--market", "KXA", "--at-seq", "4", "--sid", "1")
    assert book == {"yes": [["0.4300", "5.00"], ["0.4200", "12.50"], ["0.4100", "3.00"]], "no": [["0.5500", "20.00"]]}
    book, _ = replay(str(session.pk), "--market", "KXA", "--at-seq", "11", "--sid", "1")
    assert book["no"] == [["0.5600", "1.25"], ["0.5500", "20.00"]]  # type: ignore[index]
    book, _ = replay(str(session.pk), "--market", "KXB", "--at-seq", "2", "--sid", "2")
    assert book == {"yes": [["0.0155", "100.00"]], "no": [["0.9800", "2.50"]]}


def test_it_warns_when_a_gap_made_the_book_unknown() -> None:
    session = recorded_session()
    book, err = replay(str(session.pk), "--market", "KXA", "--at-seq", "7", "--sid", "1")
    assert "not known there (seq gap on sid 1: expected 6, received 8)" in err
    assert book == {"yes": [["0.4300", "5.00"], ["0.4100", "3.00"]], "no": [["0.5500", "20.00"]]}
    rebuilt = book_at(session_id=session.pk, market_ticker="KXA", seq=9, sid=1)
    assert rebuilt.current and rebuilt.reason == ""


def test_it_asks_which_subscription_when_seqs_repeat() -> None:
    session = recorded_session()
    with pytest.raises(CommandError, match="recorded on subscriptions 1, 2; say which with --sid"):
        replay(str(session.pk), "--market", "KXA", "--at-seq", "3")
    with pytest.raises(CommandError, match="--market is required"):
        replay(str(session.pk))
    with pytest.raises(CommandError, match="nothing was recorded for KXZ"):
        replay(str(session.pk), "--market", "KXZ")


async def test_serving_a_session_lets_the_trader_record_the_same_books(sim_key_pair, sim_credentials) -> None:
    original = await a_new_session()
    await record_script(original.pk, SCRIPT)
    markets = await sync_to_async(recorded_markets)(session_id=original.pk)
    exchange = ExchangeSimulator(
        SimulatorConfig(public_key_pem=sim_key_pair[1], markets=markets, message_rate=0.0, ping_interval=0.2)
    )
    replay_ = SessionReplay(exchange, session_id=original.pk, speed=0, page_size=4)
    await replay_.prepare()
    await exchange.start()

    recorder = DatabaseRecorder(flush_interval=0.01)
    trader = recording_coordinator(exchange, sim_credentials, recorder, markets=markets)
    run = asyncio.create_task(trader.run())
    try:
        await eventually(lambda: live(trader), what="the trader live on the replay")
        stats = await replay_.run()
        await eventually(
            lambda: trader.client is not None and trader.client.feed_status().counters.deltas_received >= stats.changes,
            what="the replayed changes",
        )
    finally:
        trader.request_shutdown("replay over")
        await asyncio.wait_for(run, timeout=10)
        await recorder.close()
        await exchange.stop()

    assert stats.items == 13 and stats.deltas == 5 and stats.rejected == 0
    assert trader.session_id is not None and trader.session_id != original.pk
    for ticker in markets:
        recorded = await sync_to_async(book_at)(session_id=original.pk, market_ticker=ticker)
        replayed = await sync_to_async(book_at)(session_id=trader.session_id, market_ticker=ticker)
        assert replayed.book.as_wire() == recorded.book.as_wire(), ticker


async def test_serving_follows_the_recorded_pace(sim_key_pair) -> None:
    original = await a_new_session()
    await record_script(original.pk, SCRIPT)  # 150 ms of recording
    exchange = ExchangeSimulator(SimulatorConfig(public_key_pem=sim_key_pair[1], markets=["KXA", "KXB"]))
    exchange.config.message_rate = 0.0
    paced = SessionReplay(exchange, session_id=original.pk, speed=0.5)
    await paced.prepare()
    started = time.monotonic()
    await paced.run()
    assert time.monotonic() - started >= 0.25  # 140 ms between first and last item, at half speed

    # A recorded outage of 100 s, cut down to 50 ms.
    silence = [
        Recorded(1, at(0), gap_item),
        Recorded(2, at(100_000), gap_item),
        Recorded(3, at(100_100), gap_item),
    ]

    async def fetch(after: int, limit: int) -> list[Recorded]:
        return [item for item in silence if item.position > after][:limit]

    squeezed = SessionReplay(exchange, session_id=original.pk, speed=1.0, max_pause=0.05, fetch=fetch)
    started = time.monotonic()
    stats = await squeezed.run()
    assert stats.items == 3
    assert 0.1 <= time.monotonic() - started < 5


async def test_a_console_replay_is_recorded_as_a_replay_and_shuts_down_when_the_recording_ends(
    settings: Any, tmp_path: Path
) -> None:
    settings.DATA_DIR = tmp_path  # the trader's sim key pair goes here
    original = await a_new_session()
    await record_script(original.pk, SCRIPT)
    markets = await sync_to_async(recorded_markets)(session_id=original.pk)
    config = load_trader_config(settings, markets=",".join(markets), web=False)
    exchange = ExchangeSimulator(
        SimulatorConfig(public_key_pem=config.exchange_public_key_pem, markets=markets, message_rate=0.0)
    )
    replay_ = SessionReplay(exchange, session_id=original.pk, speed=0, page_size=4)
    await replay_.prepare()
    await exchange.start()
    replaying = dataclasses.replace(
        config, start_exchange=False, ws_url=exchange.ws_url, api_url=exchange.api_url, replay_of=original.pk
    )
    try:
        stats = await asyncio.wait_for(replay_through_trader(replay_, TraderRuntime(replaying)), timeout=60)
    finally:
        await exchange.stop()

    assert stats is not None and stats.items == 13
    session = await TradingSession.objects.aget(replay_of=original.pk)
    assert (session.status, session.current_state) == ("stopped", "shutdown")
    last = await StateTransition.objects.filter(session=session).alatest("timestamp", "id")
    assert last.to_state == "shutdown"
    assert last.context == f"the replay of session {original.pk} is over: 13 recorded items replayed"
    assert session_summary(session)["replay_of"] == original.pk
    assert str(session) == f"Session {session.pk} (sim, replay of {original.pk}, stopped)"
    for ticker in markets:  # every replayed delta reached the trader before it stopped
        recorded = await sync_to_async(book_at)(session_id=original.pk, market_ticker=ticker)
        replayed = await sync_to_async(book_at)(session_id=session.pk, market_ticker=ticker)
        assert replayed.book.as_wire() == recorded.book.as_wire(), ticker


async def test_the_console_page_labels_a_replay(client: Any) -> None:
    original = await a_new_session()
    replay_session = await sync_to_async(session_start)(
        environment="sim", markets=["KXA"], exchange_url="ws://127.0.0.1:9/x", replay_of=original.pk
    )
    page = (await sync_to_async(client.get)("/v3-trader")).content.decode()
    assert f'data-session-id="{replay_session.pk}"' in page
    assert (
        '<span id="replay-badge" class="badge replay-badge" title="This session replays a recorded one">'
        f'replay of session <span id="replay-of">{original.pk}</span></span>'
    ) in page
    await sync_to_async(session_end)(session_id=replay_session.pk, failed=False, error="")
    live = await sync_to_async(session_start)(environment="sim", markets=["KXA"], exchange_url="ws://127.0.0.1:9/x")
    page = (await sync_to_async(client.get)("/v3-trader")).content.decode()
    assert f'data-session-id="{live.pk}"' in page
    assert 'title="This session replays a recorded one" hidden>' in page
