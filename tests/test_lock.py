"""models.lock: strict parsing, deterministic writing, lookups, offline verification."""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import httpserver
from httpserver import Server
from modelseal.cache import Cache, model_digest
from modelseal.errors import IntegrityError, ModelMismatchError, UsageError
from modelseal.lock import (
    MAX_LOCK_FILE,
    Lock,
    LockedModel,
    LockError,
    default_name,
    ensure,
    exclusive,
    is_archive_url,
    resolve,
    save_entries,
    sync,
    updated_lock,
    verify_lock,
)
from modelseal.policy import Policy

https_server = httpserver.https_server  # the loopback HTTPS fixture

HEX_A = "a" * 64
HEX_B = "b" * 64
WHEN = datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)

GOOD = f"""
version = 1

[[models]]
name = "zeta"
urls = ["https://models.example.com/zoo/zeta.params"]
sha256 = "{HEX_A}"

[[models]]
name = "alpha"
urls = ["https://models.example.com/zoo/alpha.tar.gz", "https://mirror.example.org/alpha.tar.gz"]
sha256 = "{HEX_B.upper()}"
size = 1024
trust = "pinned"
fetched_at = 2026-11-22T10:00:00Z
root_digest = "sha256:{HEX_A}"
files = ["config.json", "weights/a.bin"]
signer = "sha256:{HEX_B}"

[[models]]
name = "later"
urls = ["https://models.example.com/zoo/later.bin"]
trust = "tofu"
"""


def test_round_trip_sorted_and_stable(tmp_path: Path) -> None:
    lock = Lock.loads(GOOD)
    assert [m.name for m in lock.models] == ["alpha", "later", "zeta"]
    alpha = lock.models[0]
    assert alpha.sha256 == HEX_B  # normalised to lowercase
    assert alpha.fetched_at == WHEN
    assert alpha.files == ("config.json", "weights/a.bin")
    assert lock.models[1].sha256 is None
    assert lock.models[1].trust == "tofu"
    path = lock.save(tmp_path / "models.lock")
    text = path.read_text()
    assert text.startswith("# models.lock: written by `modelseal lock`")
    again = Lock.load(path)
    assert again.models == lock.models
    assert again.path == path
    again.save()
    assert path.read_text() == text  # deterministic
    # keys in a fixed order, whatever order they were written in by hand
    block = text[text.index('name = "alpha"') :]
    order = [block.index(k + " =") for k in ("name", "urls", "sha256", "size", "trust")]
    assert order == sorted(order)


def test_find_and_pin_for_normalise_urls() -> None:
    lock = Lock.loads(GOOD)
    assert lock.find("zeta") is lock.models[2]
    assert lock.find("https://mirror.example.org/alpha.tar.gz") is lock.models[0]
    assert lock.pin_for("HTTPS://Models.Example.COM:443/zoo/zeta.params") is lock.models[2]
    assert lock.pin_for("https://models.example.com/zoo/ZETA.params") is None
    assert lock.find("nothing") is None


def test_add_replaces_same_name_and_keeps_order() -> None:
    lock = Lock.loads(GOOD)
    replaced = lock.add(LockedModel("zeta", ("https://models.example.com/zoo/zeta2",), HEX_B))
    assert [m.name for m in replaced.models] == ["alpha", "later", "zeta"]
    zeta = replaced.find("zeta")
    assert zeta is not None
    assert zeta.sha256 == HEX_B
    original = lock.find("zeta")
    assert original is not None
    assert original.sha256 == HEX_A  # the lock itself is unchanged
    added = lock.add(LockedModel("beta", ("https://b.example/x",), HEX_A))
    assert [m.name for m in added.models] == ["alpha", "beta", "later", "zeta"]
    with pytest.raises(LockError, match="also a source"):
        lock.add(LockedModel("other", ("https://models.example.com/zoo/zeta.params",), HEX_A))


def test_empty_lock_is_valid() -> None:
    assert Lock.loads("version = 1\n").models == ()


def _entry(extra: str, *, name: str = "m", url: str = "https://h.example/m.bin") -> str:
    return f'version = 1\n[[models]]\nname = "{name}"\nurls = ["{url}"]\n{extra}\n'


