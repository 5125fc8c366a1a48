"""modelseal.integrations.onnx with real onnx and onnxruntime on the CPU."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import modelseal
from conftest import KeyPair
from modelseal.errors import (
    IntegrityError,
    ModelMismatchError,
    SealError,
    SignatureError,
    UnsafeModelError,
    UsageError,
)
from modelseal.integrations import onnx as monnx
from race import race

CPU = ["CPUExecutionProvider"]
X = np.linspace(-1.0, 1.0, 8, dtype=np.float32).reshape(1, 8)


def build(seed: int = 0) -> Any:
    """y = x @ W + B: W (8x64 floats, 2 KiB) goes external at size_threshold=1024, B stays."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "B"], ["y"])],
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    # onnxruntime 1.31 reads IR version <= 13; onnx 1.23 would write 14.
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def save_directory(root: Path, keypair: KeyPair, seed: int = 0) -> Path:
    path = root / "model.onnx"
    root.mkdir(parents=True, exist_ok=True)
    monnx.onnx_save(
        build(seed),
        path,
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=1024,
        key=keypair.private,
    )
    return path


def save_file(path: Path, keypair: KeyPair, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    monnx.onnx_save(build(seed), path, key=keypair.private)
    return path


def run(session: Any) -> Any:
    return session.run(None, {"x": X})[0]


def plain_output(path: Path) -> Any:
    return run(ort.InferenceSession(str(path), providers=CPU))


@pytest.fixture
def directory_model(tmp_path: Path, keypair: KeyPair) -> Path:
    return save_directory(tmp_path / "net", keypair)


@pytest.fixture
def file_model(tmp_path: Path, keypair: KeyPair) -> Path:
    return save_file(tmp_path / "solo" / "model.onnx", keypair)


# --- honest loads -----------------------------------------------------------------------


def test_save_seals_the_file_or_the_directory(directory_model: Path, file_model: Path) -> None:
    assert sorted(p.name for p in directory_model.parent.iterdir()) == [
        "model.onnx",
        "model.sig",
        "weights.bin",
    ]
    assert (file_model.parent / "model.onnx.sig").is_file()
    assert not (file_model.parent / "model.sig").exists()


@pytest.mark.parametrize("layout", ["file", "directory"])
@pytest.mark.parametrize("snapshot", [False, True])
def test_onnx_load_matches_onnx(
    request: pytest.FixtureRequest,
    keypair: KeyPair,
    monkeypatch: pytest.MonkeyPatch,
    layout: str,
    snapshot: bool,
) -> None:
    path = request.getfixturevalue(f"{layout}_model")
    if snapshot:
        monkeypatch.setattr(monnx, "SNAPSHOT_ABOVE", 0)
    model = monnx.onnx_load(path, public_keys=[keypair.public])
    assert model == onnx.load(str(path))
    assert not any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


def test_onnx_load_without_external_data(directory_model: Path, keypair: KeyPair) -> None:
    model = monnx.onnx_load(directory_model, load_external_data=False, public_keys=keypair.public)
    assert model == onnx.load(str(directory_model), load_external_data=False)
    assert model.graph.initializer[0].data_location == TensorProto.EXTERNAL


def test_text_format_inferred_from_extension(tmp_path: Path, keypair: KeyPair) -> None:
    path = tmp_path / "model.textproto"
    monnx.onnx_save(build(), path, key=keypair.private)
    assert path.read_bytes().lstrip().startswith(b"ir_version")
    assert monnx.onnx_load(path, public_keys=[keypair.public]) == onnx.load(str(path))


@pytest.mark.parametrize("layout", ["file", "directory"])
@pytest.mark.parametrize("mode", ["bytes", "snapshot", "too-big-to-embed"])
def test_inference_session_matches_onnxruntime(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    keypair: KeyPair,
    monkeypatch: pytest.MonkeyPatch,
    layout: str,
    mode: str,
) -> None:
    path = request.getfixturevalue(f"{layout}_model")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    if mode == "snapshot":
        monkeypatch.setattr(monnx, "SNAPSHOT_ABOVE", 0)
    if mode == "too-big-to-embed":
        monkeypatch.setattr(monnx, "PROTOBUF_LIMIT", 100)
    modes: list[bool] = []
    real_open = monnx.open_verified

    def spy(*args: Any, **kwargs: Any) -> Any:
        modes.append(kwargs["snapshot"])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(monnx, "open_verified", spy)
    session = monnx.inference_session(path, public_keys=[keypair.public])
    assert list(temporary.iterdir()) == []  # any snapshot is gone; the session still runs
    expected = {
        "bytes": [False],
        "snapshot": [True],
        # Only external data makes the embedded model grow: a lone file stays bytes.
        "too-big-to-embed": [False, True] if layout == "directory" else [False],
    }
    assert modes == expected[mode]
    assert session.get_providers() == CPU
    assert np.array_equal(run(session), plain_output(path))


def test_inference_session_passes_options_through(directory_model: Path, keypair: KeyPair) -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = monnx.inference_session(
        directory_model, options, ["CPUExecutionProvider"], public_keys=[keypair.public]
    )
    assert np.array_equal(run(session), plain_output(directory_model))


def test_snapshot_refuses_an_external_folder_override(
    directory_model: Path, keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monnx, "SNAPSHOT_ABOVE", 0)
    options = ort.SessionOptions()
    options.add_session_config_entry(
        "session.model_external_initializers_file_folder_path", str(directory_model.parent)
    )
    with pytest.raises(UsageError, match="external data"):
        monnx.inference_session(directory_model, options, public_keys=[keypair.public])


# --- which seal ---------------------------------------------------------------------------


def test_two_seals_are_ambiguous(directory_model: Path, keypair: KeyPair) -> None:
    modelseal.seal(directory_model, key=keypair.private)  # model.onnx.sig beside model.sig
    with pytest.raises(UsageError, match="two seals"):
        monnx.onnx_load(directory_model, public_keys=[keypair.public])
    with pytest.raises(UsageError, match="two seals"):
        monnx.inference_session(directory_model, public_keys=[keypair.public])


def test_explicit_signature_says_file_or_directory(tmp_path: Path, keypair: KeyPair) -> None:
    path = save_directory(tmp_path / "net", keypair)
    moved = tmp_path / "elsewhere.sig"
    (path.parent / "model.sig").rename(moved)
    model = monnx.onnx_load(path, public_keys=[keypair.public], signature=moved)
    assert model == onnx.load(str(path))

    solo = save_file(tmp_path / "solo" / "model.onnx", keypair)
    moved_file = tmp_path / "solo.sig"
    (solo.parent / "model.onnx.sig").rename(moved_file)
    session = monnx.inference_session(solo, public_keys=[keypair.public], signature=moved_file)
    assert np.array_equal(run(session), plain_output(solo))


def test_missing_seal_names_both_places(tmp_path: Path, keypair: KeyPair) -> None:
    path = tmp_path / "bare" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(build(), str(path))
    with pytest.raises(SealError, match=r"model\.onnx\.sig.*model\.sig"):
        monnx.onnx_load(path, public_keys=[keypair.public])


# --- tampering ------------------------------------------------------------------------------

LOADERS: dict[str, Callable[..., Any]] = {
    "onnx_load": monnx.onnx_load,
    "inference_session": monnx.inference_session,
}


def flip_byte(path: Path, at: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def tamper(case: str, path: Path, other: KeyPair) -> None:
    root = path.parent
    seal = root / "model.sig" if (root / "model.sig").exists() else root / "model.onnx.sig"
    if case == "onnx-byte":
        flip_byte(path, 20)
    elif case == "data-byte":
        flip_byte(root / "weights.bin", 100)
    elif case == "missing-data":
        (root / "weights.bin").unlink()
    elif case == "extra-file":
        (root / "notes.txt").write_text("hello")
    elif case == "other-key":
        modelseal.seal(root if seal.name == "model.sig" else path, key=other.private)
    elif case == "edited-seal":
        bundle = json.loads(seal.read_text())
        bundle["dsseEnvelope"]["payload"] = bundle["dsseEnvelope"]["payload"][:-8] + "AAAAAAA="
        seal.write_text(json.dumps(bundle))
    elif case == "unsealed":
        seal.unlink()


DIRECTORY_CASES = [
    ("onnx-byte", ModelMismatchError),
    ("data-byte", ModelMismatchError),
    ("missing-data", ModelMismatchError),
    ("extra-file", ModelMismatchError),
    ("other-key", SignatureError),
    ("edited-seal", IntegrityError),
    ("unsealed", SealError),
]
FILE_CASES = [
    ("onnx-byte", ModelMismatchError),
    ("other-key", SignatureError),
    ("edited-seal", IntegrityError),
    ("unsealed", SealError),
]


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize(("case", "error"), DIRECTORY_CASES)
def test_tampered_directory_is_refused(
    directory_model: Path,
    keypair: KeyPair,
    other_keypair: KeyPair,
    loader: str,
    case: str,
    error: type[Exception],
) -> None:
    tamper(case, directory_model, other_keypair)
    with pytest.raises(error):
        LOADERS[loader](directory_model, public_keys=[keypair.public])


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize(("case", "error"), FILE_CASES)
def test_tampered_file_is_refused(
    file_model: Path,
    keypair: KeyPair,
    other_keypair: KeyPair,
    loader: str,
    case: str,
    error: type[Exception],
) -> None:
    tamper(case, file_model, other_keypair)
    with pytest.raises(error):
        LOADERS[loader](file_model, public_keys=[keypair.public])


# --- hostile external data, sealed by the trusted key -----------------------------------------


def external_model(root: Path, entries: dict[str, str] | list[tuple[str, str]]) -> Path:
    """A model whose W lives in external data described by `entries`, with real weights
    in root/weights.bin (the .onnx itself written without onnx's own checks)."""
    root.mkdir(parents=True, exist_ok=True)
    model = build()
    w = model.graph.initializer[0]
    (root / "weights.bin").write_bytes(w.raw_data)
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    pairs = entries.items() if isinstance(entries, dict) else entries
    for key, value in pairs:
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    path = root / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def assert_refused(path: Path, keypair: KeyPair, match: str, **seal_options: Any) -> None:
    modelseal.seal(path.parent, key=keypair.private, **seal_options)
    for loader in LOADERS.values():
        with pytest.raises(UnsafeModelError, match=match):
            loader(path, public_keys=[keypair.public])


def test_honest_hand_made_external_model_loads(tmp_path: Path, keypair: KeyPair) -> None:
    path = external_model(tmp_path / "m", {"location": "weights.bin", "length": "2048"})
    modelseal.seal(path.parent, key=keypair.private)
    assert monnx.onnx_load(path, public_keys=[keypair.public]) == onnx.load(str(path))
    session = monnx.inference_session(path, public_keys=[keypair.public])
    assert np.array_equal(run(session), plain_output(path))


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("../outside.bin", r"'\.\.' is not allowed"),
        ("/etc/passwd", "absolute path"),
        ("sub\\weights.bin", "backslash"),
        ("./weights.bin", r"'\.' is not allowed"),
        ("", "empty name"),
    ],
)
def test_unsafe_location_is_refused(
    tmp_path: Path, keypair: KeyPair, location: str, reason: str
) -> None:
    (tmp_path / "outside.bin").write_bytes(b"\0" * 4096)
    path = external_model(tmp_path / "m", {"location": location})
    assert_refused(path, keypair, reason)


