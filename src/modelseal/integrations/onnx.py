"""Verified ONNX: `onnx_load`, `onnx_save`, and `inference_session` for onnxruntime.

    from modelseal.integrations import onnx as monnx
    monnx.onnx_save(model, "net/model.onnx", save_as_external_data=True, key="trainer.key")
    model = monnx.onnx_load("net/model.onnx", public_keys=["trainer.pub"])
    session = monnx.inference_session("net/model.onnx", public_keys=["trainer.pub"])

How an ONNX model is sealed, and which seal a loader picks (it is given the .onnx path):

- a lone file, every weight inside it: `model.onnx.sig` beside it;
- a model with external data: its whole directory (the directory of the .onnx, holding
  the .onnx, its external-data files and nothing else), sealed as `DIR/model.sig`.

Without `signature=`, the loader uses whichever of the two exists, and refuses with a
UsageError when both do. With `signature=`, the seal itself says which (a seal of a lone
file lists the single name '.').

onnx and onnxruntime never read the model's own files. Every external tensor's
`location` must be a plain relative name (no `..`, absolute path, backslash), naming a
regular file covered by the directory seal (the verification refuses symlinks), and its
offset and length must lie inside that file; anything else raises `OnnxModelError`.
`inference_session` also refuses EPContext nodes that name a context file (embed_mode=0),
and, when it loads from a snapshot, a session option that redirects external data.

Where the verified bytes live: models up to `SNAPSHOT_ABOVE` bytes on disk are verified
into memory; larger ones into a private snapshot (`open_verified(snapshot=True)`: a 0700
temporary directory, removed at the end of the call). Measured on 512 MiB of external
weights, the snapshot is faster than memory for both loaders and halves `onnx_load`'s
peak memory (a copy in page cache instead of a second one in the process).

- `onnx_load` parses the verified .onnx bytes and fills each external tensor from the
  verified bytes (the buffer in memory, or the snapshot's private copy), as onnx.load
  fills them from disk.
- `inference_session` gives onnxruntime, for small models, the verified bytes with the
  external data embedded into the proto from the verified buffers; for large ones (or an
  embedding that would pass protobuf's 2 GiB limit), the path of the .onnx inside the
  snapshot, so onnxruntime reads only the private copy of what was verified (on Linux, a
  file onnxruntime mapped stays readable after the snapshot is removed). Embedding 512
  MiB costs about 2.5x the snapshot: the weights are copied three more times.
"""

from __future__ import annotations

import json
import mmap
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal._internal import names
from modelseal.errors import SealError, UnsafeModelError, UsageError
from modelseal.integrations._common import KeySource, PathLike, Trust, require, seal_saved
from modelseal.loading import VerifiedModel, open_verified
from modelseal.manifest import GIT_PATHS, Manifest
from modelseal.sealing import SealResult
from modelseal.signing import keys
from modelseal.signing.bundle import read_seal
from modelseal.verification import seal_name_inside

if TYPE_CHECKING:
    from modelseal.policy import Policy

DIRECTORY_SEAL = "model.sig"
"""The seal of a model directory (one with external data), inside it."""

SNAPSHOT_ABOVE = 16 * 1024 * 1024
"""Models larger than this on disk are verified into a private snapshot, not memory."""

PROTOBUF_LIMIT = 2**31 - 1
"""Protobuf cannot serialize a message this large: above it, embedding is impossible."""

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)

_SINGLE = names.SINGLE_FILE_NAME
_EXTERNAL_KEYS = frozenset({"location", "offset", "length", "checksum", "basepath"})
_NUMBER = re.compile(r"[0-9]{1,19}")
# Message types that never hold a tensor or a node: not worth walking into.
_LEAVES = frozenset({"ValueInfoProto", "TypeProto", "StringStringEntryProto", "OperatorSetIdProto"})
# Bytes every external tensor (its "location" key) or EPContext node must contain.
_MARKERS = (b"location", b"EPContext")
_FOLDER_ENTRY = "session.model_external_initializers_file_folder_path"


class OnnxModelError(UnsafeModelError):
    """The verified files are not an ONNX model this loader hands over: unparsable, or
    external data that is unsafe, not covered by the seal, or outside its file."""


@dataclass(frozen=True)
class _Layout:
    """What gets verified for one .onnx path: the file alone, or its directory."""

    model: Path
    """The .onnx file as given."""
    root: Path
    """The file itself, or its directory."""
    name: str
    """The .onnx among the verified names ('.' for a lone file)."""
    signature: Path
    unsealed: bool = False
    """Neither seal exists (the verification will say so)."""

    @property
    def is_directory(self) -> bool:
        return self.name != _SINGLE


