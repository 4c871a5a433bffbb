"""Folders under the user's cache directory where parainfer keeps what it learns once per machine
(the dtype decision per model and CPU, transformers' import structure)."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_folder(name: str, env: str) -> Path | None:
    """``<user cache dir>/parainfer/<name>`` (platformdirs), or ``$<env>_DIR`` when set; None when
    ``$<env>`` is "0" (the cache turned off)."""
    if os.environ.get(env, "1") == "0":
        return None
    folder = os.environ.get(env + "_DIR")
    if folder:
        return Path(folder)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("parainfer")) / name
