"""Saving and loading tvmnas's PyTorch files (search checkpoints, trained networks): tagged with a format name and
version, written atomically, read with `torch.load(weights_only=True)`, refused with one clear line."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tvmnas.errors import TvmnasError, error_line


def save_tagged(path: Path, fmt: str, version: int, content: dict) -> None:
    """Written to a temporary file and renamed, so a kill never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save({"format": fmt, "version": version, **content}, tmp)
    os.replace(tmp, path)


def load_tagged(path: Path, fmt: str, version: int, what: str) -> dict:
    """The file's content after checking its tag; `what` names the kind of file in errors."""
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise TvmnasError(f"no {what} at {path}") from None
    except Exception as err:  # torch.load's errors on foreign bytes say little ("KeyError: 101"): name the kind
        raise TvmnasError(f"cannot read {what} {path}: not a file PyTorch saved ({error_line(err)})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise TvmnasError(f"{path} is not a tvmnas {what}")
    if data.get("version") != version:
        raise TvmnasError(f"{path}: {what} version {data.get('version')} is not {version}")
    return data
