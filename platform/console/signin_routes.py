"""Signing in and out of the console.

Sign-in is throttled per e-mail (docs/architecture.md, "The console"): after five failures in fifteen
minutes each further attempt waits out a lock that doubles, whatever password it brings, so that
guessing costs time whoever guesses; an unknown e-mail costs as long to refuse as a wrong password.
"""

from __future__ import annotations

import hmac
import math
import re
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from perdure.platform.console.access import Permission
from perdure.platform.console.console_page import (
    SESSION_COOKIE,
    ConsolePage,
    _form,
    guarded,
    render,
    resources_of,
    session_of,
)
from perdure.platform.console.signin_limits import SigninLimits
from perdure.platform.stores.console_identity import OPERATOR, Identity
from perdure.platform.stores.console_sessions import SESSION_LIFETIME

HOME = "/namespaces"
# An address as RFC 5321 bounds it (254 characters), without spaces or controls: anything else is refused
# before it reaches the database (the failure counter is keyed by it).
_EMAIL = re.compile(r"[^\s@\x00-\x1f]{1,64}@[^\s@\x00-\x1f]{1,189}")
# Before a session exists, the sign-in form's CSRF token is matched against a cookie of its own (so that
# another site cannot sign a browser in to an account of its choosing).
SIGNIN_COOKIE = "perdure_signin"


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this console only (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return HOME
    return target


async def signin_page(request: Request) -> Response:
    if await session_of(request) is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return signin_form(request, next=safe_next(request.query_params.get("next")))


def signin_form(request: Request, status: int = 200, **context: object) -> Response:
    """The sign-in page with a fresh sign-in CSRF token (its cookie set beside it)."""
    token = secrets.token_urlsafe(32)
    response = render(request, "signin.html", status=status, signin_token=token, **context)
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def signin(request: Request) -> Response:
    resources = resources_of(request)
    address = request.client.host if request.client else "unknown"
    limits: SigninLimits = request.app.state.signin_limits
    wait = limits.wait_for(address)
    if wait is not None:
        return _too_many(lambda message, status: signin_form(request, status, error=message), wait)
    form = await _form(request, max_fields=8)
    email = str(form.get("email", "")).strip()
    password = str(form.get("password", ""))
    account = str(form.get("account", "")).strip() or None
    target = safe_next(str(form.get("next", "")))

    def again(message: str, status: int, accounts: list[str] | None = None) -> Response:
        return signin_form(request, status, error=message, email=email, next=target, accounts=accounts)

    token, expected = str(form.get("csrf_token", "")), request.cookies.get(SIGNIN_COOKIE, "")
    if not token or not expected or not hmac.compare_digest(token, expected):
        return again("The sign-in form was stale or incomplete: try again.", 403)
    if not email or not password:
        return again("Enter your e-mail and password.", 400)
    if not _EMAIL.fullmatch(email):
        return again("Enter a valid e-mail address.", 400)
    attempt = await resources.sessions.reserve_attempt(email)
    if attempt.wait is not None:
        return _too_many(again, attempt.wait.total_seconds())
    matched = await resources.credentials.verify(email, password, account)
    if not matched:
        lock = attempt.lock_if_failed
        await resources.audit.record(
            actor=f"?/{email.lower()}",
            account=None,
            action="signin",
            outcome="refused",
            detail="wrong password",
        )
        if lock is not None:
            return _too_many(again, lock.total_seconds())
        return again("Wrong e-mail or password.", 401)
    if len(matched) > 1:
        # Only once the password is right does the page say which accounts the e-mail belongs to.
        return again("This e-mail belongs to several accounts: choose one.", 400, _accounts(matched))
    identity = matched[0]
    await resources.sessions.clear_failures(email)
    session = await resources.sessions.open(identity)
    await resources.audit.record(
        actor=identity.key, account=identity.account, action="signin", outcome="done"
    )
    response = RedirectResponse(
        target if not identity.is_operator or target != HOME else "/operators/cells", 303
    )
    response.delete_cookie(SIGNIN_COOKIE)
    response.set_cookie(
        SESSION_COOKIE,
        resources.cookies.dumps(session.id),
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


def _accounts(identities: list[Identity]) -> list[str]:
    return sorted(i.account or OPERATOR for i in identities)


def _too_many(again: Callable[[str, int], Response], seconds: float) -> Response:
    wait = max(1, math.ceil(seconds))
    response = again(f"Too many failed sign-ins for this e-mail: try again in {wait} s.", 429)
    response.headers["Retry-After"] = str(wait)
    return response


@guarded(Permission.READ, action="signout")
async def signout(page: ConsolePage) -> Response:
    await page.resources.sessions.close(page.session.id)
    await page.audit("signout", "done")
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


routes = [
    Route("/signin", signin_page, methods=["GET"]),
    Route("/signin", signin, methods=["POST"]),
    Route("/signout", signout, methods=["POST"]),
]
