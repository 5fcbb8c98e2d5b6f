"""The web server as a browser, a probe or an attacker meets it: raw sockets against real processes.

The embedded server (``runtrader``) and a web worker (``python -m apps.console.webserver``) are the same
ConsoleServer; the worker runs here with short limits so the tests wait seconds, not minutes.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from apps.console import limits
from tests.console.flood_asgi import MESSAGES, SIZE
from tests.processes import ROOT, RunningTrader, migrate, project_env, start_runtrader, wait_until_healthy
from tests.support import eventually_blocking

Address = tuple[str, int]


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web")


@pytest.fixture(scope="module")
def trader(module_tmp: Path) -> Iterator[Address]:
    """A sim ``runtrader`` with its embedded web app."""
    running: RunningTrader = start_runtrader(project_env(module_tmp), "--port", "0")
    url = urlsplit(running.base_url)
    yield str(url.hostname), int(url.port or 80)
    code, stderr = running.stop()
    assert code == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]


@dataclass
class Worker:
    address: Address
    log: list[str]
    """The worker's stderr lines so far, read as they come."""


def start_worker(tmp: Path, app: str, *options: str) -> Iterator[Worker]:
    """``python -m apps.console.webserver OPTIONS APP`` on a listening socket handed to it (no port race)."""
    env = project_env(tmp)
    migrate(env)
    listener = socket.create_server(("127.0.0.1", 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "apps.console.webserver", "--fd", str(listener.fileno()), *options, app],
        cwd=ROOT,
        env=env,
        pass_fds=[listener.fileno()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    log: list[str] = []
    reader = threading.Thread(target=log.extend, args=(process.stderr,), daemon=True)
    reader.start()
    try:
        yield Worker(listener.getsockname(), log)
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(timeout=5)
        listener.close()
        assert "Traceback" not in "".join(log), "".join(log)[-3000:]


@pytest.fixture(scope="module")
def worker(module_tmp: Path) -> Iterator[Address]:
    """A web worker serving the trader's app with a 1 s request deadline."""
    for running in start_worker(module_tmp, "trader_v3.asgi:application", "--request-timeout", "1"):
        yield running.address


@pytest.fixture
def flood_worker(tmp_path: Path) -> Iterator[Worker]:
    """A web worker serving an app that floods every socket, closing one with over 100 KB unread."""
    yield from start_worker(tmp_path, "tests.console.flood_asgi:application", "--max-unsent-bytes", "100000")


def exchange(address: Address, request: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, then read until the server closes the connection."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        return read_to_end(sock)


def read_to_end(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()


def open_socket(address: Address, receive_buffer: int | None = None) -> socket.socket:
    """A WebSocket to /v3/ws after the handshake, speaking raw frames."""
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect(address)
    origin = f"http://{address[0]}:{address[1]}"
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /v3/ws HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def frame(payload: bytes) -> bytes:
    """One masked text frame, as a browser sends it."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = bytes([0x81, 0x80 | size])
    elif size < 65536:
        header = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_code(received: bytes) -> int | None:
    """The code of the server's close frame (opcode 8, unmasked) in ``received``, if there is one."""
    at = 0
    while at + 2 <= len(received):
        opcode, size = received[at] & 0x0F, received[at + 1] & 0x7F
        at += 2
        if size == 126:
            size, at = int.from_bytes(received[at : at + 2], "big"), at + 2
        elif size == 127:
            size, at = int.from_bytes(received[at : at + 8], "big"), at + 8
        if opcode == 8:
            return int.from_bytes(received[at : at + 2], "big")
        at += size
    return None


def test_head_works_on_the_probes(trader: Address) -> None:
    for path in ("/v3/health", "/v3/status"):
        response = exchange(trader, get(path, "HEAD"))
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.split(b" ")[1] in (b"200", b"503"), head
        assert b"application/json" in head
        assert body == b""


@pytest.mark.parametrize(
    "path",
    ["/static/%2e%2e/trader_v3/settings.py", "/static/../trader_v3/settings.py", "/static/console/%00.css"],
)
def test_bad_static_paths_are_404(trader: Address, path: str) -> None:
    assert exchange(trader, get(path)).startswith(b"HTTP/1.1 404 ")


def test_an_oversized_frame_gets_a_close_frame_1009(trader: Address) -> None:
    sock = open_socket(trader)
    sock.sendall(frame(b"x" * (2 * 1024 * 1024)))
    assert close_code(read_to_end(sock)) == 1009
    sock.close()


def test_5000_abusive_messages_without_reading_get_the_client_cut_off(trader: Address) -> None:
    abuse = [b'{"type": "request_history"}', b"[" * 2048 + b"]" * 2048, b"x" * 5000, b"\x00garbage", b"{}"]
    frames = [frame(message) for message in abuse]
    sent = cut = 0
    sock = open_socket(trader, receive_buffer=4096)
    while sent < 5000:
        try:
            sock.sendall(frames[sent % len(frames)])
            sent += 1
        except OSError:  # cut off: come back and carry on
            sock.close()
            cut += 1
            sock = open_socket(trader, receive_buffer=4096)
    # The last connection is cut too: reading it ends (a socket timeout would fail the test) with the close
    # frame, or with a reset that can cost the client what it had not read.
    tail = read_to_end(sock)
    sock.close()
    assert close_code(tail) in (limits.CLOSE_ABUSE, None)
    # The server is still there for a console that behaves.
    sock = open_socket(trader)
    sock.sendall(frame(b'{"type": "ping"}'))
    received = b""
    while b"pong" not in received:
        received += sock.recv(65536)
    assert b"history_replay" in received
    sock.close()


def test_a_request_whose_body_never_completes_gets_408(worker: Address) -> None:
    # Only the worker's 1 s request deadline answers 408; without it the read below gives up after 10 s.
    response = exchange(worker, b"POST /v3/health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nabc")
    assert response.startswith(b"HTTP/1.1 408 ")


def test_a_body_that_trickles_in_gets_408_too(worker: Address) -> None:
    with socket.create_connection(worker, timeout=10) as sock:
        sock.sendall(b"POST /v3/health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):  # a byte every 0.1 s would take 10 s; the deadline is 1 s
            if select.select([sock], [], [], 0.1)[0]:
                break  # the server answered
            sock.sendall(b"a")
        received = read_to_end(sock)
    assert received.startswith(b"HTTP/1.1 408 ")


def test_a_worker_answers_the_probes_from_the_traders_rows(trader: Address, worker: Address) -> None:
    wait_until_healthy(f"http://{trader[0]}:{trader[1]}")
    assert exchange(worker, get("/v3/health", "HEAD")).startswith(b"HTTP/1.1 200 ")


def test_a_console_that_does_not_read_is_cut_off(flood_worker: Worker) -> None:
    sock = open_socket(flood_worker.address, receive_buffer=4096)
    # The app floods; the client reads nothing until the worker says it closed the socket.
    eventually_blocking(
        lambda: any("bytes sent to it are unread" in line for line in flood_worker.log), what="the worker to cut it off"
    )
    received = read_to_end(sock)
    sock.close()
    # Cut off long before the app's MESSAGES * SIZE bytes: what the kernels held, plus the 100 KB allowance.
    assert len(received) < MESSAGES * SIZE / 4
    assert close_code(received) in (limits.CLOSE_TOO_SLOW, None)
