"""Verified safetensors for PyTorch: `load_file`, `save_file`, and sharded checkpoints.

    from modelseal.integrations import safetensors as mst
    mst.save_file(tensors, "model.safetensors", key="trainer.key")
    tensors = mst.load_file("model.safetensors", public_keys=["trainer.pub"])
    mst.save_sharded(tensors, "ckpt/", max_shard_size="2GB", key="trainer.key")
    tensors = mst.load_sharded("ckpt/", public_keys=["trainer.pub"])

The file is verified while it is read into memory, and the tensors are built
from that very memory: they share it (no copy), so a file swapped on disk after
the read can never reach them. The header is parsed here, with the same rules
as safetensors itself (checked against it in the tests), because
`safetensors.torch.load(bytes)` would copy the whole file twice more.

A malformed header, or a sharded index that disagrees with its shards, raises
`CheckpointError` (an `IntegrityError`): the verified files do not form a
loadable checkpoint, so nothing is loaded.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal._internal import names
from modelseal.errors import IntegrityError, UsageError
from modelseal.integrations._common import KeySource, PathLike, Trust, require, seal_saved
from modelseal.loading import Buffer, VerifiedModel, open_verified
from modelseal.sealing import SealResult
from modelseal.signing import keys

if TYPE_CHECKING:
    from modelseal.policy import Policy

INDEX_NAME = "model.safetensors.index.json"
"""The index Hugging Face writes beside sharded weights."""

_INDEX_SUFFIX = ".safetensors.index.json"
_SHARD_NAME = "model-{index:05d}-of-{total:05d}.safetensors"
_SHARD_PATTERN = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
_USIZE = 1 << 64

# safetensors dtype -> torch dtype attribute (the ones safetensors.torch can load).
_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2": "float8_e5m2",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
}


class CheckpointError(IntegrityError):
    """The verified files are not a loadable checkpoint (bad header, index and shards disagree)."""


def load_file(
    filename: PathLike,
    device: str | int = "cpu",
    *,
    backend: str = "mmap",
    public_keys: Iterable[KeySource] | KeySource | None = None,
    allow_unsigned: bool = False,
    signature: PathLike | None = None,
    policy: Policy | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """`safetensors.torch.load_file`, from the verified bytes of a sealed file.

    `backend` is accepted for compatibility and ignored: the bytes are already in
    memory. The tensors share one buffer, which lives as long as any of them does.
    """
    if backend not in ("mmap", "pread"):
        raise UsageError(f"unknown safetensors backend {backend!r}")
    trust = Trust.of(public_keys, allow_unsigned, signature, policy, model_name)
    torch = require("torch", "torch")
    path = _path(filename, "load_file")
    with open_verified(path, **trust.kwargs()) as verified:
        if verified.names != (names.SINGLE_FILE_NAME,):
            raise UsageError(f"{path} is a directory: load_file takes one file (see load_sharded)")
        tensors = _tensors(torch, verified.take(names.SINGLE_FILE_NAME), str(path))
    return _to_device(tensors, device)


def save_file(
    tensors: Mapping[str, Any],
    filename: PathLike,
    metadata: Mapping[str, str] | None = None,
    *,
    key: PathLike | keys.PrivateKey | keys.Signer,
    signature: PathLike | None = None,
    name: str | None = None,
) -> SealResult:
    """`safetensors.torch.save_file`, then seal the file (`FILE.sig` unless `signature`)."""
    signer = signing_key(key)
    path = _path(filename, "save_file")
    st = require("safetensors.torch", "safetensors")
    st.save_file(dict(tensors), path, metadata=None if metadata is None else dict(metadata))
    return seal_saved(path, signer, signature, name=name)


def load_sharded(
    path: PathLike,
    device: str | int = "cpu",
    *,
    public_keys: Iterable[KeySource] | KeySource | None = None,
    allow_unsigned: bool = False,
    signature: PathLike | None = None,
    policy: Policy | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Load a sharded checkpoint (shards + `model.safetensors.index.json`) sealed as a directory.

    `path` is the directory, or its index file. The whole directory is verified;
    the index is read from the verified bytes, and every shard it names must be a
    verified file of the directory. Every tensor must sit in the shard the index
    names, once: anything else raises `CheckpointError`.
    """
    trust = Trust.of(public_keys, allow_unsigned, signature, policy, model_name)
    torch = require("torch", "torch")
    given = Path(os.fspath(path))
    index_name: str | None = None
    if given.name.endswith(_INDEX_SUFFIX) and not given.is_dir():
        directory, index_name = given.parent, given.name
    else:
        directory = given
    with open_verified(directory, **trust.kwargs()) as verified:
        if verified.names == (names.SINGLE_FILE_NAME,):
            raise UsageError(f"{directory} is a file: load_sharded takes a checkpoint directory")
        index_name = index_name or _find_index(verified, directory)
        weight_map = _weight_map(verified, index_name)
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            problem = names.name_problem(shard)
            if problem is not None or shard == names.SINGLE_FILE_NAME:
                raise CheckpointError(
                    f"{index_name} names an unsafe shard {shard!r}: {problem or 'the root'}"
                )
            if shard not in verified.names:
                raise CheckpointError(
                    f"shard {shard!r} named in {index_name} is not a file covered by the seal"
                )
        merged: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for shard in shards:
            for name, tensor in _tensors(torch, verified.take(shard), shard).items():
                if name in origin:
                    raise CheckpointError(f"tensor {name!r} is in both {origin[name]} and {shard}")
                where = weight_map.get(name)
                if where is None:
                    raise CheckpointError(f"tensor {name!r} in {shard} is not listed in the index")
                if where != shard:
                    raise CheckpointError(
                        f"tensor {name!r} is in {shard}, but the index places it in {where}"
                    )
                origin[name] = shard
                merged[name] = tensor
        absent = [name for name in weight_map if name not in origin]
        if absent:
            raise CheckpointError(
                f"{len(absent)} tensor(s) listed in {index_name} are in no shard: "
                + ", ".join(repr(name) for name in absent[:5])
            )
    return _to_device(merged, device)


