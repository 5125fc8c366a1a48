"""modelseal.integrations.gluoncv.get_model with pins from models.lock.

Generated mobilenet0.25 weights are zipped the way the zoo serves them and served by the
loopback HTTPS server (tests/httpserver.py; gluoncv downloads with requests, which trusts the
test CA through REQUESTS_CA_BUNDLE); MXNET_GLUON_REPO points at it and the weights' SHA-1 is
registered in gluoncv's table, as in test_gluoncv.py.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gluoncv
import numpy as np
import pytest
from gluoncv.model_zoo import model_store

import mxnet as mx
from httpserver import serve
from modelseal.fetch import SourceNotAllowed
from modelseal.integrations import gluoncv as mgcv
from modelseal.integrations.zoo import PinMismatchError, UnpinnedDownloadError
from modelseal.lock import Lock
from modelseal.policy import Policy

NAME = "mobilenet0.25"
X = mx.nd.array(np.random.RandomState(0).rand(2, 3, 64, 64))


@dataclass(frozen=True)
class Zoo:
    data: bytes
    zipped: bytes
    sha1: str
    file_name: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _zip(file_name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{file_name}.params", data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    mx.random.seed(12)
    net = gluoncv.model_zoo.get_model(NAME, pretrained=False)
    net.initialize(mx.init.Xavier())
    net(X)
    generated = tmp_path_factory.mktemp("zoo") / "generated.params"
    net.save_parameters(str(generated))
    data = generated.read_bytes()
    sha1 = hashlib.sha1(data).hexdigest()
    file_name = f"{NAME}-{sha1[:8]}"
    return Zoo(data, _zip(file_name, data), sha1, file_name)


@pytest.fixture(scope="module")
def running(zoo: Zoo) -> Iterator[Any]:
    """One server per module (starting and stopping one per test costs more than the tests)."""
    with serve({f"/repo/gluon/models/{zoo.file_name}.zip": zoo.zipped}) as srv:
        yield srv


@pytest.fixture
def server(running: Any, zoo: Zoo, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The module's server as gluoncv's repository, its CA trusted (requests reads
    REQUESTS_CA_BUNDLE), its request log cleared, the weights' SHA-1 in gluoncv's table."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(running.ca_pem))
    monkeypatch.setenv("SSL_CERT_FILE", str(running.ca_pem))
    monkeypatch.setenv("MXNET_GLUON_REPO", running.url("/repo/"))
    monkeypatch.delenv("MXNET_HOME", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setitem(model_store._model_sha1, NAME, zoo.sha1)
    running.requests.clear()
    return running


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "models"


def zip_url(server: Any, zoo: Zoo) -> str:
    return str(server.url(f"/repo/gluon/models/{zoo.file_name}.zip"))


def write_lock(path: Path, url: str, *lines: str, name: str = NAME) -> Path:
    body = "".join(f"{line}\n" for line in lines)
    path.write_text(f'version = 1\n\n[[models]]\nname = "{name}"\nurls = ["{url}"]\n{body}')
    return path


def cached(root: Path, zoo: Zoo) -> Path:
    return root / f"{zoo.file_name}.params"


def flip_cached_byte(root: Path, zoo: Zoo) -> None:
    path = cached(root, zoo)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


def out(net: Any) -> Any:
    return net(X).asnumpy()


def test_lock_pin_by_name_predicts_as_gluoncv(
    zoo: Zoo, server: Any, root: Path, tmp_path: Path
) -> None:
    lock = write_lock(tmp_path / "models.lock", zip_url(server, zoo), f'sha256 = "{zoo.sha256}"')
    ours = mgcv.get_model(NAME, lock=lock, root=root)
    theirs = gluoncv.model_zoo.get_model(NAME, pretrained=True, root=str(root))
    np.testing.assert_array_equal(out(ours), out(theirs))
    again = mgcv.get_model(NAME, pins=Lock.load(lock), root=root)  # a Lock as pins=
    np.testing.assert_array_equal(out(again), out(theirs))


def test_archive_entry_by_zip_url_pins_the_extracted_params(
    zoo: Zoo, server: Any, root: Path, tmp_path: Path
) -> None:
    """An entry made by `modelseal lock add <zip url>`: the zip's sha256, and the root digest
    of the extracted model (one file, the .params) which is what gluoncv leaves on disk."""
    url = zip_url(server, zoo)
    params_root = hashlib.sha256(bytes.fromhex(zoo.sha256)).hexdigest()
    lines = [
        f'sha256 = "{hashlib.sha256(zoo.zipped).hexdigest()}"',
        f'root_digest = "sha256:{params_root}"',
        f'files = ["{zoo.file_name}.params"]',
    ]
    lock = write_lock(tmp_path / "models.lock", url, *lines, name="mobilenet-zip")
    assert out(mgcv.get_model(NAME, lock=lock, root=root)).shape == (2, 1000)
    flip_cached_byte(root, zoo)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_store, "check_sha1", lambda filename, sha1_hash: True)
        with pytest.raises(PinMismatchError, match="root digest"):
            mgcv.get_model(NAME, lock=lock, root=root)


def test_passes_sha1_but_unpinned_is_refused_before_download(
    zoo: Zoo, server: Any, root: Path, tmp_path: Path
) -> None:
    other = server.url("/repo/gluon/models/resnet18_v1-00000000.zip")
    lock = write_lock(tmp_path / "models.lock", other, f'sha256 = "{zoo.sha256}"', name="x")
    with pytest.raises(UnpinnedDownloadError, match="no pin for"):
        mgcv.get_model(NAME, lock=lock, root=root)
    assert server.requests == []
    assert not root.exists() or not any(root.iterdir())


def test_tofu_records_then_refuses_a_changed_file(
    zoo: Zoo, server: Any, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = write_lock(tmp_path / "models.lock", zip_url(server, zoo), 'trust = "tofu"')
    first = out(mgcv.get_model(NAME, lock=lock, root=root))
    entry = Lock.load(lock).find(NAME)
    assert entry is not None
    assert entry.sha256 == zoo.sha256
    assert entry.trust == "tofu"
    np.testing.assert_array_equal(out(mgcv.get_model(NAME, lock=lock, root=root)), first)
    flip_cached_byte(root, zoo)
    monkeypatch.setattr(model_store, "check_sha1", lambda filename, sha1_hash: True)
    with pytest.raises(PinMismatchError):
        mgcv.get_model(NAME, lock=lock, root=root)


def test_cache_tampered_between_runs_refused_when_sha1_is_fooled(
    zoo: Zoo, server: Any, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = write_lock(tmp_path / "models.lock", zip_url(server, zoo), f'sha256 = "{zoo.sha256}"')
    mgcv.get_model(NAME, lock=lock, root=root)
    flip_cached_byte(root, zoo)
    monkeypatch.setattr(model_store, "check_sha1", lambda filename, sha1_hash: True)
    with pytest.raises(PinMismatchError):
        mgcv.get_model(NAME, lock=lock, root=root)


def test_wrong_pin_reports_both_digests(zoo: Zoo, server: Any, root: Path, tmp_path: Path) -> None:
    wrong = hashlib.sha256(b"other weights").hexdigest()
    lock = write_lock(tmp_path / "models.lock", zip_url(server, zoo), f'sha256 = "{wrong}"')
    with pytest.raises(PinMismatchError) as info:
        mgcv.get_model(NAME, lock=lock, root=root)
    assert (info.value.expected, info.value.actual) == ("sha256:" + wrong, "sha256:" + zoo.sha256)
    assert wrong in str(info.value)
    assert zoo.sha256 in str(info.value)


def test_url_outside_policy_refused_before_download(
    zoo: Zoo, server: Any, root: Path, tmp_path: Path
) -> None:
    lock = write_lock(tmp_path / "models.lock", zip_url(server, zoo), f'sha256 = "{zoo.sha256}"')
    policy = Policy.from_toml('[sources]\nallow = ["https://models.example.com/*"]\n', tmp_path)
    with pytest.raises(SourceNotAllowed):
        mgcv.get_model(NAME, lock=lock, root=root, policy=policy)
    assert server.requests == []
    allowed = Policy.from_toml(f'[sources]\nallow = ["{server.url("/repo/*")}"]\n', tmp_path)
    assert out(mgcv.get_model(NAME, lock=lock, root=root, policy=allowed)).shape == (2, 1000)


def test_pins_mapping_still_comes_first(zoo: Zoo, server: Any, root: Path, tmp_path: Path) -> None:
    wrong = hashlib.sha256(b"other weights").hexdigest()
    lock = write_lock(tmp_path / "models.lock", zip_url(server, zoo), f'sha256 = "{wrong}"')
    net = mgcv.get_model(NAME, pins={NAME: "sha256:" + zoo.sha256}, lock=lock, root=root)
    assert out(net).shape == (2, 1000)