@dataclass(frozen=True)
class _Ref:
    """One external tensor, resolved against the verified files."""

    tensor: Any
    name: str
    offset: int
    length: int


def onnx_load(
    f: PathLike,
    format: str | None = None,
    load_external_data: bool = True,
    *,
    public_keys: Iterable[KeySource] | KeySource | None = None,
    allow_unsigned: bool = False,
    signature: PathLike | None = None,
    policy: Policy | None = None,
    model_name: str | None = None,
) -> Any:
    """`onnx.load`, from the verified bytes of a sealed model (a path, not a file object).

    External tensors are filled from the verified buffers, as onnx.load fills them from
    disk. With `load_external_data=False` they are left as references (locations still
    checked); loading them later from disk is outside what was verified.
    """
    trust = Trust.of(public_keys, allow_unsigned, signature, policy, model_name)
    onnx = require("onnx", "onnx")
    layout = _layout(_model_path(f, "onnx_load"), trust.signature)
    fmt = _format(onnx, format, layout.model)
    snapshot = _size_on_disk(layout) > SNAPSHOT_ABOVE
    with _verified(layout, trust, snapshot=snapshot) as verified:
        model = _parse(onnx, _model_bytes(verified, layout), fmt)
        files = _files(verified, layout) if load_external_data else None
        refs = _external_refs(onnx, model, files, resolve=load_external_data, layout=layout)
        _fill(onnx, refs, verified)
    return model


def onnx_save(
    proto: Any,
    f: PathLike,
    format: str | None = None,
    *,
    save_as_external_data: bool = False,
    all_tensors_to_one_file: bool = True,
    location: str | None = None,
    size_threshold: int = 1024,
    convert_attribute: bool = False,
    key: PathLike | keys.PrivateKey | keys.Signer,
    signature: PathLike | None = None,
    name: str | None = None,
) -> SealResult:
    """`onnx.save_model`, then seal: the file (`FILE.sig`), or with external data the
    directory (`DIR/model.sig`), which must then hold nothing but this model.

    As with onnx, saving external data rewrites `proto`'s tensors into references.
    """
    if key is None:
        raise UsageError("onnx_save needs key= (the private key that seals the model)")
    onnx = require("onnx", "onnx")
    path = _model_path(f, "onnx_save", exists=False)
    if location is not None:
        problem = names.name_problem(location) if location != _SINGLE else "not a file name"
        if problem is not None:
            raise UsageError(f"external data location {location!r} is refused: {problem}")
    onnx.save_model(
        proto,
        os.fspath(path),
        format,
        save_as_external_data=save_as_external_data,
        all_tensors_to_one_file=all_tensors_to_one_file,
        location=location,
        size_threshold=size_threshold,
        convert_attribute=convert_attribute,
    )
    external = save_as_external_data or (
        isinstance(proto, onnx.ModelProto) and any(True for _ in _external_tensors(onnx, proto))
    )
    if not external:
        return seal_saved(path, key, signature, name=name)
    # Read back what was written (the .onnx only) to learn which files the model uses.
    saved = onnx.load_model(os.fspath(path), format, load_external_data=False)
    used = {path.name}
    try:
        for tensor in _external_tensors(onnx, saved):
            used.add(_location(tensor, _entries(tensor)))
    except OnnxModelError as exc:
        raise UsageError(f"the model was saved, not sealed: {exc}") from None
    directory = path.parent
    _check_only_model(directory, used, signature)
    return seal_saved(directory, key, signature, name=name)