MALFORMED = {
    "not toml": ("version = = 1", "not valid TOML"),
    "no version": ('[[models]]\nname = "m"\nurls = ["https://h/x"]\n', "'version'"),
    "version 2": ("version = 2\n", "must be 1"),
    "unknown top key": ("version = 1\nextra = true\n", "unknown key 'extra'"),
    "models not array": ("version = 1\nmodels = 3\n", "array of tables"),
    "unknown entry key": (_entry(f'sha256 = "{HEX_A}"\nsha1 = "x"'), "unknown key 'sha1'"),
    "missing urls": ('version = 1\n[[models]]\nname = "m"\nsha256 = "x"\n', "'urls'"),
    "missing name": ('version = 1\n[[models]]\nurls = ["https://h/x"]\n', "'name'"),
    "short digest": (_entry('sha256 = "abc"'), "64 hex digits"),
    "non-hex digest": (_entry(f'sha256 = "{"g" * 64}"'), "64 hex digits"),
    "md5 digest": (_entry('sha256 = "d41d8cd98f00b204e9800998ecf8427e"'), "64 hex digits"),
    "pinned without digest": (_entry(""), "sha256 is required"),
    "bad trust": (_entry(f'sha256 = "{HEX_A}"\ntrust = "yolo"'), "trust must be one of"),
    "plain http": (_entry(f'sha256 = "{HEX_A}"', url="http://h.example/m"), "must be https"),
    "ftp": (_entry(f'sha256 = "{HEX_A}"', url="ftp://h.example/m"), "must be https"),
    "credentials": (_entry(f'sha256 = "{HEX_A}"', url="https://u:p@h.example/m"), "credentials"),
    "fragment": (_entry(f'sha256 = "{HEX_A}"', url="https://h.example/m#x"), "fragment"),
    "no host": (_entry(f'sha256 = "{HEX_A}"', url="https:///m"), "no host"),
    "empty urls": ('version = 1\n[[models]]\nname = "m"\nurls = []\n', "at least one URL"),
    "urls not strings": ('version = 1\n[[models]]\nname = "m"\nurls = [1]\n', "array of strings"),
    "same url twice": (
        'version = 1\n[[models]]\nname = "m"\nurls = ["https://h/x", "HTTPS://H/x"]\n'
        f'sha256 = "{HEX_A}"\n',
        "same URL twice",
    ),
    "negative size": (_entry(f'sha256 = "{HEX_A}"\nsize = -1'), "size must be"),
    "bool size": (_entry(f'sha256 = "{HEX_A}"\nsize = true'), "size must be"),
    "naive fetched_at": (
        _entry(f'sha256 = "{HEX_A}"\nfetched_at = 2026-01-01T00:00:00'),
        "timezone-aware",
    ),
    "string fetched_at": (_entry(f'sha256 = "{HEX_A}"\nfetched_at = "today"'), "date-time"),
    "bad root digest": (_entry(f'sha256 = "{HEX_A}"\nroot_digest = "{HEX_A}"'), "root_digest"),
    "files without root": (_entry(f'sha256 = "{HEX_A}"\nfiles = ["a"]'), "only for archives"),
    "file escapes": (
        _entry(f'sha256 = "{HEX_A}"\nroot_digest = "sha256:{HEX_A}"\nfiles = ["../x"]'),
        "files: '../x'",
    ),
    "bad signer": (_entry(f'sha256 = "{HEX_A}"\nsigner = "alice"'), "signer must be"),
    "control char name": (_entry(f'sha256 = "{HEX_A}"', name="a\\u0007b"), "name must be"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_lock_is_refused_naming_the_entry(case: str) -> None:
    text, expected = MALFORMED[case]
    with pytest.raises(LockError) as caught:
        Lock.loads(text, "models.lock")
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith("lock models.lock")
    if text.startswith("version = 1\n[[models]]") and "name =" in text:
        assert "models[0]" in message


def test_duplicate_names_and_urls_are_refused() -> None:
    one = f'[[models]]\nname = "m"\nurls = ["https://h/a"]\nsha256 = "{HEX_A}"\n'
    two = f'[[models]]\nname = "m"\nurls = ["https://h/b"]\nsha256 = "{HEX_B}"\n'
    with pytest.raises(LockError, match=r"models\[1\] \('m'\): the name 'm' is already used"):
        Lock.loads("version = 1\n" + one + two)
    three = f'[[models]]\nname = "n"\nurls = ["https://h/a"]\nsha256 = "{HEX_B}"\n'
    with pytest.raises(LockError, match=r"models\[1\].*already a source of models\[0\]"):
        Lock.loads("version = 1\n" + one + three)


def test_oversized_and_non_utf8_locks_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.lock"
    big.write_bytes(b"#" * (MAX_LOCK_FILE + 1))
    with pytest.raises(LockError, match="larger than"):
        Lock.load(big)
    binary = tmp_path / "bin.lock"
    binary.write_bytes(b"version = 1\n\xff\xfe")
    with pytest.raises(LockError, match="UTF-8"):
        Lock.load(binary)
    with pytest.raises(LockError, match="not found"):
        Lock.load(tmp_path / "absent.lock")


def test_loopback_http_is_allowed_for_tests() -> None:
    lock = Lock.loads(_entry(f'sha256 = "{HEX_A}"', url="http://127.0.0.1:8080/m"))
    assert lock.models[0].urls == ("http://127.0.0.1:8080/m",)


def test_names_from_urls() -> None:
    assert (
        default_name("https://h/zoo/resnet50_v1b-0ecdba34.params") == "resnet50_v1b-0ecdba34.params"
    )
    assert default_name("https://h/zoo/bert.tar.gz?x=1") == "bert"
    assert is_archive_url("https://h/zoo/bert.TGZ")
    assert not is_archive_url("https://h/zoo/bert.params")


def test_verify_lock_offline(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    good, other = b"good weights", b"other weights"
    source = tmp_path / "f"
    source.write_bytes(good)
    cache.put(source, hashlib.sha256(good).hexdigest())
    source.write_bytes(other)
    stored = cache.put(source, hashlib.sha256(other).hexdigest())
    stored.write_bytes(b"tampered")  # the cached copy of "tampered" no longer matches
    lock = Lock(
        (
            LockedModel("good", ("https://h.example/good",), hashlib.sha256(good).hexdigest()),
            LockedModel("bad", ("https://h.example/bad",), hashlib.sha256(other).hexdigest()),
            LockedModel("absent", ("https://h.example/absent",), HEX_A),
            LockedModel("new", ("https://h.example/new",), trust="tofu"),
            LockedModel(
                "sized", ("https://h.example/sized",), hashlib.sha256(good).hexdigest(), size=3
            ),
        )
    )
    checks = {c.name: c for c in verify_lock(lock, cache=cache)}
    assert checks["good"].status == "ok"
    assert checks["bad"].status == "mismatch"
    assert checks["bad"].expected == "sha256:" + hashlib.sha256(other).hexdigest()
    assert checks["bad"].actual == "sha256:" + hashlib.sha256(b"tampered").hexdigest()
    assert stored.exists()  # verify changes nothing
    assert checks["absent"].status == "missing"
    assert checks["new"].status == "refused"
    assert checks["sized"].status == "mismatch"
    policy = Policy.from_toml('[sources]\nallow = ["https://other.example/*"]\n', tmp_path)
    refused = verify_lock(lock, cache=cache, policy=policy)
    assert {c.status for c in refused} == {"refused"}


# -- ensure / sync against a real loopback HTTPS server -------------------------------------

WEIGHTS = bytes(range(256)) * 400
WEIGHTS_HEX = hashlib.sha256(WEIGHTS).hexdigest()
FAST: dict[str, Any] = {"retries": 0, "timeout": 10.0}


def _pinned(*urls: str, sha256: str = WEIGHTS_HEX, name: str = "m") -> LockedModel:
    return LockedModel(name, urls, sha256)


def _cache_files(cache: Cache) -> list[Path]:
    return sorted(p for p in cache.root.rglob("*") if p.is_file())


def test_ensure_downloads_then_serves_verified_cache(https_server: Server, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    url = https_server.add("/m.bin", WEIGHTS)
    path = ensure(_pinned(url), cache=cache, **FAST)
    assert path == cache.path_for(WEIGHTS_HEX)
    assert path.read_bytes() == WEIGHTS
    assert ensure(_pinned(url), cache=cache, **FAST) == path
    assert https_server.count("/m.bin") == 1  # the second use re-hashed the cached copy
    assert _cache_files(cache) == [path]


def test_mirrors_are_tried_in_order(https_server: Server, tmp_path: Path) -> None:
    down = https_server.add("/down.bin", status=503)
    wrong = https_server.add("/wrong.bin", b"not the weights")
    good = https_server.add("/good.bin", WEIGHTS)
    never = https_server.add("/never.bin", WEIGHTS)
    got = resolve(_pinned(down, wrong, good, never), cache=Cache(tmp_path / "c"), **FAST)
    assert got.source == good
    assert [r.path for r in https_server.requests if r.method == "GET"] == [
        "/down.bin",
        "/wrong.bin",
        "/good.bin",
    ]
    assert got.path.read_bytes() == WEIGHTS


def test_every_mirror_with_wrong_bytes_is_refused_and_caches_nothing(
    https_server: Server, tmp_path: Path
) -> None:
    from modelseal.fetch import DigestMismatch

    cache = Cache(tmp_path / "cache")
    one = https_server.add("/one.bin", b"evil one")
    two = https_server.add("/two.bin", b"evil two")
    with pytest.raises(DigestMismatch):
        ensure(_pinned(one, two), cache=cache, **FAST)
    assert _cache_files(cache) == []


def test_tampered_cache_is_refetched(https_server: Server, tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    url = https_server.add("/m.bin", WEIGHTS)
    path = ensure(_pinned(url), cache=cache, **FAST)
    path.write_bytes(b"backdoored" + WEIGHTS[10:])
    again = ensure(_pinned(url), cache=cache, **FAST)
    assert again.read_bytes() == WEIGHTS
    assert https_server.count("/m.bin") == 2


def test_tampered_cache_with_sources_down_is_refused_not_used(
    https_server: Server, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "cache")
    url = https_server.add("/m.bin", WEIGHTS)
    path = ensure(_pinned(url), cache=cache, **FAST)
    path.write_bytes(b"backdoored")
    https_server.add("/m.bin", status=503)
    with pytest.raises(UsageError):  # DownloadError: nothing good to use
        ensure(_pinned(url), cache=cache, **FAST)
    assert not path.exists()


def test_sources_down_falls_back_to_verified_cache_with_warning(
    https_server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(tmp_path / "cache")
    url = https_server.add("/m.bin", WEIGHTS)
    mirror = https_server.add("/mirror.bin", WEIGHTS)
    ensure(_pinned(url, mirror), cache=cache, **FAST)
    https_server.add("/m.bin", status=503)
    https_server.add("/mirror.bin", status=404)
    with caplog.at_level(logging.WARNING, logger="modelseal.fetch"):
        got = resolve(_pinned(url, mirror), cache=cache, refresh=True, **FAST)
    assert got.fallback
    assert got.path.read_bytes() == WEIGHTS
    assert len(got.failures) == 2
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning
    assert warning[0].name == "modelseal.fetch"
    assert url in warning[0].getMessage()
    assert mirror in warning[0].getMessage()


def test_tofu_entry_records_its_digest_on_first_fetch(
    https_server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = Cache(tmp_path / "cache")
    url = https_server.add("/m.bin", WEIGHTS)
    lock = Lock((LockedModel("m", (url,), trust="tofu"),))
    with caplog.at_level(logging.WARNING, logger="modelseal.fetch"):
        results = sync(lock, cache=cache, **FAST)
    assert [r.status for r in results] == ["recorded"]
    assert "trusting on first use" in caplog.text
    recorded = updated_lock(lock, results).models[0]
    assert (recorded.sha256, recorded.size, recorded.trust) == (WEIGHTS_HEX, len(WEIGHTS), "tofu")
    assert recorded.fetched_at is not None
    # from now on it is a pin: different bytes are refused
    https_server.add("/m.bin", b"changed upstream")
    cache.path_for(WEIGHTS_HEX).unlink()
    again = sync(updated_lock(lock, results), cache=cache, **FAST)
    assert again[0].status == "failed"
    assert isinstance(again[0].error, IntegrityError)


def test_sync_with_hand_edited_wrong_digest_refuses(https_server: Server, tmp_path: Path) -> None:
    from modelseal.fetch import DigestMismatch

    cache = Cache(tmp_path / "cache")
    good = https_server.add("/good.bin", WEIGHTS)
    bad = https_server.add("/bad.bin", b"whatever the server says")
    lock = Lock((_pinned(good, name="good"), _pinned(bad, sha256=HEX_A, name="bad")))
    results = {r.name: r for r in sync(lock, cache=cache, **FAST)}
    assert results["good"].status == "fetched"
    assert results["bad"].status == "failed"
    assert isinstance(results["bad"].error, DigestMismatch)
    assert _cache_files(cache) == [cache.path_for(WEIGHTS_HEX)]
    assert {c.name: c.status for c in verify_lock(lock, cache=cache)} == {
        "bad": "missing",
        "good": "ok",
    }


def test_sync_out_copies_verified_models(https_server: Server, tmp_path: Path) -> None:
    url = https_server.add("/m.bin", WEIGHTS)
    lock = Lock((_pinned(url, name="weights.bin"),))
    results = sync(lock, cache=Cache(tmp_path / "cache"), out=tmp_path / "out", **FAST)
    assert results[0].status == "fetched"
    assert (tmp_path / "out" / "weights.bin").read_bytes() == WEIGHTS


def test_policy_allowlist_is_respected(https_server: Server, tmp_path: Path) -> None:
    from modelseal.fetch import SourceNotAllowed

    cache = Cache(tmp_path / "cache")
    outside = https_server.add("/outside/m.bin", WEIGHTS)
    inside = https_server.add("/inside/m.bin", WEIGHTS)
    policy = Policy.from_toml(f'[sources]\nallow = ["{https_server.url("/inside/*")}"]\n', tmp_path)
    with pytest.raises(SourceNotAllowed):
        ensure(_pinned(outside), cache=cache, policy=policy, **FAST)
    assert https_server.count("/outside/m.bin") == 0
    got = resolve(_pinned(outside, inside), cache=cache, policy=policy, **FAST)
    assert got.source == inside
    assert https_server.count("/outside/m.bin") == 0
    # cached or not, an entry the policy allows no source of is refused
    with pytest.raises(SourceNotAllowed):
        ensure(_pinned(outside), cache=cache, policy=policy, **FAST)
    results = sync(Lock((_pinned(outside),)), cache=cache, policy=policy, **FAST)
    assert isinstance(results[0].error, SourceNotAllowed)


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


MODEL_FILES = {"config.json": b'{"layers": 2}\n', "weights/a.bin": WEIGHTS}


def test_archive_is_extracted_and_checked_on_every_use(
    https_server: Server, tmp_path: Path
) -> None:
    data = _tar_gz(MODEL_FILES)
    url = https_server.add("/m.tar.gz", data)
    cache = Cache(tmp_path / "cache")
    first = resolve(
        LockedModel("m", (url,), hashlib.sha256(data).hexdigest()),
        cache=cache,
        extract=True,
        **FAST,
    )
    model = first.model
    assert model.root_digest is not None
    assert set(model.files) == set(MODEL_FILES)
    assert first.path == cache.model_path_for(model.root_digest)
    assert model_digest(first.path)[0] == model.root_digest.removeprefix("sha256:")
    assert ensure(model, cache=cache, **FAST) == first.path
    (first.path / "weights" / "a.bin").write_bytes(b"backdoor")
    assert verify_lock(Lock((model,)), cache=cache)[0].status == "mismatch"
    again = ensure(model, cache=cache, **FAST)
    assert (again / "weights" / "a.bin").read_bytes() == WEIGHTS
    assert https_server.count("/m.tar.gz") == 1  # re-extracted from the verified archive


def test_archive_with_wrong_root_digest_is_refused(https_server: Server, tmp_path: Path) -> None:
    data = _tar_gz(MODEL_FILES)
    url = https_server.add("/m.tar.gz", data)
    cache = Cache(tmp_path / "cache")
    entry = LockedModel(
        "m", (url,), hashlib.sha256(data).hexdigest(), root_digest="sha256:" + HEX_A
    )
    with pytest.raises(ModelMismatchError):
        ensure(entry, cache=cache, **FAST)
    assert not (cache.root / "models").exists() or not any((cache.root / "models").iterdir())


def test_saving_keeps_what_another_writer_recorded_meanwhile(tmp_path: Path) -> None:
    """A process that loaded the lock before another one recorded a digest must not write its
    stale copy back over it: entries are merged into the file as it is now, under a lock."""
    path = tmp_path / "models.lock"
    Lock.loads(GOOD).save(path)
    stale = Lock.load(path)
    save_entries(path, [LockedModel("beta", ("https://b.example/x",), HEX_A)])  # the other one
    save_entries(path, [stale.models[0]])  # ours, from the stale copy
    assert [m.name for m in Lock.load(path).models] == ["alpha", "beta", "later", "zeta"]


def test_exclusive_holds_an_advisory_lock_on_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "models.lock"
    probe = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with exclusive(path), pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on leaving the block
    finally:
        os.close(probe)
