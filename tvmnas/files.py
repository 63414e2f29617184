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


def why_not_writable(path: Path, folder: bool) -> str | None:
    """Why `path` cannot be written as a file (or made a folder, when `folder`), or None when it can: checked
    before a verb writes anything, so a bad output path costs nothing."""
    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            return f"{path} is a file, not a folder"
        if not folder and path.is_dir():
            return f"{path} is a folder, not a file"
        return None if os.access(path, os.W_OK) else f"no permission to write {path}"
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"cannot create {path}: {ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create {path}: no permission to write in {ancestor}"
    return None
