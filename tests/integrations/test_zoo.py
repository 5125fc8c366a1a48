"""modelseal.integrations.zoo: the pin rule, Hugging Face-style URLs, and `hf_file` over the
loopback HTTPS server (tests/httpserver.py) with a real lock and a real verified cache."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from httpserver import serve
from modelseal.cache import Cache
from modelseal.errors import IntegrityError, UsageError
from modelseal.fetch import SourceNotAllowed
from modelseal.integrations import zoo
from modelseal.integrations.zoo import PinMismatchError, UnpinnedDownloadError
from modelseal.lock import Lock, LockedModel
from modelseal.policy import Policy

URL = "https://models.example.com/zoo/w.bin"
SHA = hashlib.sha256(b"weights").hexdigest()
COMMIT = "0123456789abcdef0123456789abcdef01234567"
DATA = os.urandom(1) + b"safetensors-ish bytes" * 100
DATA_SHA = hashlib.sha256(DATA).hexdigest()
CONFIG = b'{"hidden": 8}\n'
HF_FILES = {
    f"/org/model/resolve/{COMMIT}/model.bin": DATA,
    "/org/model/resolve/main/config.json": CONFIG,
}


# -- the pin rule ---------------------------------------------------------------------------


def test_pinned_entry_is_checked() -> None:
    entry = LockedModel("w", (URL,), SHA)
    decision = zoo.decide_pin(entry, URL)
    assert decision.expected == SHA
    assert not decision.record


def test_tofu_entry_without_digest_is_recorded() -> None:
    decision = zoo.decide_pin(LockedModel("w", (URL,), None, trust="tofu"), URL)
    assert decision.expected is None
    assert decision.record


def test_tofu_entry_with_digest_is_a_pin() -> None:
    decision = zoo.decide_pin(LockedModel("w", (URL,), SHA, trust="tofu"), URL)
    assert decision.expected == SHA


def test_no_entry_is_refused_naming_the_weak_check() -> None:
    with pytest.raises(UnpinnedDownloadError, match="SHA-1 table alone is not trusted") as info:
        zoo.decide_pin(None, URL, zoo_check="gluoncv's SHA-1 table")
    assert isinstance(info.value, IntegrityError)
    assert "modelseal lock add" in str(info.value)


# -- sources --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["https://models.example.com/x", "http://127.0.0.1:8000/x", "http://localhost/x"]
)
def test_https_and_loopback_http_allowed_without_policy(url: str) -> None:
    zoo.check_source(url, None)


@pytest.mark.parametrize("url", ["http://models.example.com/x", "ftp://h/x", "file:///etc/x"])
def test_other_schemes_refused_without_policy(url: str) -> None:
    with pytest.raises(SourceNotAllowed):
        zoo.check_source(url, None)


def test_policy_allowlist(tmp_path: Path) -> None:
    policy = Policy.from_toml('[sources]\nallow = ["https://models.example.com/zoo/*"]\n', tmp_path)
    zoo.check_source(URL, policy)
    with pytest.raises(SourceNotAllowed):
        zoo.check_source("https://evil.example.com/zoo/w.bin", policy)


# -- Hugging Face-style URLs ----------------------------------------------------------------


def test_hf_url_round_trip() -> None:
    url = zoo.hf_url("org/model", "sub dir/model.safetensors", COMMIT)
    assert url == f"https://huggingface.co/org/model/resolve/{COMMIT}/sub%20dir/model.safetensors"
    found = zoo.parse_hf_url(url)
    assert (found.endpoint, found.repo, found.revision, found.filename) == (
        "https://huggingface.co",
        "org/model",
        COMMIT,
        "sub dir/model.safetensors",
    )
    assert found.immutable
    assert found.url == url
    assert not zoo.parse_hf_url("https://hf.example/gpt2/resolve/main/config.json").immutable


@pytest.mark.parametrize(
    ("repo", "filename", "revision"),
    [
        ("org/model", "../secret", COMMIT),
        ("org/model", "a//b", COMMIT),
        ("org/model", "a\\b", COMMIT),
        ("org/model", "", COMMIT),
        ("../model", "f", COMMIT),
        ("a/b/c/d", "f", COMMIT),
        ("org/model", "f", ".."),
    ],
)
def test_hf_url_refuses_unsafe_parts(repo: str, filename: str, revision: str) -> None:
    with pytest.raises(UsageError):
        zoo.hf_url(repo, filename, revision)


@pytest.mark.parametrize(
    "url",
    [
        "https://huggingface.co/org/model/blob/main/f",
        "https://huggingface.co/org/model/resolve/main",
        "https://huggingface.co/org/model/resolve/main/f?download=1",
        "huggingface.co/org/model/resolve/main/f",
    ],
)
def test_parse_hf_url_refuses_other_urls(url: str) -> None:
    with pytest.raises(UsageError):
        zoo.parse_hf_url(url)


# -- hf_file over HTTPS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def running() -> Iterator[Any]:
    """One server per module (starting and stopping one per test costs more than the tests)."""
    with serve(HF_FILES) as srv:
        yield srv


@pytest.fixture
def server(running: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The module's server, its CA trusted through SSL_CERT_FILE, its request log cleared."""
    monkeypatch.setenv("SSL_CERT_FILE", str(running.ca_pem))
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    running.requests.clear()
    return running


def endpoint(server: Any) -> str:
    return str(server.url("/")).rstrip("/")


def write_lock(path: Path, *entries: tuple[str, str, str | None, str]) -> Path:
    lock = Lock()
    for name, url, sha256, trust in entries:
        lock = lock.add(LockedModel(name, (url,), sha256, trust=trust))
    lock.save(path)
    return path


