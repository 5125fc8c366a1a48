"""TensorFlow SavedModel: `tf.saved_model.load` from verified bytes, and a sealing save.

A SavedModel is a directory that TensorFlow opens by path, so the verified
files are copied into a private snapshot while they are hashed and TensorFlow
loads the snapshot. TensorFlow may read that directory again after `load`
returns: functions that read an asset (`tf.io.read_file(asset.asset_path)`,
a vocabulary table re-created later) open it at call time, and such functions
routinely outlive the loaded object (`f = load(path).signatures["serving_default"]`).
So the snapshot lives as long as anything loaded from it: it is removed when
the loaded object and every function, resource and variable reachable from it
have been garbage-collected, or at interpreter exit. Snapshots sit in one
private (0700) directory per process, so a removed snapshot's path cannot be
re-created by another user while a stale asset path still names it.

    from modelseal.integrations import tensorflow as mtf
    mtf.saved_model_save(module, "export", key="trainer.key")
    loaded = mtf.saved_model_load("export", public_keys=["trainer.pub"])
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelseal.errors import UsageError
from modelseal.integrations._common import KeySource, PathLike, Trust, require, seal_saved
from modelseal.loading import open_verified
from modelseal.sealing import SealResult
from modelseal.signing import keys

if TYPE_CHECKING:
    from modelseal.policy import Policy

_GRAPH_FILES = ("saved_model.pb", "saved_model.pbtxt")

_parent_lock = threading.Lock()
_parent: Path | None = None


def _snapshot_parent() -> Path:
    """This process's private directory for SavedModel snapshots, removed at exit."""
    global _parent
    with _parent_lock:
        if _parent is None or not _parent.is_dir():
            created = Path(tempfile.mkdtemp(prefix="modelseal-tf-"))
            os.chmod(created, 0o700)
            atexit.register(_remove_parent, created, os.getpid())
            _parent = created
        return _parent


def _remove_parent(path: Path, owner: int) -> None:
    if os.getpid() == owner:  # a forked child must not remove its parent's snapshots
        shutil.rmtree(path, ignore_errors=True)


class _Lease:
    """Keeps a snapshot until every object that may read it has been collected."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._lock = threading.Lock()
        self._live = 1  # held by `keep` while it registers the objects
        self._owner = os.getpid()

    def keep(self, objects: Iterable[object]) -> int:
        """Tie the snapshot to `objects` (those that allow weak references); returns how many."""
        held = 0
        for obj in objects:
            try:
                weakref.finalize(obj, self._release)
            except TypeError:  # no weak references to this kind of object
                continue
            with self._lock:
                self._live += 1
            held += 1
        self._release()
        return held

    def _release(self) -> None:
        with self._lock:
            self._live -= 1
            last = self._live == 0
        if last and os.getpid() == self._owner:
            self._stack.close()


def _reachable(root: object) -> Iterator[object]:
    """The loaded object and everything it tracks: functions, signatures, resources, variables."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        children = getattr(node, "_trackable_children", None)
        if children is None:
            continue
        try:
            found = children(save_type="savedmodel")
        except Exception:  # a node that cannot list its children keeps none of them alive
            found = {}
        todo.extend(found.values())


def saved_model_load(
    export_dir: PathLike,
    tags: Any = None,
    options: Any = None,
    *,
    public_keys: Iterable[KeySource] | KeySource | None = None,
    allow_unsigned: bool = False,
    signature: PathLike | None = None,
    policy: Policy | None = None,
    model_name: str | None = None,
) -> Any:
    """`tf.saved_model.load`, from a private snapshot of the files that were verified.

    Raises `IntegrityError` (and loads nothing) when the SavedModel does not
    match its seal or the seal is not signed by one of `public_keys`. The
    snapshot stays until the returned object and everything reachable from it
    (functions, signatures, resources) are collected; it sits under
    `tempfile.gettempdir()`, so TMPDIR chooses its file system.
    """
    tf = require("tensorflow", "tensorflow")
    trust = Trust.of(public_keys, allow_unsigned, signature, policy, model_name)
    path = Path(export_dir)
    if not path.is_dir():
        raise UsageError(f"a SavedModel is a directory: {path} is not one")
    stack = ExitStack()
    try:
        verified = stack.enter_context(
            open_verified(path, snapshot=True, snapshot_dir=_snapshot_parent(), **trust.kwargs())
        )
        if not any(name in verified.names for name in _GRAPH_FILES):
            raise UsageError(f"not a SavedModel: {path} has no saved_model.pb")
        assert verified.path is not None
        loaded = tf.saved_model.load(os.fspath(verified.path), tags=tags, options=options)
    except BaseException:
        stack.close()
        raise
    _Lease(stack).keep(_reachable(loaded))
    return loaded


def saved_model_save(
    obj: Any,
    export_dir: PathLike,
    signatures: Any = None,
    options: Any = None,
    *,
    key: PathLike | keys.PrivateKey | keys.Signer,
    signature: PathLike | None = None,
    name: str | None = None,
) -> SealResult:
    """`tf.saved_model.save`, then seal the directory (by default at EXPORT_DIR/model.sig).

    TensorFlow ignores the extra file when it loads, and the seal never enters
    a verified snapshot. TensorFlow writes into an existing directory without
    clearing it, so anything already there is sealed too: export to a fresh one.
    """
    tf = require("tensorflow", "tensorflow")
    if key is None:
        raise UsageError("saved_model_save needs key= (the private key that seals the model)")
    tf.saved_model.save(obj, os.fspath(export_dir), signatures=signatures, options=options)
    return seal_saved(export_dir, key, signature, name=name)
