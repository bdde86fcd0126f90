"""Namespaces: the list a user may see, and a namespace's page."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from perdure.platform.console.access import Permission
from perdure.platform.console.console_page import ConsolePage, guarded


@guarded(Permission.READ)
async def namespaces(page: ConsolePage) -> Response:
    return page.render("namespaces.html", namespaces=await page.visible_namespaces())


routes = [Route("/namespaces", namespaces, methods=["GET"])]
