"""Verified `torch.load` and sealing `torch.save`.

    from modelseal.integrations import torch as mtorch
    mtorch.save(model.state_dict(), "model.pt", key="trainer.key")
    state = mtorch.load("model.pt", public_keys=["trainer.pub"])

`load` reads and verifies the file into memory, then hands torch a file object
over those very bytes: a file swapped on disk after the read never reaches the
unpickler. `weights_only=True` stays the default whatever the environment says
(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD only overrides a call that does not set it);
a seal vouches for who made a file, not for what its pickle does.

`mmap=True` (or torch's `config.load.mmap`) needs a path, so the verified bytes
are copied into a private snapshot (0700 directory, see `open_verified`), torch
maps the snapshot, and the snapshot is unlinked when `load` returns; the mapping
keeps its pages (POSIX). On Windows a mapped file cannot be removed, and the
snapshot stays behind in the temporary directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal._internal import names
from modelseal.errors import UsageError
from modelseal.integrations import safetensors as _safetensors
from modelseal.integrations._common import KeySource, PathLike, Trust, require, seal_saved
from modelseal.integrations.safetensors import signing_key
from modelseal.loading import open_verified
from modelseal.sealing import SealResult
from modelseal.signing import keys

if TYPE_CHECKING:
    from modelseal.policy import Policy

logger = logging.getLogger("modelseal")


def load(
    f: PathLike,
    map_location: Any = None,
    pickle_module: Any = None,
    *,
    weights_only: bool | None = True,
    mmap: bool | None = None,
    public_keys: Iterable[KeySource] | KeySource | None = None,
    allow_unsigned: bool = False,
    signature: PathLike | None = None,
    policy: Policy | None = None,
    model_name: str | None = None,
    snapshot_dir: PathLike | None = None,
    **pickle_load_args: Any,
) -> Any:
    """`torch.load`, from the verified bytes of a sealed file.

    Same arguments as `torch.load`, but `f` must be a path (a file object cannot
    be verified) and `weights_only` defaults to True (None means True as well).
    `weights_only=False` is allowed, and logged at WARNING on the "modelseal"
    logger. A `.safetensors` path goes to the verified safetensors loader, as
    torch.load does. `snapshot_dir` is where the snapshot goes with `mmap=True`.
    """
    path = _path(f, "load")
    trust = Trust.of(public_keys, allow_unsigned, signature, policy, model_name)
    if weights_only is None:
        weights_only = True
    if not weights_only:
        logger.warning(
            "torch.load(%s, weights_only=False): the pickle can run any code; "
            "the seal only says who made it",
            path,
        )
    elif pickle_module is not None:
        raise UsageError("pickle_module= needs weights_only=False (torch refuses it otherwise)")
    if os.fspath(path).endswith(".safetensors"):
        device = _safetensors_device(map_location)
        return _safetensors.load_file(path, device, **trust.kwargs())
    torch = require("torch", "torch")
    if mmap is None:
        mmap = _default_mmap()
    with open_verified(
        path, snapshot=bool(mmap), snapshot_dir=snapshot_dir, **trust.kwargs()
    ) as verified:
        if verified.names != (names.SINGLE_FILE_NAME,):
            raise UsageError(f"{path} is a directory: torch.load takes one file")
        if mmap:
            return torch.load(
                verified.file_path(),
                map_location,
                pickle_module,
                weights_only=weights_only,
                mmap=True,
                **pickle_load_args,
            )
        with verified.open() as handle:
            return torch.load(
                handle,
                map_location,
                pickle_module,
                weights_only=weights_only,
                mmap=False,
                **pickle_load_args,
            )


def save(
    obj: object,
    f: PathLike,
    pickle_module: Any = None,
    pickle_protocol: int | None = None,
    *,
    key: PathLike | keys.PrivateKey | keys.Signer,
    signature: PathLike | None = None,
    name: str | None = None,
    **kwargs: Any,
) -> SealResult:
    """`torch.save` to a path, then seal the file (`FILE.sig` unless `signature`).

    Positional arguments as `torch.save` (obj, f, pickle_module, pickle_protocol);
    other keyword arguments go to `torch.save`. The key is loaded first, so a bad
    key leaves no unsealed file. Returns the `SealResult`.
    """
    path = _path(f, "save")
    signer = signing_key(key)
    torch = require("torch", "torch")
    if pickle_module is not None:
        kwargs["pickle_module"] = pickle_module
    if pickle_protocol is not None:
        kwargs["pickle_protocol"] = pickle_protocol
    torch.save(obj, path, **kwargs)
    return seal_saved(path, signer, signature, name=name)


def _path(value: object, call: str) -> Path:
    if isinstance(value, (str, os.PathLike)):
        return Path(os.fspath(value))
    raise UsageError(
        f"{call} needs a path: a file object cannot be verified or sealed "
        f"(got {type(value).__name__})"
    )


def _default_mmap() -> bool:
    """torch's own default for `mmap=None` (torch.utils.serialization.config.load.mmap)."""
    try:
        from torch.utils.serialization import config
    except ImportError:  # pragma: no cover - torch < 2.5
        return False
    return bool(config.load.mmap)


