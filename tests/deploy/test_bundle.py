"""Bundle manifests: checksums are written, and a missing or altered file is refused with one clear line."""

import pytest

from tvmnas.deploy.bundle import read_manifest, write_manifest
from tvmnas.files import sha256_file
from tvmnas.errors import TvmnasError


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "b.txt").write_text("hello")
    write_manifest(tmp_path, {"module": "a.bin"}, ["a.bin", "b.txt"])
    return tmp_path


def test_manifest_round_trip(bundle):
    manifest = read_manifest(bundle)
    assert manifest["module"] == "a.bin" and manifest["format"] == "tvmnas-bundle"
    # the well-known SHA-256 of "abc"
    assert manifest["files"]["a.bin"]["sha256"] == \
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_file(bundle / "b.txt") == manifest["files"]["b.txt"]["sha256"]


def test_altered_file_is_refused(bundle):
    (bundle / "b.txt").write_text("hellO")
    with pytest.raises(TvmnasError, match=r"b\.txt does not match its sha256"):
        read_manifest(bundle)


def test_missing_file_is_refused(bundle):
    (bundle / "a.bin").unlink()
    with pytest.raises(TvmnasError, match=r"a\.bin is missing"):
        read_manifest(bundle)


def test_not_a_bundle(tmp_path):
    with pytest.raises(TvmnasError, match="no bundle manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(TvmnasError, match="not a tvmnas bundle"):
        read_manifest(tmp_path)
