"""Serving the web app with Daphne on the same event loop as the trader (the embedded mode).

Daphne runs a Twisted reactor on its own asyncio loop, so ``asyncio.run()`` around it cannot work; the
trader's coroutine is scheduled on the loop Daphne runs, and stops the reactor when it ends.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)


def bind_problem(
    host: str,
    port: int,
    *,
    host_variable: str = "TRADER_WEB_HOST",
    port_variable: str = "TRADER_WEB_PORT",
    port_option: str = "--port",
) -> str | None:
    """Why the web app (or another listener, named by the variables) could not listen on host:port, naming the
    variable to change; None if it can."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            # A foreign address is not a busy port: say which one is wrong.
            if exc.errno == errno.EADDRINUSE:
                busy = f"{host}:{port} is already in use"
                return f"{port_variable}: {busy} (pass {port_option} or stop the other process)"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{host_variable}: {host} is not an address of this machine"
            return f"{host_variable} / {port_variable}: cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def serve_with_daphne(
    main: Callable[[], Awaitable[None]],
    *,
    host: str,
    port: int,
    on_listening: Callable[[str, int], None],
) -> int:
    """Serve the project's ASGI application (the ASGI_APPLICATION setting) on host:port while ``main()``
    runs; returns the exit code: 0 when ``main()`` ended, 1 when it raised."""
    # Imports Daphne's server, which installs Twisted's asyncio reactor: before anything imports the reactor.
    from apps.console.webserver import ConsoleServer  # isort: skip
    from channels.routing import get_default_application
    from daphne.endpoints import build_endpoint_description_strings
    from twisted.internet import reactor

    twisted: Any = reactor  # the module-level reactor is typed as a bare module attribute

    server = ConsoleServer(
        application=get_default_application(),
        endpoints=build_endpoint_description_strings(host=host, port=port),
        signal_handlers=False,  # the trader turns SIGINT/SIGTERM into its shutdown state
        websocket_timeout=24 * 3600,
    )
    outcome: dict[str, int] = {}

    async def run_then_stop() -> None:
        try:
            for _ in range(200):  # the listening port is known a moment after the reactor starts
                if server.listening_addresses:
                    bound_host, bound_port = server.listening_addresses[0]
                    on_listening(bound_host, bound_port)
                    break
                await asyncio.sleep(0.01)
            await main()
            outcome["code"] = 0
        except Exception:
            logger.exception("the trader stopped on an unexpected error")
            outcome["code"] = 1
        finally:
            twisted.callLater(0, twisted.stop)

    def schedule() -> None:
        asyncio.get_event_loop().create_task(run_then_stop())

    twisted.callWhenRunning(schedule)
    server.run()
    return outcome.get("code", 1)
