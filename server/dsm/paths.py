"""Where the companion server keeps its state (vault, cache, journal)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import platformdirs

APP_NAME = "DataStoreManagerPro"
HOME_ENV = "DSM_HOME"


def data_dir() -> Path:
    """The server's state directory: `$DSM_HOME` if set, else the per-user data directory.

    `DSM_HOME` should name a directory dedicated to DataStore Manager Pro: it is made private
    (mode 0700) because it holds the encrypted vault and the encrypted cache.
    """
    override = os.environ.get(HOME_ENV, "").strip()
    if override:
        path = Path(override).expanduser()
    else:
        path = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    return ensure_private_dir(path)


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it owner-only.

    The mode is set explicitly after creation because `mkdir(mode=...)` is filtered through the
    umask, and an existing directory may have been created by hand with group/world access.
    Windows has no POSIX modes; its per-user profile directory is already private.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "posix":
        current = stat.S_IMODE(path.stat().st_mode)
        if current != 0o700:
            path.chmod(0o700)
    return path
