"""TensorFlow SavedModel through modelseal: the same model as tf.saved_model.load, tampering
refused before TensorFlow sees a byte, and no window for a swapped variables file."""

from __future__ import annotations

import base64
import gc
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import modelseal
from conftest import KeyPair, make_keypair
from modelseal.errors import (
    IntegrityError,
    ModelMismatchError,
    SealError,
    SignatureError,
    UsageError,
)
from modelseal.integrations import tensorflow as mtf
from race import race

DATA = "variables/variables.data-00000-of-00001"
VOCAB = b"apple\nbanana\ncherry\n"
X = np.arange(8, dtype=np.float32).reshape(2, 4) / 7.0


class Tiny(tf.Module):  # type: ignore[misc]
    """A dense layer, and a vocabulary asset read both at load time and at call time."""

    def __init__(self, seed: int, vocab: Path) -> None:
        super().__init__()
        rng = tf.random.Generator.from_seed(seed)
        self.w = tf.Variable(rng.normal([4, 3]))
        self.b = tf.Variable(rng.normal([3]))
        self.asset = tf.saved_model.Asset(str(vocab))
        init = tf.lookup.TextFileInitializer(
            self.asset,
            tf.string,
            tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64,
            tf.lookup.TextFileIndex.LINE_NUMBER,
        )
        self.table = tf.lookup.StaticHashTable(init, -1)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def __call__(self, x: Any) -> Any:
        return tf.matmul(x, self.w) + self.b

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def lookup(self, words: Any) -> Any:
        return {"ids": self.table.lookup(words), "vocab": tf.io.read_file(self.asset.asset_path)}


def export(seed: int, directory: Path, vocab: Path, key: Path | None) -> Tiny:
    module = Tiny(seed, vocab)
    signatures = {"serving_default": module.__call__, "lookup": module.lookup}
    if key is None:
        tf.saved_model.save(module, str(directory), signatures=signatures)
    else:
        mtf.saved_model_save(module, directory, signatures=signatures, key=key)
    return module


# CRC32C forging: TensorFlow checks every tensor against a CRC32C kept in variables.index.
# A CRC is no defence against an attacker, who sets four bytes to keep it: the evil variables
# file below loads silently in plain TensorFlow, which makes the swap race a real attack.
_POLY = 0x82F63B78
_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)
_BY_TOP = {entry >> 24: index for index, entry in enumerate(_TABLE)}


def _register(data: bytes, reg: int = 0xFFFFFFFF) -> int:
    for byte in data:
        reg = (reg >> 8) ^ _TABLE[(reg ^ byte) & 0xFF]
    return reg


def crc32c(data: bytes) -> int:
    return _register(data) ^ 0xFFFFFFFF


def forge_crc(data: bytes, target: int) -> bytes:
    """`data` with its last four bytes set so that its CRC32C is `target`."""
    reg = _register(data[:-4])
    want = target ^ 0xFFFFFFFF
    indices = []
    for _ in range(4):
        index = _BY_TOP[want >> 24]
        indices.append(index)
        want = ((want ^ _TABLE[index]) << 8) & 0xFFFFFFFF
    tail = bytearray()
    for index in reversed(indices):
        tail.append((reg ^ index) & 0xFF)
        reg = (reg >> 8) ^ _TABLE[index]
    return data[:-4] + bytes(tail)


def evil_variables(honest: bytes, module: Tiny) -> bytes:
    """The honest variables file with the kernel negated, its CRC32C kept."""
    kernel = module.w.numpy().tobytes()
    offset = honest.index(kernel)
    evil = forge_crc((-module.w.numpy()).tobytes(), crc32c(kernel))
    return honest[:offset] + evil + honest[offset + len(kernel) :]


@pytest.fixture(scope="module")
def keypairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyPair, KeyPair]:
    directory = tmp_path_factory.mktemp("tf-keys")
    return make_keypair(directory, "trusted"), make_keypair(directory, "other")


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, keypairs: tuple[KeyPair, KeyPair]
) -> tuple[Path, Tiny]:
    """A sealed SavedModel (never modified: tests tamper with copies) and its module."""
    root = tmp_path_factory.mktemp("tf-model")
    vocab = root / "vocab.txt"
    vocab.write_bytes(VOCAB)
    module = export(1, root / "exported", vocab, keypairs[0].private)
    return root / "exported", module


@pytest.fixture
def model(tmp_path: Path, exported: tuple[Path, Tiny]) -> Path:
    return Path(shutil.copytree(exported[0], tmp_path / "model"))


@pytest.fixture
def trusted(keypairs: tuple[KeyPair, KeyPair]) -> Path:
    return keypairs[0].public


