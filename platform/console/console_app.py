"""The console's web application: its routes, its answers to refused and bad requests, and the
headers every page carries."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from perdure.infra.settings import Settings
from perdure.platform.console import (
    billing_routes,
    namespace_routes,
    operator_routes,
    signin_routes,
    workflow_routes,
)
from perdure.platform.console.access import AccessDenied, NotVisible
from perdure.platform.console.console_errors import ConsoleInputError
from perdure.platform.console.console_page import (
    MAX_FORM_BYTES,
    BodyTooLarge,
    CsrfRefused,
    SignInNeeded,
    render,
)
from perdure.platform.console.console_resources import STATIC, ConsoleResources
from perdure.platform.console.request_telemetry import RequestTelemetry
from perdure.platform.console.signin_limits import SigninLimits
from perdure.platform.console.signin_routes import signin_form

log = logging.getLogger(__name__)

# Scripts and styles come from the console itself only; nothing may frame it.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


SIGNIN_BODY_BYTES = 16 * 1024


class BodyLimit:
    """Bounds a request's body as it arrives, counted (a chunked body declares no length): past the
    limit the request fails with 413 before the rest is read or parsed. The sign-in form, open to anyone,
    gets a small limit of its own."""

    def __init__(self, app: ASGIApp, default: int = MAX_FORM_BYTES, signin: int = SIGNIN_BODY_BYTES) -> None:
        self.app = app
        self.default = default
        self.signin = signin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.signin if scope["path"] == "/signin" else self.default
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


async def _home(request: Request) -> Response:
    return RedirectResponse("/namespaces", status_code=303)


async def _sign_in_needed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInNeeded)
    return signin_form(
        request, 401, notice=exc.message, next=request.url.path if request.method == "GET" else ""
    )


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    return render(
        request,
        "error.html",
        status=403,
        title="Refused",
        message="The form's security token was missing or stale, so nothing was done: reload the page and "
        "try again.",
    )


async def _access_denied(request: Request, exc: Exception) -> Response:
    return render(request, "error.html", status=403, title="Not allowed", message=f"Nothing was done: {exc}.")


async def _not_visible(request: Request, exc: Exception) -> Response:
    return render(request, "error.html", status=404, title="Not found", message="There is nothing here.")


async def _bad_input(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleInputError)
    return render(
        request,
        "error.html",
        status=exc.status,
        title="Nothing was done",
        message=exc.message,
        back=same_site_referer(request),
    )


def same_site_referer(request: Request) -> str | None:
    """The page the request came from, if it was one of the console's (a link back to it)."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc != request.url.netloc or not referer.path.startswith("/"):
        return None
    return referer.path + (f"?{referer.query}" if referer.query else "")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    title = "Not found" if exc.status_code == 404 else "Error"
    return render(request, "error.html", status=exc.status_code, title=title, message=str(exc.detail))


def build_console(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.resources = await ConsoleResources.open(settings)
        app.state.signin_limits = SigninLimits()
        try:
            yield
        finally:
            await app.state.resources.close()

    routes = [
        Route("/", _home),
        *signin_routes.routes,
        *namespace_routes.routes,
        *workflow_routes.routes,
        *billing_routes.routes,
        *operator_routes.routes,
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestTelemetry), Middleware(SecurityHeaders), Middleware(BodyLimit)],
        exception_handlers={
            SignInNeeded: _sign_in_needed,
            CsrfRefused: _csrf_refused,
            AccessDenied: _access_denied,
            NotVisible: _not_visible,
            ConsoleInputError: _bad_input,
            HTTPException: _http_error,
        },
    )
