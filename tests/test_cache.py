"""The verified cache: content-addressed, re-hashed on every get, private, atomic."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from pathlib import Path

import pytest

from modelseal.cache import Cache, CacheError, default_root, model_digest
from modelseal.errors import UsageError


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


def _put(cache: Cache, tmp_path: Path, data: bytes) -> Path:
    source = tmp_path / "incoming"
    source.write_bytes(data)
    return cache.put(source, _sha(data))


def test_put_then_get_content_addressed_and_private(cache: Cache, tmp_path: Path) -> None:
    data = b"weights" * 1000
    stored = _put(cache, tmp_path, data)
    digest = _sha(data)
    assert stored == cache.root / "sha256" / digest[:2] / digest
    assert cache.get(digest) == stored
    assert cache.get("sha256:" + digest.upper()) == stored
    assert stat.S_IMODE(os.stat(cache.root).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(stored.parent).st_mode) == 0o700
    assert (tmp_path / "incoming").exists()  # put copies


def test_put_refuses_bytes_that_do_not_match(cache: Cache, tmp_path: Path) -> None:
    source = tmp_path / "incoming"
    source.write_bytes(b"evil")
    with pytest.raises(CacheError) as caught:
        cache.put(source, _sha(b"good"))
    assert caught.value.actual == "sha256:" + _sha(b"evil")
    assert cache.get(_sha(b"good")) is None
    leftovers = [p for p in cache.root.rglob("*") if p.is_file()]
    assert leftovers == []


def test_tampered_entry_is_removed_and_logged_never_returned(
    cache: Cache, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = b"honest bytes"
    stored = _put(cache, tmp_path, data)
    before = os.stat(stored)
    stored.write_bytes(b"HONEST BYTES")  # same size, same mtime: only a re-hash can tell
    os.utime(stored, ns=(before.st_atime_ns, before.st_mtime_ns))
    with caplog.at_level(logging.WARNING, logger="modelseal.fetch"):
        assert cache.get(_sha(data)) is None
    assert not stored.exists()
    assert "removed corrupt cache entry" in caplog.text


def test_check_is_read_only(cache: Cache, tmp_path: Path) -> None:
    data = b"honest bytes"
    stored = _put(cache, tmp_path, data)
    stored.write_bytes(b"x")
    found = cache.check(_sha(data))
    assert found.status == "mismatch"
    assert found.actual == "sha256:" + _sha(b"x")
    assert stored.exists()
    assert cache.check(_sha(b"other")).status == "missing"


def test_symlinked_entry_is_refused(cache: Cache, tmp_path: Path) -> None:
    data = b"honest bytes"
    stored = _put(cache, tmp_path, data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(data)
    stored.unlink()
    stored.symlink_to(elsewhere)
    assert cache.get(_sha(data)) is None
    assert not stored.is_symlink()
    assert elsewhere.exists()


def test_extracted_model_rehashed_on_every_get(cache: Cache, model: Path, tmp_path: Path) -> None:
    root, files = model_digest(model)
    with cache.staging() as stage:
        copy = stage / "m"
        copy.mkdir()
        for name in files:
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            (copy / name).write_bytes((model / name).read_bytes())
        installed = cache.adopt_model(copy, root)
    assert cache.get_model(root, files) == installed
    assert cache.get_model(root, ("config.json",)) is None  # a different file list: removed
    assert not installed.exists()


def test_tampered_extracted_model_is_removed(cache: Cache, model: Path) -> None:
    root, files = model_digest(model)
    with cache.staging() as stage:
        copy = stage / "m"
        os.rename(model, copy)
        installed = cache.adopt_model(copy, root)
    (installed / "config.json").write_text('{"layers": 3}\n')
    assert cache.check_model(root, files).status == "mismatch"
    assert cache.get_model(root, files) is None
    assert not installed.exists()


def test_default_root_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MODELSEAL_CACHE", str(tmp_path / "a"))
    assert default_root() == tmp_path / "a"
    monkeypatch.delenv("MODELSEAL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "modelseal"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / ".cache" / "modelseal"


def test_cache_writable_by_others_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o777)
    source = tmp_path / "incoming"
    source.write_bytes(b"x")
    with pytest.raises(UsageError, match="writable by others"):
        Cache(root).put(source, _sha(b"x"))


def test_bad_digest_argument(cache: Cache) -> None:
    with pytest.raises(UsageError):
        cache.get("abc")


def test_concurrent_writers_of_one_entry(cache: Cache, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    sources = []
    for i in range(8):
        source = tmp_path / f"incoming-{i}"
        source.write_bytes(data)
        sources.append(source)
    errors: list[BaseException] = []

    def put(source: Path) -> None:
        try:
            cache.put(source, _sha(data))
        except BaseException as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [p.name for p in cache.root.rglob("*") if p.is_file()] == [_sha(data)]
    stored = cache.get(_sha(data))
    assert stored is not None
    assert stored.read_bytes() == data
