"""Name -> JSON file lookup for targets and search spaces: one file per entry, a user adds one by adding a file.

The built-in entries ship inside the package (`tvmnas/builtin/targets`, `tvmnas/builtin/spaces`, read with
importlib.resources, so an installed tvmnas finds them from any folder); folders named in the environment
variables TVMNAS_TARGET_PATH / TVMNAS_SPACE_PATH (os.pathsep-separated) come first. A name may also be a path to
a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tvmnas.errors import TvmnasError

def search_dirs(builtin: str, env_var: str) -> list[Path]:
    """The folders searched for entries: the user's, then the package's `builtin/<builtin>`."""
    from importlib.resources import files

    extra = [Path(p) for p in os.environ.get(env_var, "").split(os.pathsep) if p]
    return extra + [Path(str(files("tvmnas") / "builtin" / builtin))]


def list_entries(default_dir: str, env_var: str) -> dict[str, Path]:
    """All entries by name (the file stem); a folder earlier in the search path wins."""
    found: dict[str, Path] = {}
    for folder in search_dirs(default_dir, env_var):
        for path in sorted(folder.glob("*.json")):
            found.setdefault(path.stem, path)
    return found


def find_entry(name: str, default_dir: str, env_var: str, what: str) -> Path:
    if name.endswith(".json") and Path(name).is_file():
        return Path(name)
    entries = list_entries(default_dir, env_var)
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise TvmnasError(f"unknown {what} {name!r}; known: {known}")
    return entries[name]


def read_json_object(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise TvmnasError(f"cannot read {what} file {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise TvmnasError(f"malformed {what} file {path}: {err.msg} at line {err.lineno}") from None
    except UnicodeDecodeError:
        raise TvmnasError(f"malformed {what} file {path}: not text (JSON expected)") from None
    if not isinstance(data, dict):
        raise TvmnasError(f"malformed {what} file {path}: expected a JSON object")
    return data


class Fields:
    """Typed reads of a JSON object that name the file and the field on error."""

    def __init__(self, data: dict, source: str, prefix: str = "") -> None:
        self.data, self.source, self.prefix = data, source, prefix

    def _fail(self, key: str, expected: str) -> TvmnasError:
        return TvmnasError(f"malformed {self.source}: field '{self.prefix}{key}' must be {expected}")

    def get(self, key: str, kind: type | tuple, expected: str, default=None, required: bool = True):
        if key not in self.data:
            if required:
                raise TvmnasError(f"malformed {self.source}: missing field '{self.prefix}{key}'")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind in (int, (int, float)):
            raise self._fail(key, expected)
        return value

    def positive_int(self, key: str, default: int | None = None) -> int:
        value = self.get(key, int, "a positive integer", default, required=default is None)
        if value <= 0:
            raise self._fail(key, "a positive integer")
        return value

    def int_list(self, key: str) -> list[int]:
        value = self.get(key, list, "a non-empty list of positive integers")
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            raise self._fail(key, "a non-empty list of positive integers")
        return value

    def sub(self, key: str, required: bool = True) -> Fields | None:
        value = self.get(key, dict, "an object", None, required)
        return None if value is None else Fields(value, self.source, f"{self.prefix}{key}.")
