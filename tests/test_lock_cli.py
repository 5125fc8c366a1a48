"""`modelseal lock add|sync|verify` end to end, against a real loopback HTTPS server."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import httpserver
from conftest import Cli
from httpserver import Server
from modelseal.lock import Lock

https_server = httpserver.https_server  # the loopback HTTPS fixture

WEIGHTS = bytes(range(256)) * 300
WEIGHTS_HEX = hashlib.sha256(WEIGHTS).hexdigest()
OTHER = b"other model" * 100
OTHER_HEX = hashlib.sha256(OTHER).hexdigest()


@pytest.fixture
def where(tmp_path: Path) -> tuple[str, Path, str, Path]:
    """--lock FILE --cache DIR, with their paths."""
    lock, cache = tmp_path / "models.lock", tmp_path / "cache"
    return "--lock", lock, "--cache", cache


def _args(where: tuple[str, Path, str, Path]) -> list[str]:
    return [str(part) for part in where]


def test_add_then_verify_ok(
    cli: Cli, https_server: Server, where: tuple[str, Path, str, Path]
) -> None:
    url = https_server.add("/zoo/resnet.params", WEIGHTS)
    mirror = https_server.add("/mirror/resnet.params", WEIGHTS)
    added = cli(
        "lock", "add", url, mirror, "--sha256", WEIGHTS_HEX, *_args(where), "--retries", "0"
    )
    assert added.code == 0, added.err
    lock = Lock.load(where[1])
    (entry,) = lock.models
    assert entry.name == "resnet.params"
    assert entry.urls == (url, mirror)
    assert (entry.sha256, entry.size, entry.trust) == (WEIGHTS_HEX, len(WEIGHTS), "pinned")
    assert entry.fetched_at is not None
    verified = cli("lock", "verify", *_args(where))
    assert verified.code == 0, verified.err
    assert "ok" in verified.out
    as_json = json.loads(cli("lock", "verify", *_args(where), "--format", "json").out)
    assert as_json["ok"] is True
    assert as_json["models"][0]["expected"] == "sha256:" + WEIGHTS_HEX
    synced = cli("lock", "sync", *_args(where), "--retries", "0")
    assert synced.code == 0, synced.err
    assert https_server.count("/zoo/resnet.params") == 1  # sync verified the cached copy
    again = cli("lock", "add", url, "--sha256", WEIGHTS_HEX, *_args(where))
    assert again.code == 2
    assert "--replace" in again.err


def test_add_with_wrong_digest_writes_nothing(
    cli: Cli, https_server: Server, where: tuple[str, Path, str, Path]
) -> None:
    url = https_server.add("/m.bin", WEIGHTS)
    result = cli("lock", "add", url, "--sha256", OTHER_HEX, *_args(where), "--retries", "0")
    assert result.code == 1
    assert WEIGHTS_HEX in result.err
    assert OTHER_HEX in result.err
    assert not where[1].exists()
    assert not [p for p in where[3].rglob("*") if p.is_file()]


def test_add_trust_on_first_use_is_recorded_and_loud(
    cli: Cli, https_server: Server, where: tuple[str, Path, str, Path]
) -> None:
    url = https_server.add("/m.bin", WEIGHTS)
    result = cli("lock", "add", url, "--trust-on-first-use", "-q", *_args(where), "--retries", "0")
    assert result.code == 0, result.err
    assert "WARNING: trust on first use" in result.err
    (entry,) = Lock.load(where[1]).models
    assert (entry.trust, entry.sha256) == ("tofu", WEIGHTS_HEX)
    assert 'trust = "tofu"' in where[1].read_text()
    assert cli("lock", "verify", *_args(where)).code == 0


def test_hand_edited_wrong_digest(
    cli: Cli, https_server: Server, where: tuple[str, Path, str, Path]
) -> None:
    good = https_server.add("/good.bin", WEIGHTS)
    bad = https_server.add("/bad.bin", OTHER)
    assert (
        cli("lock", "add", good, "--sha256", WEIGHTS_HEX, "--name", "good", *_args(where)).code == 0
    )
    assert cli("lock", "add", bad, "--sha256", OTHER_HEX, "--name", "bad", *_args(where)).code == 0
    assert cli("lock", "verify", *_args(where)).code == 0
    text = where[1].read_text()
    where[1].write_text(text.replace(OTHER_HEX, "0" * 64))  # an attacker's edit, say
    verified = cli("lock", "verify", *_args(where))
    assert verified.code == 1
    assert "bad" in verified.err
    assert "0" * 64 in verified.err
    report = ET.fromstring(cli("lock", "verify", *_args(where), "--format", "junit").out)
    suite = report.find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "2"
    assert suite.get("failures") == "1"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["good"].find("failure") is None
    failure = cases["bad"].find("failure")
    assert failure is not None
    assert "sha256:" + "0" * 64 in (failure.get("message") or "")
    synced = cli("lock", "sync", *_args(where), "--retries", "0", "--format", "json")
    assert synced.code == 1
    status = {m["name"]: m for m in json.loads(synced.out)["models"]}
    assert status["bad"]["error"] == "DigestMismatch"
    assert status["good"]["status"] == "ok"
    assert not where[3].joinpath("sha256", "00").exists()  # nothing stored under the bad pin


def test_junit_lists_missing_and_mismatching(
    cli: Cli, https_server: Server, where: tuple[str, Path, str, Path]
) -> None:
    one = https_server.add("/one.bin", WEIGHTS)
    two = https_server.add("/two.bin", OTHER)
    for name, url, digest in (("one", one, WEIGHTS_HEX), ("two", two, OTHER_HEX)):
        assert cli("lock", "add", url, "--sha256", digest, "--name", name, *_args(where)).code == 0
    cached = where[3] / "sha256" / WEIGHTS_HEX[:2] / WEIGHTS_HEX
    cached.write_bytes(b"tampered")
    (where[3] / "sha256" / OTHER_HEX[:2] / OTHER_HEX).unlink()
    result = cli("lock", "verify", *_args(where), "--format", "junit")
    assert result.code == 1
    suite = ET.fromstring(result.out).find("testsuite")
    assert suite is not None
    failures = {case.get("name"): case.find("failure") for case in suite.iter("testcase")}
    assert failures["one"] is not None
    assert failures["one"].get("type") == "mismatch"
    assert "sha256:" + hashlib.sha256(b"tampered").hexdigest() in (failures["one"].text or "")
    assert failures["two"] is not None
    assert failures["two"].get("type") == "missing"
    assert cached.exists()  # verify changes nothing
    # sync repairs both: the tampered copy is replaced, the missing one fetched
    assert cli("lock", "sync", *_args(where), "--retries", "0").code == 0
    assert cached.read_bytes() == WEIGHTS
    assert cli("lock", "verify", *_args(where)).code == 0


def test_sync_falls_back_to_cache_when_sources_are_down(
    cli: Cli, https_server: Server, where: tuple[str, Path, str, Path]
) -> None:
    url = https_server.add("/m.bin", WEIGHTS)
    assert cli("lock", "add", url, "--sha256", WEIGHTS_HEX, *_args(where)).code == 0
    https_server.add("/m.bin", status=503)
    result = cli("lock", "sync", "--refresh", *_args(where), "--retries", "0")
    assert result.code == 0, result.err
    assert "fallback" in result.out
    assert "every source failed" in result.err


def test_policy_allowlist_is_respected_by_add_and_sync(
    cli: Cli, https_server: Server, where: tuple[str, Path, str, Path], tmp_path: Path
) -> None:
    allowed = https_server.add("/allowed/m.bin", WEIGHTS)
    denied = https_server.add("/denied/m.bin", OTHER)
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[sources]\nallow = ["{https_server.url("/allowed/*")}"]\n')
    refused = cli("lock", "add", denied, "--sha256", OTHER_HEX, *_args(where), "--policy", policy)
    assert refused.code == 1
    assert "allowed" in refused.err
    assert https_server.count("/denied/m.bin") == 0
    assert not where[1].exists()
    ok = cli("lock", "add", allowed, "--sha256", WEIGHTS_HEX, *_args(where), "--policy", policy)
    assert ok.code == 0, ok.err
    assert cli("lock", "add", denied, "--sha256", OTHER_HEX, "--name", "d", *_args(where)).code == 0
    synced = cli("lock", "sync", *_args(where), "--policy", policy, "--format", "json")
    assert synced.code == 1
    status = {m["name"]: m for m in json.loads(synced.out)["models"]}
    assert status["d"]["error"] == "SourceNotAllowed"
    assert status["m.bin"]["status"] == "ok"


def test_archive_add_records_root_digest_and_catches_tampering(
    cli: Cli, https_server: Server, where: tuple[str, Path, str, Path], tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in {"config.json": b"{}\n", "weights/w.bin": WEIGHTS}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    url = https_server.add("/bert.tar.gz", data)
    digest = hashlib.sha256(data).hexdigest()
    assert cli("lock", "add", url, "--sha256", digest, *_args(where)).code == 0
    (entry,) = Lock.load(where[1]).models
    assert entry.name == "bert"
    assert entry.root_digest is not None
    assert set(entry.files) == {"config.json", "weights/w.bin"}
    assert cli("lock", "verify", *_args(where)).code == 0
    out = tmp_path / "out"
    assert cli("lock", "sync", *_args(where), "--out", out).code == 0
    assert (out / "bert" / "weights" / "w.bin").read_bytes() == WEIGHTS
    extracted = where[3] / "models" / entry.root_digest.removeprefix("sha256:")
    (extracted / "config.json").write_text('{"evil": true}\n')
    result = cli("lock", "verify", *_args(where), "--format", "json")
    assert result.code == 1
    assert json.loads(result.out)["models"][0]["status"] == "mismatch"


def test_malformed_lock_is_a_usage_error(cli: Cli, where: tuple[str, Path, str, Path]) -> None:
    where[1].write_text('version = 1\n[[models]]\nname = "m"\nurls = ["http://example.com/m"]\n')
    for command in ("verify", "sync"):
        result = cli("lock", command, *_args(where))
        assert result.code == 2
        assert "models[0] ('m')" in result.err
        assert "Traceback" not in result.err
        assert len(result.err.strip().splitlines()) == 1
    assert cli("lock", "verify", "--lock", where[1].parent / "absent.lock").code == 2
    assert cli("lock", "add", "https://h.example/m", *_args(where)).code == 2  # no pin, no tofu
    bad_hex = cli(
        "lock",
        "add",
        "https://h.example/m",
        "--sha256",
        "abc",
        "--lock",
        where[1].parent / "new.lock",
    )
    assert bad_hex.code == 2
    assert "64 hex digits" in bad_hex.err


def test_sync_records_a_hand_written_tofu_entry(
    cli: Cli, https_server: Server, where: tuple[str, Path, str, Path]
) -> None:
    url = https_server.add("/m.bin", WEIGHTS)
    where[1].write_text(f'version = 1\n[[models]]\nname = "m"\nurls = ["{url}"]\ntrust = "tofu"\n')
    assert cli("lock", "verify", *_args(where)).code == 1  # nothing recorded yet: refused
    result = cli("lock", "sync", *_args(where), "--retries", "0")
    assert result.code == 0, result.err
    assert "trust on first use" in result.err
    (entry,) = Lock.load(where[1]).models
    assert (entry.sha256, entry.trust) == (WEIGHTS_HEX, "tofu")
    assert cli("lock", "verify", *_args(where)).code == 0
