"""A deploy bundle: a folder with the compiled module, the ONNX model, the network file and manifest.json.

The manifest says what the module expects (input shape, dtype, preprocessing), what it was compiled for, how
accurate and fast it is, and the sha256 of every other file; `read_manifest` and the native runner refuse a
bundle whose files are missing or altered.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tvmnas.errors import TvmnasError
from tvmnas.files import sha256_file

BUNDLE_FORMAT = "tvmnas-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
# the files export writes beside the manifest (and the reference kernel's, `tvmnas.measure.reference`)
MODULE_FILE, ONNX_FILE, NETWORK_FILE, SAMPLE_FILE = "model.so", "model.onnx", "network.pt", "sample_input.npy"



def write_manifest(bundle_dir: Path, fields: dict, files: list[str]) -> dict:
    """Write manifest.json with `fields` plus the size and sha256 of each file (names relative to the bundle)."""
    bundle_dir = Path(bundle_dir)
    manifest = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, **fields,
                "files": {name: {"sha256": sha256_file(bundle_dir / name), "bytes": (bundle_dir / name).stat().st_size}
                          for name in files}}
    tmp = bundle_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, bundle_dir / MANIFEST)
    return manifest


def read_manifest(bundle_dir: Path, verify: bool = True) -> dict:
    """The bundle's manifest, after checking that every listed file is there and unchanged."""
    path = Path(bundle_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise TvmnasError(f"no bundle manifest at {path}") from None
    except (OSError, json.JSONDecodeError) as err:
        raise TvmnasError(f"cannot read bundle manifest {path}: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise TvmnasError(f"{path} is not a tvmnas bundle manifest")
    if manifest.get("version") != BUNDLE_VERSION:
        raise TvmnasError(f"{path}: bundle version {manifest.get('version')} is not {BUNDLE_VERSION}")
    if verify:
        for name, entry in manifest.get("files", {}).items():
            file = Path(bundle_dir) / name
            if not file.is_file():
                raise TvmnasError(f"bundle file {file} is missing")
            if sha256_file(file) != entry["sha256"]:
                raise TvmnasError(f"bundle file {file} does not match its sha256 in the manifest (altered?)")
    return manifest