def inference_session(
    path_or_bytes: PathLike,
    sess_options: Any = None,
    providers: Iterable[Any] | None = None,
    provider_options: Iterable[Any] | None = None,
    *,
    public_keys: Iterable[KeySource] | KeySource | None = None,
    allow_unsigned: bool = False,
    signature: PathLike | None = None,
    policy: Policy | None = None,
    model_name: str | None = None,
    **kwargs: Any,
) -> Any:
    """`onnxruntime.InferenceSession` over a sealed model (a path, not bytes).

    `providers` defaults to CPU only (onnxruntime's own default is every provider it
    has). Other keyword arguments go to InferenceSession unchanged.
    """
    trust = Trust.of(public_keys, allow_unsigned, signature, policy, model_name)
    ort = require("onnxruntime", "onnx")
    layout = _layout(_model_path(path_or_bytes, "inference_session"), trust.signature)
    ort_format = _is_ort_format(layout.model, sess_options)

    def create(model: bytes | str) -> Any:
        return ort.InferenceSession(
            model,
            sess_options=sess_options,
            providers=list(DEFAULT_PROVIDERS if providers is None else providers),
            provider_options=None if provider_options is None else list(provider_options),
            **kwargs,
        )

    if _size_on_disk(layout) <= SNAPSHOT_ABOVE:
        with _verified(layout, trust, snapshot=False) as verified:
            data = _session_bytes(verified, layout, ort_format)
        if data is not None:
            return create(data)
    with _verified(layout, trust, snapshot=True) as verified:
        _covered(verified, layout)
        model_file = verified.file_path(layout.name)
        if not ort_format and _mentions_markers(model_file):
            onnx = require("onnx", "onnx")
            model = _parse(onnx, model_file.read_bytes(), "protobuf")
            refs = _external_refs(onnx, model, _files(verified, layout), layout=layout, ep=True)
            if refs and _folder_override(sess_options):
                raise UsageError(
                    f"sess_options sets {_FOLDER_ENTRY}: onnxruntime would read external data "
                    "from there, not from what was verified"
                )
        return create(str(model_file))


# --- layout and verification ---------------------------------------------------------


def _model_path(f: object, what: str, *, exists: bool = True) -> Path:
    if not isinstance(f, (str, os.PathLike)):
        raise UsageError(
            f"{what} works on a sealed model on disk: pass the path of the .onnx file, "
            f"not a {type(f).__name__}"
        )
    path = Path(os.fspath(f))
    if path.is_dir():
        raise UsageError(f"{path} is a directory: pass the path of the .onnx file in it")
    if exists and not os.path.lexists(path):
        raise UsageError(f"model not found: {path}")
    return path


def _layout(model: Path, signature: PathLike | None) -> _Layout:
    directory = model.parent
    file_seal = model.with_name(model.name + ".sig")
    directory_seal = directory / DIRECTORY_SEAL
    if signature is not None:
        seal = Path(os.fspath(signature))
        if _seals_one_file(seal):
            return _Layout(model, model, _SINGLE, seal)
        return _Layout(model, directory, model.name, seal)
    has_file, has_directory = os.path.lexists(file_seal), os.path.lexists(directory_seal)
    if has_file and has_directory:
        raise UsageError(
            f"{model} has two seals, {file_seal} (the file alone) and {directory_seal} "
            "(its directory): pass signature= to say which one to trust"
        )
    if has_directory:
        return _Layout(model, directory, model.name, directory_seal)
    return _Layout(model, model, _SINGLE, file_seal, unsealed=not has_file)


def _seals_one_file(seal: Path) -> bool:
    """Whether a seal lists the single name '.' (read only to choose what to verify: the
    verification reads it again and checks everything)."""
    try:
        statement = json.loads(read_seal(seal).envelope.payload)
        return Manifest.from_statement(statement).files == (_SINGLE,)
    except (SealError, ValueError, RecursionError):
        return True  # the verification reports what is wrong with it


@contextmanager
def _verified(layout: _Layout, trust: Trust, *, snapshot: bool) -> Iterator[VerifiedModel]:
    try:
        with open_verified(
            layout.root,
            public_keys=trust.public_keys,
            allow_unsigned=trust.allow_unsigned,
            signature=layout.signature,
            snapshot=snapshot,
            policy=trust.policy,
        ) as verified:
            yield verified
    except SealError as exc:
        if not layout.unsealed:
            raise
        hint = f" (nor as a directory at {layout.model.parent / DIRECTORY_SEAL})"
        raise SealError(str(exc) + hint, exc.failure) from None


def _covered(verified: VerifiedModel, layout: _Layout) -> None:
    if layout.name not in verified.names:
        raise OnnxModelError(
            f"the seal of {layout.root} does not cover {layout.name}", name=layout.name
        )


def _model_bytes(verified: VerifiedModel, layout: _Layout) -> bytes:
    _covered(verified, layout)
    return verified.read(layout.name)


def _files(verified: VerifiedModel, layout: _Layout) -> dict[str, int] | None:
    """Verified file sizes by name, or None when the seal covers the .onnx alone."""
    if not layout.is_directory:
        return None
    if verified.path is not None:
        return {name: verified.file_path(name).stat().st_size for name in verified.names}
    return {name: len(verified.buffer(name)) for name in verified.names}


