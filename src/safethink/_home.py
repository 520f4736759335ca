"""Where safethink keeps converted models and caches (``SAFETHINK_HOME``)."""

from __future__ import annotations

import os
from pathlib import Path


def safethink_home() -> Path:
    """The cache root: ``$SAFETHINK_HOME`` if set, else the user's cache dir.

    Nothing is created here; callers create what they need (no side effects at import).
    """
    env = os.environ.get("SAFETHINK_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("safethink"))
