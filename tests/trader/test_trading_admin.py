"""What a session traded, in the admin as a staff member reads it: orders with the reason of every change, fills
and positions, filtered and read-only, prices and money as dollar strings; the session's page shows its latest
orders and fills and links to the rest, and stays fast with 10,000 orders."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from apps.kalshi.clock import from_epoch_us
from apps.trader.models import Fill, Order, OrderChange, TradingSession
from apps.trader.services import session_end, session_start, trading_records_write
from tests.trader.trading_records import T0_US, a_trading_morning, fill, placed, position

pytestmark = pytest.mark.django_db


def traded_session(markets: list[str] | None = None) -> TradingSession:
    session = session_start(environment="sim", markets=markets or ["KXA"], exchange_url="ws://127.0.0.1:1/x")
    trading_records_write(session_id=session.pk, records=a_trading_morning())
    session_end(session_id=session.pk, failed=False, error="")
    return session


@pytest.fixture
def staff() -> Client:
    """A staff member who may view the trader's rows (and nothing more)."""
    user = User.objects.create_user("operator", password="a long passphrase 7", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="trader", codename__startswith="view_"))
    client = Client()
    client.force_login(user)
    return client


def page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


def result_rows(html: str) -> int:
    return len(re.findall(r'<tr>\s*<td class="action-checkbox">|<tr>\s*<th class="field-', html))


def test_the_order_list_shows_dollars_and_contracts_and_filters_by_session_status_side_and_strategy(
    staff: Client,
) -> None:
    session = traded_session()
    other = traded_session(["KXB"])
    taker = placed("c-3", ticker="KXB", strategy="apps.strategies.taker.Taker")
    trading_records_write(session_id=other.pk, records=[taker])
    listing = page(staff, "/admin/trader/order/")
    assert '<td class="field-price">$0.4500</td>' in listing
    assert '<td class="field-initial">5.00</td>' in listing
    assert '<td class="field-filled">2.00</td>' in listing
    assert '<td class="field-fees_paid">$0.003150</td>' in listing
    assert '<span title="quoter">quoter</span>' in listing
    for title in ("session", "status", "side", "strategy"):
        assert f'data-filter-title="{title}"' in listing
    assert 'id="nav-sidebar"' not in listing

    assert result_rows(page(staff, f"/admin/trader/order/?session__id__exact={session.pk}")) == 2
    refused = page(staff, f"/admin/trader/order/?session__id__exact={session.pk}&status__exact=refused")
    assert result_rows(refused) == 1 and "c-2" in refused
    assert result_rows(page(staff, "/admin/trader/order/?side__exact=ask")) == 2
    takers = page(staff, "/admin/trader/order/?strategy__exact=apps.strategies.taker.Taker")
    assert result_rows(takers) == 1 and '<span title="apps.strategies.taker.Taker">Taker</span>' in takers
    searched = page(staff, "/admin/trader/order/?q=KXB")
    assert result_rows(searched) == 1 and "c-3" in searched