def _size_on_disk(layout: _Layout) -> int:
    """The model's size before verification: only to choose bytes or snapshot."""
    try:
        if not layout.is_directory:
            return layout.model.stat().st_size
        total = 0
        for top, _, files in os.walk(layout.root):
            for file in files:
                total += os.lstat(os.path.join(top, file)).st_size
        return total
    except OSError:
        return 0  # the verification reports it


# --- external data -------------------------------------------------------------------


def _walk(onnx: Any, model: Any) -> Iterator[Any]:
    """Every TensorProto and NodeProto anywhere in the model (graphs, subgraphs,
    functions, attributes, sparse tensors, training info): complete by construction."""
    stack = [model]
    while stack:
        message = stack.pop()
        if isinstance(message, onnx.TensorProto):
            yield message
            continue  # nothing inside; and ListFields would copy raw_data
        if isinstance(message, onnx.NodeProto):
            yield message
        for field, value in message.ListFields():
            if field.message_type is None or field.message_type.name in _LEAVES:
                continue
            if hasattr(value, "ListFields"):
                stack.append(value)
            else:
                stack.extend(value)


def _external_tensors(onnx: Any, model: Any) -> Iterator[Any]:
    for item in _walk(onnx, model):
        if isinstance(item, onnx.TensorProto) and _is_external(onnx, item):
            yield item


def _is_external(onnx: Any, tensor: Any) -> bool:
    return bool(
        tensor.HasField("data_location") and tensor.data_location == onnx.TensorProto.EXTERNAL
    )


