"""The dashboard's FastAPI app: one server-rendered page (refreshing while the run is live), two SVG plots, JSON.

Every route reads the run folder afresh, so a live run shows new rounds on the next refresh. When a token is set
(required when binding beyond loopback, see :func:`check_binding`), every request must carry it: ``?token=``
(which also sets a same-site cookie, so the page's plots load), an ``Authorization: Bearer`` header, or the cookie.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from endofed.dashboard import plots, view
from endofed.dashboard.sources import collect

COOKIE = "endofed_dashboard"
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class DashboardSettings:
    """What one dashboard serves: the run folder, optional site YAMLs (simulation names), token, refresh period."""

    run_dir: Path
    site_yamls: Sequence[Path] = field(default_factory=tuple)
    token: str = ""
    refresh_s: int = 5


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str) -> None:
    """Refuse to serve beyond loopback without a token (anyone who can reach the port could read the run)."""
    if not is_loopback(host) and not token:
        raise ValueError(f"binding the dashboard to {host!r} (beyond 127.0.0.1) needs a token: give --token")


def given_token(request: Request) -> str:
    """The token a request carries: ``?token=``, ``Authorization: Bearer``, or the dashboard's cookie."""
    header = request.headers.get("authorization", "")
    bearer = header[7:] if header.lower().startswith("bearer ") else ""
    return request.query_params.get("token") or bearer or request.cookies.get(COOKIE, "")


def token_matches(expected: str, given: str) -> bool:
    """Constant-time comparison; no token configured means every request passes."""
    return not expected or hmac.compare_digest(expected.encode(), given.encode())


def create_app(settings: DashboardSettings) -> FastAPI:
    """The dashboard app for ``settings.run_dir`` (no API docs pages: every route is one of ours)."""
    app = FastAPI(title="endofed dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Environment(
        loader=PackageLoader("endofed.dashboard", "templates"), autoescape=select_autoescape(["html"])
    )

    @app.middleware("http")
    async def require_token(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if not token_matches(settings.token, given_token(request)):
            return PlainTextResponse("a valid dashboard token is required (?token=...)", status_code=401)
        response = await call_next(request)
        if settings.token and request.query_params.get("token"):
            response.set_cookie(COOKIE, settings.token, httponly=True, samesite="strict")
        return response

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        run = collect(settings.run_dir, settings.site_yamls)
        live = run.status.state in ("waiting", "running", "idle")
        page = templates.get_template("index.html").render(run=run, refresh_s=settings.refresh_s if live else 0)
        return HTMLResponse(page)

    @app.get("/plots/loss.svg")
    def loss_plot() -> Response:
        run = collect(settings.run_dir, settings.site_yamls)
        return Response(plots.loss_svg(view.loss_series(run.records, run.names)), media_type="image/svg+xml")

    @app.get("/plots/bytes.svg")
    def bytes_plot() -> Response:
        run = collect(settings.run_dir, settings.site_yamls)
        return Response(plots.bytes_svg(view.bytes_series(run.records)), media_type="image/svg+xml")

    @app.get("/status.json")
    def status() -> JSONResponse:
        run = collect(settings.run_dir, settings.site_yamls)
        return JSONResponse({
            "run": run.run_name, "kind": run.kind, "state": run.status.state, "phase": run.status.phase,
            "round": run.status.round, "completed": run.status.completed, "outcome": run.outcome,
            "sites": [{"name": row.name, "connected": row.connected, "last_round": row.last_round,
                       "rejected": row.rejected, "failed": row.failed} for row in run.sites],
        })  # fmt: skip

    return app


def serve(settings: DashboardSettings, host: str = "127.0.0.1", port: int = 8050) -> None:
    """Serve the dashboard until interrupted (uvicorn, the server Flower's own stack ships)."""
    import uvicorn

    check_binding(host, settings.token)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
