"""The operators' live dashboard: one page (static HTML, CSS, JS; nothing from the internet)
and the JSON it polls. Shows numbers about the pipeline, never a post's text nor a user id.

The page and its assets hold no data; the JSON needs an operator's token (`consentry:admin`),
which the page sends from the tab's sessionStorage (docs/security.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import FileResponse

from services.gateway.console.observer import DashboardObserver
from services.gateway.deps import AdminUser
from services.gateway.problems import FORBIDDEN, UNAUTHORIZED

router = APIRouter(tags=["dashboard"])

STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
# Only our own files may load: no third-party script, style or connection.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-cache",
}


# The console's own dependency, here rather than in the shared deps: only the console uses the observer.
async def get_observer(request: Request) -> DashboardObserver:
    return request.app.state.observer


ObserverDep = Annotated[DashboardObserver, Depends(get_observer)]


@router.get(
    "/dashboard",
    summary="The live dashboard (HTML)",
    response_class=FileResponse,
    responses={200: {"description": "The page; it polls `/dashboard/data`.", "content": {"text/html": {"schema": {"type": "string"}}}}},
)
async def page() -> FileResponse:
    return FileResponse(STATIC / "dashboard.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@router.get(
    "/dashboard/data", summary="What the dashboard shows, as JSON (operators only)", responses={401: UNAUTHORIZED, 403: FORBIDDEN}
)
async def data(_admin: AdminUser, observer: ObserverDep, response: Response) -> dict[str, Any]:
    response.headers["Cache-Control"] = "no-store"
    return await observer.view()


@router.get("/dashboard/assets/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, "no such asset")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})
