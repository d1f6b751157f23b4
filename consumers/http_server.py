"""/healthz, /readyz and /metrics of `gocluster run` (FastAPI on uvicorn, in a thread).

The answers are read from `Health` and the Prometheus registry; nothing here talks
to the database or the broker, so a probe never hangs on a dependency.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from consumers.config import Settings
from consumers.health import Health
from consumers.metrics import Metrics

log = structlog.get_logger("gocluster.service")


def create_app(health: Health, registry: CollectorRegistry) -> FastAPI:
    app = FastAPI(title="gocluster", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """Liveness: every loop thread is alive and making progress."""
        return _answer(*health.liveness())

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """Readiness: database and broker reachable, consumer in its group and polling."""
        return _answer(*health.readiness())

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _answer(ok: bool, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"status": "ok" if ok else "failing", **body}, 200 if ok else 503)


class HttpServer:
    """uvicorn in a daemon thread; `start` returns once it listens (or raises)."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="http", daemon=True)

    def start(self, timeout_s: float = 10.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"could not serve HTTP on {self._address()}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5.0)

    def _address(self) -> str:
        return f"{self.server.config.host}:{self.server.config.port}"


def serve_http(settings: Settings, health: Health) -> HttpServer | None:
    address = settings.http_address()
    if address is None:
        return None
    if settings.http_port is None:
        log.warning(
            "GOCLUSTER_METRICS_PORT is superseded: set GOCLUSTER_HTTP_PORT (same server, "
            "now also /healthz and /readyz)",
            port=address[1],
        )
    metrics = Metrics.default()
    server = HttpServer(create_app(health, metrics.registry), *address)
    server.start()
    log.info(
        "http served", host=address[0], port=address[1], paths=["/healthz", "/readyz", "/metrics"]
    )
    return server
