"""HTTP through the whole ASGI app (static files included): probes answer HEAD, bad static paths are 404."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from channels.testing import HttpCommunicator

from trader_v3.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def fetch(path: str, method: str = "GET") -> dict[str, Any]:
    response: dict[str, Any] = await HttpCommunicator(
        application, method, path, headers=[(b"host", b"127.0.0.1")]
    ).get_response()
    return response


@pytest.mark.parametrize("path", ["/v3/health", "/v3/status"])
async def test_the_probes_answer_head(path: str) -> None:
    # The body is dropped by the server (Twisted sends none for HEAD); test_web_server checks that on the wire.
    response = await fetch(path, "HEAD")
    assert response["status"] in (200, 503)
    assert (b"Content-Type", b"application/json") in response["headers"]


@pytest.mark.parametrize(
    "path",
    [
        "/static/../trader_v3/settings.py",
        "/static/../../etc/passwd",
        "/static/console/../../trader_v3/settings.py",
        "/static/console/\x00.css",
    ],
)
async def test_bad_static_paths_are_404(path: str) -> None:
    assert (await fetch(path))["status"] == 404


async def test_a_real_static_file_is_served() -> None:
    communicator = HttpCommunicator(application, "GET", "/static/console/console.css")
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output()
    assert (start["type"], start["status"]) == ("http.response.start", 200)


CONSOLE_MODULES = sorted(path.name for path in (Path(__file__).parents[2] / "static" / "console").glob("*.js"))


def test_the_console_script_is_a_set_of_es_modules_each_saying_its_job_first() -> None:
    assert "main.js" in CONSOLE_MODULES and len(CONSOLE_MODULES) >= 5
    folder = Path(__file__).parents[2] / "static" / "console"
    for name in CONSOLE_MODULES:
        first = (folder / name).read_text().splitlines()[0]
        assert first.startswith("/* ") and first.endswith(" */"), name
    imported = {
        target
        for name in CONSOLE_MODULES
        for target in re.findall(r"from '\./([a-z]+\.js)'", (folder / name).read_text())
    }
    entry_points = {"main.js", "session.js"}  # the console page's and a recorded session's page's
    assert imported == set(CONSOLE_MODULES) - entry_points  # every module is used, none is missing


@pytest.mark.parametrize("name", CONSOLE_MODULES)
async def test_each_console_module_is_served_as_javascript(name: str) -> None:
    # A browser runs a module script only when it is served with a JavaScript type.
    communicator = HttpCommunicator(application, "GET", f"/static/console/{name}")
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output()
    assert (start["type"], start["status"]) == ("http.response.start", 200)
    assert dict(start["headers"])[b"Content-Type"].split(b";")[0] == b"text/javascript"
