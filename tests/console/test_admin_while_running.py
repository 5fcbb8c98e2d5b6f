"""The admin of a running trader, used over HTTP the way an operator does, while the trader writes."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.parse
import urllib.request
from pathlib import Path

from tests.processes import project_env, shell_line, start_runtrader


class AdminBrowser:
    """A logged-in admin session over real HTTP (cookies and CSRF tokens as a browser keeps them)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> tuple[int, str]:
        return self._open(urllib.request.Request(self.base_url + path))

    def post_form(self, path: str, fields: dict[str, str]) -> tuple[int, str]:
        """POST ``fields`` with the CSRF token of the form at ``path``."""
        _, page = self.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, f"no CSRF token on {path}"
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token.group(1)}).encode()
        request = urllib.request.Request(self.base_url + path, data=data, headers={"Referer": self.base_url + path})
        return self._open(request)

    def _open(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self._opener.open(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


def test_a_finished_session_is_deleted_from_the_admin_while_the_trader_records(tmp_path: Path) -> None:
    env = project_env(tmp_path, SIM_MESSAGE_RATE="2000")
    first = start_runtrader(env, "--port", "0")
    finished_id = shell_line(
        env,
        "from tests.support import eventually_blocking; from apps.marketdata.models import RecordedMarket as R;"
        "eventually_blocking(lambda: sum(R.objects.values_list('deltas', flat=True)) > 2000, seconds=30,"
        " what='rows recorded');"
        "from apps.trader.models import TradingSession as S; print(S.objects.latest('started_at').pk)",
    )
    assert first.stop()[0] == 0
    trader = start_runtrader(env, "--port", "0")
    try:
        shell_line(
            env,
            "from django.contrib.auth.models import User;"
            "User.objects.create_superuser('ops', password='a long passphrase 7'); print('ok')",
        )
        admin = AdminBrowser(trader.base_url)
        status, _ = admin.post_form("/admin/login/", {"username": "ops", "password": "a long passphrase 7"})
        assert status == 200
        running_id = shell_line(
            env, "from apps.trader.models import TradingSession as S; print(S.objects.latest('started_at').pk)"
        )

        status, page = admin.post_form(f"/admin/trader/tradingsession/{finished_id}/delete/", {"post": "yes"})

        assert status == 200, page[-2000:]
        assert "was deleted successfully" in page
        listing = admin.get("/admin/trader/tradingsession/")[1]
        assert f"/admin/trader/tradingsession/{finished_id}/change/" not in listing
        # The running session offers no delete button, and a crafted delete request is refused.
        _, running_page = admin.get(f"/admin/trader/tradingsession/{running_id}/change/")
        assert f"/admin/trader/tradingsession/{running_id}/delete/" not in running_page
        assert admin.get(f"/admin/trader/tradingsession/{running_id}/delete/")[0] == 403
    finally:
        code, stderr = trader.stop()
    assert code == 0, stderr[-3000:]
