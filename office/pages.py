"""The dashboard: server-rendered pages over the same views as the API.

No JavaScript: filters are GET forms, so every view has a URL to bookmark or
send to a colleague. The language is German unless `?lang=en` was chosen; the
choice is kept in a cookie.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.responses import Response

from office import statechart
from office.api import programme
from office.i18n import LANGUAGES, Translator, language
from office.programme import ProgrammeOffice
from schemas.messages import Level
from workflows.aggregate import MemberState

LANG_COOKIE = "lang"
LANG_COOKIE_SECONDS = 365 * 24 * 3600

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


@cache
def _templates() -> Jinja2Templates:
    return Jinja2Templates(
        env=Environment(
            loader=PackageLoader("office", "templates"),
            autoescape=True,  # every value, also in the SVG; nothing is marked safe
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    )


Office = Annotated[ProgrammeOffice, Depends(programme)]


def _render(
    request: Request,
    office: ProgrammeOffice,
    name: str,
    status_code: int = 200,
    **context: Any,
) -> Response:
    requested = request.query_params.get("lang")
    lang = language(requested or request.cookies.get(LANG_COOKIE))
    t = Translator(lang)
    links = {code: _with_language(request, code) for code in LANGUAGES}
    response = _templates().TemplateResponse(
        request,
        name,
        {"t": t, "lang": lang, "languages": links, "today": office.today(), **context},
        status_code=status_code,
    )
    if requested in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE, requested, max_age=LANG_COOKIE_SECONDS, samesite="lax", httponly=True
        )
    return response


@router.get("/")
def overview(request: Request, office: Office) -> Response:
    return _render(request, office, "overview.html", overview=office.overview(), page="overview")


@router.get("/clusters")
def clusters(
    request: Request,
    office: Office,
    state: Annotated[list[str] | None, Query()] = None,
    label: str = "",
    q: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    states = [s for s in state or () if s in set(MemberState)]
    level = Level(label) if label in set(Level) else None
    found = office.clusters(states, level, q or None)
    return _render(
        request,
        office,
        "clusters.html",
        page="clusters",
        clusters=found,
        states=[s for s in MemberState if s is not MemberState.UNKNOWN],
        levels=list(Level),
        chosen_states=set(states),
        chosen_label=level,
        q=q,
    )


@router.get("/clusters/{cluster_id}")
def cluster(request: Request, office: Office, cluster_id: str) -> Response:
    found = office.cluster(cluster_id)
    if found is None:
        return _render(
            request, office, "not_found.html", 404, page="clusters", cluster_id=cluster_id
        )
    return _render(
        request, office, "cluster.html", page="clusters", c=found, chart=statechart.chart()
    )


@router.get("/deadlines")
def deadlines(request: Request, office: Office) -> Response:
    try:
        start = _day(request.query_params.get("from"))
        until = _day(request.query_params.get("until"))
        window, problem = office.window(start, until), False
    except ValueError:  # a date that is none, or a window ending before it starts
        window, problem = office.window(), True
    return _render(
        request,
        office,
        "deadlines.html",
        400 if problem else 200,
        page="deadlines",
        window=window,
        deadlines=office.deadlines(window),
        problem=problem,
        ics=f"/api/deadlines.ics?{urlencode({'from': window.start, 'until': window.end})}",
    )


@router.get("/rejections")
def rejections(
    request: Request, office: Office, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> Response:
    return _render(
        request, office, "rejections.html", page="rejections", rejections=office.rejections(limit)
    )


def _with_language(request: Request, code: str) -> str:
    """This page, same filters, in another language."""
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    return f"{request.url.path}?{urlencode([*kept, ('lang', code)])}"


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None
