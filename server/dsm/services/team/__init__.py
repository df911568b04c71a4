"""Team sync across machines through the universe's own Open Cloud (docs/team.md)."""

from .service import TeamService

__all__ = ["TeamService"]
