"""Gluon-CV's model zoo with a strong pin on every pretrained parameter file.

    from modelseal.integrations import gluoncv as mgcv
    net = mgcv.get_model("resnet50_v1b", pins={"resnet50_v1b": "sha256:9a3c..."})

Gluon-CV downloads parameters itself and checks them against its own SHA-1
table (and, with a `pretrained="<tag>"`, only 8 hex digits of SHA-1: 32 bits).
That check is kept, but it is never enough on its own: `get_model` also
requires a full SHA-256 (or stronger) pin for the file, from `pins` or from a
seal `<params>.sig` beside the downloaded file verified with `public_keys`, and
refuses when there is none. The file is read once, hashed and copied into a
private snapshot at the same time; the network is built with
`pretrained=False` and its parameters are loaded from that snapshot, so a file
changed in the cache after any check never reaches MXNet.

Pins are pluggable: anything with `pin_for(name, path) -> "alg:hex" | None`
(a mapping is wrapped in `Pins`), or a models.lock (`lock=`, or a `Lock` as
`pins=`): its entry for the model name or for the zip's URL pins the SHA-256 of
the `.params` file (or, for an entry recorded from the zip with extraction, its
`root_digest` over that one file); a TOFU entry records the digest on first use.
"""

from __future__ import annotations

import dataclasses
import hmac
import inspect
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from modelseal import audit
from modelseal._internal.tree import walk
from modelseal.errors import IntegrityError, ModelMismatchError, SealError, UsageError
from modelseal.integrations import zoo
from modelseal.integrations._common import PathLike, Trust, require
from modelseal.integrations.mxnet import Keys
from modelseal.loading import _SnapshotCapture, capture_sealed, open_verified
from modelseal.manifest import ALGORITHMS, Manifest, Resource, Serialization, check_algorithm
from modelseal.verification import Failure, Finding, Verification

if TYPE_CHECKING:
    from modelseal.lock import Lock, LockedModel
    from modelseal.policy import Policy

__all__ = ["PinSource", "Pins", "get_model", "parse_pin"]

_DEFAULT_ROOT = os.path.join("~", ".mxnet", "models")


@runtime_checkable
class PinSource(Protocol):
    """Where trusted digests come from: a mapping today, a lockfile or a registry later."""

    def pin_for(self, name: str, path: Path) -> str | None:
        """The pin ("sha256:<hex>") for the model `name` whose file was fetched to `path`."""
        ...


@dataclass(frozen=True)
class Pins:
    """Pins from a mapping of model name (as given to `get_model`) to "alg:hex"."""

    table: Mapping[str, str]

    def pin_for(self, name: str, path: Path) -> str | None:
        return self.table.get(name) or self.table.get(name.lower())


def parse_pin(pin: str) -> tuple[str, bytes]:
    """("sha256", digest) from "sha256:<hex>"; refuses weak algorithms and short digests."""
    algorithm, sep, hex_digest = pin.strip().partition(":")
    algorithm = algorithm.lower()
    if not sep:
        raise UsageError(f"a pin is 'sha256:<hex>', not {pin!r}")
    try:
        check_algorithm(algorithm)
    except ValueError as exc:
        raise UsageError(f"pin {pin!r}: {exc}") from None
    hex_digest = hex_digest.lower()
    size = ALGORITHMS[algorithm]
    if len(hex_digest) != 2 * size or any(c not in "0123456789abcdef" for c in hex_digest):
        raise UsageError(f"pin {pin!r}: a {algorithm} pin is {2 * size} hex digits")
    return algorithm, bytes.fromhex(hex_digest)


def _fetch(name: str, tag: str | None, root: PathLike) -> Path:
    """Gluon-CV's own download and SHA-1 check (it honours MXNET_GLUON_REPO and MXNET_HOME)."""
    model_store = require("gluoncv.model_zoo.model_store", "gluoncv")
    try:
        return Path(model_store.get_model_file(name, tag=tag, root=os.fspath(root)))
    except KeyError:
        raise UsageError(f"gluoncv's model store has no pretrained parameters for {name}") from None
    except ValueError as exc:
        if "hash" in str(exc):
            raise ModelMismatchError(
                f"gluoncv's SHA-1 check refused the parameters of {name}: {exc}"
            ) from None
        raise UsageError(f"gluoncv could not fetch {name}: {exc}") from None
    except Exception as exc:  # download, unzip, lock: anything gluoncv raises
        raise UsageError(f"gluoncv could not fetch {name}: {exc}") from None


