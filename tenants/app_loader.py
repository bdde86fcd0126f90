"""Loading an app by import path (``module:attribute``): only in processes that run tenant code (a
worker, the sandboxed manifest reader, a tenant's own ``perdure worker run``), never in a platform
service."""

from __future__ import annotations

import importlib

from perdure.platform.core.definitions import WorkflowRegistry
from perdure.platform.core.errors import PerdureError


class AppLoadError(PerdureError, RuntimeError):
    pass


def load_app(path: str) -> WorkflowRegistry:
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise AppLoadError(f"app path {path!r} is not of the form module:attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppLoadError(f"cannot import {module_name!r} for app {path!r}: {exc}") from exc
    app = getattr(module, attribute, None)
    if app is None or not hasattr(app, "get_workflow") or not hasattr(app, "get_activity"):
        raise AppLoadError(f"{path!r} is not a perdure.tenants.App")
    return app  # type: ignore[no-any-return]