def save_sharded(
    tensors: Mapping[str, Any],
    directory: PathLike,
    max_shard_size: int | str = "5GB",
    *,
    key: PathLike | keys.PrivateKey | keys.Signer,
    signature: PathLike | None = None,
    name: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> SealResult:
    """Write Hugging Face style shards `model-00001-of-0000N.safetensors` and the index, then
    seal the directory (`DIR/model.sig` unless `signature`).

    Tensors go into shards in order, a new shard starting when the next tensor would
    pass `max_shard_size` (bytes, or "500MB", "2GiB"...); a larger tensor gets a shard
    of its own. The index is written even for one shard, so `load_sharded` always
    finds it. Shards of an earlier save with another shard count are removed.
    `metadata` goes into every shard header (default {"format": "pt"}, as transformers).
    """
    signer = signing_key(key)
    limit = _parse_size(max_shard_size)
    st = require("safetensors.torch", "safetensors")
    if not tensors:
        raise UsageError("save_sharded needs at least one tensor")
    groups: list[dict[str, Any]] = [{}]
    filled = 0
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise UsageError(f"tensor names must be strings, not {name!r}")
        size = tensor.numel() * tensor.element_size()
        if groups[-1] and filled + size > limit:
            groups.append({})
            filled = 0
        groups[-1][name] = tensor
        filled += size
    root = Path(os.fspath(directory))
    root.mkdir(parents=True, exist_ok=True)
    shard_names = [
        _SHARD_NAME.format(index=i, total=len(groups)) for i in range(1, len(groups) + 1)
    ]
    for stale in root.iterdir():
        if _SHARD_PATTERN.fullmatch(stale.name) and stale.name not in shard_names:
            stale.unlink()
    header = {"format": "pt"} if metadata is None else dict(metadata)
    weight_map: dict[str, str] = {}
    for shard, group in zip(shard_names, groups, strict=True):
        st.save_file(group, root / shard, metadata=header)
        weight_map.update(dict.fromkeys(group, shard))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (root / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return seal_saved(root, signer, signature, name=name)


def signing_key(
    key: PathLike | keys.PrivateKey | keys.Signer | None,
) -> keys.PrivateKey | keys.Signer:
    """Load the signing key before anything is written, so a bad key leaves no unsealed model."""
    if key is None:
        raise UsageError("save needs key= (the private key that seals the model)")
    if isinstance(key, (str, os.PathLike)):
        return keys.load_private_key(key)
    return key


def _path(value: object, call: str) -> Path:
    if isinstance(value, (str, os.PathLike)):
        return Path(os.fspath(value))
    raise UsageError(
        f"{call} needs a path: a file object cannot be verified (got {type(value).__name__})"
    )


def _find_index(verified: VerifiedModel, directory: Path) -> str:
    if INDEX_NAME in verified.names:
        return INDEX_NAME
    found = [n for n in verified.names if "/" not in n and n.endswith(_INDEX_SUFFIX)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise CheckpointError(f"no {INDEX_NAME} among the sealed files of {directory}")
    raise UsageError(f"several indexes in {directory}: pass the one to load ({', '.join(found)})")


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate key {name!r}")
        result[name] = value
    return result


def _refuse_constant(value: str) -> None:
    raise ValueError(f"{value} is not JSON")


def _json(data: bytes | memoryview, what: str) -> Any:
    try:
        return json.loads(
            bytes(data).decode("utf-8"),
            object_pairs_hook=_strict_object,
            parse_constant=_refuse_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{what} is not valid JSON: {exc}") from None


def _weight_map(verified: VerifiedModel, index_name: str) -> dict[str, str]:
    index = _json(verified.buffer(index_name), index_name)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_name} has no weight_map of tensor names to shard files")
    for name, shard in weight_map.items():
        if not isinstance(shard, str):
            raise CheckpointError(f"{index_name}: the shard of {name!r} is not a file name")
    return weight_map


def _usize(value: object) -> bool:
    return type(value) is int and 0 <= value < _USIZE


def _tensors(torch: Any, data: Buffer, what: str) -> dict[str, Any]:
    """The tensors of one safetensors file, sharing `data` (validated as safetensors does)."""
    if sys.byteorder != "little":  # pragma: no cover - the format is little-endian
        st = require("safetensors.torch", "safetensors")
        return dict(st.load(bytes(data)))
    if len(data) < 8:
        raise CheckpointError(f"{what} is not a safetensors file: shorter than its header size")
    size = int.from_bytes(data[:8], "little")
    if size > _MAX_HEADER:
        raise CheckpointError(f"{what}: safetensors header of {size} bytes is too large")
    start = 8 + size
    if start > len(data):
        raise CheckpointError(f"{what}: safetensors header size {size} passes the end of the file")
    header = _json(memoryview(data)[8:start], f"the safetensors header of {what}")
    if not isinstance(header, dict):
        raise CheckpointError(f"{what}: the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise CheckpointError(f"{what}: __metadata__ is not a map of strings to strings")
    layout = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise CheckpointError(f"{what}: tensor {name!r} is not described by an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise CheckpointError(f"{what}: tensor {name!r} has unsupported dtype {dtype!r}")
        torch_dtype = getattr(torch, _DTYPES[dtype], None)
        if torch_dtype is None:  # pragma: no cover - an older torch
            raise CheckpointError(f"{what}: this torch has no dtype for {dtype}")
        if not isinstance(shape, list) or not all(_usize(n) for n in shape):
            raise CheckpointError(f"{what}: tensor {name!r} has an invalid shape {shape!r}")
        if not (
            isinstance(offsets, list) and len(offsets) == 2 and all(_usize(n) for n in offsets)
        ):
            raise CheckpointError(f"{what}: tensor {name!r} has invalid data_offsets {offsets!r}")
        layout.append((offsets[0], offsets[1], name, torch_dtype, shape))
    layout.sort(key=lambda item: (item[0], item[1]))
    end = 0
    for begin, stop, name, torch_dtype, shape in layout:
        if begin != end or stop < begin:
            raise CheckpointError(f"{what}: tensor {name!r} does not follow the previous one")
        if math.prod(shape) * torch_dtype.itemsize != stop - begin:
            raise CheckpointError(f"{what}: tensor {name!r} has the wrong number of bytes")
        end = stop
    if start + end != len(data):
        raise CheckpointError(f"{what}: the tensors do not cover the file exactly")
    tensors: dict[str, Any] = {}
    for begin, stop, name, torch_dtype, shape in layout:
        if stop == begin:
            tensors[name] = torch.empty(shape, dtype=torch_dtype)
            continue
        count = math.prod(shape)
        tensor = torch.frombuffer(data, dtype=torch_dtype, count=count, offset=start + begin)
        if tensor.data_ptr() % tensor.element_size():
            tensor = tensor.clone()  # unaligned in the file: some kernels need alignment
        tensors[name] = tensor.reshape(shape)
    return tensors


def _to_device(tensors: dict[str, Any], device: str | int) -> dict[str, Any]:
    if str(device) == "cpu":
        return tensors
    return {name: tensor.to(device) for name, tensor in tensors.items()}


_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def _parse_size(value: int | str) -> int:
    if isinstance(value, bool):
        raise UsageError(f"max_shard_size must be a number of bytes, not {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(value))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            raise UsageError(f"max_shard_size {value!r}: use bytes, or a size such as '2GB'")
        size = int(match.group(1)) * _UNITS[unit]
    if size <= 0:
        raise UsageError(f"max_shard_size must be positive, not {value!r}")
    return size
