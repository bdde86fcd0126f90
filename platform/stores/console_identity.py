"""Who is signed in to the console: an account user, or a platform operator (who belongs to no account)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, EmailStr

OPERATOR = "operator"


class Identity(BaseModel):
    """Who signed in: an account user (account set) or a platform operator (account None)."""

    model_config = ConfigDict(frozen=True)

    email: EmailStr
    account: str | None
    role: str

    @property
    def key(self) -> str:
        return f"{self.account or OPERATOR}/{self.email.lower()}"

    @property
    def is_operator(self) -> bool:
        return self.account is None and self.role == OPERATOR
