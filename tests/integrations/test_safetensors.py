"""modelseal.integrations.safetensors: verified load_file, and sharded checkpoints."""

from __future__ import annotations

import base64
import json
import shutil
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch as st
import torch
from torch import nn

import modelseal
from conftest import KeyPair
from modelseal.errors import (
    Error,
    IntegrityError,
    ModelMismatchError,
    SealError,
    SignatureError,
    UsageError,
)
from modelseal.integrations import safetensors as mst
from modelseal.integrations.safetensors import CheckpointError
from race import race


def make_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2)
    )


INPUT = torch.linspace(-3.0, 3.0, 48).reshape(6, 8)


def predict(state: dict[str, torch.Tensor]) -> torch.Tensor:
    net = make_net(99)
    net.load_state_dict(state)
    with torch.no_grad():
        return net.eval()(INPUT)


def every_dtype() -> dict[str, torch.Tensor]:
    base = torch.linspace(-4.0, 4.0, 24).reshape(2, 3, 4)
    tensors = {
        f"t_{dtype}": base.to(getattr(torch, dtype))
        for dtype in (
            "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
            "uint8", "uint16", "uint32", "uint64", "bool", "complex64",
            "float8_e4m3fn", "float8_e5m2",
        )
    }  # fmt: skip
    tensors["scalar"] = torch.tensor(2.5)
    tensors["empty"] = torch.zeros(0, 7)
    tensors["odd"] = torch.arange(7, dtype=torch.int8)
    return tensors


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same names, dtypes, shapes and values (the order of the names aside)."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a
    )


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file whose tensors the integration builds (a refusal must build none)."""
    calls: list[str] = []
    real = mst._tensors

    def spy(torch_module: Any, data: bytearray, what: str) -> dict[str, Any]:
        calls.append(what)
        return real(torch_module, data, what)

    monkeypatch.setattr(mst, "_tensors", spy)
    return calls


# -- single files ---------------------------------------------------------------------------


@pytest.fixture
def sealed(tmp_path: Path, keypair: KeyPair) -> Path:
    path = tmp_path / "model" / "model.safetensors"
    path.parent.mkdir()
    mst.save_file(make_net(1).state_dict(), path, {"format": "pt"}, key=keypair.private)
    return path


def test_state_dict_round_trip_predicts_as_plain_safetensors(
    sealed: Path, keypair: KeyPair
) -> None:
    state = mst.load_file(sealed, public_keys=[keypair.public])
    plain = st.load_file(sealed)
    assert same(state, plain)
    assert list(state) == list(plain)  # in file order, as safetensors gives them
    assert torch.equal(predict(state), predict(plain))
    assert torch.equal(predict(state), predict(make_net(1).state_dict()))


def test_every_dtype_matches_safetensors_and_tensors_are_writable(
    tmp_path: Path, keypair: KeyPair
) -> None:
    path = tmp_path / "all.safetensors"
    result = mst.save_file(every_dtype(), path, key=keypair.private)
    assert result.seal == f"{path}.sig"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "buffer is not writable" warning from torch
        loaded = mst.load_file(path, public_keys=keypair.public)
    assert same(loaded, st.load_file(path))
    assert same(loaded, st.load(path.read_bytes()))
    loaded["t_float32"].add_(1)  # writable, and private to this load
    assert torch.equal(
        mst.load_file(path, public_keys=keypair.public)["t_int64"], every_dtype()["t_int64"]
    )
    assert not torch.equal(loaded["t_float32"], st.load_file(path)["t_float32"])


def _flip_byte(path: Path, keypair: KeyPair, other: KeyPair) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))


def _other_key(path: Path, keypair: KeyPair, other: KeyPair) -> None:
    modelseal.seal(path, key=other.private, signature=seal_of(path))


def _edit_seal(path: Path, keypair: KeyPair, other: KeyPair) -> None:
    seal = seal_of(path)
    bundle = json.loads(seal.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    payload = json.dumps(statement).encode()
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    seal.write_text(json.dumps(bundle))


def _unsealed(path: Path, keypair: KeyPair, other: KeyPair) -> None:
    seal_of(path).unlink()


def seal_of(path: Path) -> Path:
    return path / "model.sig" if path.is_dir() else Path(f"{path}.sig")


Tamper = Callable[[Path, KeyPair, KeyPair], None]

TAMPER: dict[str, tuple[Tamper, type[Error]]] = {
    "changed byte": (_flip_byte, ModelMismatchError),
    "signed by another key": (_other_key, SignatureError),
    "seal edited after signing": (_edit_seal, SignatureError),
    "unsealed": (_unsealed, SealError),
    # A single-file model that is gone is a usage error in the core ("model not found").
    "missing file": (lambda path, *_: path.unlink(), UsageError),
}


@pytest.mark.parametrize("case", sorted(TAMPER))
def test_tampered_file_is_refused_and_nothing_loaded(
    sealed: Path, keypair: KeyPair, other_keypair: KeyPair, parsed: list[str], case: str
) -> None:
    tamper, error = TAMPER[case]
    tamper(sealed, keypair, other_keypair)
    with pytest.raises(error):
        mst.load_file(sealed, public_keys=[keypair.public])
    assert parsed == []


def test_swap_race_load_file(tmp_path: Path, keypair: KeyPair) -> None:
    honest_state = {"w": torch.arange(256.0), "b": torch.zeros(16)}
    honest, evil = tmp_path / "honest.safetensors", tmp_path / "evil.safetensors"
    st.save_file(honest_state, honest)
    st.save_file({"w": torch.full((256,), 666.0), "b": torch.ones(16)}, evil)
    target = tmp_path / "model" / "model.safetensors"
    target.parent.mkdir()
    shutil.copyfile(honest, target)
    modelseal.seal(target, key=keypair.private)
    result = race(
        target,
        honest,
        evil,
        lambda: mst.load_file(target, public_keys=[keypair.public]),
        lambda loaded: same(loaded, honest_state),  # type: ignore[arg-type]
        attempts=300,
    )
    assert result.loads + result.refused == 300


# -- the header parser agrees with safetensors ------------------------------------------------


def raw(header: dict[str, Any] | bytes, data: bytes = b"") -> bytes:
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def u8(offsets: list[int], shape: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"dtype": "U8", "shape": [offsets[1] - offsets[0]] if shape is None else shape,
            "data_offsets": offsets, **extra}  # fmt: skip


UNALIGNED = b'{"f":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
assert (8 + len(UNALIGNED)) % 4, "the data must start off a 4-byte boundary"

HEADERS: dict[str, bytes] = {
    "valid": raw({"a": u8([0, 2]), "b": u8([2, 5])}, b"abcde"),
    "out of key order": raw({"b": u8([2, 5]), "a": u8([0, 2])}, b"abcde"),
    "metadata": raw({"__metadata__": {"k": "v"}, "a": u8([0, 2])}, b"ab"),
    "metadata null": raw({"__metadata__": None, "a": u8([0, 2])}, b"ab"),
    "metadata not strings": raw({"__metadata__": {"k": 1}, "a": u8([0, 2])}, b"ab"),
    "no tensors": raw({}),
    "no tensors, data": raw({}, b"x"),
    "zero-size tensors": raw(
        {"e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [1, 1]}, "a": u8([0, 1])}, b"x"
    ),
    "scalar": raw({"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, b"\0\0\x80?"),
    "unaligned f32": raw(UNALIGNED, struct.pack("<2f", 1.5, -2.0)),
    "leading space": raw(b' {"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"ab"),
    "padded with spaces": raw(b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}   ', b"ab"),
    "extra field": raw({"a": u8([0, 2], x=1)}, b"ab"),
    "empty name": raw({"": u8([0, 2])}, b"ab"),
    "gap": raw({"a": u8([0, 2]), "b": u8([3, 5])}, b"abcde"),
    "overlap": raw({"a": u8([0, 3]), "b": u8([2, 5], shape=[3])}, b"abcde"),
    "trailing data": raw({"a": u8([0, 2])}, b"abc"),
    "short data": raw({"a": u8([0, 4])}, b"abc"),
    "offsets reversed": raw({"a": u8([2, 0], shape=[2])}, b"ab"),
    "wrong size": raw({"a": u8([0, 2], shape=[3])}, b"ab"),
    "f32 wrong size": raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 2]}}, b"ab"),
    "negative dim": raw({"a": u8([0, 2], shape=[-2])}, b"ab"),
    "float dim": raw({"a": u8([0, 2], shape=[2.0])}, b"ab"),
    "bool dim": raw({"a": u8([0, 2], shape=[True, 2])}, b"ab"),
    "huge dim": raw({"a": u8([0, 2], shape=[2**64])}, b"ab"),
    "shape not a list": raw({"a": u8([0, 2], shape="2")}, b"ab"),  # type: ignore[arg-type]
    "shape null": raw({"a": {"dtype": "U8", "shape": None, "data_offsets": [0, 2]}}, b"ab"),
    "three offsets": raw({"a": u8([0, 2, 2])}, b"ab"),
    "missing offsets": raw({"a": {"dtype": "U8", "shape": [2]}}, b"ab"),
    "unknown dtype": raw({"a": {"dtype": "u8", "shape": [2], "data_offsets": [0, 2]}}, b"ab"),
    "F4 (not in torch's map)": raw(
        {"a": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, b"ab"
    ),
    "tensor not an object": raw({"a": [1]}, b"ab"),
    "header a list": raw(b"[1, 2]"),
    "header not json": raw(b'{"a": ', b"ab"),
    "trailing junk": raw(b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}xx', b"ab"),
    "NaN": raw(
        b'{"__metadata__":{"k":NaN},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"ab"
    ),
    "not utf-8": raw(b'{"\xff":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}', b"ab"),
    "header past the end": struct.pack("<Q", 1000) + b"{}",
    "header too large": struct.pack("<Q", 100_000_001) + b"{}",
    "shorter than 8 bytes": b"\x02\0\0",
    "empty": b"",
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_header_parser_agrees_with_safetensors(case: str) -> None:
    data = HEADERS[case]
    try:
        expected: dict[str, torch.Tensor] | None = st.load(data)
    except Exception:
        expected = None
    if expected is None:
        with pytest.raises(CheckpointError):
            mst._tensors(torch, bytearray(data), case)
    else:
        assert same(mst._tensors(torch, bytearray(data), case), expected)


def test_unaligned_tensor_is_copied_to_aligned_memory() -> None:
    loaded = mst._tensors(torch, bytearray(HEADERS["unaligned f32"]), "unaligned")
    assert loaded["f"].data_ptr() % 4 == 0
    assert loaded["f"].tolist() == [1.5, -2.0]


def test_header_with_duplicate_names_is_refused() -> None:
    # safetensors keeps the last one; two descriptions of one tensor are refused here.
    header = b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
    header += b'"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}'
    with pytest.raises(CheckpointError, match="duplicate"):
        mst._tensors(torch, bytearray(raw(header, b"ab")), "dup")


def test_sealed_malformed_file_is_a_checkpoint_error(tmp_path: Path, keypair: KeyPair) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(HEADERS["gap"])
    modelseal.seal(path, key=keypair.private)
    with pytest.raises(CheckpointError, match="does not follow"):
        mst.load_file(path, public_keys=[keypair.public])
    assert issubclass(CheckpointError, IntegrityError)


# -- sharded checkpoints ----------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path: Path, keypair: KeyPair) -> Path:
    directory = tmp_path / "ckpt"
    mst.save_sharded(make_net(1).state_dict(), directory, "2KB", key=keypair.private)
    return directory


def test_sharded_round_trip_predicts_as_the_module(checkpoint: Path, keypair: KeyPair) -> None:
    files = sorted(p.name for p in checkpoint.iterdir())
    assert files == [
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
        "model.safetensors.index.json",
        "model.sig",
    ]
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    state = make_net(1).state_dict()
    assert set(index["weight_map"]) == set(state)
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in state.values())
    plain: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        plain.update(st.load_file(checkpoint / shard))
    for where in (checkpoint, checkpoint / "model.safetensors.index.json"):
        loaded = mst.load_sharded(where, public_keys=[keypair.public])
        assert set(loaded) == set(state)
        assert all(torch.equal(loaded[k], plain[k]) for k in state)
        assert torch.equal(predict(loaded), predict(state))


def test_save_sharded_again_replaces_stale_shards(checkpoint: Path, keypair: KeyPair) -> None:
    mst.save_sharded(make_net(2).state_dict(), checkpoint, 10**6, key=keypair.private)
    assert sorted(p.name for p in checkpoint.glob("*.safetensors")) == [
        "model-00001-of-00001.safetensors"
    ]
    loaded = mst.load_sharded(checkpoint, public_keys=[keypair.public])
    assert torch.equal(predict(loaded), predict(make_net(2).state_dict()))


def _first_shard(directory: Path) -> Path:
    return directory / "model-00001-of-00003.safetensors"


SHARDED_TAMPER: dict[str, tuple[Tamper, type[Error]]] = {
    "changed byte in a shard": (lambda d, *_: _flip_byte(_first_shard(d), *_), ModelMismatchError),
    "changed index": (
        lambda d, *_: (d / mst.INDEX_NAME).write_text('{"weight_map": {}}'),
        ModelMismatchError,
    ),
    "missing shard": (lambda d, *_: _first_shard(d).unlink(), ModelMismatchError),
    "extra file": (lambda d, *_: (d / "extra.safetensors").write_bytes(b"x"), ModelMismatchError),
    "signed by another key": (_other_key, SignatureError),
    "seal edited after signing": (_edit_seal, SignatureError),
    "unsealed": (_unsealed, SealError),
}


@pytest.mark.parametrize("case", sorted(SHARDED_TAMPER))
def test_tampered_checkpoint_is_refused_and_nothing_loaded(
    checkpoint: Path, keypair: KeyPair, other_keypair: KeyPair, parsed: list[str], case: str
) -> None:
    tamper, error = SHARDED_TAMPER[case]
    tamper(checkpoint, keypair, other_keypair)
    with pytest.raises(error):
        mst.load_sharded(checkpoint, public_keys=[keypair.public])
    assert parsed == []


def write_checkpoint(
    directory: Path,
    shards: dict[str, dict[str, torch.Tensor]],
    weight_map: dict[str, str],
    keypair: KeyPair,
    **seal_options: Any,
) -> Path:
    """A checkpoint with the given shards and index, honestly sealed."""
    directory.mkdir()
    for name, tensors in shards.items():
        st.save_file(tensors, directory / name)
    index = {"metadata": {}, "weight_map": weight_map}
    (directory / mst.INDEX_NAME).write_text(json.dumps(index))
    modelseal.seal(directory, key=keypair.private, **seal_options)
    return directory


A, B, C = torch.ones(2), torch.zeros(3), torch.arange(4.0)


@pytest.mark.parametrize(
    ("shards", "weight_map", "seal_options", "message"),
    [
        pytest.param(
            {"s1.safetensors": {"a": A}, "s2.safetensors": {"b": B}},
            {"a": "s1.safetensors", "b": "s2.safetensors"},
            {"ignore": ["s2.safetensors"]},
            "not a file covered by the seal",
            id="shard not covered by the seal",
        ),
        pytest.param(
            {"s1.safetensors": {"a": A}},
            {"a": "s1.safetensors", "b": "../outside.safetensors"},
            {},
            "unsafe shard",
            id="shard outside the directory",
        ),
        pytest.param(
            {"s1.safetensors": {"a": A}},
            {"a": "s1.safetensors", "b": "/tmp/outside.safetensors"},
            {},
            "unsafe shard",
            id="absolute shard path",
        ),
        pytest.param(
            {"s1.safetensors": {"a": A}},
            {"a": "s1.safetensors", "b": "s2.safetensors"},
            {},
            "not a file covered by the seal",
            id="missing shard",
        ),
        pytest.param(
            {"s1.safetensors": {"a": A, "b": B}, "s2.safetensors": {"a": A, "c": C}},
            {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"},
            {},
            "in both",
            id="duplicate tensor across shards",
        ),
        pytest.param(
            {"s1.safetensors": {"a": A, "z": C}},
            {"a": "s1.safetensors"},
            {},
            "not listed in the index",
            id="tensor the index does not list",
        ),
        pytest.param(
            {"s1.safetensors": {"a": A, "b": B}, "s2.safetensors": {"c": C}},
            {"a": "s1.safetensors", "b": "s2.safetensors", "c": "s2.safetensors"},
            {},
            "index places it in",
            id="tensor in another shard than the index says",
        ),
        pytest.param(
            {"s1.safetensors": {"a": A}},
            {"a": "s1.safetensors", "b": "s1.safetensors"},
            {},
            "in no shard",
            id="index lists a tensor no shard holds",
        ),
    ],
)
def test_index_and_shards_must_agree(
    tmp_path: Path,
    keypair: KeyPair,
    shards: dict[str, dict[str, torch.Tensor]],
    weight_map: dict[str, str],
    seal_options: dict[str, Any],
    message: str,
) -> None:
    st.save_file({"b": B}, tmp_path / "outside.safetensors")
    directory = write_checkpoint(tmp_path / "ckpt", shards, weight_map, keypair, **seal_options)
    with pytest.raises(CheckpointError, match=message):
        mst.load_sharded(directory, public_keys=[keypair.public])


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (None, "no model.safetensors.index.json"),
        ("{not json", "not valid JSON"),
        ('{"weight_map": {"a": "s1.safetensors", "a": "s1.safetensors"}}', "duplicate"),
        ('{"metadata": {}}', "no weight_map"),
        ('{"weight_map": {}}', "no weight_map"),
        ('{"weight_map": {"a": 1}}', "not a file name"),
        ("[]", "no weight_map"),
    ],
)
def test_malformed_index_is_refused(
    tmp_path: Path, keypair: KeyPair, index: str | None, message: str
) -> None:
    directory = tmp_path / "ckpt"
    directory.mkdir()
    st.save_file({"a": A}, directory / "s1.safetensors")
    if index is not None:
        (directory / mst.INDEX_NAME).write_text(index)
    modelseal.seal(directory, key=keypair.private)
    with pytest.raises(CheckpointError, match=message):
        mst.load_sharded(directory, public_keys=[keypair.public])


def test_other_index_names_are_found(tmp_path: Path, keypair: KeyPair) -> None:
    directory = tmp_path / "unet"
    directory.mkdir()
    st.save_file({"a": A}, directory / "s1.safetensors")
    index = {"weight_map": {"a": "s1.safetensors"}}
    (directory / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    modelseal.seal(directory, key=keypair.private)
    assert torch.equal(mst.load_sharded(directory, public_keys=[keypair.public])["a"], A)
    (directory / "other.safetensors.index.json").write_text(json.dumps(index))
    modelseal.seal(directory, key=keypair.private)
    with pytest.raises(UsageError, match="several indexes"):
        mst.load_sharded(directory, public_keys=[keypair.public])


def test_swap_race_load_sharded(tmp_path: Path, keypair: KeyPair) -> None:
    state = {"a": torch.arange(64.0), "b": torch.zeros(32), "c": torch.ones(16)}
    directory = tmp_path / "ckpt"
    mst.save_sharded(state, directory, 100, key=keypair.private)
    target = directory / "model-00002-of-00003.safetensors"
    honest, evil = tmp_path / "honest.safetensors", tmp_path / "evil.safetensors"
    shutil.copyfile(target, honest)
    st.save_file({"b": torch.full((32,), 666.0)}, evil)
    result = race(
        target,
        honest,
        evil,
        lambda: mst.load_sharded(directory, public_keys=[keypair.public]),
        lambda loaded: same(loaded, state),  # type: ignore[arg-type]
        attempts=200,
    )
    assert result.loads + result.refused == 200


# -- usage ------------------------------------------------------------------------------------


def test_usage_errors(sealed: Path, checkpoint: Path, keypair: KeyPair, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="file object"), open(sealed, "rb") as handle:
        mst.load_file(handle, public_keys=[keypair.public])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="directory"):
        mst.load_file(checkpoint, public_keys=[keypair.public])
    with pytest.raises(UsageError, match="is a file"):
        mst.load_sharded(sealed, public_keys=[keypair.public])
    with pytest.raises(UsageError, match="backend"):
        mst.load_file(sealed, backend="fast", public_keys=[keypair.public])
    for size in ("", "5 parsecs", 0, -1, True, "0GB"):
        with pytest.raises(UsageError, match="max_shard_size"):
            mst.save_sharded({"a": A}, tmp_path / "x", size, key=keypair.private)  # type: ignore[arg-type]
    target = tmp_path / "never.safetensors"
    with pytest.raises(UsageError):
        mst.save_file({"a": A}, target, key=tmp_path / "no-such.key")
    with pytest.raises(UsageError):
        mst.save_sharded({"a": A}, tmp_path / "never", key=tmp_path / "no-such.key")
    assert not target.exists()
    assert not (tmp_path / "never").exists()
    assert not (tmp_path / "x").exists()


def test_shard_sizes(tmp_path: Path, keypair: KeyPair) -> None:
    tensors = {f"t{i}": torch.zeros(256, dtype=torch.uint8) for i in range(8)}
    for size, shards in ((256, 8), ("1KB", 3), ("1KiB", 2), ("100", 8), (10**9, 1)):
        directory = tmp_path / f"ckpt-{size}"
        mst.save_sharded(tensors, directory, size, key=keypair.private)
        assert len(list(directory.glob("model-*.safetensors"))) == shards, size
        assert mst.load_sharded(directory, public_keys=[keypair.public]).keys() == tensors.keys()