def outputs(loaded: Any) -> dict[str, Any]:
    looked_up = loaded.lookup(tf.constant(["banana", "durian"]))
    return {
        "call": loaded(tf.constant(X)).numpy(),
        "serving": loaded.signatures["serving_default"](x=tf.constant(X))["output_0"].numpy(),
        "ids": looked_up["ids"].numpy(),
        "vocab": looked_up["vocab"].numpy(),
    }


def snapshots() -> set[str]:
    return set(os.listdir(mtf._snapshot_parent()))


def test_save_seals_and_plain_tensorflow_ignores_the_seal(
    exported: tuple[Path, Tiny], trusted: Path
) -> None:
    directory, module = exported
    assert (directory / "model.sig").is_file()
    assert modelseal.verify(directory, public_keys=[trusted]).signed
    plain = tf.saved_model.load(str(directory))  # the seal inside does not disturb TensorFlow
    np.testing.assert_array_equal(plain(tf.constant(X)).numpy(), module(tf.constant(X)).numpy())


def test_loads_like_plain_tensorflow(
    model: Path, trusted: Path, exported: tuple[Path, Tiny]
) -> None:
    plain = outputs(tf.saved_model.load(str(model)))
    ours = outputs(mtf.saved_model_load(model, public_keys=trusted))
    tagged = outputs(mtf.saved_model_load(str(model), ["serve"], public_keys=[trusted]))
    for name, value in plain.items():
        np.testing.assert_array_equal(ours[name], value)
        np.testing.assert_array_equal(tagged[name], value)
    np.testing.assert_array_equal(ours["call"], exported[1](tf.constant(X)).numpy())
    assert ours["ids"].tolist() == [1, -1]
    assert ours["vocab"] == VOCAB


def _flip_byte(model: Path, keys: tuple[KeyPair, KeyPair]) -> dict[str, Any]:
    data = bytearray((model / DATA).read_bytes())
    data[len(data) // 2] ^= 0x01
    (model / DATA).write_bytes(data)
    return {}


def _remove_file(model: Path, keys: tuple[KeyPair, KeyPair]) -> dict[str, Any]:
    (model / "assets" / "vocab.txt").unlink()
    return {}


def _add_asset(model: Path, keys: tuple[KeyPair, KeyPair]) -> dict[str, Any]:
    (model / "assets" / "extra.txt").write_text("not sealed\n")
    return {}


def _other_key(model: Path, keys: tuple[KeyPair, KeyPair]) -> dict[str, Any]:
    modelseal.seal(model, key=keys[1].private)
    return {}


def _edit_seal(model: Path, keys: tuple[KeyPair, KeyPair]) -> dict[str, Any]:
    seal = json.loads((model / "model.sig").read_text())
    envelope = seal["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    resource = statement["predicate"]["resources"][0]
    resource["digest"] = ("0" if resource["digest"][0] != "0" else "1") + resource["digest"][1:]
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (model / "model.sig").write_text(json.dumps(seal))
    return {}


def _unsealed(model: Path, keys: tuple[KeyPair, KeyPair]) -> dict[str, Any]:
    (model / "model.sig").unlink()
    return {}


def _seal_elsewhere(model: Path, keys: tuple[KeyPair, KeyPair]) -> dict[str, Any]:
    # Sealed beside the directory by the trusted key, then a byte changes.
    outside = model.parent / "outside.sig"
    (model / "model.sig").unlink()
    modelseal.seal(model, key=keys[0].private, signature=outside)
    _flip_byte(model, keys)
    return {"signature": outside}


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        (_flip_byte, ModelMismatchError),
        (_remove_file, ModelMismatchError),
        (_add_asset, ModelMismatchError),
        (_other_key, SignatureError),
        (_edit_seal, SignatureError),
        (_unsealed, SealError),
        (_seal_elsewhere, ModelMismatchError),
    ],
    ids=[
        "one-byte",
        "missing-file",
        "extra-asset",
        "other-key",
        "edited-seal",
        "unsealed",
        "seal-outside",
    ],
)
def test_tampering_is_refused_and_nothing_loads(
    model: Path,
    keypairs: tuple[KeyPair, KeyPair],
    monkeypatch: pytest.MonkeyPatch,
    tamper: Callable[[Path, tuple[KeyPair, KeyPair]], dict[str, Any]],
    error: type[IntegrityError],
) -> None:
    extra = tamper(model, keypairs)
    loads: list[object] = []
    monkeypatch.setattr(tf.saved_model, "load", lambda *a, **k: loads.append(a))
    before = snapshots()
    with pytest.raises(error):
        mtf.saved_model_load(model, public_keys=[keypairs[0].public], **extra)
    assert loads == []
    assert snapshots() <= before


