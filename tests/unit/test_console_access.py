"""The console's roles and where it lets a browser go after signing in: pure rules, no services."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from perdure.platform.console.access import AccessDenied, Permission, allowed, can_see, require
from perdure.platform.console.signin_routes import safe_next
from perdure.platform.stores.console_identity import OPERATOR, Identity
from perdure.platform.stores.control_store import NamespaceRecord


def person(role: str, account: str | None = "acme") -> Identity:
    return Identity(email="someone@example.com", account=account, role=role)


def namespace(account: str | None, status: str = "active") -> NamespaceRecord:
    return NamespaceRecord(
        name="orders",
        app="m:app",
        cell="c1",
        vhost="orders",
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        account=account,
        status=status,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("role", "read", "operate", "manage", "platform"),
    [
        ("owner", True, True, True, False),
        ("admin", True, True, True, False),
        ("developer", True, True, False, False),
        ("read-only", True, False, False, False),
        ("someone-made-this-up", False, False, False, False),
    ],
)
def test_account_roles(role: str, read: bool, operate: bool, manage: bool, platform: bool) -> None:
    identity = person(role)
    assert allowed(identity, Permission.READ) is read
    assert allowed(identity, Permission.OPERATE_RUNS) is operate
    assert allowed(identity, Permission.MANAGE_NAMESPACES) is manage
    assert allowed(identity, Permission.OPERATE_PLATFORM) is platform


def test_only_an_operator_without_an_account_operates_the_platform() -> None:
    assert allowed(person(OPERATOR, account=None), Permission.OPERATE_PLATFORM)
    # A user of an account whose role somehow reads "operator" is not a platform operator.
    assert not allowed(person(OPERATOR, account="acme"), Permission.OPERATE_PLATFORM)
    assert not allowed(person(OPERATOR, account="acme"), Permission.READ)
    assert not allowed(person(OPERATOR, account=None), Permission.MANAGE_NAMESPACES)


def test_require_says_which_role_lacks_what() -> None:
    with pytest.raises(AccessDenied, match=r"read-only.*operate runs"):
        require(person("read-only"), Permission.OPERATE_RUNS)


def test_a_user_sees_their_accounts_namespaces_only() -> None:
    assert can_see(person("read-only"), namespace("acme"))
    assert not can_see(person("owner"), namespace("globex"))
    assert not can_see(person("owner"), namespace(None))  # the platform's own namespaces
    assert not can_see(person("owner"), namespace("acme", status="deleted"))


def test_an_operator_sees_the_platforms_namespaces_only() -> None:
    operator = person(OPERATOR, account=None)
    assert can_see(operator, namespace(None))
    assert not can_see(operator, namespace("acme"))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/namespaces/orders", "/namespaces/orders"),
        ("/namespaces/orders/workflows?status=running", "/namespaces/orders/workflows?status=running"),
        ("https://evil.example.com/", "/namespaces"),
        ("//evil.example.com/x", "/namespaces"),
        ("/\\evil.example.com", "/namespaces"),
        ("javascript:alert(1)", "/namespaces"),
        ("", "/namespaces"),
        (None, "/namespaces"),
    ],
)
def test_after_sign_in_only_this_consoles_paths(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected
