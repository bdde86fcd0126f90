"""Namespace API keys: shown once, stored only as a hash.

A key is 256 random bits, so a fast hash is enough to make the stored form useless to a reader of the
database (a slow password hash guards guessable secrets; these are not guessable). The key is also the
password of the namespace's RabbitMQ user, which keeps its own salted hash of it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "pdk"


@dataclass(frozen=True)
class IssuedKey:
    key_id: str  # public: names the key in listings and logs
    secret: str  # the whole key, shown once
    hash: str


def issue_key() -> IssuedKey:
    key_id = secrets.token_hex(6)
    secret = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    return IssuedKey(key_id=key_id, secret=secret, hash=hash_key(secret))


def hash_key(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def broker_password_hash(secret: str) -> str:
    """The key as RabbitMQ stores a password (``rabbit_password_hashing_sha256``: base64 of a 4-byte
    salt and the SHA-256 of salt and password), so a user can be created without the key itself
    passing through anything that records it (the provisioning workflow's history)."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + secret.encode()).digest()).decode()


def key_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(secret), stored_hash)


def key_id_of(secret: str) -> str | None:
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    return parts[1]