def test_symlinked_data_is_refused(tmp_path: Path, keypair: KeyPair) -> None:
    path = external_model(tmp_path / "m", {"location": "link.bin"})
    os.symlink("weights.bin", path.parent / "link.bin")
    # Even a signer who allowed symlinks does not get them followed at load time.
    assert_refused(path, keypair, "symlink", allow_symlinks=True)


def test_data_outside_the_seal_is_refused(tmp_path: Path, keypair: KeyPair) -> None:
    path = external_model(tmp_path / "m", {"location": "extra.bin"})
    (path.parent / "weights.bin").rename(path.parent / "extra.bin")
    assert_refused(path, keypair, "not a file covered by the seal", ignore=["extra.bin"])


def test_directory_as_location_is_refused(tmp_path: Path, keypair: KeyPair) -> None:
    path = external_model(tmp_path / "m", {"location": "sub"})
    (path.parent / "sub").mkdir()
    (path.parent / "sub" / "x").write_bytes(b"x")
    assert_refused(path, keypair, "not a file covered by the seal")


@pytest.mark.parametrize(
    "entries",
    [
        {"location": "weights.bin", "offset": "1", "length": "2048"},
        {"location": "weights.bin", "offset": "4096"},
        {"location": "weights.bin", "length": "99999999999"},
    ],
)
def test_data_beyond_the_file_is_refused(
    tmp_path: Path, keypair: KeyPair, entries: dict[str, str]
) -> None:
    path = external_model(tmp_path / "m", entries)
    assert_refused(path, keypair, "lies outside")


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ([("location", "weights.bin"), ("offset", "-1")], "not a size"),
        ([("location", "weights.bin"), ("offset", "1_0")], "not a size"),
        ([("location", "weights.bin"), ("location", "other.bin")], "twice"),
        ([("location", "weights.bin"), ("compression", "zip")], "unknown external data key"),
    ],
)
def test_malformed_external_entries_are_refused(
    tmp_path: Path, keypair: KeyPair, entries: list[tuple[str, str]], reason: str
) -> None:
    path = external_model(tmp_path / "m", entries)
    assert_refused(path, keypair, reason)


