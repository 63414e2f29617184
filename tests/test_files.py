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
