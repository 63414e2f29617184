"""File helpers that any layer may use."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """Where tvmnas keeps what it makes once and reuses (generated data sets, the boards' root filesystem, by
    default the latency database): `$TVMNAS_CACHE`, else ~/.cache/tvmnas."""
    return Path(os.environ.get("TVMNAS_CACHE", Path.home() / ".cache" / "tvmnas"))


def default_db() -> Path:
    """The latency database when no --db is given: `$TVMNAS_DB`, else latency.db in `cache_root()`."""
    return Path(os.environ.get("TVMNAS_DB", cache_root() / "latency.db"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