@contextmanager
def _pinned_snapshot(
    name: str, path: Path, pin: str, snapshot_dir: PathLike | None
) -> Iterator[Path]:
    """Read `path` once into a private snapshot while hashing it; refuse unless it matches."""
    algorithm, expected = parse_pin(pin)
    serialization = Serialization(hash_type=algorithm)
    want = Resource(".", algorithm, expected)
    failure = Failure(str(path), "pin", (), name, f"{algorithm}:{expected.hex()}")
    snapshot = _SnapshotCapture.create(snapshot_dir, path.name)
    try:
        try:
            entries = walk(path, allow_symlinks=False)
            result = capture_sealed(snapshot, entries, serialization, [e.name for e in entries])
            if result.unreadable:
                reason = next(iter(result.unreadable.values()))
                finding = Finding("unreadable", reason, ".", want.label())
            elif not hmac.compare_digest(result.resources[0].digest, expected):
                actual = result.resources[0]
                failure = dataclasses.replace(failure, actual_root=actual.label())
                finding = Finding(
                    "changed", "content differs from the pin", ".", want.label(), actual.label()
                )
            else:
                finding = None
            if finding is not None:
                failure = dataclasses.replace(failure, findings=(finding,))
                raise ModelMismatchError(failure.summary(), failure)
        except IntegrityError as exc:
            if exc.failure is None:
                exc.failure = dataclasses.replace(failure, findings=(Finding("unsafe", str(exc)),))
            audit.emit_failure(exc.failure)
            raise
        manifest = Manifest.build(name, serialization, result.resources)
        audit.emit_success(
            Verification(
                model=str(path),
                seal="pin",
                model_name=name,
                root_digest="sha256:" + manifest.root_digest.hex(),
                method="files",
                hash_type=algorithm,
                files=1,
                resources=1,
                total_bytes=result.total_bytes,
                signed=False,
                signers=(),
            )
        )
        yield snapshot.path_of(".")
    finally:
        snapshot.remove()


@contextmanager
def _verified_params(
    name: str,
    path: Path,
    source: PinSource | None,
    public_keys: Keys,
    snapshot_dir: PathLike | None,
    locked: _LockPins | None = None,
) -> Iterator[Path]:
    pin = source.pin_for(name, path) if source is not None else None
    if pin is not None:
        with _pinned_snapshot(name, path, pin, snapshot_dir) as local:
            yield local
        return
    if locked is not None and (locked.entry is not None or public_keys is None):
        with locked.snapshot(path, snapshot_dir) as local:
            yield local
        return
    seal = path.with_name(path.name + ".sig")
    trust = Trust.of(public_keys, False, seal)
    if not trust.public_keys or not seal.exists():
        raise SealError(
            f"no pin for {name}: pass pins={{{name!r}: 'sha256:<hex>'}}, or seal {path} "
            f"(seal at {seal}) and pass public_keys; gluoncv's SHA-1 table alone is not trusted"
        )
    with open_verified(path, snapshot=True, snapshot_dir=snapshot_dir, **trust.kwargs()) as model:
        assert model.path is not None
        yield model.path


def _store_url(name: str, tag: str | None) -> str | None:
    """The URL gluoncv's model_store downloads `name` from (None for an unknown model)."""
    model_store = require("gluoncv.model_zoo.model_store", "gluoncv")
    try:
        short = tag if tag is not None else model_store.short_hash(name)
    except (KeyError, ValueError):
        return None
    repo = os.environ.get("MXNET_GLUON_REPO", model_store.apache_repo_url)
    if not repo.endswith("/"):
        repo += "/"
    return str(model_store._url_format.format(repo_url=repo, file_name=f"{name}-{short}"))


@dataclass(frozen=True)
class _LockPins:
    """The lock's pin for one Gluon-CV model: its entry by name, else by the zip's URL."""

    source: zoo.LockSource
    name: str
    url: str
    entry: LockedModel | None

    @classmethod
    def of(cls, lock: Lock | PathLike, name: str, url: str | None) -> _LockPins:
        source = zoo.LockSource.of(lock)
        entry = source.lock.find(name) or source.lock.find(name.lower())
        if entry is None and url is not None:
            entry = source.entry_for(url)
        return cls(source, name, url or name, entry)

    def decide(self) -> zoo.PinDecision | None:
        """The lock's decision; None for an archive entry (checked by its root digest)."""
        if self.entry is not None and self.entry.root_digest:
            return None  # checked against the root digest of the extracted zip
        return zoo.decide_pin(self.entry, self.url, zoo_check="gluoncv's SHA-1 table")

    @contextmanager
    def snapshot(self, path: Path, snapshot_dir: PathLike | None) -> Iterator[Path]:
        decision = self.decide()
        if decision is None:
            with zoo.pinned(
                path, None, url=self.url, name=self.name, snapshot=True, snapshot_dir=snapshot_dir
            ) as found:
                self._check_root(path, found.digest)
                assert found.path is not None
                yield found.path
            return
        with zoo.verify_download(
            path, decision, self.source, name=self.name, snapshot=True, snapshot_dir=snapshot_dir
        ) as found:
            assert found.path is not None
            yield found.path

    def _check_root(self, path: Path, digest_hex: str) -> None:
        """An archive entry pins the root digest of the extracted zip: one file, this one."""
        import hashlib

        assert self.entry is not None
        assert self.entry.root_digest is not None
        expected = self.entry.root_digest.lower().removeprefix("sha256:")
        files = self.entry.files
        actual = hashlib.sha256(bytes.fromhex(digest_hex)).hexdigest()
        if files not in ((), (path.name,)) or not hmac.compare_digest(expected, actual):
            failure = Failure(
                str(path),
                "lock",
                (
                    Finding(
                        "changed",
                        f"root of the extracted zip differs from the lock (files {list(files)})",
                        ".",
                        "sha256:" + expected,
                        "sha256:" + actual,
                    ),
                ),
                self.name,
                "sha256:" + expected,
                "sha256:" + actual,
            )
            audit.emit_failure(failure)
            raise zoo.PinMismatchError(
                f"{path} does not match the lock entry {self.entry.name}: root digest expected "
                f"sha256:{expected}, got sha256:{actual} (file sha256:{digest_hex})",
                failure,
                expected="sha256:" + expected,
                actual="sha256:" + actual,
                url=self.url,
            )


