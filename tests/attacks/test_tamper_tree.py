"""Tampering with the shape of a sealed model: symlinks, special files, swapped inodes.

Anything that is not a regular file inside the model root is refused before a byte
of it is read; a file swapped between listing and hashing is reported unreadable.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

import modelseal
from _helpers import assert_cli_refused, refused, verify_in_subprocess
from conftest import KeyPair
from modelseal import IntegrityError, ModelMismatchError, UnsafeModelError
from modelseal._internal.tree import walk
from modelseal.hashing import hash_entries
from modelseal.manifest import Serialization


def label(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def assert_unsafe(exc: IntegrityError, detail: str) -> None:
    """One `unsafe` finding whose detail names the offending path and why."""
    assert exc.failure is not None
    assert [(f.kind, f.detail) for f in exc.failure.findings] == [("unsafe", detail)]


# --- symlinks ----------------------------------------------------------------------------


def test_file_replaced_by_symlink_to_identical_copy_is_refused(
    model: Path, keypair: KeyPair
) -> None:
    modelseal.seal(model, key=keypair.private)
    shutil.copy(model / "config.json", model / "weights" / "config.copy")
    (model / "config.json").unlink()
    (model / "config.json").symlink_to("weights/config.copy")

    exc = refused(model, keypair, UnsafeModelError)
    assert_unsafe(exc, "config.json is a symlink (symlinks are not allowed)")


@pytest.mark.parametrize("allow_symlinks", [False, True])
def test_directory_replaced_by_symlink_is_refused(
    model: Path, keypair: KeyPair, tmp_path: Path, allow_symlinks: bool
) -> None:
    modelseal.seal(model, key=keypair.private)  # sealed without allow_symlinks
    shutil.move(model / "weights", tmp_path / "weights-elsewhere")
    (model / "weights").symlink_to(tmp_path / "weights-elsewhere")

    # Asking for symlinks at verify time does not help: the seal did not allow them.
    exc = refused(model, keypair, UnsafeModelError, allow_symlinks=allow_symlinks)
    assert_unsafe(exc, "weights is a symlink (symlinks are not allowed)")


def test_single_file_model_replaced_by_symlink_is_refused(
    single_file: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    modelseal.seal(single_file, key=keypair.private)
    shutil.move(single_file, tmp_path / "moved.bin")
    single_file.symlink_to(tmp_path / "moved.bin")

    exc = refused(single_file, keypair, UnsafeModelError)
    assert_unsafe(exc, f"the model path {single_file} is a symlink (not allowed)")


def test_symlink_out_of_the_root_cannot_be_sealed(
    model: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text("outside\n")
    (model / "leak.txt").symlink_to(tmp_path / "secret.txt")

    leaves = r"leak\.txt is a symlink that leaves the model root"
    with pytest.raises(UnsafeModelError, match=leaves):
        modelseal.seal(model, key=keypair.private, allow_symlinks=True)
    assert not (model / "model.sig").exists()


def _absolute(model: Path, outside: Path) -> None:
    (model / "config.json").symlink_to(outside)


def _relative(model: Path, outside: Path) -> None:
    (model / "config.json").symlink_to(os.path.relpath(outside, model))


def _chain(model: Path, outside: Path) -> None:
    # config.json -> weights/hop (inside the root) -> the outside copy
    (model / "weights" / "hop").symlink_to(outside)
    (model / "config.json").symlink_to("weights/hop")


@pytest.mark.parametrize("make_link", [_absolute, _relative, _chain], ids=lambda f: f.__name__)
def test_symlink_out_of_the_root_is_refused_even_when_allowed(
    model: Path, keypair: KeyPair, tmp_path: Path, make_link: Callable[[Path, Path], None]
) -> None:
    modelseal.seal(model, key=keypair.private, allow_symlinks=True)
    outside = tmp_path / "config-copy.json"
    shutil.copy(model / "config.json", outside)  # identical bytes, outside the root
    (model / "config.json").unlink()
    make_link(model, outside)

    exc = refused(model, keypair, UnsafeModelError, allow_symlinks=True)
    assert_unsafe(exc, "config.json is a symlink that leaves the model root")


def test_inside_symlink_sealed_with_allow_symlinks_verifies(model: Path, keypair: KeyPair) -> None:
    (model / "weights" / "latest.bin").symlink_to("layer1.bin")
    modelseal.seal(model, key=keypair.private, allow_symlinks=True)

    result = modelseal.verify(model, public_keys=[keypair.public], allow_symlinks=True)
    assert result.files == 5

    # The same seal is refused when the verifier does not opt in to symlinks.
    exc = refused(model, keypair, UnsafeModelError)
    assert_unsafe(exc, "weights/latest.bin is a symlink (symlinks are not allowed)")


def test_inside_symlink_retargeted_is_refused(model: Path, keypair: KeyPair) -> None:
    (model / "weights" / "latest.bin").symlink_to("layer1.bin")
    modelseal.seal(model, key=keypair.private, allow_symlinks=True)
    (model / "weights" / "latest.bin").unlink()
    (model / "weights" / "latest.bin").symlink_to("layer0.bin")

    exc = refused(model, keypair, ModelMismatchError, allow_symlinks=True)
    assert exc.failure is not None
    assert [(f.kind, f.name) for f in exc.failure.findings] == [("changed", "weights/latest.bin")]
    finding = exc.failure.findings[0]
    assert finding.expected == label((model / "weights" / "layer1.bin").read_bytes())
    assert finding.actual == label((model / "weights" / "layer0.bin").read_bytes())


# --- special files -----------------------------------------------------------------------


def test_file_replaced_by_directory_is_refused(model: Path, keypair: KeyPair) -> None:
    modelseal.seal(model, key=keypair.private)
    original = (model / "config.json").read_bytes()
    (model / "config.json").unlink()
    (model / "config.json").mkdir()

    exc = refused(model, keypair, ModelMismatchError)
    assert exc.failure is not None
    assert [(f.kind, f.name, f.expected) for f in exc.failure.findings] == [
        ("missing", "config.json", label(original))
    ]


def test_file_replaced_by_fifo_is_refused_without_hanging(model: Path, keypair: KeyPair) -> None:
    modelseal.seal(model, key=keypair.private)
    (model / "config.json").unlink()
    os.mkfifo(model / "config.json")  # nobody will ever write to it

    assert_cli_refused(
        verify_in_subprocess(model, keypair), "config.json is a FIFO, not a regular file"
    )


def test_file_replaced_by_socket_is_refused(
    model: Path, keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    modelseal.seal(model, key=keypair.private)
    (model / "config.json").unlink()
    monkeypatch.chdir(model)  # bind by relative path: AF_UNIX paths are limited to ~100 bytes
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind("config.json")
        exc = refused(model, keypair, UnsafeModelError)
    assert_unsafe(exc, "config.json is a socket, not a regular file")


def test_file_replaced_by_device_is_refused(model: Path, keypair: KeyPair) -> None:
    modelseal.seal(model, key=keypair.private)
    (model / "config.json").unlink()
    try:
        # The same device as /dev/zero: reading it would never end.
        os.mknod(model / "config.json", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    except (PermissionError, AttributeError):
        pytest.skip("creating a device node is not permitted here")

    exc = refused(model, keypair, UnsafeModelError)
    assert_unsafe(exc, "config.json is a device, not a regular file")


# --- swapped between listing and hashing ---------------------------------------------------


def _identical_copy(path: Path) -> None:
    copy = path.with_name(path.name + ".new")
    shutil.copy(path, copy)
    os.replace(copy, path)  # same bytes, another inode


def _other_file(path: Path) -> None:
    other = path.with_name(path.name + ".new")
    other.write_bytes(b"not the file that was listed")
    os.replace(other, path)


def _symlink(path: Path) -> None:
    shutil.copy(path, path.with_name("copy.bin"))
    path.unlink()
    path.symlink_to("copy.bin")


def _truncated_in_place(path: Path) -> None:
    os.truncate(path, 10)  # the same inode, a different size


@pytest.mark.parametrize(
    ("swap", "reason"),
    [
        (_identical_copy, "replaced since the model was listed"),
        (_other_file, "replaced since the model was listed"),
        (_truncated_in_place, "size changed since the model was listed"),
        (_symlink, None),  # O_NOFOLLOW refuses it; the reason is the OS's (ELOOP)
    ],
    ids=["identical-copy", "other-file", "truncated-in-place", "symlink"],
)
def test_file_swapped_between_listing_and_hashing_is_unreadable(
    model: Path, swap: Callable[[Path], None], reason: str | None
) -> None:
    serialization = Serialization()
    entries = walk(model, allow_symlinks=False)
    assert [e.name for e in entries] == [
        "config.json",
        "tokenizer.txt",
        "weights/layer0.bin",
        "weights/layer1.bin",
    ]
    swap(model / "weights" / "layer0.bin")

    result = hash_entries(entries, serialization)
    assert set(result.unreadable) == {"weights/layer0.bin"}
    if reason is not None:
        assert result.unreadable["weights/layer0.bin"] == reason
    assert [r.name for r in result.resources if r.name == "weights/layer0.bin"] == []


def test_file_swapped_for_fifo_between_listing_and_hashing_is_unreadable(model: Path) -> None:
    entries = walk(model, allow_symlinks=False)
    target = model / "weights" / "layer0.bin"
    target.unlink()
    os.mkfifo(target)
    # Hold the FIFO open read-write, so that even a regression that opens it blocking
    # could not hang this test.
    keep_open = os.open(target, os.O_RDWR | os.O_NONBLOCK)
    try:
        result = hash_entries(entries, Serialization())
    finally:
        os.close(keep_open)
    assert result.unreadable == {"weights/layer0.bin": "replaced since the model was listed"}


def test_unchanged_tree_hashes_completely(model: Path) -> None:
    entries = walk(model, allow_symlinks=False)
    result = hash_entries(entries, Serialization())
    assert result.unreadable == {}
    assert {r.name: r.label() for r in result.resources} == {
        e.name: label(Path(e.path).read_bytes()) for e in entries
    }
