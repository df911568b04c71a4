"""Exceptions raised by the Luau harness."""

from __future__ import annotations

import re

_LOCATION = re.compile(r"^(?P<file>[^\s:]+\.luau):(?P<line>\d+): ")


class HarnessError(Exception):
    """The harness was misused or the Luau side never settled (not idle, element not found...)."""


class LuauError(Exception):
    """An error raised by Luau code, with the Luau message (which starts with file:line) and the
    Luau stack traceback when one was available."""

    def __init__(self, message: str, traceback: str | None = None) -> None:
        self.luau_message = message
        self.luau_traceback = traceback or ""
        text = (
            message if not traceback else f"{message}\nLuau stack traceback:\n{traceback.strip()}"
        )
        super().__init__(text)

    @property
    def location(self) -> tuple[str, int] | None:
        """(file, line) of the error when the message starts with one."""
        m = _LOCATION.match(self.luau_message)
        return (m.group("file"), int(m.group("line"))) if m else None


def clean_runtime_error(text: str) -> str:
    """pluau reports Luau errors as 'runtime error: <msg>\\nstack traceback:...': keep <msg>."""
    for prefix in ("runtime error: ", "syntax error: "):
        if text.startswith(prefix):
            text = text[len(prefix) :] if prefix == "runtime error: " else text
            break
    return text.split("\nstack traceback:", 1)[0]
