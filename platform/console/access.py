"""Who may do what in the console: the roles of docs/architecture.md, checked on the server.

Account roles rank owner > admin > developer > read-only; operators hold a role of their own that no
account user holds, and see only the platform (cells, rollouts, dead letters) and the namespaces that
belong to no account (the system namespace and ops namespaces).
"""

from __future__ import annotations

from enum import Enum

from perdure.platform.stores.console_identity import OPERATOR, Identity
from perdure.platform.stores.control_store import NamespaceRecord


class Permission(Enum):
    READ = "read"  # see namespaces, runs, histories, usage
    OPERATE_RUNS = "operate runs"  # start, signal, query, cancel, terminate
    MANAGE_NAMESPACES = "manage namespaces"  # quotas, keys; billing
    OPERATE_PLATFORM = "operate the platform"  # cells, rollouts, dead letters


_ACCOUNT_ROLES: dict[str, frozenset[Permission]] = {
    "owner": frozenset({Permission.READ, Permission.OPERATE_RUNS, Permission.MANAGE_NAMESPACES}),
    "admin": frozenset({Permission.READ, Permission.OPERATE_RUNS, Permission.MANAGE_NAMESPACES}),
    "developer": frozenset({Permission.READ, Permission.OPERATE_RUNS}),
    "read-only": frozenset({Permission.READ}),
}
_OPERATOR = frozenset({Permission.READ, Permission.OPERATE_RUNS, Permission.OPERATE_PLATFORM})


class AccessDenied(Exception):
    """The identity may not do this (answered 403, and audited when it was an action)."""


class NotVisible(Exception):
    """Not there, or not the identity's to see: answered 404 either way, so that a guessed URL tells
    nothing about what exists."""


def permissions_of(identity: Identity) -> frozenset[Permission]:
    if identity.account is None:
        return _OPERATOR if identity.role == OPERATOR else frozenset()
    return _ACCOUNT_ROLES.get(identity.role, frozenset())


def allowed(identity: Identity, permission: Permission) -> bool:
    return permission in permissions_of(identity)


def require(identity: Identity, permission: Permission) -> None:
    if not allowed(identity, permission):
        raise AccessDenied(f"your role ({identity.role}) may not {permission.value}")


def can_see(identity: Identity, namespace: NamespaceRecord) -> bool:
    if namespace.status == "deleted":
        return False
    if identity.account is None:
        return identity.role == OPERATOR and namespace.account is None
    return namespace.account == identity.account
