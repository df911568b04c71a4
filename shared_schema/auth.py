"""Pairing (a code shown only in the server's console) and the tokens it issues."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from .base import RequestBody, ResponseBody
from .common import Role
from .constraints import Label, LuauPattern, PositiveInt, UtcDateTime

PairingCode = Annotated[
    str,
    StringConstraints(min_length=4, max_length=16, pattern=r"^[0-9]+$"),
    LuauPattern("^%d+$"),
]


class PairStartRequest(RequestBody):
    client_name: Label = Field(
        description="Shown in the server's console next to the code, e.g. 'Studio (place 123)'."
    )


class PairStartResponse(ResponseBody):
    pairing_id: str = Field(min_length=1, description="Pass back to /pair/complete.")
    expires_at: UtcDateTime = Field(description="The code stops working at this time.")
    code_length: PositiveInt = Field(description="How many digits the console code has.")
    message: str = Field(description="What to tell the user, e.g. where the code is shown.")


class PairCompleteRequest(RequestBody):
    pairing_id: str = Field(min_length=1, max_length=128, description="From /pair/start.")
    code: PairingCode = Field(description="The digits the user read from the server's console.")
    client_name: Label = Field(description="Becomes the token's name in `GET /tokens`.")


class PairCompleteResponse(ResponseBody):
    token: str = Field(
        min_length=1,
        description="Bearer token, shown once. Keep it only in plugin settings, never in the place.",
    )
    token_id: str = Field(min_length=1, description="Public id of the token, for revoking it.")
    role: Role = Field(description="What the token may do.")


class CapUse(ResponseBody):
    used: int = Field(ge=0, description="Counted in the window.")
    cap: int = Field(ge=0, description="The most the window allows.")
    left: int = Field(ge=0, description="What the token may still spend now.")


class AssistantCapsUsage(ResponseBody):
    """An assistant token's use of its caps over a sliding window, counted by the server."""

    window_seconds: int = Field(gt=0)
    api_requests: CapUse = Field(description="API requests the token made.")
    opencloud_requests: CapUse = Field(
        description="Open Cloud requests made for it (reads that miss the cache, listings, "
        "job planning)."
    )


class TokenInfo(ResponseBody):
    token_id: str = Field(min_length=1)
    name: str = Field(description="The client name given at pairing.")
    role: Role
    created_at: UtcDateTime
    last_used_at: UtcDateTime | None = Field(default=None, description="Absent if never used.")
    revoked: bool
    studio_user_id: PositiveInt | None = Field(
        default=None, description="The Studio user the plugin last announced with this token."
    )
    studio_user_name: str | None = Field(default=None, description="That user's name, if known.")
    caps: AssistantCapsUsage | None = Field(
        default=None,
        description="An assistant token's use of its caps now; absent for people's tokens "
        "(not capped).",
    )


class TokenList(ResponseBody):
    tokens: list[TokenInfo]
