"""`GET /hello`: the unauthenticated handshake the plugin makes before anything else."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import ResponseBody
from .common import Backend
from .constraints import NonNegativeInt, Sha256Hex


class Hello(ResponseBody):
    """Who is answering on this port; reveals nothing that needs a token."""

    server_version: str = Field(description="The companion server's version, e.g. 0.1.0.")
    protocol_major: NonNegativeInt = Field(
        description="Must equal the plugin's PROTOCOL_MAJOR; a difference blocks the connection."
    )
    protocol_minor: NonNegativeInt = Field(
        description="Additive changes only; the plugin gates features on `capabilities`."
    )
    capabilities: list[str] = Field(
        description="Optional features this server offers, e.g. `events.long_poll`."
    )
    schema_hash: Sha256Hex = Field(
        description="SHA-256 of the canonical protocol schema; a mismatch only warns."
    )
    instance_id: str = Field(
        min_length=1,
        description="Changes on every server start: the plugin drops its cache and cursor.",
    )
    backend: Backend = Field(description="Whether data comes from Open Cloud or the emulator.")
    pairing: Literal["required"] = Field(
        description="Every data route needs a token obtained through /pair/start and /pair/complete."
    )
