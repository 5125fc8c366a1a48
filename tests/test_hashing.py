"""The hashing engine: digests agree with sha256sum, parallelism changes nothing."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from pathlib import Path

import pytest

from modelseal import hashing
from modelseal.errors import UnsafeModelError, UsageError
from modelseal.manifest import GIT_PATHS, Method, Serialization


def test_file_digests_agree_with_sha256sum(model: Path) -> None:
    manifest = hashing.hash_model(model)
    out = subprocess.run(
        ["sha256sum", *(r.name for r in manifest.resources)],
        cwd=model,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    expected = {line.split()[1]: line.split()[0] for line in out.splitlines()}
    assert {r.name: r.hexdigest for r in manifest.resources} == expected
    assert manifest.model_name == "model"


def test_single_file_model_has_one_resource_named_dot(single_file: Path) -> None:
    manifest = hashing.hash_model(single_file)
    assert [r.name for r in manifest.resources] == ["."]
    assert manifest.resources[0].digest == hashlib.sha256(single_file.read_bytes()).digest()
    assert manifest.model_name == single_file.name


@pytest.mark.parametrize("algorithm", ["sha384", "sha512", "blake3"])
def test_other_algorithms(model: Path, algorithm: str) -> None:
    manifest = hashing.hash_model(model, Serialization(hash_type=algorithm))
    data = (model / "config.json").read_bytes()
    if algorithm == "blake3":
        import blake3

        expected = blake3.blake3(data).digest()
    else:
        expected = hashlib.new(algorithm, data).digest()
    assert manifest.by_name()["config.json"].digest == expected


@pytest.mark.parametrize("shard_size", [997, 4096, 69_999, 70_000, 10**9])
def test_shards_tile_each_file(model: Path, shard_size: int) -> None:
    serialization = Serialization(method=Method.SHARDS, shard_size=shard_size)
    manifest = hashing.hash_model(model, serialization)
    data = (model / "weights" / "layer0.bin").read_bytes()
    shards = [r for r in manifest.resources if r.path == "weights/layer0.bin"]
    assert shards[0].start == 0
    assert shards[-1].end == len(data)
    for shard in shards:
        assert shard.name == f"weights/layer0.bin:{shard.start}:{shard.end}"
        assert shard.digest == hashlib.sha256(data[shard.start : shard.end]).digest()
        assert shard.algorithm == f"sha256-sharded-{shard_size}"
    manifest.check()


def test_empty_file_in_shards_mode(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "empty").write_bytes(b"")
    manifest = hashing.hash_model(tmp_path / "m", Serialization(method=Method.SHARDS, shard_size=8))
    assert [r.name for r in manifest.resources] == ["empty:0:0"]
    manifest.check()


def test_result_does_not_depend_on_worker_count(model: Path) -> None:
    for i in range(20):
        (model / f"extra{i}.bin").write_bytes(os.urandom(3000 + i))
    one = hashing.hash_model(model, workers=1)
    many = hashing.hash_model(model, workers=8)
    assert one == many


def test_buffers_larger_than_one_chunk(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = os.urandom(hashing.CHUNK_SIZE * 2 + 123)
    path.write_bytes(data)
    assert hashing.hash_model(path).resources[0].digest == hashlib.sha256(data).digest()


def test_git_metadata_and_ignored_paths_are_left_out(model: Path) -> None:
    (model / ".git").mkdir()
    (model / ".git" / "HEAD").write_text("ref\n")
    (model / ".gitignore").write_text("*.tmp\n")
    (model / "notes.md").write_text("x")
    serialization = Serialization(ignore_paths=(*GIT_PATHS, "notes.md"))
    names = [r.name for r in hashing.hash_model(model, serialization).resources]
    assert names == ["config.json", "tokenizer.txt", "weights/layer0.bin", "weights/layer1.bin"]


def test_progress_reports_every_byte(model: Path) -> None:
    class Counter:
        def __init__(self) -> None:
            self.total = -1
            self.done = 0
            self.lock = threading.Lock()

        def start(self, total_bytes: int) -> None:
            self.total = total_bytes

        def advance(self, nbytes: int) -> None:
            with self.lock:
                self.done += nbytes

    counter = Counter()
    hashing.hash_model(model, progress=counter)
    size = sum(p.stat().st_size for p in model.rglob("*") if p.is_file())
    assert counter.total == counter.done == size


def test_empty_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m" / "sub").mkdir(parents=True)
    with pytest.raises(UnsafeModelError, match="no files"):
        hashing.hash_model(tmp_path / "m")


def test_missing_model_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        hashing.hash_model(tmp_path / "absent")


def test_colliding_names_are_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.bin").write_bytes(b"1")
    (tmp_path / "m" / "A.bin").write_bytes(b"2")
    with pytest.raises(UnsafeModelError, match="collide"):
        hashing.hash_model(tmp_path / "m")


def test_blake3_missing_is_a_clear_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "blake3", None)
    with pytest.raises(UsageError, match=r"modelseal\[blake3\]"):
        hashing.new_hasher("blake3")


def test_a_file_that_grows_while_being_read_is_reported(tmp_path: Path) -> None:
    """The progress hook runs between reads: it appends to the file mid-hash, as an attacker
    racing the verifier would, and the engine must notice the size change."""
    path = tmp_path / "m" / "big.bin"
    path.parent.mkdir()
    path.write_bytes(os.urandom(hashing.CHUNK_SIZE * 3))

    class Appender:
        def start(self, total_bytes: int) -> None:
            pass

        def advance(self, nbytes: int) -> None:
            with path.open("ab") as handle:
                handle.write(b"payload")

    entries = hashing.list_model(path.parent, Serialization())
    result = hashing.hash_entries(entries, Serialization(), progress=Appender())
    assert result.unreadable == {"big.bin": "size changed while the file was being read"}
    assert result.resources == ()


@pytest.mark.parametrize("use_mmap", [True, False])
@pytest.mark.parametrize("shard_size", [None, 4097, 3 * 4096, hashing.MAP_WINDOW + 1])
def test_mapping_and_reading_give_the_same_digests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_mmap: bool, shard_size: int | None
) -> None:
    """Windows and shards that do not start on a page boundary are mapped correctly."""
    monkeypatch.setattr(hashing, "USE_MMAP", use_mmap)
    monkeypatch.setattr(hashing, "MAP_WINDOW", 1 << 20)
    data = os.urandom(hashing.MAP_WINDOW * 2 + 12345)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(data)
    (tmp_path / "m" / "empty").write_bytes(b"")
    method = Method.FILES if shard_size is None else Method.SHARDS
    manifest = hashing.hash_model(tmp_path / "m", Serialization(method, shard_size=shard_size))
    for resource in manifest.resources:
        start, end = resource.start or 0, resource.end
        expected = data[start:end] if resource.path == "w.bin" else b""
        assert resource.digest == hashlib.sha256(expected).digest(), resource.name
