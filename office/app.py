"""The ASGI application of `gocluster serve`: API, dashboard, health, static files.

Read-only by construction: every route is a GET on a database engine whose
sessions cannot write. With a token configured every request but `/healthz`
and the contract's schema files must carry it, as a bearer token or as the
password of HTTP Basic (which browsers prompt for and calendar clients can
store, so the dashboard and a subscribed calendar work behind it too).

`/schemas/<file>` publishes the JSON Schemas that output events name in their
`dataschema`. They are open: they hold the public event contract and no
programme data, and the consumers and schema registries that dereference a
`dataschema` URI do so without this server's credentials.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from office import api, pages
from office.models import Health
from office.programme import ProgrammeOffice
from schemas.published import DEFAULT_SCHEMA_BASE_URL, SCHEMA_MEDIA_TYPE, published_schema

OPEN_PATHS = frozenset({"/healthz"})
OPEN_PREFIXES = ("/schemas/",)
SECURITY_HEADERS = {
    # Everything is served from here; no script runs at all.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
CHALLENGE = [
    ("www-authenticate", 'Bearer realm="gocluster"'),
    ("www-authenticate", 'Basic realm="gocluster"'),
]

Next = Callable[[Request], Awaitable[Response]]


def create_app(
    office: ProgrammeOffice,
    token: str | None = None,
    schema_base: str = DEFAULT_SCHEMA_BASE_URL,
) -> FastAPI:
    app = FastAPI(
        title="gocluster programme office",
        version=version("gocluster"),
        description=(
            "Read-only views of the go-cluster programme: clusters, labels, open deadlines "
            "(also as iCalendar), rejected input. Dates are RFC 3339 full-dates, instants "
            "RFC 3339 date-times. With GOCLUSTER_HTTP_TOKEN set, send "
            "`Authorization: Bearer <token>`."
        ),
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN: not offline
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.office = office
    log = structlog.get_logger("office")

    @app.middleware("http")
    async def guard(request: Request, call_next: Next) -> Response:
        started = time.perf_counter()
        if not _allowed(request, token):
            response: Response = JSONResponse({"detail": "authentication required"}, 401)
            response.raw_headers.extend((k.encode(), v.encode()) for k, v in CHALLENGE)
            return _secured(response)
        response = _secured(await call_next(request))
        log.info(
            "http request",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return response

    @app.get(
        "/healthz",
        tags=["operations"],
        summary="Whether the server and its database answer",
        response_model=Health,
        responses={503: {"model": Health, "description": "the database does not answer"}},
    )
    def healthz() -> Response:
        ok = office.database_ok()
        body = Health(status="ok" if ok else "unavailable", database="ok" if ok else "unreachable")
        return JSONResponse(body.model_dump(), 200 if ok else 503)

    @app.get("/schemas/{file_name}", include_in_schema=False)
    def schema(file_name: str) -> Response:
        document = published_schema(file_name, schema_base)
        if document is None:
            return JSONResponse({"detail": f"no schema file {file_name[:100]!r}"}, 404)
        return Response(document, media_type=SCHEMA_MEDIA_TYPE)

    app.include_router(api.router, responses={401: {"description": "token missing or wrong"}})
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(packages=[("office", "static")]), name="static")
    return app


def _allowed(request: Request, token: str | None) -> bool:
    path = request.url.path
    if token is None or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return True
    return authorised(request.headers.get("authorization"), token)


def authorised(header: str | None, token: str) -> bool:
    """A bearer token, or HTTP Basic with the token as password (any user name)."""
    scheme, _, value = (header or "").partition(" ")
    candidate = value.strip()
    if scheme.lower() == "basic":
        try:
            candidate = base64.b64decode(candidate, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(candidate.encode("utf-8"), token.encode("utf-8"))


def _secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
