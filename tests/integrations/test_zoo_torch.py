"""modelseal.integrations.torch.load_state_dict_from_url: torch.hub's download, plus a lock pin.

A real torch.hub download from the loopback HTTPS server (tests/httpserver.py, trusted through
SSL_CERT_FILE), a real models.lock, real torch.load.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from httpserver import serve
from modelseal.errors import IntegrityError, ModelMismatchError
from modelseal.fetch import SourceNotAllowed
from modelseal.integrations import torch as mtorch
from modelseal.integrations.zoo import PinMismatchError, UnpinnedDownloadError
from modelseal.lock import Lock
from modelseal.policy import Policy

STATE = {"weight": torch.arange(12, dtype=torch.float32).reshape(3, 4), "bias": torch.ones(3)}


def _saved(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


DATA = _saved(STATE)
SHA = hashlib.sha256(DATA).hexdigest()
NAME = f"net-{SHA[:8]}.pth"  # torch.hub's naming: the prefix its check_hash verifies
OTHER = _saved({"weight": torch.zeros(3, 4), "bias": torch.zeros(3)})


def _zipped(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("net.pth", data)
    return buffer.getvalue()


LEGACY = _zipped(DATA)
FILES = {
    f"/zoo/{NAME}": DATA,
    "/zoo/other.pth": OTHER,
    f"/liar/{NAME}": OTHER,  # claims the prefix of DATA
    "/zoo/legacy.zip": LEGACY,
}


def write_lock(path: Path, url: str, sha256: str, trust: str = "pinned") -> Path:
    pin = f'sha256 = "{sha256}"\n' if sha256 else ""  # a TOFU entry has none until first use
    path.write_text(
        f'version = 1\n\n[[models]]\nname = "net"\nurls = ["{url}"]\n{pin}trust = "{trust}"\n'
    )
    return path


@pytest.fixture(scope="module")
def running() -> Iterator[Any]:
    """One server per module (starting and stopping one per test costs more than the tests)."""
    with serve(FILES) as srv:
        yield srv


@pytest.fixture
def server(running: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The module's server: Any, its CA trusted through SSL_CERT_FILE, its request log cleared."""
    monkeypatch.setenv("SSL_CERT_FILE", str(running.ca_pem))
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    running.requests.clear()
    return running


@pytest.fixture
def hub(tmp_path: Path) -> Path:
    return tmp_path / "hub"


def load(url: str, hub: Path, lock: Path, **kwargs: object) -> object:
    return mtorch.load_state_dict_from_url(url, model_dir=hub, progress=False, lock=lock, **kwargs)


def assert_state(found: object) -> None:
    assert isinstance(found, dict)
    assert set(found) == set(STATE)
    for key, value in STATE.items():
        assert torch.equal(found[key], value)


def test_pinned_file_loads(server: Any, hub: Path, tmp_path: Path) -> None:
    url = server.url(f"/zoo/{NAME}")
    lock = write_lock(tmp_path / "models.lock", url, SHA)
    assert_state(load(url, hub, lock, check_hash=True))
    assert (hub / NAME).read_bytes() == DATA  # torch.hub's own cache
    assert_state(load(url, hub, lock, check_hash=True))  # from its cache, checked again


def test_passes_hash_prefix_but_unpinned_is_refused_before_download(
    server: Any, hub: Path, tmp_path: Path
) -> None:
    url = server.url(f"/zoo/{NAME}")
    lock = write_lock(tmp_path / "models.lock", server.url("/zoo/other.pth"), SHA)
    with pytest.raises(UnpinnedDownloadError, match="no pin for"):
        load(url, hub, lock, check_hash=True)
    assert not (hub / NAME).exists()
    assert not any(path.endswith(NAME) for _method, path, _headers in server.requests)


def test_torch_hash_prefix_still_checked(server: Any, hub: Path, tmp_path: Path) -> None:
    """torch's own check runs in addition: a file whose name claims another prefix fails it."""
    url = server.url(f"/liar/{NAME}")
    lock = write_lock(tmp_path / "models.lock", url, hashlib.sha256(OTHER).hexdigest())
    with pytest.raises(ModelMismatchError, match="hash_prefix"):
        load(url, hub, lock, check_hash=True)
    assert not (hub / NAME).exists()


def test_tofu_records_then_refuses_a_changed_file(server: Any, hub: Path, tmp_path: Path) -> None:
    url = server.url(f"/zoo/{NAME}")
    lock = write_lock(tmp_path / "models.lock", url, "", trust="tofu")
    assert_state(load(url, hub, lock))
    entry = Lock.load(lock).pin_for(url)
    assert entry is not None
    assert entry.sha256 == SHA
    assert entry.trust == "tofu"
    (hub / NAME).write_bytes(OTHER)  # the source (or the cache) changes afterwards
    with pytest.raises(PinMismatchError):
        load(url, hub, lock)


def test_cached_file_tampered_between_runs_is_refused(
    server: Any, hub: Path, tmp_path: Path
) -> None:
    url = server.url(f"/zoo/{NAME}")
    lock = write_lock(tmp_path / "models.lock", url, SHA)
    assert_state(load(url, hub, lock, check_hash=True))
    tampered = bytearray(DATA)
    tampered[-40] ^= 0x01
    (hub / NAME).write_bytes(bytes(tampered))  # torch.hub never re-checks its cache
    with pytest.raises(PinMismatchError) as info:
        load(url, hub, lock, check_hash=True)
    assert info.value.expected == "sha256:" + SHA


def test_wrong_pin_reports_both_digests(server: Any, hub: Path, tmp_path: Path) -> None:
    url = server.url(f"/zoo/{NAME}")
    wrong = hashlib.sha256(b"other").hexdigest()
    lock = write_lock(tmp_path / "models.lock", url, wrong)
    with pytest.raises(PinMismatchError) as info:
        load(url, hub, lock)
    assert wrong in str(info.value)
    assert SHA in str(info.value)
    assert (info.value.expected, info.value.actual) == ("sha256:" + wrong, "sha256:" + SHA)
    assert isinstance(info.value, IntegrityError)


def test_url_outside_policy_refused_before_download(server: Any, hub: Path, tmp_path: Path) -> None:
    url = server.url(f"/zoo/{NAME}")
    lock = write_lock(tmp_path / "models.lock", url, SHA)
    policy = Policy.from_toml('[sources]\nallow = ["https://models.example.com/*"]\n', tmp_path)
    with pytest.raises(SourceNotAllowed):
        load(url, hub, lock, policy=policy)
    assert server.requests == []
    allowed = Policy.from_toml(f'[sources]\nallow = ["{server.url("/zoo/*")}"]\n', tmp_path)
    assert_state(load(url, hub, lock, policy=allowed))


def test_legacy_zip_format_loads_from_verified_bytes(
    server: Any, hub: Path, tmp_path: Path
) -> None:
    url = server.url("/zoo/legacy.zip")
    lock = write_lock(tmp_path / "models.lock", url, hashlib.sha256(LEGACY).hexdigest())
    assert_state(load(url, hub, lock))
    assert sorted(p.name for p in hub.iterdir()) == ["legacy.zip"]  # nothing extracted beside it