def test_external_tensor_without_location(tmp_path: Path, keypair: KeyPair) -> None:
    path = external_model(tmp_path / "m", [("offset", "0")])
    modelseal.seal(path.parent, key=keypair.private)
    with pytest.raises(UnsafeModelError, match="without a location"):
        monnx.onnx_load(path, public_keys=[keypair.public])
    # Nothing in the bytes can name a file, so they go to onnxruntime, which refuses them.
    with pytest.raises(Exception, match="location"):
        monnx.inference_session(path, public_keys=[keypair.public])


def test_external_data_under_a_file_seal_is_refused(tmp_path: Path, keypair: KeyPair) -> None:
    path = external_model(tmp_path / "m", {"location": "weights.bin"})
    modelseal.seal(path, key=keypair.private)
    for loader in LOADERS.values():
        with pytest.raises(UnsafeModelError, match="seal the model directory"):
            loader(path, public_keys=[keypair.public])
    # The graph alone is fine: nothing is read from the uncovered file.
    model = monnx.onnx_load(path, load_external_data=False, public_keys=[keypair.public])
    assert model.graph.initializer[0].data_location == TensorProto.EXTERNAL


def test_external_tensor_in_a_subgraph_is_filled(tmp_path: Path, keypair: KeyPair) -> None:
    """A Constant inside an If branch, with external data: filled too (the walk is generic)."""
    root = tmp_path / "m"
    root.mkdir()
    value = np.arange(600, dtype=np.float32)
    (root / "c.bin").write_bytes(value.tobytes())
    tensor = numpy_helper.from_array(value, "c")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "c.bin"
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["out"], value=tensor)],
        "branch",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [600])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [600])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    path = root / "model.onnx"
    path.write_bytes(model.SerializeToString())
    modelseal.seal(root, key=keypair.private)
    loaded = monnx.onnx_load(path, public_keys=[keypair.public])
    assert "c.bin" not in str(loaded)
    session = monnx.inference_session(path, public_keys=[keypair.public])
    out = session.run(None, {"cond": np.array(True)})[0]
    assert np.array_equal(out, value)


