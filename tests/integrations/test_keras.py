"""Keras 3 through modelseal: the same model as keras.saving.load_model, tampering refused
before Keras sees a byte, safe_mode kept, and no window for a swapped .keras file."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import modelseal
from conftest import KeyPair, make_keypair
from modelseal.errors import (
    IntegrityError,
    ModelMismatchError,
    SealError,
    SignatureError,
    UsageError,
)
from modelseal.integrations import keras as mkeras
from race import race

X = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)


def dense(seed: int) -> Any:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="out"),
        ]
    )
    model.compile(optimizer="sgd", loss=keras.losses.MeanSquaredError())
    return model


def predict(model: Any) -> Any:
    return np.asarray(model(X))


@pytest.fixture(scope="module")
def keypairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyPair, KeyPair]:
    directory = tmp_path_factory.mktemp("keras-keys")
    return make_keypair(directory, "trusted"), make_keypair(directory, "other")


@pytest.fixture(scope="module")
def saved(
    tmp_path_factory: pytest.TempPathFactory, keypairs: tuple[KeyPair, KeyPair]
) -> dict[str, Any]:
    """One model saved and sealed three ways (never modified: tests tamper with copies)."""
    root = tmp_path_factory.mktemp("keras-models")
    model = dense(1)
    results = {
        "keras": mkeras.save_model(model, root / "model.keras", key=keypairs[0].private),
        "h5": mkeras.save_model(model, root / "model.h5", key=keypairs[0].private),
        "dir": mkeras.save_model(model, root / "kdir", zipped=False, key=keypairs[0].private),
    }
    return {"root": root, "model": model, "expected": predict(model), "results": results}


FILES = {"keras": ("model.keras", "model.keras.sig"), "h5": ("model.h5", "model.h5.sig")}


@pytest.fixture
def copy(tmp_path: Path, saved: dict[str, Any]) -> Callable[[str], Path]:
    """Copy one saved form (and its seal) into this test's directory."""

    def make(kind: str) -> Path:
        target = tmp_path / "models"
        target.mkdir(exist_ok=True)
        if kind == "dir":
            return Path(shutil.copytree(saved["root"] / "kdir", target / "kdir"))
        for name in FILES[kind]:
            shutil.copy(saved["root"] / name, target / name)
        return target / FILES[kind][0]

    return make


@pytest.fixture
def trusted(keypairs: tuple[KeyPair, KeyPair]) -> Path:
    return keypairs[0].public


