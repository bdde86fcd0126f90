"""One console request after its checks: who asks (from their session), with which permission, and
the helpers every page uses (namespaces it may see, rendering, auditing).

``guarded`` is the one gate of every page and action: a request without a live session gets the
sign-in page (401); a form without the session's CSRF token is refused (403) and audited; a role without
the permission is refused (403) and, for an action, audited.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from perdure.platform.console.access import AccessDenied, NotVisible, Permission, can_see, require
from perdure.platform.console.access import allowed as role_allows
from perdure.platform.console.console_errors import ConsoleInputError
from perdure.platform.console.console_resources import ConsoleResources
from perdure.platform.stores.audit_log import Outcome
from perdure.platform.stores.console_identity import Identity
from perdure.platform.stores.console_sessions import ConsoleSession
from perdure.platform.stores.control_store import ControlError, NamespaceRecord

log = logging.getLogger(__name__)
SESSION_COOKIE = "perdure_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
# A form is small: arguments are limited by the namespace's payload limit, checked after parsing.
MAX_FORM_BYTES = 4 * 1024 * 1024


class SignInNeeded(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CsrfRefused(Exception):
    pass


def resources_of(request: Request) -> ConsoleResources:
    resources: ConsoleResources = request.app.state.resources
    return resources


async def session_of(request: Request) -> ConsoleSession | None:
    """The live session the request's cookie names, or None."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    resources = resources_of(request)
    try:
        session_id = resources.cookies.loads(cookie)
    except BadSignature:
        return None
    if not isinstance(session_id, str):
        return None
    return await resources.sessions.find(session_id)


@dataclass
class ConsolePage:
    request: Request
    resources: ConsoleResources
    session: ConsoleSession
    identity: Identity
    form: FormData | None = None

    @property
    def actor(self) -> str:
        return self.identity.key

    def allowed(self, permission: Permission) -> bool:
        return role_allows(self.identity, permission)

    async def namespace(self, name: str) -> NamespaceRecord:
        """The namespace if this identity may see it; NotVisible (404) if it does not exist or is not
        theirs: the two are answered alike."""
        try:
            record = await self.resources.databases.control.get_namespace(name)
        except ControlError:
            raise NotVisible(name) from None
        if not can_see(self.identity, record):
            raise NotVisible(name)
        return record

    async def visible_namespaces(self) -> list[NamespaceRecord]:
        control = self.resources.databases.control
        records = await control.list_namespaces(self.identity.account)
        return [r for r in records if can_see(self.identity, r)]

    def field(self, name: str, default: str = "") -> str:
        """A text field of the posted form ('' when missing)."""
        value = self.form.get(name, default) if self.form is not None else default
        if not isinstance(value, str):
            raise ConsoleInputError(f"{name} must be text, not a file")
        return value

    async def audit(
        self,
        action: str,
        outcome: Outcome,
        *,
        namespace: str | None = None,
        target: str | None = None,
        detail: str = "",
    ) -> None:
        await self.resources.audit.record(
            actor=self.actor,
            account=self.identity.account,
            namespace=namespace,
            action=action,
            target=target,
            outcome=outcome,
            detail=detail,
        )

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        return render(self.request, template, status=status, page=self, **context)


def render(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    return resources_of(request).templates.TemplateResponse(
        request, template, {"page": None, **context}, status_code=status
    )


PageFunction = Callable[[ConsolePage], Awaitable[Response]]


Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(permission: Permission, action: str | None = None) -> Callable[[PageFunction], Endpoint]:
    """A page (GET) or an action (POST, named ``action`` in the audit log) that needs ``permission``."""

    def wrap(function: PageFunction) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            resources = resources_of(request)
            had_cookie = SESSION_COOKIE in request.cookies
            session = await session_of(request)
            if session is None:
                raise SignInNeeded(
                    "Your session has expired or was closed: sign in again."
                    if had_cookie
                    else "Sign in to use the console."
                )
            identity = await resources.credentials.current(session.identity)
            if identity is None:  # removed, or its password unset, since it signed in
                await resources.sessions.close(session.id)
                raise SignInNeeded("Your account access has changed: sign in again.")
            page = ConsolePage(request, resources, session, identity)
            if request.method == "POST":
                page.form = await _form(request)
                token = page.field(CSRF_FIELD) or request.headers.get(CSRF_HEADER, "")
                if not token or not hmac.compare_digest(token, session.csrf_token):
                    await page.audit(
                        action or request.url.path, "refused", detail="missing or stale CSRF token"
                    )
                    raise CsrfRefused()
            try:
                require(identity, permission)
            except AccessDenied:
                if request.method == "POST":
                    await page.audit(
                        action or request.url.path,
                        "refused",
                        namespace=request.path_params.get("namespace"),
                        target=request.path_params.get("workflow_id"),
                        detail=f"role {identity.role} lacks {permission.value}",
                    )
                raise
            return await function(page)

        endpoint.__name__ = function.__name__
        endpoint.__doc__ = function.__doc__
        return endpoint

    return wrap


class BodyTooLarge(ConsoleInputError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request's body is over the console's limit of {limit} bytes", 413)


async def _form(request: Request, max_fields: int = 100) -> FormData:
    """The posted form (its size bounded by ``BodyLimit`` as it arrives, whatever the headers say)."""
    try:
        return await request.form(max_files=0, max_fields=max_fields, max_part_size=MAX_FORM_BYTES)
    except BodyTooLarge:
        raise
    except Exception as exc:  # python-multipart's and Starlette's parse errors have no common base
        raise ConsoleInputError(f"the form could not be read: {exc}") from None