def _without_base_download(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Ask for no pretrained backbone when the constructor has one: it would be loaded unpinned,
    and the full parameters overwrite it anyway."""
    if "pretrained_base" in kwargs:
        return kwargs
    model_zoo = require("gluoncv.model_zoo.model_zoo", "gluoncv")
    constructor = getattr(model_zoo, "_models", {}).get(name.lower())
    try:
        parameters = inspect.signature(constructor).parameters if constructor else {}
    except (TypeError, ValueError):
        parameters = {}
    if "pretrained_base" in parameters:
        return {**kwargs, "pretrained_base": False}
    return kwargs


def get_model(
    name: str,
    pretrained: bool | str = True,
    *,
    pins: Mapping[str, str] | PinSource | Lock | None = None,
    public_keys: Keys = None,
    root: PathLike | None = None,
    snapshot_dir: PathLike | None = None,
    lock: Lock | PathLike | None = None,
    policy: Policy | None = None,
    **kwargs: Any,
) -> Any:
    """`gluoncv.model_zoo.get_model(name, pretrained=...)` with pinned, verified parameters.

    `pretrained` may be a gluoncv tag string, as in gluoncv. `ctx` and the other
    keyword arguments go to the zoo constructor. With `pretrained=False` nothing
    is downloaded and this is gluoncv's own call. Raises IntegrityError when the
    pin is missing, gluoncv's SHA-1 check fails, or the file does not match.

    `lock` (a `Lock` or a models.lock path) is consulted when `pins` has no pin for
    `name`: its entry for the name or for the zip's URL must pin the file (a TOFU
    entry records it on first use). `policy`'s `[sources] allow` must admit the zip's
    URL (from MXNET_GLUON_REPO) before anything is downloaded.
    """
    gluoncv = require("gluoncv", "gluoncv")
    mx = require("mxnet", "mxnet")
    if root is not None:
        kwargs["root"] = os.fspath(root)
    if not pretrained:
        return gluoncv.model_zoo.get_model(name, pretrained=False, **kwargs)
    tag = pretrained if isinstance(pretrained, str) else None
    from modelseal.lock import Lock

    if isinstance(pins, Lock):
        if lock is not None:
            raise UsageError("pass the lock once: as pins= or as lock=, not both")
        lock, pins = pins, None
    url = _store_url(name.lower(), tag)
    if policy is not None:
        if url is None:
            raise UsageError(f"gluoncv's model store has no pretrained parameters for {name}")
        zoo.check_source(url, policy)
    source: PinSource | None
    if pins is None:
        source = None
    elif isinstance(pins, PinSource):
        source = pins
    elif isinstance(pins, Mapping):
        source = Pins(pins)
    else:
        raise UsageError(
            f"pins must be a mapping of name to 'sha256:<hex>' or a PinSource: {pins!r}"
        )
    locked = _LockPins.of(lock, name, url) if lock is not None else None
    if source is None and public_keys is None and locked is None:
        raise SealError(
            f"no pin for {name}: pass pins={{{name!r}: 'sha256:<hex>'}} or lock= (or "
            "public_keys and a seal beside the parameters); gluoncv's SHA-1 table alone is "
            "not trusted"
        )
    if locked is not None and source is None and public_keys is None:
        locked.decide()  # refuse an unpinned model before anything is downloaded
    path = _fetch(name.lower(), tag, root if root is not None else _DEFAULT_ROOT)
    ctx = kwargs.get("ctx") or mx.cpu()
    with _verified_params(name, path, source, public_keys, snapshot_dir, locked) as local:
        build = _without_base_download(name, kwargs)
        net = gluoncv.model_zoo.get_model(name, pretrained=False, **build)
        net.load_parameters(os.fspath(local), ctx=ctx)
    return net
