"""One owner of where tvmnas keeps its cache and database (`tvmnas.files`)."""

from pathlib import Path

from tvmnas import files
from tvmnas.board.rootfs import default_rootfs


def test_cache_root_and_database_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("TVMNAS_CACHE", raising=False)
    monkeypatch.delenv("TVMNAS_DB", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert files.cache_root() == tmp_path / "home" / ".cache" / "tvmnas"
    assert files.default_db() == files.cache_root() / "latency.db"
    monkeypatch.setenv("TVMNAS_CACHE", str(tmp_path / "cache"))
    assert files.default_db() == tmp_path / "cache" / "latency.db"
    assert default_rootfs() == tmp_path / "cache" / "boards" / "aarch64" / "rootfs"
    monkeypatch.setenv("TVMNAS_DB", str(tmp_path / "other.db"))
    assert files.default_db() == Path(tmp_path / "other.db")


def test_why_not_writable_names_the_obstacle(tmp_path, monkeypatch):
    why_not_writable = files.why_not_writable
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    assert why_not_writable(tmp_path / "new" / "deeper" / "out.json", folder=False) is None
    assert why_not_writable(tmp_path / "new-run", folder=True) is None
    assert why_not_writable(a_file, folder=False) is None  # an existing file is written over
    assert why_not_writable(a_file, folder=True) == f"{a_file} is a file, not a folder"
    assert why_not_writable(tmp_path, folder=False) == f"{tmp_path} is a folder, not a file"
    assert why_not_writable(a_file / "sub" / "x", folder=True) == \
        f"cannot create {a_file / 'sub' / 'x'}: {a_file} is a file, not a folder"
    monkeypatch.setattr("os.access", lambda path, mode: False)  # what a read-only folder answers (root writes all)
    assert why_not_writable(tmp_path / "x", folder=True) == \
        f"cannot create {tmp_path / 'x'}: no permission to write in {tmp_path}"
    assert why_not_writable(a_file, folder=False) == f"no permission to write {a_file}"
    assert not list((tmp_path).glob("new*"))  # checking makes nothing
