"""Keras 3: `keras.saving.load_model` from verified bytes, and a sealing save.

A `.keras` archive and a legacy `.h5` file are verified into memory and Keras
reads those bytes: the `.keras` loader of `keras.src.saving.saving_lib` takes a
file object, and the legacy loader takes an `h5py.File` opened over one. Both
are Keras internals, so when a Keras release moves them the file is loaded from
a private snapshot with the same name instead (same bytes, one more copy). An
unzipped Keras model directory (`config.json` inside) always loads from a
snapshot, removed as soon as Keras returns: Keras reads weights and assets
during the load, never after (it deletes the assets it extracts from a
`.keras` archive before returning, too).

Keras 3 cannot load a TensorFlow SavedModel directory; use
`modelseal.integrations.tensorflow.saved_model_load` for those.

`safe_mode=True` (Keras' default, which refuses Python lambdas in the config)
stays the default here. Passing `safe_mode=False` is honoured and logged at
WARNING on the "modelseal" logger: a seal says who made the model, not that
its code is harmless.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal.errors import UsageError
from modelseal.integrations._common import KeySource, PathLike, Trust, require, seal_saved
from modelseal.loading import VerifiedModel, open_verified
from modelseal.sealing import SealResult
from modelseal.signing import keys

if TYPE_CHECKING:
    from modelseal.policy import Policy

logger = logging.getLogger("modelseal")

_H5 = (".h5", ".hdf5")
_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def _internal(module: str, name: str) -> Callable[..., Any] | None:
    """A Keras internal loader, or None when this Keras release has moved it."""
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return found if callable(found) else None


def _check_path(filepath: PathLike) -> Path:
    """Refuse what cannot be verified locally, with the way out."""
    text = os.fspath(filepath)
    if "://" in text:
        raise UsageError(f"only a local model can be verified: {text} (download it first)")
    path = Path(text)
    if path.is_dir():
        if any((path / name).is_file() for name in _SAVED_MODEL_FILES):
            raise UsageError(
                f"{path} is a TensorFlow SavedModel, which Keras 3 cannot load: use "
                "modelseal.integrations.tensorflow.saved_model_load"
            )
        if not (path / "config.json").is_file():
            raise UsageError(
                f"{path} is not a Keras model directory (no config.json); modelseal loads "
                ".keras archives, unzipped Keras directories and legacy .h5 files"
            )
    elif not path.name.endswith((".keras", *_H5)):
        raise UsageError(
            f"{path}: modelseal loads .keras archives, unzipped Keras directories and "
            "legacy .h5/.hdf5 files"
        )
    return path


def load_model(
    filepath: PathLike,
    custom_objects: dict[str, Any] | None = None,
    compile: bool = True,
    safe_mode: bool = True,
    *,
    public_keys: Iterable[KeySource] | KeySource | None = None,
    allow_unsigned: bool = False,
    signature: PathLike | None = None,
    policy: Policy | None = None,
    model_name: str | None = None,
) -> Any:
    """`keras.saving.load_model`, from the bytes that were verified.

    Raises `IntegrityError` (and loads nothing) when the model does not match
    its seal or the seal is not signed by one of `public_keys`.
    """
    keras = require("keras", "keras")
    trust = Trust.of(public_keys, allow_unsigned, signature, policy, model_name)
    path = _check_path(filepath)
    if not safe_mode:
        logger.warning(
            "loading %s with Keras safe_mode=%r: Keras may run Python code stored in the "
            "model's config (Lambda layers); the seal only proves who made the model",
            path,
            safe_mode,
        )
    options = {"custom_objects": custom_objects, "compile": compile, "safe_mode": safe_mode}

    if path.is_dir():
        with open_verified(path, snapshot=True, **trust.kwargs()) as verified:
            if "config.json" not in verified.names:
                raise UsageError(f"{path}: the seal does not cover config.json")
            assert verified.path is not None
            return keras.saving.load_model(verified.path, **options)

    if path.name.endswith(_H5):
        from_h5 = _internal("keras.src.legacy.saving.legacy_h5_format", "load_model_from_hdf5")
        if from_h5 is not None:
            h5py = require("h5py", "keras")
            with open_verified(path, **trust.kwargs()) as verified:
                return _load_h5(h5py, from_h5, verified, path, options)
    else:
        from_zip = _internal("keras.src.saving.saving_lib", "load_model")
        if from_zip is not None:
            with (
                open_verified(path, **trust.kwargs()) as verified,
                tempfile.TemporaryDirectory(prefix="modelseal-keras-") as private,
                _NamedReader(verified.open().detach(), os.path.join(private, path.name)) as handle,
            ):
                if not _is_zip(handle):
                    raise UsageError(f"{path} is not a .keras archive (not a zip file)")
                return from_zip(handle, **options)

    # This Keras keeps its loaders elsewhere: a snapshot with the same file name.
    with open_verified(path, snapshot=True, **trust.kwargs()) as verified:
        assert verified.path is not None
        return keras.saving.load_model(verified.path, **options)


class _NamedReader(io.BufferedReader):
    """Verified bytes under a name in a private directory.

    When Keras judges the weights too big to copy into memory, it extracts them
    into a temporary directory beside `fileobj.name` (as it does beside the
    original file) instead of reading them through the zip on the fly, which is
    several times slower. The name points into a fresh 0700 directory, so what
    Keras extracts there is the verified bytes and nobody else's.
    """

    def __init__(self, raw: Any, name: str) -> None:
        super().__init__(raw)
        self._name = name

    @property
    def name(self) -> str:
        return self._name


def _is_zip(handle: io.BufferedIOBase) -> bool:
    try:
        found = zipfile.is_zipfile(handle)
    except OSError:  # a seek before the start (fewer than 22 bytes), as on a real file
        found = False
    handle.seek(0)
    return found


def _load_h5(
    h5py: Any,
    from_h5: Callable[..., Any],
    verified: VerifiedModel,
    path: Path,
    options: dict[str, Any],
) -> Any:
    with verified.open() as handle:
        try:
            h5 = h5py.File(handle, "r")
        except OSError as exc:
            raise UsageError(f"{path} is not an HDF5 file ({exc})") from None
        with h5:
            return from_h5(h5, **options)


def save_model(
    model: Any,
    filepath: PathLike,
    overwrite: bool = True,
    *,
    key: PathLike | keys.PrivateKey | keys.Signer,
    signature: PathLike | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> SealResult:
    """`keras.saving.save_model`, then seal what it wrote (`.keras`, `.h5`, or a directory).

    The seal goes beside a file (`model.keras.sig`) or inside a directory
    (`model.sig`) unless `signature=` says otherwise. Where Keras would ask
    on the terminal before overwriting (`overwrite=False`), this refuses: a
    seal must never be written over a file that was not just saved.
    """
    keras = require("keras", "keras")
    if key is None:
        raise UsageError("save_model needs key= (the private key that seals the model)")
    if not overwrite and os.path.exists(filepath):
        raise UsageError(f"{filepath} exists and overwrite=False")
    keras.saving.save_model(model, filepath, overwrite=overwrite, **kwargs)
    if not os.path.exists(filepath):
        raise UsageError(f"Keras wrote nothing at {filepath}")
    return seal_saved(filepath, key, signature, name=name)


def get_file(
    fname: str | None = None,
    origin: str | None = None,
    file_hash: str | None = None,
    *,
    lock: Any = None,
    policy: Policy | None = None,
    snapshot_dir: PathLike | None = None,
    **keras_kwargs: Any,
) -> str:
    """`keras.utils.get_file`, plus a full SHA-256 pin for `origin` from the lock.

    Keras downloads (or serves from its cache) and runs its own check of `file_hash`
    (md5 or sha256) when one is given; then the file is hashed again on every call,
    cached or not, against the lock's pin for `origin` (`lock`: a `Lock`, a path, or
    None for ./models.lock). No pin: `UnpinnedDownloadError` before anything is
    downloaded, unless the entry is TOFU (its first digest is recorded in the lock).
    The path returned is a private copy (0700 directory, removed at exit) of the bytes
    that were hashed, not Keras' cache file. With `extract=True` the archive is
    checked, then extracted safely from that copy; the path is the extracted directory.
    """
    from modelseal.errors import ModelMismatchError
    from modelseal.integrations import zoo

    keras = require("keras", "keras")
    if not isinstance(origin, str) or not origin:
        raise UsageError("get_file needs origin= (the URL of the file)")
    extract = bool(keras_kwargs.pop("extract", False)) | bool(keras_kwargs.pop("untar", False))
    if keras_kwargs.pop("archive_format", "auto") not in ("auto", "tar", "zip"):
        raise UsageError("get_file: archive_format is 'auto', 'tar' or 'zip'")
    zoo.check_source(origin, policy)
    source = zoo.LockSource.of(lock)
    decision = zoo.decide_pin(source.entry_for(origin), origin, zoo_check="keras' file_hash check")
    try:
        path = keras.utils.get_file(fname, origin, file_hash=file_hash, **keras_kwargs)
    except ValueError as exc:
        if "hash" in str(exc):
            raise ModelMismatchError(f"keras' own hash check refused {origin}: {exc}") from None
        raise UsageError(f"keras could not fetch {origin}: {exc}") from None
    except TypeError as exc:
        raise UsageError(f"get_file: {exc}") from None
    except Exception as exc:  # keras wraps HTTP and URL errors in Exception
        raise UsageError(f"keras could not fetch {origin}: {exc}") from None
    with zoo.verify_download(
        path, decision, source, snapshot=True, snapshot_dir=snapshot_dir, keep=True
    ) as found:
        assert found.path is not None
        if not extract:
            return os.fspath(found.path)
        return os.fspath(zoo.extract_snapshot(found.path))
