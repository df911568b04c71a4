"""Who did something: the Studio user a plugin announced, and the paired token it used.

The Studio identity is what the plugin reports (`StudioService:GetUserId()`, the name from
`Players:GetNameFromUserIdAsync`); the server records it with the token when the plugin opens a
session. Nothing checks it against Roblox: it is a label, not a credential. Where it is not
known, `label` says so instead of guessing.
"""

from __future__ import annotations

from pydantic import Field

from .base import ResponseBody
from .constraints import PositiveInt

UNKNOWN_PERSON = "unknown Studio user"


class Person(ResponseBody):
    studio_user_id: PositiveInt | None = Field(
        default=None, description="The Studio user id the plugin reported; absent when unknown."
    )
    studio_user_name: str | None = Field(
        default=None, description="The Roblox user name, when the plugin could look it up."
    )
    token_name: str | None = Field(
        default=None, description="The paired token the request came with, when known."
    )
    label: str = Field(
        min_length=1,
        description="How to show the person: the name, else 'Studio user <id>', else "
        "'<token name> (Studio user unknown)'.",
    )


def person_label(
    studio_user_id: int | None, studio_user_name: str | None, token_name: str | None
) -> str:
    if studio_user_name:
        return studio_user_name
    if studio_user_id:
        return f"Studio user {studio_user_id}"
    if token_name:
        return f"{token_name} (Studio user unknown)"
    return UNKNOWN_PERSON


def make_person(
    studio_user_id: int | None, studio_user_name: str | None, token_name: str | None
) -> Person:
    return Person(
        studio_user_id=studio_user_id or None,
        studio_user_name=studio_user_name or None,
        token_name=token_name or None,
        label=person_label(studio_user_id, studio_user_name, token_name),
    )