def _entries(tensor: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in tensor.external_data:
        if entry.key not in _EXTERNAL_KEYS:
            raise OnnxModelError(f"tensor {tensor.name!r}: unknown external data key {entry.key!r}")
        if entry.key in found:
            raise OnnxModelError(f"tensor {tensor.name!r}: external data key {entry.key!r} twice")
        found[entry.key] = entry.value
    return found


def _location(tensor: Any, entries: Mapping[str, str]) -> str:
    location = entries.get("location")
    if location is None:
        raise OnnxModelError(f"tensor {tensor.name!r}: external data without a location")
    problem = names.name_problem(location) if location != _SINGLE else "not a file name"
    if problem is not None:
        raise OnnxModelError(
            f"tensor {tensor.name!r}: external data location {location!r} is refused: {problem}",
            name=location,
        )
    return location


def _number(tensor: Any, entries: Mapping[str, str], key: str) -> int | None:
    value = entries.get(key)
    if value is None:
        return None
    if not _NUMBER.fullmatch(value):
        raise OnnxModelError(f"tensor {tensor.name!r}: external data {key} {value!r} is not a size")
    return int(value)


def _external_refs(
    onnx: Any,
    model: Any,
    files: Mapping[str, int] | None,
    *,
    layout: _Layout,
    resolve: bool = True,
    ep: bool = False,
) -> list[_Ref]:
    """Check every external tensor; with `resolve`, against the verified files.

    `ep`: also refuse EPContext nodes that name a context file (embed_mode=0), which
    onnxruntime would open itself.
    """
    refs = []
    for item in _walk(onnx, model):
        if isinstance(item, onnx.NodeProto):
            if ep and item.op_type == "EPContext" and _embed_mode(item) != 1:
                raise OnnxModelError(
                    f"EPContext node {item.name!r} refers to a context file (embed_mode=0), "
                    "which onnxruntime would read from disk unverified"
                )
            continue
        if not _is_external(onnx, item):
            continue
        entries = _entries(item)
        location = _location(item, entries)
        offset = _number(item, entries, "offset") or 0
        length = _number(item, entries, "length")
        if not resolve:
            continue
        if files is None:
            raise OnnxModelError(
                f"tensor {item.name!r} keeps its data in {location!r}, but the seal covers "
                f"{layout.model.name} alone: seal the model directory (its {DIRECTORY_SEAL})",
                name=location,
            )
        size = files.get(location)
        if size is None:
            raise OnnxModelError(
                f"tensor {item.name!r} keeps its data in {location!r}, which is not a file "
                "covered by the seal",
                name=location,
            )
        if length is None:
            length = size - offset
        if offset > size or length < 0 or offset + length > size:
            raise OnnxModelError(
                f"tensor {item.name!r}: external data at offset {offset}, length {length} "
                f"lies outside {location!r} ({size} bytes)",
                name=location,
            )
        refs.append(_Ref(item, location, offset, length))
    return refs


def _embed_mode(node: Any) -> int:
    for attribute in node.attribute:
        if attribute.name == "embed_mode":
            return int(attribute.i)
    return 1  # onnxruntime's default: the context is inside the node


def _fill(onnx: Any, refs: list[_Ref], verified: VerifiedModel) -> None:
    """Fill external tensors from verified bytes, exactly as onnx.load does from disk."""
    by_file: dict[str, list[_Ref]] = {}
    for ref in refs:
        by_file.setdefault(ref.name, []).append(ref)
    for name, group in by_file.items():
        if verified.path is None:
            view = verified.buffer(name)
            for ref in group:
                _set_raw(onnx, ref, view[ref.offset : ref.offset + ref.length].tobytes())
            continue
        with open(verified.file_path(name), "rb") as handle:  # the private snapshot
            for ref in group:
                handle.seek(ref.offset)
                data = handle.read(ref.length)
                if len(data) != ref.length:  # pragma: no cover - checked against its size
                    raise OnnxModelError(f"short read of {name!r} in the snapshot", name=name)
                _set_raw(onnx, ref, data)


def _set_raw(onnx: Any, ref: _Ref, data: bytes) -> None:
    ref.tensor.raw_data = data
    ref.tensor.data_location = onnx.TensorProto.DEFAULT
    del ref.tensor.external_data[:]


# --- onnx and onnxruntime glue -------------------------------------------------------


def _format(onnx: Any, fmt: str | None, path: Path) -> str:
    registry = onnx.serialization.registry
    if fmt is None:
        fmt = registry.get_format_from_file_extension(path.suffix) or "protobuf"
    try:
        registry.get(fmt)
    except ValueError as exc:
        raise UsageError(f"unknown ONNX serialization format {fmt!r}: {exc}") from None
    return str(fmt)


def _parse(onnx: Any, data: bytes, fmt: str) -> Any:
    try:
        return onnx.load_model_from_string(data, format=fmt)
    except Exception as exc:  # protobuf raises DecodeError, text formats ParseError
        raise OnnxModelError(f"the verified model is not a valid ONNX {fmt} file: {exc}") from None


def _session_bytes(verified: VerifiedModel, layout: _Layout, ort_format: bool) -> bytes | None:
    """The bytes for onnxruntime: the verified .onnx, with external data embedded from
    the verified buffers. None when that would pass protobuf's limit."""
    data = _model_bytes(verified, layout)
    if ort_format or not any(marker in data for marker in _MARKERS):
        return data  # nothing in it can name a file
    onnx = require("onnx", "onnx")
    model = _parse(onnx, data, "protobuf")
    refs = _external_refs(onnx, model, _files(verified, layout), layout=layout, ep=True)
    if not refs:
        return data
    if model.ByteSize() + sum(ref.length + 16 for ref in refs) > PROTOBUF_LIMIT:
        return None
    _fill(onnx, refs, verified)
    serialized: bytes = model.SerializeToString()
    return serialized


def _mentions_markers(path: Path) -> bool:
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return False
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return any(mapped.find(marker) >= 0 for marker in _MARKERS)


def _is_ort_format(path: Path, sess_options: Any) -> bool:
    if sess_options is not None:
        try:
            return str(sess_options.get_session_config_entry("session.load_model_format")) == "ORT"
        except RuntimeError:
            pass  # not set
    return path.suffix.lower() == ".ort"


def _folder_override(sess_options: Any) -> bool:
    if sess_options is None:
        return False
    try:
        return bool(sess_options.get_session_config_entry(_FOLDER_ENTRY))
    except RuntimeError:
        return False


def _check_only_model(directory: Path, used: set[str], signature: PathLike | None) -> None:
    """A directory seal covers every file in it: refuse to seal strangers to the model."""
    seal = Path(os.fspath(signature)) if signature is not None else directory / DIRECTORY_SEAL
    skip = seal_name_inside(directory, seal)
    strangers = []
    for top, dirs, files in os.walk(directory):
        for file in sorted(dirs + files):
            full = os.path.join(top, file)
            name = Path(os.path.relpath(full, directory)).as_posix()
            if name == skip or any(names.is_under(name, git) for git in GIT_PATHS):
                continue
            if os.path.isdir(full) and not os.path.islink(full):
                continue
            if name not in used:
                strangers.append(name)
    if strangers:
        listed = ", ".join(strangers[:5]) + (" ..." if len(strangers) > 5 else "")
        raise UsageError(
            f"the model was saved, not sealed: a model with external data is sealed as its "
            f"whole directory, and {directory} also holds {listed}; save it into a directory "
            "of its own"
        )
