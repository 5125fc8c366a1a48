"""open_verified: the bytes handed to a loader are the bytes that were verified."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import modelseal
from conftest import KeyPair
from modelseal.errors import ModelMismatchError, UsageError


@pytest.mark.parametrize("shard_size", [None, 1000])
def test_memory_mode_gives_the_verified_bytes(
    model: Path, keypair: KeyPair, shard_size: int | None
) -> None:
    modelseal.seal(model, key=keypair.private, shard_size=shard_size)
    with modelseal.open_verified(model, public_keys=[keypair.public]) as verified:
        assert verified.names == (
            "config.json",
            "tokenizer.txt",
            "weights/layer0.bin",
            "weights/layer1.bin",
        )
        for name in verified.names:
            assert verified.read(name) == (model / name).read_bytes()
        with verified.open("weights/layer0.bin") as handle:
            handle.seek(100)
            assert handle.read(10) == (model / "weights/layer0.bin").read_bytes()[100:110]
        assert bytes(verified.buffer("config.json")) == b'{"layers": 2}\n'
        assert verified.verification.signed
        with pytest.raises(UsageError, match="not a verified file"):
            verified.read("model.sig")
        with pytest.raises(UsageError, match="not a snapshot"):
            verified.file_path("config.json")


def test_single_file_memory_mode(single_file: Path, keypair: KeyPair) -> None:
    modelseal.seal(single_file, key=keypair.private)
    with modelseal.open_verified(single_file, public_keys=[keypair.public]) as verified:
        assert verified.names == (".",)
        assert verified.read() == single_file.read_bytes()


def test_snapshot_is_private_and_removed(model: Path, keypair: KeyPair) -> None:
    modelseal.seal(model, key=keypair.private)
    with modelseal.open_verified(model, public_keys=[keypair.public], snapshot=True) as verified:
        root = verified.path
        assert root is not None
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        copied = verified.file_path("weights/layer1.bin")
        assert stat.S_IMODE(copied.stat().st_mode) == 0o600
        assert copied.read_bytes() == (model / "weights/layer1.bin").read_bytes()
        assert not (root / "model.sig").exists()
        # The original can now change: the snapshot does not.
        (model / "weights/layer1.bin").write_bytes(b"swapped")
        assert verified.read("weights/layer1.bin") != b"swapped"
    assert not root.exists()


def test_single_file_snapshot_keeps_the_file_name(single_file: Path, keypair: KeyPair) -> None:
    modelseal.seal(single_file, key=keypair.private)
    with modelseal.open_verified(
        single_file, public_keys=[keypair.public], snapshot=True
    ) as verified:
        assert verified.path is not None
        assert verified.path.name == single_file.name
        assert verified.path.read_bytes() == single_file.read_bytes()


def test_failure_keeps_nothing(model: Path, keypair: KeyPair, tmp_path: Path) -> None:
    modelseal.seal(model, key=keypair.private)
    (model / "config.json").write_text("{}")
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    entered = False
    with (
        pytest.raises(ModelMismatchError),
        modelseal.open_verified(
            model, public_keys=[keypair.public], snapshot=True, snapshot_dir=snapshots
        ),
    ):
        entered = True
    assert not entered
    assert os.listdir(snapshots) == []


def test_extra_files_are_reported_but_never_kept(
    model: Path, keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelseal import loading

    modelseal.seal(model, key=keypair.private)
    (model / "planted.bin").write_bytes(b"x" * 5000)
    kept: list[str] = []
    original = loading._MemoryCapture.buffer

    def spy(self: loading._MemoryCapture, entry: object) -> memoryview:
        kept.append(entry.name)  # type: ignore[attr-defined]
        return original(self, entry)  # type: ignore[arg-type]

    monkeypatch.setattr(loading._MemoryCapture, "buffer", spy)
    with (
        pytest.raises(ModelMismatchError) as caught,
        modelseal.open_verified(model, public_keys=[keypair.public]),
    ):
        pass
    (finding,) = caught.value.failure.findings  # type: ignore[union-attr]
    assert (finding.kind, finding.name) == ("extra", "planted.bin")
    assert finding.actual is not None
    assert "planted.bin" not in kept
    assert len(kept) == 4


@pytest.mark.parametrize("snapshot", [False, True])
@pytest.mark.parametrize("shard_size", [None, 3000, 4096, 10_000])
@pytest.mark.parametrize("copy_range", [True, False])
def test_pipelined_capture_matches_the_plain_hash(
    tmp_path: Path,
    keypair: KeyPair,
    monkeypatch: pytest.MonkeyPatch,
    snapshot: bool,
    shard_size: int | None,
    copy_range: bool,
) -> None:
    """Small pipeline chunks force the copy-ahead thread, odd shard sizes force chunks that
    end on shard boundaries, and a failing copy_file_range forces the read/write fallback."""
    import errno

    from modelseal import hashing

    monkeypatch.setattr(hashing, "PIPELINE_CHUNK", 4096)
    if not copy_range:

        def unsupported(*args: object) -> int:
            raise OSError(errno.ENOSYS, "not here")

        monkeypatch.setattr(os, "copy_file_range", unsupported)
    data = os.urandom(50_001)
    model = tmp_path / "m"
    model.mkdir()
    (model / "w.bin").write_bytes(data)
    (model / "empty").write_bytes(b"")
    modelseal.seal(model, key=keypair.private, shard_size=shard_size)
    with modelseal.open_verified(
        model, public_keys=[keypair.public], snapshot=snapshot
    ) as verified:
        assert verified.read("w.bin") == data
        assert verified.read("empty") == b""