def test_ep_context_file_is_refused(tmp_path: Path, keypair: KeyPair) -> None:
    root = tmp_path / "m"
    root.mkdir()
    node = helper.make_node(
        "EPContext",
        ["x"],
        ["y"],
        domain="com.microsoft",
        embed_mode=0,
        ep_cache_context="context.bin",
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        ir_version=10,
    )
    path = root / "model.onnx"
    path.write_bytes(model.SerializeToString())
    (root / "context.bin").write_bytes(b"ctx")
    modelseal.seal(root, key=keypair.private)
    with pytest.raises(UnsafeModelError, match="EPContext"):
        monnx.inference_session(path, public_keys=[keypair.public])


def test_unparsable_verified_model(tmp_path: Path, keypair: KeyPair) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\xff" * 64)
    modelseal.seal(path, key=keypair.private)
    with pytest.raises(monnx.OnnxModelError, match="not a valid ONNX"):
        monnx.onnx_load(path, public_keys=[keypair.public])


# --- the swap race ------------------------------------------------------------------------------


def race_files(tmp_path: Path, keypair: KeyPair) -> tuple[Path, Path, Path]:
    """The sealed directory model, and its honest and evil weights outside it."""
    path = save_directory(tmp_path / "net", keypair)
    honest = tmp_path / "honest.bin"
    evil = tmp_path / "evil.bin"
    shutil.copy(path.parent / "weights.bin", honest)
    evil.write_bytes(bytes(b ^ 0x55 for b in honest.read_bytes()))
    return path, honest, evil