def _safetensors_device(map_location: Any) -> str:
    """The device torch.load gives safetensors.torch.load_file for a `.safetensors` path."""
    if map_location is None:
        return "cpu"
    if isinstance(map_location, dict) or callable(map_location):
        raise UsageError(
            "a .safetensors file takes a device string or torch.device as map_location"
        )
    return str(map_location)


def load_state_dict_from_url(
    url: str,
    model_dir: PathLike | None = None,
    map_location: Any = None,
    progress: bool = True,
    check_hash: bool = False,
    file_name: str | None = None,
    weights_only: bool = True,
    *,
    lock: Any = None,
    policy: Policy | None = None,
) -> Any:
    """`torch.hub.load_state_dict_from_url`, plus a full SHA-256 pin for `url` from the lock.

    torch.hub's own cache and download code (`download_url_to_file`, with its
    `hash_prefix` check when `check_hash=True`) fetch the file; then, on every call,
    the cached file is read once into memory and hashed, checked against the lock's
    pin for `url` (`lock`: a `Lock`, a path, or None for ./models.lock), and torch
    loads those very bytes. No pin: `UnpinnedDownloadError` before anything is
    downloaded, unless the entry is TOFU (its first digest is recorded in the lock).
    `weights_only` defaults to True here (torch.hub's default is False).
    """
    import io
    import zipfile

    from modelseal.errors import ModelMismatchError
    from modelseal.integrations import zoo
    from modelseal.loading import _ViewReader

    torch = require("torch", "torch")
    hub = require("torch.hub", "torch")
    if not isinstance(url, str) or not url:
        raise UsageError("load_state_dict_from_url needs a URL")
    zoo.check_source(url, policy)
    source = zoo.LockSource.of(lock)
    decision = zoo.decide_pin(source.entry_for(url), url, zoo_check="torch.hub's hash_prefix")
    if not weights_only:
        logger.warning(
            "load_state_dict_from_url(%s, weights_only=False): the pickle can run any code; "
            "the pin only says these are the bytes the lock expects",
            url,
        )
    directory = (
        os.fspath(model_dir)
        if model_dir is not None
        else os.path.join(hub.get_dir(), "checkpoints")
    )
    name = file_name if file_name is not None else os.path.basename(_urlpath(url))
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise UsageError(f"cannot take a file name from {url}: pass file_name=")
    cached = os.path.join(directory, name)
    try:
        os.makedirs(directory, exist_ok=True)
        if not os.path.exists(cached):
            match = hub.HASH_REGEX.search(name) if check_hash else None
            prefix = match.group(1) if match else None
            hub.download_url_to_file(url, cached, prefix, progress=progress)
    except RuntimeError as exc:
        if "hash" in str(exc):
            raise ModelMismatchError(
                f"torch.hub's hash_prefix check refused {url}: {exc}"
            ) from None
        raise UsageError(f"torch.hub could not fetch {url}: {exc}") from None
    except Exception as exc:  # urllib's HTTPError / URLError, OSError
        raise UsageError(f"torch.hub could not fetch {url}: {exc}") from None
    with zoo.verify_download(cached, decision, source, snapshot=False) as found:
        assert found.memory is not None
        view = memoryview(found.memory).toreadonly()
        handle: io.BufferedIOBase = io.BufferedReader(_ViewReader(view))
        if zipfile.is_zipfile(handle):
            handle.seek(0)
            with zipfile.ZipFile(handle) as archive:
                members = archive.infolist()
                if len(members) == 1 and not members[0].is_dir():
                    # torch.hub's legacy format: one torch.save file (< 1.6) inside a zip,
                    # read here from the verified bytes instead of extracted beside the cache.
                    handle = io.BytesIO(archive.read(members[0]))
        handle.seek(0)
        return torch.load(handle, map_location=map_location, weights_only=weights_only)


def _urlpath(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path
