"""Tampering with the files of a sealed model: their bytes, their names, their number.

Every case seals the fixture model with the trusted key, changes one thing on disk,
and expects verification to refuse with the exact findings (kind, name, digests).
"""

from __future__ import annotations

import hashlib
import logging
import os
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest

import modelseal
from _helpers import assert_cli_refused, refused
from conftest import Cli, KeyPair
from modelseal import IntegrityError, ModelMismatchError, UnsafeModelError

FILES = ("config.json", "tokenizer.txt", "weights/layer0.bin", "weights/layer1.bin")
"""The fixture model's files, in manifest order."""


def label(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def root_label(model: Path, files: tuple[str, ...] = FILES) -> str:
    """The OMS root digest of `files` as they are on disk, computed independently."""
    hasher = hashlib.sha256()
    for name in files:
        hasher.update(hashlib.sha256((model / name).read_bytes()).digest())
    return "sha256:" + hasher.hexdigest()


def sealed(model: Path, keypair: KeyPair) -> dict[str, bytes]:
    """Seal `model` and return its files' original bytes."""
    modelseal.seal(model, key=keypair.private)
    return {name: (model / name).read_bytes() for name in FILES}


def findings(exc: IntegrityError) -> list[tuple[str, str | None, str | None, str | None]]:
    assert exc.failure is not None
    return [(f.kind, f.name, f.expected, f.actual) for f in exc.failure.findings]


# --- honest ------------------------------------------------------------------------------


def test_untouched_model_verifies(model: Path, keypair: KeyPair) -> None:
    sealed(model, keypair)
    result = modelseal.verify(model, public_keys=[keypair.public])
    assert result.files == 4
    assert result.root_digest == root_label(model)


def test_file_rewritten_with_identical_bytes_verifies(model: Path, keypair: KeyPair) -> None:
    original = sealed(model, keypair)
    target = model / "weights" / "layer0.bin"
    target.unlink()
    target.write_bytes(original["weights/layer0.bin"])  # a new inode, the same bytes
    assert modelseal.verify(model, public_keys=[keypair.public]).files == 4


# --- bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["weights/layer0.bin", "config.json"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_one_changed_byte_is_refused(model: Path, keypair: KeyPair, name: str, where: str) -> None:
    original = sealed(model, keypair)[name]
    offset = {"first": 0, "middle": len(original) // 2, "last": len(original) - 1}[where]
    tampered = bytearray(original)
    tampered[offset] ^= 0x01
    (model / name).write_bytes(tampered)

    exc = refused(model, keypair, ModelMismatchError)
    assert findings(exc) == [("changed", name, label(original), label(bytes(tampered)))]


RESIZES: dict[str, Callable[[bytes], bytes]] = {
    "truncated-by-one-byte": lambda data: data[:-1],
    "one-byte-appended": lambda data: data + b"\x00",
    "emptied": lambda data: b"",
}


@pytest.mark.parametrize("resize", RESIZES.values(), ids=list(RESIZES))
def test_resized_file_is_refused(
    model: Path, keypair: KeyPair, resize: Callable[[bytes], bytes]
) -> None:
    original = sealed(model, keypair)["weights/layer1.bin"]
    (model / "weights" / "layer1.bin").write_bytes(resize(original))

    exc = refused(model, keypair, ModelMismatchError)
    assert findings(exc) == [
        ("changed", "weights/layer1.bin", label(original), label(resize(original)))
    ]


def test_one_changed_byte_in_a_single_file_model_is_refused(
    single_file: Path, keypair: KeyPair
) -> None:
    modelseal.seal(single_file, key=keypair.private)
    original = single_file.read_bytes()
    tampered = original[:100] + bytes([original[100] ^ 0x80]) + original[101:]
    single_file.write_bytes(tampered)

    exc = refused(single_file, keypair, ModelMismatchError)
    assert findings(exc) == [("changed", ".", label(original), label(tampered))]


def test_changed_byte_is_refused_by_the_cli(model: Path, keypair: KeyPair, cli: Cli) -> None:
    original = sealed(model, keypair)["config.json"]
    (model / "config.json").write_bytes(original.replace(b"2", b"3"))

    result = cli("verify", model, "--public-key", keypair.public)
    assert_cli_refused(result, "changed    config.json  content differs")
    assert f"expected {label(original)}" in result.err


def test_refusal_emits_one_audit_event(
    model: Path, keypair: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    seal = modelseal.seal(model, key=keypair.private)
    (model / "config.json").write_text('{"layers": 3}\n')

    with caplog.at_level(logging.DEBUG, logger="modelseal.audit"):
        refused(model, keypair, ModelMismatchError)

    records = [r for r in caplog.records if r.name == "modelseal.audit"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    event = records[0].modelseal_event  # type: ignore[attr-defined]
    assert event["outcome"] == "failed"
    assert event["reasons"] == ["changed config.json: content differs"]
    assert event["expected_root"] == seal.root_digest
    assert event["actual_root"] == root_label(model)
    assert event["actual_root"] != event["expected_root"]


# --- which files -------------------------------------------------------------------------


def test_missing_file_is_refused(model: Path, keypair: KeyPair) -> None:
    original = sealed(model, keypair)
    (model / "tokenizer.txt").unlink()

    exc = refused(model, keypair, ModelMismatchError)
    assert findings(exc) == [("missing", "tokenizer.txt", label(original["tokenizer.txt"]), None)]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("extra.bin", b"payload"),
        (".hidden", b"import os; os.system('id')\n"),
        ("plugins/loader.py", b"print('hi')\n"),
        ("empty.txt", b""),
    ],
    ids=["plain", "dotfile", "new-subdirectory", "empty-file"],
)
def test_added_file_is_refused(model: Path, keypair: KeyPair, name: str, data: bytes) -> None:
    sealed(model, keypair)
    (model / name).parent.mkdir(exist_ok=True)
    (model / name).write_bytes(data)

    exc = refused(model, keypair, ModelMismatchError)
    assert findings(exc) == [("extra", name, None, label(data))]


def test_added_file_is_refused_by_the_cli(model: Path, keypair: KeyPair, cli: Cli) -> None:
    sealed(model, keypair)
    (model / ".hidden").write_bytes(b"x")

    result = cli("verify", model, "--public-key", keypair.public)
    assert_cli_refused(result, "extra      .hidden  file is not in the seal")


@pytest.mark.parametrize(
    "name",
    ["evil\nname.bin", "evil\\name.bin", "ctrl\x1bname.bin"],
    ids=["newline", "backslash", "escape"],
)
def test_added_file_with_an_unsafe_name_is_refused(
    model: Path, keypair: KeyPair, name: str
) -> None:
    sealed(model, keypair)
    (model / name).write_bytes(b"x")

    exc = refused(model, keypair, UnsafeModelError)
    assert [f.kind for f in exc.failure.findings] == ["unsafe"]  # type: ignore[union-attr]
    assert "unsafe file name" in exc.failure.findings[0].detail  # type: ignore[union-attr]


def test_added_file_with_a_non_utf8_name_is_refused(model: Path, keypair: KeyPair) -> None:
    sealed(model, keypair)
    with open(os.fsencode(model) + b"/weights/\xff\xfe.bin", "wb") as handle:
        handle.write(b"x")

    exc = refused(model, keypair, UnsafeModelError)
    assert exc.failure.findings[0].kind == "unsafe"  # type: ignore[union-attr]
    assert "not valid UTF-8" in exc.failure.findings[0].detail  # type: ignore[union-attr]


def test_renamed_file_is_refused(model: Path, keypair: KeyPair) -> None:
    original = sealed(model, keypair)["tokenizer.txt"]
    (model / "tokenizer.txt").rename(model / "vocab.txt")

    exc = refused(model, keypair, ModelMismatchError)
    assert findings(exc) == [
        ("missing", "tokenizer.txt", label(original), None),
        ("extra", "vocab.txt", None, label(original)),
    ]


def test_swapped_files_are_refused(model: Path, keypair: KeyPair) -> None:
    original = sealed(model, keypair)
    layer0, layer1 = original["weights/layer0.bin"], original["weights/layer1.bin"]
    (model / "weights" / "layer0.bin").write_bytes(layer1)
    (model / "weights" / "layer1.bin").write_bytes(layer0)

    exc = refused(model, keypair, ModelMismatchError)
    assert findings(exc) == [
        ("changed", "weights/layer0.bin", label(layer0), label(layer1)),
        ("changed", "weights/layer1.bin", label(layer1), label(layer0)),
    ]


def test_name_changed_only_in_case_is_refused(model: Path, keypair: KeyPair) -> None:
    original = sealed(model, keypair)["config.json"]
    (model / "config.json").rename(model / "Config.json")
    if (model / "config.json").exists():
        pytest.skip("case-insensitive file system")

    exc = refused(model, keypair, ModelMismatchError)
    assert findings(exc) == [
        ("extra", "Config.json", None, label(original)),
        ("missing", "config.json", label(original), None),
    ]


def test_name_changed_only_in_unicode_normalization_is_refused(
    model: Path, keypair: KeyPair
) -> None:
    nfc = unicodedata.normalize("NFC", "caf\u00e9.txt")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    (model / nfc).write_bytes(b"menu\n")
    sealed(model, keypair)
    (model / nfc).rename(model / nfd)
    if nfd not in os.listdir(model):
        pytest.skip("the file system normalizes Unicode names")

    exc = refused(model, keypair, ModelMismatchError)
    # NFD "cafe\u0301" sorts before NFC "caf\u00e9".
    assert findings(exc) == [
        ("extra", nfd, None, label(b"menu\n")),
        ("missing", nfc, label(b"menu\n"), None),
    ]
