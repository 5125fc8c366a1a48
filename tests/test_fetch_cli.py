"""`modelseal fetch` end to end on the loopback HTTPS server: exit codes, one-line errors."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import Cli, KeyPair
from httpserver import Server, http_server, https_server

__all__ = ["http_server", "https_server"]  # fixtures, imported for pytest

DATA = b"weights " * 10_000
DIGEST = hashlib.sha256(DATA).hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line_error(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_fetch_a_file(cli: Cli, https_server: Server, tmp_path: Path) -> None:
    url = https_server.add("/zoo/m.bin", DATA)
    run = cli("fetch", url, "--sha256", DIGEST, "--out", tmp_path)
    assert run.code == 0, run.err
    assert run.out == f"sha256:{DIGEST}  {tmp_path / 'm.bin'}\n"
    assert "matches the pin" in run.err
    assert (tmp_path / "m.bin").read_bytes() == DATA


def test_fetch_json(cli: Cli, https_server: Server, tmp_path: Path) -> None:
    url = https_server.add("/zoo/m.bin", DATA)
    run = cli("fetch", url, "--sha256", DIGEST, "--out", tmp_path / "x.bin", "--format", "json")
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert data["sha256"] == f"sha256:{DIGEST}"
    assert data["path"] == str(tmp_path / "x.bin")
    assert (data["trust"], data["extracted"], data["size"]) == ("pinned", False, len(DATA))


def test_zip_round_trip_then_verify(cli: Cli, https_server: Server, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("r50/model.params", DATA)
        archive.writestr("r50/config.json", b"{}")
    payload = buffer.getvalue()
    url = https_server.add("/zoo/r50.zip", payload)
    run = cli("fetch", url, "--sha256", sha(payload), "--out", tmp_path, "--name", "resnet50")
    assert run.code == 0, run.err
    assert "extracted and sealed" in run.err
    assert "UNSIGNED" in run.err
    checked = cli("verify", tmp_path / "r50", "--allow-unsigned")
    assert checked.code == 0, checked.err
    assert "verified resnet50" in checked.err


def test_tar_gz_signed_round_trip(
    cli: Cli, https_server: Server, tmp_path: Path, keypair: KeyPair
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("model.params")
        info.size = len(DATA)
        archive.addfile(info, io.BytesIO(DATA))
    payload = buffer.getvalue()
    url = https_server.add("/zoo/r50.tar.gz", payload)
    out = tmp_path / "models" / "r50"
    run = cli("fetch", url, "--sha256", sha(payload), "--out", out, "--key", keypair.private)
    assert run.code == 0, run.err
    checked = cli("verify", out, "--public-key", keypair.public)
    assert checked.code == 0, checked.err


def test_wrong_digest_exits_1(cli: Cli, https_server: Server, tmp_path: Path) -> None:
    url = https_server.add("/zoo/m.bin", DATA)
    wrong = sha(b"other")
    run = cli("fetch", url, "--sha256", wrong, "--out", tmp_path)
    assert run.code == 1
    line = one_line_error(run.err)
    assert line.startswith("modelseal: refused:")
    assert wrong in line
    assert DIGEST in line
    assert list(tmp_path.iterdir()) == []


def test_source_outside_policy_exits_1(cli: Cli, https_server: Server, tmp_path: Path) -> None:
    url = https_server.add("/private/m.bin", DATA)
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[sources]\nallow = ["{https_server.url("/zoo/*")}"]\n')
    run = cli("fetch", url, "--sha256", DIGEST, "--policy", policy, "--out", tmp_path)
    assert run.code == 1
    assert "not an allowed source" in one_line_error(run.err)
    assert https_server.requests == []


def test_unsafe_archive_exits_1(cli: Cli, https_server: Server, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../evil.py", b"x")
    payload = buffer.getvalue()
    url = https_server.add("/zoo/r50.zip", payload)
    run = cli("fetch", url, "--sha256", sha(payload), "--out", tmp_path / "out")
    assert run.code == 1
    assert "../../evil.py" in one_line_error(run.err)


def test_http_error_exits_2(cli: Cli, https_server: Server, tmp_path: Path) -> None:
    run = cli("fetch", https_server.url("/nothing.bin"), "--sha256", DIGEST, "--out", tmp_path)
    assert run.code == 2
    assert "HTTP 404" in one_line_error(run.err)


def test_retries_exhausted_exits_2(cli: Cli, https_server: Server, tmp_path: Path) -> None:
    url = https_server.add("/m.bin", DATA, status=502)
    run = cli("fetch", url, "--sha256", DIGEST, "--out", tmp_path, "--retries", "0")
    assert run.code == 2
    assert "gave up after 1 attempts" in one_line_error(run.err)


def test_size_cap(cli: Cli, https_server: Server, tmp_path: Path) -> None:
    url = https_server.add("/m.bin", DATA)
    run = cli("fetch", url, "--sha256", DIGEST, "--out", tmp_path, "--max-size", "1K")
    assert run.code == 2
    assert "over the size cap of 1024 bytes" in one_line_error(run.err)


def test_untrusted_ca_exits_2(
    cli: Cli, https_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = https_server.add("/m.bin", DATA)
    monkeypatch.delenv("SSL_CERT_FILE")
    run = cli("fetch", url, "--sha256", DIGEST, "--out", tmp_path)
    assert run.code == 2
    assert "certificate verification failed" in one_line_error(run.err)


def test_plain_http_needs_the_flag(cli: Cli, http_server: Server, tmp_path: Path) -> None:
    url = http_server.add("/m.bin", DATA)
    run = cli("fetch", url, "--sha256", DIGEST, "--out", tmp_path)
    assert run.code == 1
    assert "plain http" in one_line_error(run.err)
    run = cli("fetch", url, "--sha256", DIGEST, "--out", tmp_path, "--allow-http-loopback")
    assert run.code == 0, run.err


def test_trust_on_first_use_prints_the_pin(cli: Cli, https_server: Server, tmp_path: Path) -> None:
    url = https_server.add("/m.bin", DATA)
    run = cli("fetch", url, "--trust-on-first-use", "--out", tmp_path)
    assert run.code == 0, run.err
    assert f"--sha256 {DIGEST}" in run.err
    assert "NOT pinned" in run.err


@pytest.mark.parametrize(
    "args",
    [
        ["https://127.0.0.1/m.bin"],  # neither --sha256 nor --trust-on-first-use
        ["https://127.0.0.1/m.bin", "--sha256", DIGEST, "--trust-on-first-use"],
        ["https://127.0.0.1/m.bin", "--sha256", DIGEST, "--max-size", "lots"],
        ["https://127.0.0.1/m.bin", "--sha256", "nothex"],
        ["https://127.0.0.1/", "--sha256", DIGEST],  # no file name in the URL
        ["ftp://127.0.0.1/m.bin", "--sha256", DIGEST],
    ],
)
def test_usage_errors(cli: Cli, args: list[str], tmp_path: Path) -> None:
    run = cli("fetch", *args)
    assert run.code in (1, 2)
    assert run.code == (1 if args[0].startswith("ftp") else 2)
    one_line_error(run.err)