def test_an_order_page_is_read_only_with_the_reason_of_every_change_and_its_fills(staff: Client) -> None:
    traded_session()
    order = Order.objects.get(client_order_id="c-1")
    html = page(staff, f"/admin/trader/order/{order.pk}/change/")
    assert 'name="_save"' not in html and "/delete/" not in html
    reasons = ["placed by quoter: bid 0.0200 under the mid", "resting on the exchange", "filled 2.00 at 0.4500"]
    positions = [html.index(reason) for reason in [*reasons, "cancelled: kill switch"]]
    assert positions == sorted(positions)  # in the order they happened
    assert "2026-12-02 14:30:05" in html  # times to the second
    assert "ex-1" in html and "t-1" in html and "Good till canceled" in html
    assert staff.post(f"/admin/trader/order/{order.pk}/change/", {}).status_code == 403
    assert staff.post(f"/admin/trader/order/{order.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Order.objects.filter(pk=order.pk).exists()


def test_the_fill_list_filters_by_session_side_and_taker(staff: Client) -> None:
    traded_session()
    session = traded_session()
    bid = Order.objects.get(session=session, client_order_id="c-1")
    trading_records_write(
        session_id=session.pk, records=[fill("t-2", side="ask", is_taker=True, fee=-500, client_order_id="")]
    )
    listing = page(staff, "/admin/trader/fill/")
    assert f'<a href="/admin/trader/order/{bid.pk}/change/">c-1</a>' in listing
    assert '<td class="field-fee_paid">-$0.000500</td>' in listing
    for title in ("session", "side", "is taker"):
        assert f'data-filter-title="{title}"' in listing
    assert result_rows(listing) == 3
    assert result_rows(page(staff, f"/admin/trader/fill/?session__id__exact={session.pk}")) == 2
    takers = page(staff, "/admin/trader/fill/?is_taker__exact=1")
    assert result_rows(takers) == 1 and "t-2" in takers
    assert result_rows(page(staff, f"/admin/trader/fill/?session__id__exact={session.pk}&side__exact=bid")) == 1
    one = Fill.objects.get(session=session, trade_id="t-1")
    assert 'name="_save"' not in page(staff, f"/admin/trader/fill/{one.pk}/change/")


def test_the_position_list_filters_by_session_and_finds_a_ticker(staff: Client) -> None:
    session = traded_session()
    trading_records_write(
        session_id=session.pk,
        records=[
            position("KXB", at_ms=5, position=-300, realized_pnl=-1_250_000, mark_price=None, unrealized_pnl=None)
        ],
    )
    listing = page(staff, f"/admin/trader/positionsnapshot/?session__id__exact={session.pk}")
    assert result_rows(listing) == 2
    assert '<td class="field-held">-3.00</td>' in listing
    assert '<td class="field-realized">-$1.250000</td>' in listing
    assert '<td class="field-mark">$0.4550</td>' in listing and '<td class="field-mark">—</td>' in listing
    assert result_rows(page(staff, "/admin/trader/positionsnapshot/?q=KXB")) == 1


def test_a_session_page_shows_its_latest_orders_and_fills_and_links_to_all_of_them(
    staff: Client, django_assert_max_num_queries: Any
) -> None:
    session = traded_session()
    base = from_epoch_us(T0_US)
    Order.objects.bulk_create(
        Order(
            session=session,
            client_order_id=f"bulk-{n:05d}",
            ticker="KXA",
            side="bid",
            yes_price=4400,
            initial_count=100,
            fill_count=0,
            remaining_count=100,
            time_in_force="good_till_canceled",
            status="canceled",
            fees=0,
            strategy="quoter",
            created_at=base + timedelta(seconds=10 + n),
            updated_at=base + timedelta(seconds=10 + n),
        )
        for n in range(10_000)
    )
    with django_assert_max_num_queries(20):  # 12 today, whatever the number of orders
        html = page(staff, f"/admin/trader/tradingsession/{session.pk}/change/")
    assert "Latest 20 orders" in html and "Latest 20 fills" in html
    assert "bulk-09999" in html and "bulk-09980" in html and "bulk-09979" not in html  # newest first, 20 of them
    assert f'<a href="/admin/trader/order/?session__id__exact={session.pk}">10,002 orders</a>' in html
    assert f'<a href="/admin/trader/fill/?session__id__exact={session.pk}">1 fill</a>' in html
    assert f'<a href="/admin/trader/positionsnapshot/?session__id__exact={session.pk}">1 position snapshot</a>' in html
    assert "t-1" in html and "$0.4500" in html


def test_deleting_a_session_counts_and_deletes_what_it_traded(admin_client: Client) -> None:
    session = traded_session()
    confirmation = page(admin_client, f"/admin/trader/tradingsession/{session.pk}/delete/")
    assert "Orders: 2" in confirmation and "Order changes: 5" in confirmation
    assert "Fills: 1" in confirmation and "Position snapshots: 1" in confirmation
    assert admin_client.post(f"/admin/trader/tradingsession/{session.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Order.objects.exists() and not OrderChange.objects.exists() and not Fill.objects.exists()