@pytest.fixture
def no_keras_load(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every Keras entry point the integration may call, replaced by a recorder."""
    from keras.src.legacy.saving import legacy_h5_format
    from keras.src.saving import saving_lib

    calls: list[object] = []

    def record(*args: object, **kwargs: object) -> None:
        calls.append(args)

    monkeypatch.setattr(saving_lib, "load_model", record)
    monkeypatch.setattr(legacy_h5_format, "load_model_from_hdf5", record)
    monkeypatch.setattr(keras.saving, "load_model", record)
    return calls


def test_save_returns_the_seal(saved: dict[str, Any]) -> None:
    root = saved["root"]
    assert saved["results"]["keras"].seal == str(root / "model.keras.sig")
    assert saved["results"]["h5"].seal == str(root / "model.h5.sig")
    assert saved["results"]["dir"].seal == str(root / "kdir" / "model.sig")
    assert all(result.signed for result in saved["results"].values())


@pytest.mark.parametrize("kind", ["keras", "h5", "dir"])
def test_loads_like_plain_keras(
    kind: str, copy: Callable[[str], Path], trusted: Path, saved: dict[str, Any]
) -> None:
    path = copy(kind)
    plain = keras.saving.load_model(path)  # the seal beside or inside does not disturb Keras
    ours = mkeras.load_model(path, public_keys=trusted)
    np.testing.assert_array_equal(predict(ours), predict(plain))
    np.testing.assert_array_equal(predict(ours), saved["expected"])
    assert ours.compiled == plain.compiled
    positional = mkeras.load_model(str(path), None, False, True, public_keys=[trusted])
    assert not positional.compiled
    np.testing.assert_array_equal(predict(positional), saved["expected"])


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_snapshot_fallback_when_keras_moves_its_loaders(
    kind: str,
    copy: Callable[[str], Path],
    trusted: Path,
    saved: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = copy(kind)
    seen: list[str] = []
    original = keras.saving.load_model

    def spy(filepath: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(filepath))
        return original(filepath, *args, **kwargs)

    monkeypatch.setattr(mkeras, "_internal", lambda module, name: None)
    monkeypatch.setattr(keras.saving, "load_model", spy)
    loaded = mkeras.load_model(path, public_keys=[trusted])
    np.testing.assert_array_equal(predict(loaded), saved["expected"])
    (snapshot,) = seen
    assert Path(snapshot).name == path.name
    assert Path(snapshot).parent != path.parent
    assert not Path(snapshot).exists()


def test_big_weights_are_extracted_privately(
    copy: Callable[[str], Path],
    trusted: Path,
    saved: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Weights Keras will not copy into memory are extracted from the verified bytes into a
    private directory (plain Keras extracts them beside the file), not read through the zip."""
    from keras.src.saving import saving_lib

    path = copy("keras")
    opened: list[Path] = []

    class Spy(saving_lib.H5IOStore):  # type: ignore[misc]
        def __init__(self, target: Any, *args: Any, **kwargs: Any) -> None:
            opened.append(Path(str(target)))
            super().__init__(target, *args, **kwargs)

    monkeypatch.setattr(saving_lib, "is_memory_sufficient", lambda model: False)
    monkeypatch.setattr(saving_lib, "H5IOStore", Spy)
    loaded = mkeras.load_model(path, public_keys=[trusted])
    np.testing.assert_array_equal(predict(loaded), saved["expected"])
    (extracted,) = opened
    assert extracted.name == "model.weights.h5"
    private = extracted.parent.parent
    assert private.name.startswith("modelseal-keras-")
    assert not private.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.keras", "model.keras.sig"]


def _flip_byte(path: Path, keys: tuple[KeyPair, KeyPair]) -> None:
    target = path / "model.weights.h5" if path.is_dir() else path
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(data)


def _other_key(path: Path, keys: tuple[KeyPair, KeyPair]) -> None:
    modelseal.seal(path, key=keys[1].private)


def _seal_of(path: Path) -> Path:
    return path / "model.sig" if path.is_dir() else path.with_name(path.name + ".sig")


def _edit_seal(path: Path, keys: tuple[KeyPair, KeyPair]) -> None:
    seal = json.loads(_seal_of(path).read_text())
    envelope = seal["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    resource = statement["predicate"]["resources"][0]
    resource["digest"] = ("0" if resource["digest"][0] != "0" else "1") + resource["digest"][1:]
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    _seal_of(path).write_text(json.dumps(seal))


def _unsealed(path: Path, keys: tuple[KeyPair, KeyPair]) -> None:
    _seal_of(path).unlink()


def _edit_config(path: Path, keys: tuple[KeyPair, KeyPair]) -> None:
    """Rewrite the archive with a different activation: a valid .keras, not the sealed one."""
    with zipfile.ZipFile(path) as archive:
        members = {info: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in members.items():
            if info.filename == "config.json":
                data = data.replace(b'"relu"', b'"linear"')
                assert b'"linear"' in data
            archive.writestr(info, data)


def _remove_weights(path: Path, keys: tuple[KeyPair, KeyPair]) -> None:
    (path / "model.weights.h5").unlink()


def _add_asset(path: Path, keys: tuple[KeyPair, KeyPair]) -> None:
    (path / "assets").mkdir(exist_ok=True)
    (path / "assets" / "extra.txt").write_text("not sealed\n")


TAMPERING = [
    ("keras", _flip_byte, ModelMismatchError),
    ("keras", _edit_config, ModelMismatchError),
    ("keras", _other_key, SignatureError),
    ("keras", _edit_seal, SignatureError),
    ("keras", _unsealed, SealError),
    ("h5", _flip_byte, ModelMismatchError),
    ("h5", _other_key, SignatureError),
    ("dir", _flip_byte, ModelMismatchError),
    ("dir", _remove_weights, ModelMismatchError),
    ("dir", _add_asset, ModelMismatchError),
    ("dir", _unsealed, SealError),
]


@pytest.mark.parametrize(
    ("kind", "tamper", "error"),
    TAMPERING,
    ids=[f"{kind}-{tamper.__name__.strip('_')}" for kind, tamper, _ in TAMPERING],
)
def test_tampering_is_refused_and_nothing_loads(
    kind: str,
    tamper: Callable[[Path, tuple[KeyPair, KeyPair]], None],
    error: type[IntegrityError],
    copy: Callable[[str], Path],
    keypairs: tuple[KeyPair, KeyPair],
    no_keras_load: list[object],
) -> None:
    path = copy(kind)
    tamper(path, keypairs)
    with pytest.raises(error):
        mkeras.load_model(path, public_keys=[keypairs[0].public])
    assert no_keras_load == []


@pytest.fixture(scope="module")
def lambda_model(
    tmp_path_factory: pytest.TempPathFactory, keypairs: tuple[KeyPair, KeyPair]
) -> Path:
    path = tmp_path_factory.mktemp("keras-lambda") / "lambda.keras"
    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2.0)])
    mkeras.save_model(model, path, key=keypairs[0].private)
    return path


