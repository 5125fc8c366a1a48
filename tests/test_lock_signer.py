"""`modelseal lock add --public-key`: the publisher's seal at URL.sig must vouch for the file
before the lock records `signer`; any failure leaves the lock unchanged (exit 1)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import httpserver
from conftest import Cli, KeyPair, make_keypair
from httpserver import Server
from modelseal import seal
from modelseal.lock import Lock
from modelseal.signing import keys

https_server = httpserver.https_server  # the loopback HTTPS fixture

WEIGHTS = bytes(range(256)) * 200
WEIGHTS_HEX = hashlib.sha256(WEIGHTS).hexdigest()
OTHER = b"another model" * 500


def _sealed(tmp_path: Path, data: bytes, key: KeyPair) -> bytes:
    """The seal `key` makes for a single file holding `data` (what the publisher ships)."""
    directory = (
        tmp_path / f"publisher-{hashlib.sha256(data + str(key.private).encode()).hexdigest()[:12]}"
    )
    directory.mkdir()
    model = directory / "model.pt"
    model.write_bytes(data)
    seal(model, key=key.private)
    return (directory / "model.pt.sig").read_bytes()


def _key_id(key: KeyPair) -> str:
    return keys.key_id(keys.load_public_key(key.public))


@pytest.fixture
def where(tmp_path: Path) -> list[str]:
    return ["--lock", str(tmp_path / "models.lock"), "--cache", str(tmp_path / "cache")]


def _add(cli: Cli, url: str, where: list[str], *extra: str) -> tuple[int, str, str]:
    result = cli("lock", "add", url, "--sha256", WEIGHTS_HEX, *where, "--retries", "0", *extra)
    return result.code, result.out, result.err


def test_signed_entry_records_the_key_id(
    cli: Cli, https_server: Server, tmp_path: Path, keypair: KeyPair, where: list[str]
) -> None:
    url = https_server.add("/zoo/model.pt", WEIGHTS)
    https_server.add("/zoo/model.pt.sig", _sealed(tmp_path, WEIGHTS, keypair))
    code, out, err = _add(cli, url, where, "--public-key", str(keypair.public), "--format", "json")
    assert code == 0, err
    (entry,) = Lock.load(where[1]).models
    assert entry.signer == _key_id(keypair)
    assert entry.sha256 == WEIGHTS_HEX
    assert json.loads(out)["model"]["signer"] == _key_id(keypair)
    assert https_server.count("/zoo/model.pt.sig") == 1
    # The pin, not a new fetch of the seal, protects later uses.
    assert cli("lock", "sync", *where).code == 0
    assert cli("lock", "verify", *where).code == 0
    assert https_server.count("/zoo/model.pt.sig") == 1


def test_first_of_several_trusted_keys_that_verifies_is_recorded(
    cli: Cli,
    https_server: Server,
    tmp_path: Path,
    keypair: KeyPair,
    other_keypair: KeyPair,
    where: list[str],
) -> None:
    url = https_server.add("/model.pt", WEIGHTS)
    https_server.add("/model.pt.sig", _sealed(tmp_path, WEIGHTS, keypair))
    trust = ["--public-key", str(other_keypair.public), "--public-key", str(keypair.public)]
    code, _, err = _add(cli, url, where, *trust)
    assert code == 0, err
    assert Lock.load(where[1]).models[0].signer == _key_id(keypair)


def test_trust_on_first_use_with_a_key_records_the_signer(
    cli: Cli, https_server: Server, tmp_path: Path, keypair: KeyPair, where: list[str]
) -> None:
    url = https_server.add("/model.pt", WEIGHTS)
    https_server.add("/model.pt.sig", _sealed(tmp_path, WEIGHTS, keypair))
    result = cli("lock", "add", url, "--trust-on-first-use", "--public-key", keypair.public, *where)
    assert result.code == 0, result.err
    (entry,) = Lock.load(where[1]).models
    assert (entry.trust, entry.sha256, entry.signer) == ("tofu", WEIGHTS_HEX, _key_id(keypair))
    assert "WARNING" in result.err


def test_seal_by_an_untrusted_key_is_refused(
    cli: Cli,
    https_server: Server,
    tmp_path: Path,
    keypair: KeyPair,
    other_keypair: KeyPair,
    where: list[str],
) -> None:
    url = https_server.add("/model.pt", WEIGHTS)
    https_server.add("/model.pt.sig", _sealed(tmp_path, WEIGHTS, other_keypair))
    code, _, err = _add(cli, url, where, "--public-key", str(keypair.public))
    assert code == 1
    assert "model.pt.sig" in err
    assert "not trusted" in err
    assert len(err.strip().splitlines()) == 1
    assert not Path(where[1]).exists()


def test_failure_leaves_an_existing_lock_unchanged(
    cli: Cli,
    https_server: Server,
    tmp_path: Path,
    keypair: KeyPair,
    other_keypair: KeyPair,
    where: list[str],
) -> None:
    url = https_server.add("/model.pt", WEIGHTS)
    assert _add(cli, url, where)[0] == 0
    before = Path(where[1]).read_bytes()
    https_server.add("/model.pt.sig", _sealed(tmp_path, WEIGHTS, other_keypair))
    code, _, _ = _add(cli, url, where, "--replace", "--public-key", str(keypair.public))
    assert code == 1
    assert Path(where[1]).read_bytes() == before


def test_missing_seal_is_refused(
    cli: Cli, https_server: Server, keypair: KeyPair, where: list[str]
) -> None:
    url = https_server.add("/model.pt", WEIGHTS)
    code, _, err = _add(cli, url, where, "--public-key", str(keypair.public))
    assert code == 1
    assert "no seal" in err
    assert "404" in err
    assert not Path(where[1]).exists()


def test_seal_of_other_bytes_is_refused(
    cli: Cli, https_server: Server, tmp_path: Path, keypair: KeyPair, where: list[str]
) -> None:
    url = https_server.add("/model.pt", WEIGHTS)
    https_server.add("/model.pt.sig", _sealed(tmp_path, OTHER, keypair))  # the trusted key
    code, _, err = _add(cli, url, where, "--public-key", str(keypair.public))
    assert code == 1
    assert "other bytes" in err
    assert not Path(where[1]).exists()


def test_malformed_seal_is_refused(
    cli: Cli, https_server: Server, keypair: KeyPair, where: list[str]
) -> None:
    url = https_server.add("/model.pt", WEIGHTS)
    https_server.add("/model.pt.sig", b"<html>not a seal</html>")
    code, _, err = _add(cli, url, where, "--public-key", str(keypair.public))
    assert code == 1
    assert "does not vouch" in err
    assert not Path(where[1]).exists()


def test_archive_with_public_key_is_a_usage_error(
    cli: Cli, https_server: Server, keypair: KeyPair, where: list[str]
) -> None:
    url = https_server.add("/bert.tar.gz", WEIGHTS)
    code, _, err = _add(cli, url, where, "--public-key", str(keypair.public))
    assert code == 2
    assert "archives are not supported" in err
    assert https_server.count("/bert.tar.gz") == 0  # refused before any download
    assert not Path(where[1]).exists()


def test_archive_kept_as_one_file_is_checked_like_a_file(
    cli: Cli, https_server: Server, tmp_path: Path, keypair: KeyPair, where: list[str]
) -> None:
    url = https_server.add("/bert.tar.gz", WEIGHTS)
    https_server.add("/bert.tar.gz.sig", _sealed(tmp_path, WEIGHTS, keypair))
    code, _, err = _add(cli, url, where, "--no-extract", "--public-key", str(keypair.public))
    assert code == 0, err
    (entry,) = Lock.load(where[1]).models
    assert (entry.signer, entry.root_digest) == (_key_id(keypair), None)


def test_bad_public_key_path_is_a_usage_error(
    cli: Cli, https_server: Server, tmp_path: Path, where: list[str]
) -> None:
    url = https_server.add("/model.pt", WEIGHTS)
    code, _, _ = _add(cli, url, where, "--public-key", str(tmp_path / "absent.pub"))
    assert code == 2
    assert https_server.count("/model.pt") == 0


def test_without_public_key_nothing_changes(
    cli: Cli, https_server: Server, tmp_path: Path, where: list[str]
) -> None:
    url = https_server.add("/model.pt", WEIGHTS)
    https_server.add("/model.pt.sig", _sealed(tmp_path, WEIGHTS, make_keypair(tmp_path)))
    code, _, err = _add(cli, url, where)
    assert code == 0, err
    (entry,) = Lock.load(where[1]).models
    assert entry.signer is None
    assert "signer" not in Path(where[1]).read_text()
    assert https_server.count("/model.pt.sig") == 0
