"""Verified MXNet/Gluon loading, and the prefix-set seal of an exported model.

    from modelseal.integrations import mxnet as mmx
    mmx.export(net, "models/net", epoch=0, key="trainer.key")   # writes models/net.sig
    block = mmx.symbolblock_imports(
        "models/net-symbol.json", ["data"], "models/net-0000.params",
        public_keys=["trainer.pub"],
    )

MXNet's loaders read paths (its buffer loader copies the whole buffer once more
and parses it about twice as slowly as a file), so every loader here verifies
while copying the files into a private snapshot (a fresh 0700 directory, files
0600), calls the plain MXNet function on the snapshot, and removes it: a file
swapped in the model directory after it was read never reaches MXNet, and MXNet's
own semantics (argument checks, dtype casts, legacy files) stay exactly its own.

An exported model is a *prefix set*: `PATH-symbol.json` and `PATH-NNNN.params`
(optionally `PATH-NNNN.states`) inside a directory that may hold anything else.
Its seal `PATH.sig` is an OMS v1.0 seal whose model root is that directory and
whose resources are exactly the members; upstream `model_signing verify key DIR
--signature PATH.sig --ignore_unsigned_files` accepts it. Verification refuses a
member missing, changed or swapped, and any file that MXNet would take for part
of the set (another epoch, another symbol file, also after case folding) unless
the seal lists it; every other file in the directory is ignored. See docs/mxnet.md.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal import audit
from modelseal._internal import names
from modelseal._internal.tree import FileEntry
from modelseal.errors import (
    IntegrityError,
    ModelMismatchError,
    SealError,
    UnsafeModelError,
    UsageError,
)
from modelseal.hashing import HashResult, hash_entries
from modelseal.integrations._common import KeySource, PathLike, Trust, require
from modelseal.loading import _SnapshotCapture, capture_sealed
from modelseal.manifest import Manifest, Serialization
from modelseal.sealing import SealResult, serialization_for, sign_manifest
from modelseal.signing import keys
from modelseal.signing.bundle import read_seal, write_seal
from modelseal.verification import (
    Failure,
    Finding,
    Verification,
    apply_policy,
    check_bundle,
    check_model_name,
    compare,
    default_seal_path,
    finding_kind,
    run_verification,
    skip_verification,
    trusted_keys,
    unsafe_skip_requested,
)

if TYPE_CHECKING:
    from modelseal.policy import Policy

__all__ = [
    "export",
    "load_checkpoint",
    "load_parameters",
    "nd_load",
    "prefix_seal_path",
    "seal_prefix",
    "symbolblock_imports",
    "verify_prefix",
]

_SYMBOL_SUFFIX = "-symbol.json"

Keys = Iterable[KeySource] | KeySource | None
SigningKey = PathLike | keys.PrivateKey | keys.Signer


# --------------------------------------------------------------------------- prefix sets


@dataclass(frozen=True)
class _PrefixSet:
    """The files MXNet reads for one prefix: `PATH-symbol.json`, `PATH-NNNN.params|.states`."""

    prefix: str
    directory: Path
    base: str

    @classmethod
    def of(cls, prefix: PathLike) -> _PrefixSet:
        text = os.fspath(prefix)
        directory, base = os.path.split(text)
        if not base or base in (".", ".."):
            raise UsageError(f"not a model prefix: {text!r} (expected DIR/NAME, as MXNet writes)")
        problem = names.name_problem(base)
        if problem is not None:
            raise UsageError(f"not a model prefix: {text!r} ({problem})")
        return cls(text, Path(directory or "."), base)

    @property
    def seal_path(self) -> Path:
        return self.directory / f"{self.base}.sig"

    @property
    def symbol_name(self) -> str:
        return self.base + _SYMBOL_SUFFIX

    def params_name(self, epoch: int) -> str:
        return f"{self.base}-{epoch:04d}.params"

    def member(self, name: str) -> tuple[str, str | None] | None:
        """(kind, epoch) when `name` is exactly a name MXNet writes for this prefix."""
        match = re.fullmatch(
            re.escape(self.base) + r"-(?:symbol\.json|([0-9]+)\.(params|states))", name
        )
        if match is None:
            return None
        return (match.group(2) or "symbol", match.group(1))

    def claims(self, name: str) -> bool:
        """True when `name` would pass for a member: exactly, or after case folding / NFC."""
        folded = re.escape(names.fold(self.base)) + r"-(?:symbol\.json|\d+\.(?:params|states))"
        return re.fullmatch(folded, names.fold(name)) is not None

    def claimants(self) -> list[str]:
        """Every name in the directory that claims to belong to the set."""
        try:
            listing = os.listdir(self.directory)
        except FileNotFoundError:
            raise UsageError(f"model not found: no directory {self.directory}") from None
        except OSError as exc:
            raise UsageError(f"cannot list {self.directory}: {exc.strerror}") from None
        return sorted(name for name in listing if self.claims(name))

    def shape_problem(self, members: Collection[str]) -> str | None:
        """Why `members` is not one exported model (one symbol file, one epoch), or None."""
        kinds: dict[str, list[str | None]] = {}
        for name in members:
            found = self.member(name)
            if found is None:
                return f"{name!r} is not a file MXNet writes for the prefix {self.base!r}"
            kinds.setdefault(found[0], []).append(found[1])
        if len(kinds.get("symbol", [])) != 1:
            return f"it must hold exactly one {self.symbol_name}"
        params = kinds.get("params", [])
        if len(params) != 1:
            return (
                f"it must hold exactly one {self.base}-NNNN.params (one epoch), not {len(params)}"
            )
        states = kinds.get("states", [])
        if len(states) > 1 or (states and states != params):
            return "a .states file must be the one of the sealed epoch"
        return None

    def entry(self, name: str) -> FileEntry | None:
        """The member as it is on disk now (None when absent); refuses all but regular files."""
        path = self.directory / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UnsafeModelError(f"cannot read {name}: {exc.strerror}", name=name) from None
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeModelError(f"{name} is a symlink (not allowed in a sealed set)", name=name)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeModelError(f"{name} is not a regular file", name=name)
        return FileEntry(name, os.fspath(path), st.st_size, st.st_dev, st.st_ino)


def prefix_seal_path(prefix: PathLike) -> Path:
    """Where the seal of an exported model lives: `PATH.sig` beside `PATH-symbol.json`."""
    return _PrefixSet.of(prefix).seal_path


def seal_prefix(
    prefix: PathLike,
    *,
    key: SigningKey | None = None,
    unsigned: bool = False,
    signature: PathLike | None = None,
    algorithm: str = "sha256",
    shard_size: int | None = None,
    workers: int | None = None,
    name: str | None = None,
) -> SealResult:
    """Seal the exported model at `prefix` (e.g. after `Module.save_checkpoint`).

    The set is whatever files on disk claim the prefix; it must be one exported
    model: one `PATH-symbol.json`, one `PATH-NNNN.params`, at most the `.states`
    of that epoch. The seal goes to `PATH.sig` unless `signature` says otherwise.
    """
    if (key is None) == (not unsigned):
        raise UsageError("give a signing key, or ask for an unsigned seal - exactly one")
    pset = _PrefixSet.of(prefix)
    found = pset.claimants()
    if not found:
        raise UsageError(f"nothing to seal: no {pset.symbol_name} or .params in {pset.directory}")
    problem = pset.shape_problem(found)
    if problem is not None:
        raise UsageError(f"cannot seal {pset.prefix}: {problem} (found: {', '.join(found)})")
    signer = keys.as_signer(key) if key is not None else None
    seal_path = Path(signature) if signature is not None else pset.seal_path
    serialization = serialization_for(
        pset.directory, algorithm=algorithm, shard_size=shard_size, seal_path=seal_path
    )
    try:
        entries = [pset.entry(name) for name in found]
    except UnsafeModelError as exc:
        raise UsageError(f"cannot seal {pset.prefix}: {exc}") from None
    present = [entry for entry in entries if entry is not None]
    result = hash_entries(present, serialization, workers=workers)
    if result.unreadable or len(present) != len(found):
        name, reason = next(iter(sorted(result.unreadable.items())), ("?", "vanished"))
        raise UsageError(f"cannot read {name} in {pset.directory}: {reason}")
    manifest = Manifest.build(name or pset.base, serialization, result.resources)
    write_seal(seal_path, sign_manifest(manifest, signer))
    return SealResult(
        model=pset.prefix,
        seal=str(seal_path),
        model_name=manifest.model_name,
        root_digest="sha256:" + manifest.root_digest.hex(),
        files=len(manifest.files),
        resources=len(manifest.resources),
        signed=signer is not None,
        signer=keys.key_id(signer.public_key) if signer is not None else None,
    )


Reader = Callable[[list[FileEntry], Serialization], HashResult]


def _verify_set(
    pset: _PrefixSet, trust: Trust, required: Collection[str], reader: Reader
) -> Verification:
    """Check the seal of a prefix set, then read its members (only them) through `reader`."""
    seal_path = Path(trust.signature) if trust.signature is not None else pset.seal_path
    if not pset.directory.is_dir():
        raise UsageError(f"model not found: no directory {pset.directory}")
    skip = unsafe_skip_requested(policy=trust.policy)
    if skip is not None:
        wanted = frozenset(required)
        return skip_verification(
            pset.directory,
            seal_path,
            False,
            lambda entries, serialization, _: reader(
                [entry for entry in entries if entry.name in wanted], serialization
            ),
            skip,
        )
    if trust.policy is not None:
        if trust.public_keys or trust.allow_unsigned:
            raise UsageError("give a policy, or public keys / allow_unsigned, not both")
        trusted = list(trust.policy.trusted_keys())
    else:
        trusted = trusted_keys(trust.public_keys, trust.allow_unsigned)
    failure = Failure(pset.prefix, str(seal_path), ())
    try:
        manifest, signers = check_bundle(
            read_seal(seal_path), trusted, allow_unsigned=trust.allow_unsigned
        )
        failure = dataclasses.replace(
            failure,
            model_name=manifest.model_name,
            expected_root="sha256:" + manifest.root_digest.hex(),
            signers=signers,
        )
        check_model_name(manifest, trust.model_name)
        if trust.policy is not None:
            apply_policy(trust.policy, manifest, signers, seal_path)
        sealed = manifest.files
        problem = pset.shape_problem(sealed)
        if problem is not None:
            raise SealError(
                f"{seal_path} is not the seal of the exported model {pset.prefix}: {problem}"
            )
        uncovered = sorted(set(required) - set(sealed))
        if uncovered:
            raise SealError(f"the seal {seal_path} does not cover {', '.join(uncovered)}")
        extras = [
            Finding("extra", "claims to belong to the sealed set but is not in the seal", name)
            for name in pset.claimants()
            if name not in sealed
        ]
        entries = [entry for entry in map(pset.entry, sealed) if entry is not None]
        serialization = dataclasses.replace(manifest.serialization, allow_symlinks=False)
        result = reader(entries, serialization)
        if not result.unreadable:
            actual = Manifest.build(manifest.model_name, serialization, result.resources)
            failure = dataclasses.replace(failure, actual_root="sha256:" + actual.root_digest.hex())
        findings = compare(manifest, result.resources, result.unreadable) + tuple(extras)
        if findings:
            failure = dataclasses.replace(
                failure,
                findings=tuple(sorted(findings, key=lambda f: names.sort_key(f.name or ""))),
            )
            raise ModelMismatchError(failure.summary(), failure)
    except IntegrityError as exc:
        if exc.failure is None:
            name = exc.name if isinstance(exc, UnsafeModelError) else None
            exc.failure = dataclasses.replace(
                failure, findings=(Finding(finding_kind(exc), str(exc), name),)
            )
        audit.emit_failure(exc.failure)
        raise
    verification = Verification(
        model=pset.prefix,
        seal=str(seal_path),
        model_name=manifest.model_name,
        root_digest="sha256:" + manifest.root_digest.hex(),
        method=manifest.serialization.method.value,
        hash_type=manifest.serialization.hash_type,
        files=len(sealed),
        resources=len(manifest.resources),
        total_bytes=result.total_bytes,
        signed=bool(signers),
        signers=signers,
    )
    audit.emit_success(verification)
    return verification


def verify_prefix(
    prefix: PathLike,
    *,
    public_keys: Keys = None,
    allow_unsigned: bool = False,
    signature: PathLike | None = None,
    policy: Policy | None = None,
    model_name: str | None = None,
    workers: int | None = None,
) -> Verification:
    """Verify an exported model in place (nothing is kept): `verify` for a prefix set."""
    trust = Trust.of(public_keys, allow_unsigned, signature, policy, model_name)

    def read_in_place(entries: list[FileEntry], serialization: Serialization) -> HashResult:
        return hash_entries(entries, serialization, workers=workers)

    return _verify_set(_PrefixSet.of(prefix), trust, (), read_in_place)


# --------------------------------------------------------------------------- snapshots


@contextmanager
def _open_set(
    pset: _PrefixSet, trust: Trust, required: Collection[str], snapshot_dir: PathLike | None
) -> Iterator[_SnapshotCapture]:
    """Verify the set; the `required` members are in the yielded snapshot, the rest only hashed."""
    snapshot = _SnapshotCapture.create(snapshot_dir, "model")

    def read(entries: list[FileEntry], serialization: Serialization) -> HashResult:
        return capture_sealed(snapshot, entries, serialization, required)

    try:
        _verify_set(pset, trust, required, read)
        yield snapshot
    finally:
        snapshot.remove()


def _member_of_set(path: PathLike) -> tuple[_PrefixSet, str] | None:
    """The prefix set a file name belongs to (`net-0000.params` -> `net`), if it has that form."""
    directory, name = os.path.split(os.fspath(path))
    match = re.fullmatch(r"(.+)-(?:symbol\.json|[0-9]+\.(?:params|states))", name)
    if match is None:
        return None
    try:
        return _PrefixSet.of(os.path.join(directory, match.group(1))), name
    except UsageError:
        return None


def _seal_lists_one_file(seal: PathLike) -> bool:
    """Routing only (the chosen path verifies everything): is `seal` a single-file seal?"""
    try:
        manifest, _ = check_bundle(read_seal(seal), (), allow_unsigned=True)
    except IntegrityError:
        return True
    return manifest.files == (names.SINGLE_FILE_NAME,)


@contextmanager
def _verified_file(path: PathLike, trust: Trust, snapshot_dir: PathLike | None) -> Iterator[Path]:
    """A private copy of one verified file: sealed alone (`FILE.sig`) or as a set member."""
    if os.path.isdir(path):
        raise UsageError(f"{os.fspath(path)} is a directory: MXNet loads this from a file")
    member = _member_of_set(path)
    if member is not None:
        if trust.signature is None:
            use_set = not default_seal_path(path).exists() and member[0].seal_path.exists()
        else:
            use_set = not _seal_lists_one_file(trust.signature)
        if use_set:
            pset, name = member
            with _open_set(pset, trust, (name,), snapshot_dir) as snapshot:
                yield snapshot.path_of(name)
            return
    snapshot = _SnapshotCapture.create(snapshot_dir, os.path.basename(os.fspath(path)) or "model")
    try:
        run_verification(
            path,
            allow_symlinks=False,
            reader=lambda entries, serialization, sealed: capture_sealed(
                snapshot, entries, serialization, sealed
            ),
            **trust.kwargs(),
        )
        yield snapshot.path_of(names.SINGLE_FILE_NAME)
    finally:
        snapshot.remove()


# --------------------------------------------------------------------------- loaders


def nd_load(
    fname: PathLike,
    *,
    public_keys: Keys = None,
    allow_unsigned: bool = False,
    signature: PathLike | None = None,
    policy: Policy | None = None,
    model_name: str | None = None,
    snapshot_dir: PathLike | None = None,
) -> Any:
    """`mx.nd.load`, from the verified bytes of a sealed file.

    The seal is `FNAME.sig`; a member of an exported model (`PATH-0000.params`)
    without one is checked against its set's seal `PATH.sig` instead.
    """
    mx = require("mxnet", "mxnet")
    trust = Trust.of(public_keys, allow_unsigned, signature, policy, model_name)
    with _verified_file(fname, trust, snapshot_dir) as local:
        return mx.nd.load(os.fspath(local))


def load_parameters(
    block: Any,
    filename: PathLike,
    ctx: Any = None,
    allow_missing: bool = False,
    ignore_extra: bool = False,
    cast_dtype: bool = False,
    dtype_source: str = "current",
    *,
    public_keys: Keys = None,
    allow_unsigned: bool = False,
    signature: PathLike | None = None,
    policy: Policy | None = None,
    model_name: str | None = None,
    snapshot_dir: PathLike | None = None,
) -> None:
    """`block.load_parameters(filename, ...)`, from the verified bytes of a sealed file.

    Seal lookup as `nd_load`. On any verification failure the block is untouched.
    """
    require("mxnet", "mxnet")
    trust = Trust.of(public_keys, allow_unsigned, signature, policy, model_name)
    with _verified_file(filename, trust, snapshot_dir) as local:
        block.load_parameters(
            os.fspath(local),
            ctx=ctx,
            allow_missing=allow_missing,
            ignore_extra=ignore_extra,
            cast_dtype=cast_dtype,
            dtype_source=dtype_source,
        )


def symbolblock_imports(
    symbol_file: PathLike,
    input_names: Any,
    param_file: PathLike | None = None,
    ctx: Any = None,
    allow_missing: bool = False,
    ignore_extra: bool = False,
    *,
    public_keys: Keys = None,
    allow_unsigned: bool = False,
    signature: PathLike | None = None,
    policy: Policy | None = None,
    model_name: str | None = None,
    snapshot_dir: PathLike | None = None,
) -> Any:
    """`gluon.nn.SymbolBlock.imports`, from the verified bytes of a sealed exported model.

    `symbol_file` must be `PATH-symbol.json` and `param_file` (if any) a
    `PATH-NNNN.params` of the same prefix and directory: the whole set is
    verified against `PATH.sig` (or `signature`), both files are loaded from it.
    """
    mx = require("mxnet", "mxnet")
    symbol = os.fspath(symbol_file)
    if not symbol.endswith(_SYMBOL_SUFFIX):
        raise UsageError(
            f"{symbol} is not an exported symbol file (PATH-symbol.json): "
            "seal and load the model as MXNet exports it"
        )
    pset = _PrefixSet.of(symbol[: -len(_SYMBOL_SUFFIX)])
    required = [pset.symbol_name]
    if param_file is not None:
        params_dir, params_name = os.path.split(os.fspath(param_file))
        found = pset.member(params_name)
        same_dir = os.path.abspath(params_dir or ".") == os.path.abspath(pset.directory)
        if found is None or found[0] != "params" or not same_dir:
            raise UsageError(
                f"{param_file} is not a parameter file of the exported model {pset.prefix} "
                f"(expected {pset.directory / (pset.base + '-NNNN.params')})"
            )
        required.append(params_name)
    trust = Trust.of(public_keys, allow_unsigned, signature, policy, model_name)
    with _open_set(pset, trust, required, snapshot_dir) as snapshot:
        return mx.gluon.nn.SymbolBlock.imports(
            os.fspath(snapshot.path_of(pset.symbol_name)),
            input_names,
            os.fspath(snapshot.path_of(required[1])) if param_file is not None else None,
            ctx,
            allow_missing,
            ignore_extra,
        )


def load_checkpoint(
    prefix: PathLike,
    epoch: int,
    *,
    public_keys: Keys = None,
    allow_unsigned: bool = False,
    signature: PathLike | None = None,
    policy: Policy | None = None,
    model_name: str | None = None,
    snapshot_dir: PathLike | None = None,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """`mx.model.load_checkpoint`: (symbol, arg_params, aux_params) of a sealed exported model.

    This is what `mx.mod.Module.load_checkpoint` reads too: build the Module from
    the returned symbol and `set_params(arg_params, aux_params)`.
    """
    mx = require("mxnet", "mxnet")
    pset = _PrefixSet.of(prefix)
    required = (pset.symbol_name, pset.params_name(int(epoch)))
    trust = Trust.of(public_keys, allow_unsigned, signature, policy, model_name)
    with _open_set(pset, trust, required, snapshot_dir) as snapshot:
        loaded: tuple[Any, dict[str, Any], dict[str, Any]] = mx.model.load_checkpoint(
            os.fspath(snapshot.path_of(pset.base)), int(epoch)
        )
        return loaded


def export(
    block: Any,
    path: PathLike,
    epoch: int = 0,
    remove_amp_cast: bool = True,
    *,
    key: SigningKey | None = None,
    signature: PathLike | None = None,
    algorithm: str = "sha256",
    shard_size: int | None = None,
    name: str | None = None,
) -> SealResult:
    """`HybridBlock.export(path, epoch)`, then seal the set it wrote (`PATH.sig`).

    Refuses, before writing anything, when other files already claim the prefix
    (another epoch, another symbol file): they would make the set ambiguous.
    Returns the SealResult (MXNet's export returns nothing).
    """
    require("mxnet", "mxnet")
    if key is None:
        raise UsageError("export needs key= (the private key that seals the model)")
    pset = _PrefixSet.of(path)
    expected = {pset.symbol_name, pset.params_name(int(epoch))}
    if pset.directory.is_dir():
        strays = [name for name in pset.claimants() if name not in expected]
        if strays:
            raise UsageError(
                f"cannot export to {pset.prefix}: {', '.join(strays)} already claim this prefix; "
                "remove them or export under a new prefix"
            )
    block.export(pset.prefix, epoch=int(epoch), remove_amp_cast=remove_amp_cast)
    return seal_prefix(
        pset.prefix,
        key=key,
        signature=signature,
        algorithm=algorithm,
        shard_size=shard_size,
        name=name,
    )