def test_lambda_layer_stays_refused_by_safe_mode(
    lambda_model: Path, trusted: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="modelseal"):
        with pytest.raises(ValueError, match="Lambda") as refused:
            mkeras.load_model(lambda_model, public_keys=[trusted])
        assert not isinstance(refused.value, IntegrityError)  # the seal is fine; Keras refuses
        assert not [r for r in caplog.records if r.name == "modelseal"]
        loaded = mkeras.load_model(lambda_model, safe_mode=False, public_keys=[trusted])
    np.testing.assert_array_equal(predict(loaded), X * 2.0)
    (warning,) = [r for r in caplog.records if r.name == "modelseal"]
    assert warning.levelno == logging.WARNING
    assert "safe_mode=False" in warning.getMessage()


def test_what_cannot_be_loaded_is_a_usage_error(
    tmp_path: Path, keypairs: tuple[KeyPair, KeyPair], no_keras_load: list[object]
) -> None:
    trusted = keypairs[0].public
    saved_model = tmp_path / "exported"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"")
    with pytest.raises(UsageError, match="saved_model_load"):
        mkeras.load_model(saved_model, public_keys=[trusted])
    with pytest.raises(UsageError, match=r"no config\.json"):
        mkeras.load_model(tmp_path, public_keys=[trusted])
    with pytest.raises(UsageError, match="local"):
        mkeras.load_model("hf://someone/model", public_keys=[trusted])
    other = tmp_path / "model.pt"
    other.write_bytes(b"x")
    with pytest.raises(UsageError, match=r"\.keras"):
        mkeras.load_model(other, public_keys=[trusted])
    not_zip = tmp_path / "fake.keras"
    not_zip.write_bytes(b"not a zip archive")
    modelseal.seal(not_zip, key=keypairs[0].private)
    with pytest.raises(UsageError, match=r"not a \.keras archive"):
        mkeras.load_model(not_zip, public_keys=[trusted])
    not_h5 = tmp_path / "fake.h5"
    not_h5.write_bytes(b"not an HDF5 file")
    modelseal.seal(not_h5, key=keypairs[0].private)
    with pytest.raises(UsageError, match="not an HDF5 file"):
        mkeras.load_model(not_h5, public_keys=[trusted])
    assert no_keras_load == []


def test_save_refuses_to_seal_what_it_did_not_write(
    tmp_path: Path, keypairs: tuple[KeyPair, KeyPair], saved: dict[str, Any]
) -> None:
    existing = tmp_path / "model.keras"
    existing.write_bytes(b"someone else's file")
    with pytest.raises(UsageError, match="overwrite=False"):
        mkeras.save_model(saved["model"], existing, overwrite=False, key=keypairs[0].private)
    assert existing.read_bytes() == b"someone else's file"
    assert not existing.with_name("model.keras.sig").exists()
    with pytest.raises(UsageError, match="key="):
        mkeras.save_model(saved["model"], tmp_path / "new.keras", key=None)  # type: ignore[arg-type]
    assert not (tmp_path / "new.keras").exists()


ATTEMPTS = 150  # a verified load of this model takes about 30 ms


def test_swapped_keras_file_never_loads(
    tmp_path: Path, copy: Callable[[str], Path], trusted: Path, saved: dict[str, Any]
) -> None:
    path = copy("keras")
    outside = tmp_path / "outside"
    outside.mkdir()
    honest = Path(shutil.copy(path, outside / "honest.keras"))
    evil = outside / "evil.keras"
    dense(2).save(evil)
    # The evil archive is a valid model that plain Keras would load.
    assert not np.array_equal(predict(keras.saving.load_model(evil)), saved["expected"])

    result = race(
        path,
        honest,
        evil,
        load=lambda: mkeras.load_model(path, public_keys=[trusted]),
        is_honest=lambda loaded: np.array_equal(predict(loaded), saved["expected"]),
        attempts=ATTEMPTS,
    )
    assert result.loads + result.refused == ATTEMPTS
