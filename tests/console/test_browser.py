"""The console page in a real headless Chromium, against runtrader started as a user starts it.

The test drives the page through Chrome's DevTools protocol: it reads the live DOM, types into the market
filter, and watches rows change as the trader's orderbooks events arrive.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.console.trading_sample import trading_block
from tests.processes import free_port, http_get, project_env, start_runtrader, wait_until_healthy
from tests.support import eventually_blocking

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MARKETS = ["KXBTCD-26DEC31-T100000", "KXCPI-26DEC-T0.3", "KXFED-26DEC-T4.25"]  # the `make run` default, sorted
ROWS = "[...document.querySelectorAll('#markets-body tr.market-row')]"
CALM = {"SIM_MESSAGE_RATE": "10", "TRADER_ORDERBOOK_INTERVAL": "0.25"}
"""A calmer market than ``make run``'s (50 messages a second, books sent every 50 ms): every row, ladder and chart
still moves within a second, and the trader sends, and the browser draws, a fraction of the updates."""


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail("REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("needs chromium (apt-get install chromium); .ci/run installs it")
    return CHROMIUM


class Page:
    """One browser tab, spoken to over the DevTools protocol."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self._socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # events the tab sends unasked are skipped
            message = json.loads(self._socket.recv(timeout=30))
            if message.get("id") == call_id:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    def value(self, expression: str, *, wait: bool = False) -> Any:
        """The value of a JavaScript expression in the page (with ``wait``, of the promise it gives)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=wait)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def value_or_none(self, expression: str) -> Any:
        """``value``, or None while the page is between documents (a link was just followed)."""
        try:
            return self.value(expression)
        except AssertionError:
            return None

    def follow(self, selector: str, lands: str | None = None) -> str:
        """Click the link ``selector`` names and wait for its page (at path ``lands`` when the link
        redirects) to load; returns the link."""
        href = self.value(f"document.querySelector({json.dumps(selector)}).getAttribute('href')")
        self.value(f"document.querySelector({json.dumps(selector)}).click()")
        path = lands or href.split("?")[0]
        eventually_blocking(
            lambda: self.value_or_none("location.pathname + '|' + document.readyState") == f"{path}|complete",
            what=f"the page {href} to load",
        )
        return str(href)

    def type_into(self, selector: str, text: str) -> None:
        """Focus a field, empty it and type ``text`` as a user would (input events included)."""
        self.value(f"document.querySelector({json.dumps(selector)}).focus()")
        self.value(f"document.querySelector({json.dumps(selector)}).select()")
        self.call("Input.dispatchKeyEvent", type="keyDown", key="Backspace", code="Backspace", windowsVirtualKeyCode=8)
        self.call("Input.dispatchKeyEvent", type="keyUp", key="Backspace", code="Backspace", windowsVirtualKeyCode=8)
        if text:
            self.call("Input.insertText", text=text)

    def rows(self) -> list[str]:
        tickers: list[str] = self.value(f"{ROWS}.map((tr) => tr.dataset.ticker)")
        return tickers


@pytest.fixture(scope="module")
def devtools(chromium: str) -> Iterator[tuple[int, Page]]:
    """One headless Chromium for the file's tests (its start-up costs more than a test's page): its DevTools
    port and its browser-wide session."""
    port = free_port()
    # Chromium's helpers can still be writing the profile as the browser exits: leftovers are harmless.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                # The page's flashes and pulses are drawn frame by frame; no test looks at them.
                "--force-prefers-reduced-motion",
                f"--user-data-dir={profile}",
                f"--remote-debugging-port={port}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            def version() -> dict[str, Any]:
                code, body = http_get(f"http://127.0.0.1:{port}/json/version")
                assert code == 200, body
                found: dict[str, Any] = json.loads(body)
                return found

            eventually_blocking(lambda: _answers(version), seconds=30, what="Chromium's DevTools endpoint")
            with connect(version()["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as socket:
                yield port, Page(socket)
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture
def browser(devtools: tuple[int, Page]) -> Iterator[Any]:
    """Open URLs in a tab of its own, in a browser context of its own (no cookie or storage of another test's
    pages); yields ``open(url) -> Page``."""
    port, chrome = devtools
    context = chrome.call("Target.createBrowserContext")["browserContextId"]
    sockets = contextlib.ExitStack()

    def open_page(url: str) -> Page:
        target = chrome.call("Target.createTarget", url="about:blank", browserContextId=context)["targetId"]
        url_of_tab = f"ws://127.0.0.1:{port}/devtools/page/{target}"
        page = Page(sockets.enter_context(connect(url_of_tab, max_size=None, open_timeout=30)))
        page.call("Page.enable")
        page.call("Page.navigate", url=url)
        return page

    try:
        yield open_page
    finally:
        sockets.close()
        chrome.call("Target.disposeBrowserContext", browserContextId=context)


def _answers(ask: Any) -> bool:
    try:
        return bool(ask())
    except (OSError, AssertionError):
        return False


def test_the_console_shows_the_trader_live_filters_markets_and_follows_books(tmp_path: Path, browser: Any) -> None:
    trader = start_runtrader(project_env(tmp_path, **CALM), "--port", "0")
    try:
        wait_until_healthy(trader.base_url)
        page = browser(trader.console_url)
        live = f"{ROWS}.filter((tr) => tr.dataset.stale === 'false').length"
        eventually_blocking(lambda: page.value(live) == 3, what="three live market rows")
        eventually_blocking(
            lambda: page.value("document.getElementById('health-badge').dataset.health") == "healthy",
            what="the health badge to say healthy",
        )

        # Best bids and asks as Kalshi writes them: a 4-decimal price times a 2-decimal size. The simulated
        # flow can empty one side of a book for a moment, so wait for a time when every side has a level.
        def outer_html() -> str:
            return str(page.value("document.documentElement.outerHTML"))

        eventually_blocking(
            lambda: len(re.findall(r'<span class="px">\d\.\d{4}</span>', outer_html())) >= 6,
            what="a best bid and a best ask in every row",
        )
        dom = outer_html()
        assert re.search(r'id="state-badge"[^>]*data-state="ready"', dom)
        assert re.search(r'id="socket-indicator"[^>]*data-socket="connected"', dom)
        assert page.rows() == MARKETS
        assert page.value("document.getElementById('markets-count').textContent") == "3"
        assert len(re.findall(r'<span class="sz">\d+\.\d{2}</span>', dom)) >= 6
        # The session's history was replayed into the console, in the product's line format.
        assert re.search(
            r'STATE TRANSITION: <span class="st" data-state="kalshi_connectivity_orderbook_client">'
            r'kalshi_connectivity_orderbook_client</span> → <span class="st" data-state="ready">ready</span>',
            dom,
        )
        assert "Context: Orderbooks live for 3 markets" in dom

        # A row follows its book from the trader's orderbooks events, with no new page asked for (counted from
        # the first page: the rows can show before it arrives).
        eventually_blocking(
            lambda: page.value("document.body.dataset.marketsPages") is not None, what="the first markets page"
        )
        pages = page.value("document.body.dataset.marketsPages")
        seq_cell = "Number(document.querySelector('tr[data-ticker=\"KXFED-26DEC-T4.25\"] .col-seq').textContent)"
        seq = page.value(seq_cell)
        assert isinstance(seq, int) and seq > 0
        eventually_blocking(lambda: page.value(seq_cell) > seq, what="the KXFED row to show a newer seq")
        assert page.value("document.body.dataset.marketsPages") == pages

        # Typing in the filter box asks the server for the matching rows.
        page.type_into("#market-filter", "cpi")
        eventually_blocking(lambda: page.rows() == ["KXCPI-26DEC-T0.3"], what="only the CPI row")
        assert page.value("document.getElementById('markets-range').textContent") == "1–1 of 1 matching “cpi”"
        eventually_blocking(
            lambda: page.value(f"{ROWS}[0].querySelector('.px') !== null"),
            what="the filtered row to show its book",
        )
        page.type_into("#market-filter", "NOPE")
        eventually_blocking(lambda: page.rows() == [], what="no rows for a filter nothing matches")
        assert page.value("document.getElementById('markets-empty').hidden") is False
        page.type_into("#market-filter", "")
        eventually_blocking(lambda: page.rows() == MARKETS, what="every row back once the filter is empty")

        # The first row's market is watched: its depth ladder (both sides) and its charts follow it live.
        assert page.value("document.body.dataset.watched") == MARKETS[0]
        ladder = "document.querySelectorAll('#ladder-body tr.ladder-{}').length"
        eventually_blocking(
            lambda: page.value(ladder.format("bid")) >= 1 and page.value(ladder.format("ask")) >= 1,
            what="levels on both sides of the ladder",
        )
        assert page.value(ladder.format("bid")) <= 5 and page.value(ladder.format("ask")) <= 5
        updates = page.value("Number(document.body.dataset.ladderUpdates)")
        eventually_blocking(
            lambda: page.value("Number(document.body.dataset.ladderUpdates)") > updates, what="the ladder to move"
        )
        points = "Number(document.getElementById('{}').dataset.points || 0)"
        eventually_blocking(lambda: page.value(points.format("price-chart")) > 0, what="a price chart")
        eventually_blocking(lambda: page.value(points.format("rate-chart")) > 0, what="a message-rate chart")
        drawn = page.value(points.format("rate-chart"))
        eventually_blocking(lambda: page.value(points.format("rate-chart")) > drawn, what="the rate chart to grow")
        assert page.value(
            "document.querySelectorAll('#price-chart path.chart-bid, #price-chart path.chart-ask').length"
        )

        # A click on another row watches that market instead.
        page.value(f"document.querySelector('tr[data-ticker=\"{MARKETS[2]}\"] .col-ticker').click()")
        eventually_blocking(
            lambda: page.value("document.getElementById('market-ticker').textContent") == MARKETS[2],
            what="the ladder to follow the clicked market",
        )
        assert page.value(
            f"document.querySelector('tr[data-ticker=\"{MARKETS[2]}\"]').classList.contains('is-watched')"
        )
        eventually_blocking(lambda: page.value(ladder.format("bid")) >= 1, what="the clicked market's levels")

        # The row's remove button takes a market from the trader; the form adds it back.
        page.value(f"document.querySelector('tr[data-ticker=\"{MARKETS[0]}\"] button.remove-market').click()")
        eventually_blocking(lambda: page.rows() == MARKETS[1:], what=f"the {MARKETS[0]} row to go")
        page.type_into("#market-input", MARKETS[0])
        page.value("document.querySelector('#market-form button[type=submit]').click()")
        eventually_blocking(lambda: page.rows() == MARKETS, what=f"the {MARKETS[0]} row to come back")
        eventually_blocking(lambda: page.value(live) == 3, what="the added market to go live")

        # A good and a bad ticker at once: each is reported on its own, and the bad one never becomes a row.
        page.type_into("#market-input", "KXNBA-26-LAL, BOGUS-NOPE")
        page.value("document.querySelector('#market-form button[type=submit]').click()")
        log = "document.getElementById('console').textContent"
        eventually_blocking(lambda: "added KXNBA-26-LAL" in page.value(log), what="KXNBA-26-LAL reported added")
        eventually_blocking(lambda: "BOGUS-NOPE not added: " in page.value(log), what="BOGUS-NOPE reported refused")
        eventually_blocking(lambda: page.rows() == sorted([*MARKETS, "KXNBA-26-LAL"]), what="a row for KXNBA only")
        eventually_blocking(lambda: page.value(live) == 4, what="the added market to go live")
        assert "BOGUS-NOPE" not in page.rows()

        # At 400 px the state, health and markets come before the metrics, and the ask column fits.
        page.call("Emulation.setDeviceMetricsOverride", width=400, height=900, deviceScaleFactor=1, mobile=True)
        top = "document.querySelector('{}').getBoundingClientRect().top"
        eventually_blocking(
            lambda: page.value(top.format(".panel-markets")) < page.value(top.format(".panel-metrics")),
            what="the markets above the metrics",
        )
        assert page.value(top.format(".panel-state")) < page.value(top.format(".panel-markets"))
        assert page.value(top.format("#health-badge")) < page.value(top.format(".panel-markets"))
        assert (
            page.value("document.querySelector('#markets-body tr.market-row .col-ask').getBoundingClientRect().right")
            <= 400
        )
        page.call("Emulation.clearDeviceMetricsOverride")
    finally:
        trader.stop()


def test_the_session_history_links_the_console_each_sessions_page_its_export_and_the_admin(
    tmp_path: Path, browser: Any
) -> None:
    trader = start_runtrader(project_env(tmp_path, **CALM), "--port", "0")
    try:
        wait_until_healthy(trader.base_url)
        page = browser(trader.console_url)
        eventually_blocking(lambda: page.value_or_none("document.body.dataset.replayed") == "1", what="the console")

        assert page.follow(".page-links a[href='/v3/sessions']") == "/v3/sessions"
        sessions = page.value(
            "[...document.querySelectorAll('#sessions-table tr.session-row')].map((tr) => tr.dataset.session)"
        )
        assert len(sessions) == 1
        session = sessions[0]
        assert page.value("document.querySelector('tr.session-row').dataset.status") == "running"

        # The session's page: its transitions and its charts from the recording.
        assert page.follow("tr.session-row a.view-link") == f"/v3/sessions/{session}"
        assert page.value("document.body.dataset.chartsDrawn") == "true"
        transitions = "[...document.querySelectorAll('#transitions-table tr.transition-row')].length"
        assert page.value(transitions) >= 3
        assert page.value("document.getElementById('market-ticker').textContent") in MARKETS
        assert page.value("Number(document.getElementById('price-chart').dataset.points)") > 0

        # Its export, as exportsession writes it.
        first = page.value(
            "fetch(document.querySelector('a.export-link[href$=\".jsonl\"]').href).then((r) => r.text())"
            ".then((t) => t.split('\\n')[0])",
            wait=True,
        )
        assert json.loads(first)["kind"] == "snapshot"

        # Its admin page (behind the admin's login), and back to the console, whose header links to the session.
        page.follow("#admin-link", lands="/admin/login/")
        assert page.value("location.search") == f"?next=/admin/trader/tradingsession/{session}/change/"
        assert page.value("document.title").startswith("Log in")
        page.call("Page.navigate", url=f"{trader.base_url}/v3/sessions/{session}")
        eventually_blocking(
            lambda: (
                page.value_or_none("document.readyState") == "complete"
                and page.value_or_none("location.pathname") == f"/v3/sessions/{session}"
            ),
            what="the session's page again",
        )
        assert page.follow(".page-links a[href='/v3-trader']") == "/v3-trader"
        eventually_blocking(lambda: page.value_or_none("document.body.dataset.replayed") == "1", what="the console")
        assert page.follow("#session-link") == f"/v3/sessions/{session}"
    finally:
        trader.stop()


def test_the_trading_panel_shows_a_trading_status_and_fits_1400_px_with_50_orders(tmp_path: Path, browser: Any) -> None:
    trader = start_runtrader(project_env(tmp_path, **CALM), "--port", "0")
    try:
        wait_until_healthy(trader.base_url)
        page = browser(trader.console_url)
        eventually_blocking(lambda: page.value_or_none("document.body.dataset.replayed") == "1", what="the console")
        # A watching trader: no panel and no trading steps.
        assert page.value("document.getElementById('trading-panel').hidden") is True
        assert page.value("getComputedStyle(document.querySelector('[data-step=trading_ready]')).display") == "none"
        session = page.value("Number(document.body.dataset.sessionId)")
        page.call("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
        status = {"session_id": session, "state": "trading_ready", "metrics": {}, "trading": trading_block(orders=50)}
        # The trader's own statuses (it does not trade) follow within a second: the status is fed and the
        # page measured in one script, before any of them can arrive.
        shown = page.value(
            f"""(() => {{
              window.TraderConsole.handleMessage({{type: 'trader_status', data: {json.dumps(status)}}});
              const panel = document.getElementById('trading-panel');
              const rect = (sel) => document.querySelector(sel).getBoundingClientRect();
              const wrap = document.querySelector('.trading-orders .trading-wrap');
              const lastCancel = [...document.querySelectorAll('#orders-body button.cancel-order')].pop();
              wrap.scrollTop = wrap.scrollHeight;
              return {{
                hidden: panel.hidden,
                orders: document.querySelectorAll('#orders-body tr.order-row').length,
                count: document.getElementById('orders-count').textContent,
                positions: document.querySelectorAll('#positions-body tr.position-row').length,
                fills: document.querySelectorAll('#fills-body tr.fill-row').length,
                balance: document.querySelector('[data-money=balance]').textContent,
                unrealized: document.querySelector('[data-money=unrealized_pnl]').dataset.sign,
                strategy: document.getElementById('strategy-name').textContent,
                params: document.getElementById('strategy-params').textContent,
                state: document.getElementById('strategy-state').textContent,
                refusals: document.getElementById('trading-refusals').textContent,
                step: getComputedStyle(document.querySelector('[data-step=trading_ready]')).display,
                pageWidth: document.documentElement.scrollWidth,
                panelRight: rect('#trading-panel').right,
                ordersWrapHeight: wrap.getBoundingClientRect().height,
                ordersTableWidth: rect('#orders-table').width,
                ordersWrapWidth: wrap.clientWidth,
                positionsFit: rect('#positions-table').width <= rect('.trading-positions').width + 1,
                fillsFit: rect('#fills-table').width <= rect('.trading-fills').width + 1,
                widths: [rect('#positions-table').width, rect('.trading-positions').width,
                         rect('#fills-table').width, rect('.trading-fills').width],
                lastCancelVisible: lastCancel.getBoundingClientRect().bottom <= wrap.getBoundingClientRect().bottom
                  && lastCancel.getBoundingClientRect().right <= wrap.getBoundingClientRect().right,
              }};
            }})()"""
        )
        assert shown == {
            **shown,
            "hidden": False,
            "orders": 50,
            "count": "50",
            "positions": 2,
            "fills": 2,
            "balance": "$9,987.25",
            "unrealized": "down",
            "strategy": "quoter",
            "params": "spread=0.02 size=5.00",
            "state": "running",
            "step": "flex",
        }
        assert "max_position2" in shown["refusals"] and "price_band1" in shown["refusals"]
        # At 1400 px nothing runs off the page: 50 orders scroll inside their table, every column and the
        # last Cancel button in view.
        assert shown["pageWidth"] <= 1400 and shown["panelRight"] <= 1400
        assert shown["ordersWrapHeight"] <= 260
        assert shown["ordersTableWidth"] <= shown["ordersWrapWidth"] + 1
        assert shown["positionsFit"] and shown["fillsFit"], shown["widths"]
        assert shown["lastCancelVisible"]
        if os.environ.get("CONSOLE_SCREENSHOT"):  # a look at the panel: it is kept shown while the picture is taken
            feed = f"window.TraderConsole.handleMessage({{type: 'trader_status', data: {json.dumps(status)}}})"
            page.value(f"window.keepShown = setInterval(() => {feed}, 20)")
            page.value("document.getElementById('trading-panel').scrollIntoView()")
            shot = page.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
            Path(os.environ["CONSOLE_SCREENSHOT"]).write_bytes(base64.b64decode(shot["data"]))
            page.value("clearInterval(window.keepShown)")

        # Trading lines of the console get their own look.
        kinds = page.value(
            """(() => {
              const lines = ['FILL: buy YES 1.00 KXFED at 0.4200 (maker)', 'REFUSED by max_position: too big',
                             'KILL SWITCH: from the console', 'ORDER PLACED: buy YES', 'MARKETS: nothing'];
              for (const message of lines) window.TraderConsole.handleMessage(
                {type: 'console', data: {level: 'info', message, timestamp: new Date().toISOString()}});
              return [...document.querySelectorAll('#console .log-entry')].slice(-5).map((e) => e.dataset.trade || '');
            })()"""
        )
        assert kinds == ["fill", "refused", "kill", "order", ""]
        # The kill switch asks first; keeping trading closes the question and sends nothing.
        page.value("document.getElementById('kill-switch').click()")
        assert page.value("document.getElementById('kill-confirm').hidden") is False
        page.value("document.getElementById('kill-confirm-no').click()")
        assert page.value("document.getElementById('kill-confirm').hidden") is True
        # The trader's own next status says it does not trade: the panel goes.
        eventually_blocking(
            lambda: page.value("document.getElementById('trading-panel').hidden") is True,
            what="the panel to hide on the trader's own status",
        )
        page.call("Emulation.clearDeviceMetricsOverride")
    finally:
        trader.stop()


QUOTER = "apps.strategies.quoter.Quoter"


def _has_quoter() -> bool:
    try:
        return importlib.util.find_spec(QUOTER.rpartition(".")[0]) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(not _has_quoter(), reason=f"needs the {QUOTER} strategy")
def test_a_quoting_trader_fills_the_panel_a_cancel_takes_an_order_and_the_kill_switch_takes_them_all(
    tmp_path: Path, browser: Any
) -> None:
    trader = start_runtrader(project_env(tmp_path, **CALM), "--port", "0", "--strategy", QUOTER)
    try:
        wait_until_healthy(trader.base_url)
        page = browser(trader.console_url)
        orders = "[...document.querySelectorAll('#orders-body tr.order-row')].map((tr) => tr.dataset.key)"
        eventually_blocking(
            lambda: page.value_or_none("document.getElementById('trading-panel').hidden") is False,
            what="the trading panel",
        )
        eventually_blocking(lambda: len(page.value(orders)) >= 2, what="the quoter's resting orders in the panel")
        assert page.value("document.getElementById('state-badge').dataset.state") == "trading_ready"
        assert page.value("document.getElementById('strategy-state').textContent") == "running"
        assert page.value("document.querySelector('[data-money=balance]').textContent").startswith("$")

        # Cancel on one order: the trader answers, and the order leaves the panel.
        first = page.value(orders)[0]
        page.value(
            f"document.querySelector('#orders-body tr[data-key={json.dumps(first)}] button.cancel-order').click()"
        )
        reply = "document.getElementById('trading-reply').textContent"
        # The quoter's orders trade: the one clicked may have filled before the cancel reached the exchange.
        replies: list[str] = []

        def answered() -> bool:
            replies.append(page.value(reply))
            return f"Order {first} " in replies[-1]

        try:
            eventually_blocking(answered, what="the cancel's answer")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the reply line said {replies[-1]!r}") from None
        assert re.search(rf"Order {re.escape(first)} (cancelled|ended executed)", page.value(reply)), page.value(reply)
        eventually_blocking(lambda: first not in page.value(orders), what=f"order {first} to leave the panel")

        # The kill switch, confirmed: every order is cancelled and none comes back.
        page.value("document.getElementById('kill-switch').click()")
        page.value("document.getElementById('kill-confirm-yes').click()")
        eventually_blocking(lambda: "Kill switch pulled" in page.value(reply), what="the kill switch's answer")
        eventually_blocking(
            lambda: page.value("document.getElementById('orders-body').dataset.total") == "0",
            what="no open order left",
        )
        assert page.value("document.getElementById('trading-panel').dataset.killed") == "true"
        log = "document.getElementById('console').textContent"
        eventually_blocking(lambda: "CONTROL: kill switch from the console" in page.value(log), what="the control line")
        assert page.value("document.querySelectorAll('#console .log-entry[data-trade=kill]').length") >= 1

        # /v3/status carries the same figures, and no secret.
        status = page.value("fetch('/v3/status').then((r) => r.text())", wait=True)
        document = json.loads(status)
        assert document["trading"]["enabled"] is True and document["trading"]["open_orders_total"] == 0
        assert document["trading"]["killed"]
        assert "sim-local-key" not in status and "PRIVATE KEY" not in status
    finally:
        trader.stop()
