"""modelseal.integrations.gluoncv: the model zoo with gluoncv's SHA-1 check plus a strong pin.

Generated weights for mobilenet0.25 are zipped the way the zoo serves them and served from
a loopback HTTP server (MXNET_GLUON_REPO points at it); their SHA-1 is registered in
gluoncv's table for the test, since the real table's hashes cannot match generated weights.
"""

from __future__ import annotations

import hashlib
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import gluoncv
import numpy as np
import pytest
from gluoncv.model_zoo import model_store

import modelseal
import mxnet as mx
from conftest import KeyPair
from modelseal.errors import ModelMismatchError, SealError, SignatureError, UsageError
from modelseal.integrations import gluoncv as mgcv

NAME = "mobilenet0.25"
X = mx.nd.array(np.random.RandomState(0).rand(2, 3, 64, 64))


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class Zoo:
    url: str
    sha1: str
    sha256: str
    file_name: str

    @property
    def pin(self) -> str:
        return "sha256:" + self.sha256


def _serve_zip(repo: Path, file_name: str, data: bytes) -> None:
    models = repo / "gluon" / "models"
    models.mkdir(parents=True)
    with zipfile.ZipFile(models / f"{file_name}.zip", "w") as archive:
        archive.writestr(f"{file_name}.params", data)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zoo]:
    base = tmp_path_factory.mktemp("zoo")
    mx.random.seed(11)
    net = gluoncv.model_zoo.get_model(NAME, pretrained=False)
    net.initialize(mx.init.Xavier())
    net(X)
    generated = base / "generated.params"
    net.save_parameters(str(generated))
    data = generated.read_bytes()
    sha1 = hashlib.sha1(data).hexdigest()
    file_name = f"{NAME}-{sha1[:8]}"
    _serve_zip(base / "www" / "honest", file_name, data)
    # A mirror that serves other weights under the same name.
    tampered = bytearray(data)
    tampered[-3] ^= 0x01
    _serve_zip(base / "www" / "tampered", file_name, bytes(tampered))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(base / "www")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Zoo(
            f"http://127.0.0.1:{server.server_address[1]}/",
            sha1,
            hashlib.sha256(data).hexdigest(),
            file_name,
        )
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def root(zoo: Zoo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache; gluoncv pointed at the loopback mirror with the generated SHA-1."""
    monkeypatch.setenv("MXNET_GLUON_REPO", zoo.url + "honest/")
    monkeypatch.delenv("MXNET_HOME", raising=False)
    for proxy in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setitem(model_store._model_sha1, NAME, zoo.sha1)
    return tmp_path / "models"


def out(net: Any) -> Any:
    return net(X).asnumpy()


def cached(root: Path, zoo: Zoo) -> Path:
    return root / f"{zoo.file_name}.params"


def flip_cached_byte(root: Path, zoo: Zoo) -> None:
    path = cached(root, zoo)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


def test_good_pin_predicts_as_gluoncv(zoo: Zoo, root: Path) -> None:
    ours = mgcv.get_model(NAME, pins={NAME: zoo.pin}, root=root)
    theirs = gluoncv.model_zoo.get_model(NAME, pretrained=True, root=str(root))
    np.testing.assert_array_equal(out(ours), out(theirs))
    assert cached(root, zoo).exists()


def test_pin_source_is_pluggable(zoo: Zoo, root: Path) -> None:
    asked: list[tuple[str, Path]] = []

    class Lock:
        def pin_for(self, name: str, path: Path) -> str | None:
            asked.append((name, path))
            return zoo.pin

    net = mgcv.get_model(NAME, pins=Lock(), root=root)
    assert asked == [(NAME, cached(root, zoo))]
    assert out(net).shape == (2, 1000)


def test_seal_beside_the_download_is_a_pin(
    zoo: Zoo, root: Path, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    mgcv.get_model(NAME, pins={NAME: zoo.pin}, root=root)
    modelseal.seal(cached(root, zoo), key=keypair.private)
    net = mgcv.get_model(NAME, public_keys=[keypair.public], root=root)
    theirs = gluoncv.model_zoo.get_model(NAME, pretrained=True, root=str(root))
    np.testing.assert_array_equal(out(net), out(theirs))
    with pytest.raises(SignatureError):
        mgcv.get_model(NAME, public_keys=[other_keypair.public], root=root)


def test_wrong_pin_refused(zoo: Zoo, root: Path) -> None:
    wrong = "sha256:" + hashlib.sha256(b"other weights").hexdigest()
    with pytest.raises(ModelMismatchError) as info:
        mgcv.get_model(NAME, pins={NAME: wrong}, root=root)
    assert info.value.failure is not None
    assert info.value.failure.findings[0].kind == "changed"


@pytest.mark.parametrize("pins", [None, {}, {"resnet18_v1": "sha256:" + "0" * 64}])
def test_missing_pin_refused(root: Path, pins: dict[str, str] | None) -> None:
    with pytest.raises(SealError, match=r"no pin for mobilenet0\.25"):
        mgcv.get_model(NAME, pins=pins, root=root)


@pytest.mark.parametrize(
    "pin", ["sha1:" + "0" * 40, "md5:" + "0" * 32, "sha256:abc", "0" * 64, "sha256:" + "g" * 64]
)
def test_weak_or_malformed_pin_refused(zoo: Zoo, root: Path, pin: str) -> None:
    with pytest.raises(UsageError):
        mgcv.get_model(NAME, pins={NAME: pin}, root=root)


def test_sha1_mismatch_refused_by_gluoncv(
    zoo: Zoo, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MXNET_GLUON_REPO", zoo.url + "tampered/")
    with pytest.raises(ModelMismatchError, match="SHA-1"):
        mgcv.get_model(NAME, pins={NAME: zoo.pin}, root=root)


def test_cache_tampered_after_gluoncvs_check_refused(
    zoo: Zoo, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = model_store.get_model_file

    def then_tamper(*args: Any, **kwargs: Any) -> str:
        path = real(*args, **kwargs)
        flip_cached_byte(root, zoo)
        return str(path)

    monkeypatch.setattr(model_store, "get_model_file", then_tamper)
    with pytest.raises(ModelMismatchError):
        mgcv.get_model(NAME, pins={NAME: zoo.pin}, root=root)


def test_cache_tampered_between_runs_refused_when_sha1_is_fooled(
    zoo: Zoo, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker who passes gluoncv's check (a tag checks 32 bits of SHA-1) meets the pin."""
    mgcv.get_model(NAME, pins={NAME: zoo.pin}, root=root)
    flip_cached_byte(root, zoo)
    monkeypatch.setattr(model_store, "check_sha1", lambda filename, sha1_hash: True)
    with pytest.raises(ModelMismatchError):
        mgcv.get_model(NAME, pins={NAME: zoo.pin}, root=root)


def test_cache_tampered_between_runs_is_redownloaded(zoo: Zoo, root: Path) -> None:
    """gluoncv's own check catches a plain tamper and fetches the file again: still pinned."""
    first = out(mgcv.get_model(NAME, pins={NAME: zoo.pin}, root=root))
    flip_cached_byte(root, zoo)
    again = mgcv.get_model(NAME, pins={NAME: zoo.pin}, root=root)
    np.testing.assert_array_equal(out(again), first)
    assert hashlib.sha256(cached(root, zoo).read_bytes()).hexdigest() == zoo.sha256


def test_not_pretrained_downloads_nothing(root: Path) -> None:
    net = mgcv.get_model(NAME, pretrained=False, root=root)
    net.initialize()
    assert out(net).shape == (2, 1000)
    assert not root.exists() or not any(root.iterdir())


def test_unknown_model_is_a_usage_error(root: Path) -> None:
    with pytest.raises(UsageError):
        mgcv.get_model("no_such_net", pins={"no_such_net": "sha256:" + "0" * 64}, root=root)