@pytest.mark.parametrize("snapshot", [False, True])
def test_race_onnx_load(
    tmp_path: Path, keypair: KeyPair, monkeypatch: pytest.MonkeyPatch, snapshot: bool
) -> None:
    path, honest, evil = race_files(tmp_path, keypair)
    if snapshot:
        monkeypatch.setattr(monnx, "SNAPSHOT_ABOVE", 0)
    expected = honest.read_bytes()

    def load() -> object:
        return monnx.onnx_load(path, public_keys=[keypair.public])

    def is_honest(model: object) -> bool:
        return bool(model.graph.initializer[0].raw_data == expected)  # type: ignore[attr-defined]

    target = path.parent / "weights.bin"
    result = race(target, honest, evil, load, is_honest, attempts=120)
    assert result.loads + result.refused == 120


@pytest.mark.parametrize("snapshot", [False, True])
def test_race_inference_session(
    tmp_path: Path, keypair: KeyPair, monkeypatch: pytest.MonkeyPatch, snapshot: bool
) -> None:
    path, honest, evil = race_files(tmp_path, keypair)
    expected = plain_output(path)
    if snapshot:
        monkeypatch.setattr(monnx, "SNAPSHOT_ABOVE", 0)

    def load() -> object:
        return monnx.inference_session(path, public_keys=[keypair.public])

    def is_honest(session: object) -> bool:
        return bool(np.array_equal(run(session), expected))

    race(path.parent / "weights.bin", honest, evil, load, is_honest, attempts=120)


def test_race_lone_file(tmp_path: Path, keypair: KeyPair) -> None:
    """The .onnx itself swapped (its temporary link lies outside a lone-file model)."""
    path = save_file(tmp_path / "solo" / "model.onnx", keypair)
    honest, evil = tmp_path / "honest.onnx", tmp_path / "evil.onnx"
    shutil.copy(path, honest)
    onnx.save_model(build(seed=1), str(evil))
    expected_model = onnx.load(str(honest))
    expected = plain_output(honest)

    def both() -> object:
        model = monnx.onnx_load(path, public_keys=[keypair.public])
        session = monnx.inference_session(path, public_keys=[keypair.public])
        return model, session

    def is_honest(loaded: object) -> bool:
        model, session = loaded  # type: ignore[misc]
        return bool(model == expected_model and np.array_equal(run(session), expected))

    race(path, honest, evil, both, is_honest, attempts=100)


# --- usage ---------------------------------------------------------------------------------------


def test_file_objects_and_bytes_are_refused(directory_model: Path, keypair: KeyPair) -> None:
    with pytest.raises(UsageError, match="pass the path"):
        monnx.onnx_load(io.BytesIO(directory_model.read_bytes()), public_keys=[keypair.public])
    with pytest.raises(UsageError, match="pass the path"):
        monnx.inference_session(directory_model.read_bytes(), public_keys=[keypair.public])
    with pytest.raises(UsageError, match="directory"):
        monnx.onnx_load(directory_model.parent, public_keys=[keypair.public])
    with pytest.raises(UsageError, match="no trusted public key"):
        monnx.onnx_load(directory_model)


def test_save_of_a_referencing_proto_seals_the_directory(
    directory_model: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    proto = onnx.load(str(directory_model), load_external_data=False)
    target = tmp_path / "copy"
    target.mkdir()
    shutil.copy(directory_model.parent / "weights.bin", target / "weights.bin")
    result = monnx.onnx_save(proto, target / "model.onnx", key=keypair.private)
    assert Path(result.seal) == target / "model.sig"
    loaded = monnx.onnx_load(target / "model.onnx", public_keys=[keypair.public])
    assert loaded == onnx.load(str(directory_model))


def test_save_refuses_a_shared_directory(tmp_path: Path, keypair: KeyPair) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "notes.txt").write_text("not the model")
    with pytest.raises(UsageError, match="directory of its own"):
        save_directory(tmp_path / "shared", keypair)
    assert not (tmp_path / "shared" / "model.sig").exists()


def test_save_refuses_unsafe_location_and_missing_key(tmp_path: Path, keypair: KeyPair) -> None:
    with pytest.raises(UsageError, match="refused"):
        monnx.onnx_save(
            build(),
            tmp_path / "model.onnx",
            save_as_external_data=True,
            location="../w.bin",
            key=keypair.private,
        )
    with pytest.raises(UsageError, match="key"):
        monnx.onnx_save(build(), tmp_path / "model.onnx", key=None)  # type: ignore[arg-type]
    assert not (tmp_path / "model.onnx").exists()
    assert not (tmp_path.parent / "w.bin").exists()
