"""Serving an ASGI app with uvicorn: in a background thread for tests, or in the foreground."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import socket
import threading
import time
from collections.abc import Generator, Iterator
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

from telemetry_client.testing._inject import InjectedDisconnect

__all__ = ["bind", "run_server", "serve_asgi", "url_of"]

LifespanMode = Literal["auto", "on", "off"]


class _HideInjectedDisconnects(logging.Filter):
    """Drops uvicorn's traceback for a connection the stand-in broke on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, InjectedDisconnect)


@contextlib.contextmanager
def _hidden_injected_disconnects() -> Iterator[None]:
    logger = logging.getLogger("uvicorn.error")
    log_filter = _HideInjectedDisconnects()
    logger.addFilter(log_filter)
    try:
        yield
    finally:
        logger.removeFilter(log_filter)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port); OSError if it cannot."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port={port!r} must be an integer from 0 to 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP (not 0) lets asyncio see a TCP socket and turn Nagle off on each accepted
    # connection; with protocol 0 every answer waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    if ipaddress.ip_address(host).version == 6:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _config(app: ASGIApp, lifespan: LifespanMode, *, quiet: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        lifespan=lifespan,
        # Quiet: leave logging to the caller (uvicorn would otherwise reconfigure it).
        log_config=None if quiet else uvicorn.config.LOGGING_CONFIG,
        access_log=not quiet,
        timeout_graceful_shutdown=5,
        # The app sees the real peer: uvicorn would otherwise replace it with an
        # X-Forwarded-For entry whenever the peer is loopback (AuditMiddleware's
        # TrustedProxies decides whom to believe; see docs/security.md).
        proxy_headers=False,
    )


@contextlib.contextmanager
def serve_asgi(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    lifespan: LifespanMode = "off",
    startup_timeout: float = 30.0,
) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread; yield its base URL once it accepts.

    The socket is bound before the thread starts, so a port in use raises ``OSError`` here.
    Leaving the block stops the server (in-flight requests get up to 5 s) and joins the thread.
    """
    sock = bind(host, port)
    url = url_of(sock)
    server = uvicorn.Server(_config(app, lifespan, quiet=True))
    failures: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # SystemExit from a failed lifespan startup, too
            failures.append(exc)

    with contextlib.ExitStack() as stack:
        stack.callback(sock.close)
        stack.enter_context(_hidden_injected_disconnects())
        thread = threading.Thread(target=run, name=f"uvicorn {url}", daemon=True)
        thread.start()

        def stop() -> None:
            server.should_exit = True
            thread.join(timeout=30)

        stack.callback(stop)
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                cause = failures[0] if failures else None
                raise RuntimeError(f"the server for {url} stopped while starting") from cause
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server for {url} did not start in {startup_timeout:g} s")
            time.sleep(0.005)
        yield url


class _ForegroundServer(uvicorn.Server):
    """A uvicorn server whose SIGINT or SIGTERM ends in a clean return, not a re-raised signal.

    uvicorn shuts down gracefully, then raises the signal again so the process dies of it; a
    command that stopped as asked should exit 0 instead.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def run_server(app: ASGIApp, sock: socket.socket, *, lifespan: LifespanMode = "off") -> None:
    """Serve ``app`` on ``sock`` in this thread until SIGINT or SIGTERM, with uvicorn's logs."""
    server = _ForegroundServer(_config(app, lifespan, quiet=False))
    with _hidden_injected_disconnects():
        server.run(sockets=[sock])