def test_hf_file_pinned_from_a_private_snapshot(server: Any, tmp_path: Path) -> None:
    url = zoo.hf_url("org/model", "model.bin", COMMIT, endpoint=endpoint(server))
    lock = write_lock(tmp_path / "models.lock", ("model", url, DATA_SHA, "pinned"))
    cache = Cache(tmp_path / "cache")
    path = zoo.hf_file(
        "org/model", "model.bin", COMMIT, endpoint=endpoint(server), lock=lock, cache=cache
    )
    assert path.read_bytes() == DATA
    assert path.name == "model.bin"
    assert cache.root not in path.parents
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    direct = zoo.hf_file(
        "org/model",
        "model.bin",
        COMMIT,
        endpoint=endpoint(server),
        lock=lock,
        cache=cache,
        snapshot=False,
    )
    assert direct == cache.path_for(DATA_SHA)
    assert len(server.requests) == 1  # the second call used the verified cache


def test_hf_file_unpinned_refused_before_download(server: Any, tmp_path: Path) -> None:
    lock = write_lock(tmp_path / "models.lock", ("other", "https://h.example/x", SHA, "pinned"))
    with pytest.raises(UnpinnedDownloadError):
        zoo.hf_file(
            "org/model",
            "model.bin",
            COMMIT,
            endpoint=endpoint(server),
            lock=lock,
            cache=Cache(tmp_path / "cache"),
        )
    assert server.requests == []


def test_hf_file_wrong_pin_refused(server: Any, tmp_path: Path) -> None:
    url = zoo.hf_url("org/model", "model.bin", COMMIT, endpoint=endpoint(server))
    lock = write_lock(tmp_path / "models.lock", ("model", url, SHA, "pinned"))
    with pytest.raises(IntegrityError) as info:
        zoo.hf_file(
            "org/model",
            "model.bin",
            COMMIT,
            endpoint=endpoint(server),
            lock=lock,
            cache=Cache(tmp_path / "cache"),
        )
    assert SHA in str(info.value)
    assert DATA_SHA in str(info.value)


def test_hf_file_tofu_records_on_a_commit(server: Any, tmp_path: Path) -> None:
    url = zoo.hf_url("org/model", "model.bin", COMMIT, endpoint=endpoint(server))
    lock = write_lock(tmp_path / "models.lock", ("model", url, None, "tofu"))
    path = zoo.hf_file(
        "org/model",
        "model.bin",
        COMMIT,
        endpoint=endpoint(server),
        lock=lock,
        cache=Cache(tmp_path / "cache"),
    )
    assert path.read_bytes() == DATA
    entry = Lock.load(lock).pin_for(url)
    assert entry is not None
    assert entry.sha256 == DATA_SHA
    assert entry.trust == "tofu"


def test_hf_file_tofu_on_a_branch_refused(server: Any, tmp_path: Path) -> None:
    url = zoo.hf_url("org/model", "config.json", "main", endpoint=endpoint(server))
    lock = write_lock(tmp_path / "models.lock", ("config", url, None, "tofu"))
    with pytest.raises(UnpinnedDownloadError, match="not a commit id"):
        zoo.hf_file(
            "org/model",
            "config.json",
            "main",
            endpoint=endpoint(server),
            lock=lock,
            cache=Cache(tmp_path / "cache"),
        )
    assert server.requests == []


def test_hf_file_branch_allowed_when_the_digest_is_pinned(server: Any, tmp_path: Path) -> None:
    url = zoo.hf_url("org/model", "config.json", "main", endpoint=endpoint(server))
    sha = hashlib.sha256(CONFIG).hexdigest()
    lock = write_lock(tmp_path / "models.lock", ("config", url, sha, "pinned"))
    path = zoo.hf_file(
        "org/model",
        "config.json",
        "main",
        endpoint=endpoint(server),
        lock=lock,
        cache=Cache(tmp_path / "cache"),
    )
    assert path.read_bytes() == CONFIG


def test_hf_file_cache_tampered_is_refetched(
    server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = zoo.hf_url("org/model", "model.bin", COMMIT, endpoint=endpoint(server))
    lock = write_lock(tmp_path / "models.lock", ("model", url, DATA_SHA, "pinned"))
    cache = Cache(tmp_path / "cache")
    zoo.hf_file("org/model", "model.bin", COMMIT, endpoint=endpoint(server), lock=lock, cache=cache)
    cache.path_for(DATA_SHA).write_bytes(b"tampered")
    with caplog.at_level(logging.WARNING):
        path = zoo.hf_file(
            "org/model", "model.bin", COMMIT, endpoint=endpoint(server), lock=lock, cache=cache
        )
    assert path.read_bytes() == DATA
    assert len(server.requests) == 2  # the tampered copy was dropped and fetched again


def test_hf_file_outside_policy_refused(server: Any, tmp_path: Path) -> None:
    url = zoo.hf_url("org/model", "model.bin", COMMIT, endpoint=endpoint(server))
    lock = write_lock(tmp_path / "models.lock", ("model", url, DATA_SHA, "pinned"))
    policy = Policy.from_toml('[sources]\nallow = ["https://huggingface.co/*"]\n', tmp_path)
    with pytest.raises(SourceNotAllowed):
        zoo.hf_file(
            "org/model",
            "model.bin",
            COMMIT,
            endpoint=endpoint(server),
            lock=lock,
            cache=Cache(tmp_path / "cache"),
            policy=policy,
        )
    assert server.requests == []


def test_wrong_pin_error_type() -> None:
    assert issubclass(PinMismatchError, IntegrityError)
