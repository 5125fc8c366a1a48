"""modelseal.integrations.keras.get_file: keras.utils.get_file's download, plus a lock pin.

A real Keras download from the loopback HTTPS server (tests/httpserver.py, trusted through
SSL_CERT_FILE) into a Keras cache in tmp_path, and a real models.lock.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from httpserver import serve
from modelseal.errors import IntegrityError, ModelMismatchError
from modelseal.fetch import SourceNotAllowed
from modelseal.integrations import keras as mkeras
from modelseal.integrations.zoo import PinMismatchError, UnpinnedDownloadError
from modelseal.lock import Lock
from modelseal.policy import Policy

ARRAY = np.arange(24, dtype=np.float32).reshape(4, 6)


def _npy(array: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _tgz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


DATA = _npy(ARRAY)
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()
OTHER = _npy(np.zeros((4, 6), dtype=np.float32))
ARCHIVE = _tgz({"weights/w.npy": DATA, "config.json": b'{"a": 1}'})
FILES = {"/zoo/w.npy": DATA, "/zoo/other.npy": OTHER, "/zoo/bundle.tar.gz": ARCHIVE}


def write_lock(path: Path, url: str, sha256: str, trust: str = "pinned") -> Path:
    pin = f'sha256 = "{sha256}"\n' if sha256 else ""  # a TOFU entry has none until first use
    path.write_text(
        f'version = 1\n\n[[models]]\nname = "w"\nurls = ["{url}"]\n{pin}trust = "{trust}"\n'
    )
    return path


@pytest.fixture(scope="module")
def running() -> Iterator[Any]:
    """One server per module (starting and stopping one per test costs more than the tests)."""
    with serve(FILES) as srv:
        yield srv


@pytest.fixture
def server(running: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The module's server, its CA trusted through SSL_CERT_FILE, its request log cleared."""
    monkeypatch.setenv("SSL_CERT_FILE", str(running.ca_pem))
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    running.requests.clear()
    return running


@pytest.fixture
def keras_home(tmp_path: Path) -> Path:
    home = tmp_path / "keras"
    home.mkdir()  # Keras falls back to /tmp/.keras for a cache_dir it cannot write
    return home


def get(url: str, keras_home: Path, lock: Path, **kwargs: Any) -> str:
    return mkeras.get_file(origin=url, cache_dir=os.fspath(keras_home), lock=lock, **kwargs)


def cached(keras_home: Path, name: str = "w.npy") -> Path:
    return keras_home / "datasets" / name


def test_pinned_file_loads_from_a_private_copy(
    server: Any, keras_home: Path, tmp_path: Path
) -> None:
    url = server.url("/zoo/w.npy")
    lock = write_lock(tmp_path / "models.lock", url, SHA)
    path = Path(get(url, keras_home, lock, file_hash=MD5))
    np.testing.assert_array_equal(np.load(path), ARRAY)
    assert cached(keras_home).read_bytes() == DATA  # Keras' own cache
    assert path != cached(keras_home)
    assert keras_home not in path.parents
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = Path(get(url, keras_home, lock))  # served from Keras' cache, checked again
    assert again.read_bytes() == DATA
    assert again != path


def test_passes_keras_md5_but_unpinned_is_refused_before_download(
    server: Any, keras_home: Path, tmp_path: Path
) -> None:
    url = server.url("/zoo/w.npy")
    lock = write_lock(tmp_path / "models.lock", server.url("/zoo/other.npy"), SHA)
    with pytest.raises(UnpinnedDownloadError, match="no pin for"):
        get(url, keras_home, lock, file_hash=MD5)
    assert not cached(keras_home).exists()
    assert server.requests == []


def test_keras_own_hash_still_checked(server: Any, keras_home: Path, tmp_path: Path) -> None:
    url = server.url("/zoo/w.npy")
    lock = write_lock(tmp_path / "models.lock", url, SHA)
    with pytest.raises(ModelMismatchError, match="keras"):
        get(url, keras_home, lock, file_hash=hashlib.md5(b"else").hexdigest())


def test_tofu_records_then_refuses_a_changed_file(
    server: Any, keras_home: Path, tmp_path: Path
) -> None:
    url = server.url("/zoo/w.npy")
    lock = write_lock(tmp_path / "models.lock", url, "", trust="tofu")
    np.testing.assert_array_equal(np.load(get(url, keras_home, lock)), ARRAY)
    entry = Lock.load(lock).pin_for(url)
    assert entry is not None
    assert entry.sha256 == SHA
    assert entry.trust == "tofu"
    cached(keras_home).write_bytes(OTHER)
    with pytest.raises(PinMismatchError):
        get(url, keras_home, lock)
    assert Lock.load(lock).pin_for(url).sha256 == SHA  # type: ignore[union-attr]


def test_cached_file_tampered_between_runs_is_refused(
    server: Any, keras_home: Path, tmp_path: Path
) -> None:
    url = server.url("/zoo/w.npy")
    lock = write_lock(tmp_path / "models.lock", url, SHA)
    get(url, keras_home, lock)
    tampered = bytearray(DATA)
    tampered[-1] ^= 0x01
    cached(keras_home).write_bytes(bytes(tampered))  # Keras serves its cache unchecked
    with pytest.raises(PinMismatchError) as info:
        get(url, keras_home, lock)
    assert info.value.actual == "sha256:" + hashlib.sha256(bytes(tampered)).hexdigest()


def test_wrong_pin_reports_both_digests(server: Any, keras_home: Path, tmp_path: Path) -> None:
    url = server.url("/zoo/w.npy")
    wrong = hashlib.sha256(b"other").hexdigest()
    lock = write_lock(tmp_path / "models.lock", url, wrong)
    with pytest.raises(PinMismatchError) as info:
        get(url, keras_home, lock, file_hash=MD5)
    assert wrong in str(info.value)
    assert SHA in str(info.value)
    assert (info.value.expected, info.value.actual) == ("sha256:" + wrong, "sha256:" + SHA)
    assert isinstance(info.value, IntegrityError)


def test_url_outside_policy_refused_before_download(
    server: Any, keras_home: Path, tmp_path: Path
) -> None:
    url = server.url("/zoo/w.npy")
    lock = write_lock(tmp_path / "models.lock", url, SHA)
    policy = Policy.from_toml('[sources]\nallow = ["https://models.example.com/*"]\n', tmp_path)
    with pytest.raises(SourceNotAllowed):
        get(url, keras_home, lock, policy=policy)
    assert server.requests == []
    allowed = Policy.from_toml(f'[sources]\nallow = ["{server.url("/zoo/*")}"]\n', tmp_path)
    assert Path(get(url, keras_home, lock, policy=allowed)).read_bytes() == DATA


def test_extract_checks_the_archive_then_extracts_the_checked_copy(
    server: Any, keras_home: Path, tmp_path: Path
) -> None:
    url = server.url("/zoo/bundle.tar.gz")
    lock = write_lock(tmp_path / "models.lock", url, hashlib.sha256(ARCHIVE).hexdigest())
    root = Path(get(url, keras_home, lock, extract=True))
    assert (root / "weights" / "w.npy").read_bytes() == DATA
    assert keras_home not in root.parents
    wrong = write_lock(tmp_path / "wrong.lock", url, SHA)
    with pytest.raises(PinMismatchError):
        get(url, keras_home, wrong, extract=True)
