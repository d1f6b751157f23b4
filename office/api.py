"""The HTTP API: the CLI's views as JSON (and the deadlines as iCalendar), read-only."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BeforeValidator

from office import ical
from office.i18n import DEFAULT_LANGUAGE
from office.models import ClusterDetail, ClusterSummary, Deadline, Overview, RejectionView
from office.programme import ProgrammeOffice, Window, WindowError
from schemas.messages import Level
from workflows.aggregate import MemberState

CLUSTER_ID = r"^[A-Za-z0-9._-]{1,64}$"  # the contract's cluster id
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

router = APIRouter(prefix="/api", tags=["programme office"])


def programme(request: Request) -> ProgrammeOffice:
    office: ProgrammeOffice = request.app.state.office
    return office


Office = Annotated[ProgrammeOffice, Depends(programme)]
StateFilter = Annotated[
    list[MemberState] | None, Query(description="repeat for several states (any of them)")
]
LabelFilter = Annotated[Level | None, Query(description="clusters holding a valid label of it")]
Search = Annotated[
    str | None,
    Query(max_length=200, description="case-insensitive part of id, name or organisation"),
]


def _iso_date(value: object) -> object:
    """Only YYYY-MM-DD: pydantic alone would also read `0` as 1970-01-01 (a Unix time)."""
    if isinstance(value, str) and not ISO_DATE.fullmatch(value):
        raise ValueError("expected a date YYYY-MM-DD")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
From = Annotated[
    IsoDate | None,
    Query(alias="from", description="first due date (default: today)", examples=["2026-12-01"]),
]
Until = Annotated[
    IsoDate | None,
    Query(description="last due date (default: from + 90 days)", examples=["2026-12-31"]),
]


def window(office: Office, start: From = None, until: Until = None) -> Window:
    try:
        return office.window(start, until)
    except WindowError as exc:
        # The same shape as FastAPI's own validation errors, so clients handle one kind.
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "until"), "msg": str(exc), "input": until}]
        ) from None


DeadlineWindow = Annotated[Window, Depends(window)]


@router.get("/overview", summary="Counts by state and label, breaches, what falls due")
def get_overview(office: Office) -> Overview:
    return office.overview()


@router.get("/clusters", summary="Clusters with their labels and next open deadline")
def get_clusters(
    office: Office,
    state: StateFilter = None,
    label: LabelFilter = None,
    q: Search = None,
) -> list[ClusterSummary]:
    return office.clusters(state or (), label, q)


@router.get(
    "/clusters/{cluster_id}",
    summary="One cluster with obligations, history, pending timers and parked events",
    responses={404: {"description": "no such cluster"}},
)
def get_cluster(
    office: Office,
    cluster_id: Annotated[str, Path(pattern=CLUSTER_ID, examples=["cluster-automotive"])],
) -> ClusterDetail:
    found = office.cluster(cluster_id)
    if found is None:
        raise HTTPException(404, f"no cluster {cluster_id!r}")
    return found


@router.get("/deadlines", summary="Open obligations due in the window, breached ones included")
def get_deadlines(office: Office, window: DeadlineWindow) -> list[Deadline]:
    return office.deadlines(window)


@router.get(
    "/deadlines.ics",
    summary="The same open obligations as an iCalendar feed (one all-day event each)",
    response_class=Response,
    responses={200: {"content": {"text/calendar": {"schema": {"type": "string"}}}}},
)
def get_deadlines_ics(
    office: Office,
    window: DeadlineWindow,
    lang: Annotated[str, Query(pattern="^(de|en)$")] = DEFAULT_LANGUAGE,
) -> Response:
    body = ical.calendar(office.deadlines(window), office.clock.now(), lang)
    return Response(
        body,
        media_type="text/calendar; charset=utf-8",
        headers={"Content-Disposition": 'inline; filename="gocluster-deadlines.ics"'},
    )


@router.get("/rejections", summary="The latest dead-letter-queue records, newest first")
def get_rejections(
    office: Office, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[RejectionView]:
    return office.rejections(limit)