def test_unsigned_seal_needs_allow_unsigned(model: Path, trusted: Path) -> None:
    (model / "model.sig").unlink()
    modelseal.seal(model, unsigned=True)
    with pytest.raises(SignatureError):
        mtf.saved_model_load(model, public_keys=[trusted])
    loaded = mtf.saved_model_load(model, allow_unsigned=True)
    assert outputs(loaded)["ids"].tolist() == [1, -1]


def test_not_a_saved_model(tmp_path: Path, keypairs: tuple[KeyPair, KeyPair]) -> None:
    file = tmp_path / "model.pb"
    file.write_bytes(b"x")
    with pytest.raises(UsageError, match="is a directory"):
        mtf.saved_model_load(file, public_keys=[keypairs[0].public])
    directory = tmp_path / "other"
    directory.mkdir()
    (directory / "weights.bin").write_bytes(b"weights")
    modelseal.seal(directory, key=keypairs[0].private)
    before = snapshots()
    with pytest.raises(UsageError, match=r"no saved_model\.pb"):
        mtf.saved_model_load(directory, public_keys=[keypairs[0].public])
    assert snapshots() <= before
    with pytest.raises(UsageError, match="key="):
        mtf.saved_model_save(tf.Module(), tmp_path / "unsaved", key=None)  # type: ignore[arg-type]
    assert not (tmp_path / "unsaved").exists()


def test_snapshot_lives_as_long_as_its_functions(model: Path, trusted: Path) -> None:
    """TensorFlow reads assets at call time, from functions that outlive the loaded object."""
    loaded = mtf.saved_model_load(model, public_keys=[trusted])
    asset = Path(loaded.asset.asset_path.numpy().decode())
    snapshot = asset.parent.parent
    assert snapshot.parent == mtf._snapshot_parent()
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o700
    assert stat.S_IMODE(snapshot.parent.stat().st_mode) == 0o700
    assert not (snapshot / "model.sig").exists()

    lookup = loaded.signatures["lookup"]
    del loaded
    gc.collect()
    shutil.rmtree(model)  # nothing is read from the original any more
    result = lookup(words=tf.constant(["cherry"]))
    assert result["ids"].numpy().tolist() == [2]
    assert result["vocab"].numpy() == VOCAB
    assert asset.is_file()

    del lookup, result
    gc.collect()
    assert not snapshot.exists()


_AT_EXIT = r"""
import sys
from contextlib import ExitStack
from modelseal.loading import open_verified
from modelseal.integrations import tensorflow as mtf

class Loaded:
    pass

stack = ExitStack()
verified = stack.enter_context(
    open_verified(sys.argv[1], public_keys=[sys.argv[2]], snapshot=True,
                  snapshot_dir=mtf._snapshot_parent())
)
kept = Loaded()
mtf._Lease(stack).keep([kept])
print(verified.path)
print(mtf._snapshot_parent())
assert "tensorflow" not in sys.modules
"""


def test_snapshot_is_removed_at_interpreter_exit(model: Path, trusted: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _AT_EXIT, str(model), str(trusted)],
        capture_output=True,
        text=True,
        check=True,
    )
    snapshot, parent = (Path(line) for line in done.stdout.split())
    assert snapshot.parent == parent
    assert not snapshot.exists()
    assert not parent.exists()


ATTEMPTS = 150  # a verified load of this model takes about 30 ms


def test_swapped_variables_file_never_loads(
    tmp_path: Path, model: Path, trusted: Path, exported: tuple[Path, Tiny]
) -> None:
    honest_bytes = (model / DATA).read_bytes()
    evil_bytes = evil_variables(honest_bytes, exported[1])
    expected = exported[1](tf.constant(X)).numpy()

    # The evil file passes TensorFlow's own checks: plain TF would load it.
    victim = Path(shutil.copytree(model, tmp_path / "victim"))
    (victim / DATA).write_bytes(evil_bytes)
    assert not np.array_equal(tf.saved_model.load(str(victim))(tf.constant(X)).numpy(), expected)

    honest, evil = tmp_path / "honest.data", tmp_path / "evil.data"
    honest.write_bytes(honest_bytes)
    evil.write_bytes(evil_bytes)

    def load() -> Any:
        return mtf.saved_model_load(model, public_keys=[trusted])

    result = race(
        model / DATA,
        honest,
        evil,
        load=load,
        is_honest=lambda loaded: np.array_equal(loaded(tf.constant(X)).numpy(), expected),
        attempts=ATTEMPTS,
    )
    assert result.loads + result.refused == ATTEMPTS
