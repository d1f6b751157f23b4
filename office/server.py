"""`gocluster serve`: the office's app on uvicorn, loopback unless a token guards it."""

from __future__ import annotations

import ipaddress
import signal
import socket
from types import FrameType

import structlog
import uvicorn

from office.app import create_app
from office.programme import ProgrammeOffice
from schemas.published import DEFAULT_SCHEMA_BASE_URL


class UnsafeBind(ValueError):
    """A non-loopback address without a token would publish the programme's data."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, token: str | None) -> None:
    if token is None and not is_loopback(host):
        raise UnsafeBind(
            f"serving on {host} needs GOCLUSTER_HTTP_TOKEN (clients then send it as a bearer "
            "token); without one, serve binds to loopback only"
        )


def serve(
    office: ProgrammeOffice,
    host: str,
    port: int,
    token: str | None,
    schema_base: str = DEFAULT_SCHEMA_BASE_URL,
) -> None:
    """Bind (so a taken port fails here, as an OSError), log the URL, serve until a signal."""
    check_bind(host, token)
    sock = _bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = uvicorn.Config(
        create_app(office, token, schema_base),
        log_config=None,  # uvicorn's loggers go through the service's logging set-up
        access_log=False,  # the app logs one line per request itself
        server_header=False,
        proxy_headers=False,
    )
    structlog.get_logger("office").info(
        "office serving", url=f"http://{shown}:{bound_port}/", token_required=token is not None
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to
    # the handler it found; this one lets the command end with 0, as `gocluster run` does.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped)
    uvicorn.Server(config).run(sockets=[sock])
    structlog.get_logger("office").info("office stopped")


def _stopped(signum: int, frame: FrameType | None) -> None:
    """The server has already shut down when this runs; nothing is left to do."""


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock
