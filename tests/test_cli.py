"""The command line: exit codes, stdout data vs stderr messages, one-line errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import modelseal
from conftest import Cli, KeyPair


def test_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.code == 0
    assert result.out.strip() == f"modelseal {modelseal.__version__}"


def test_keygen_writes_a_private_key_only_we_can_read(cli: Cli, tmp_path: Path) -> None:
    result = cli("keygen", "--out", tmp_path / "k", "--algorithm", "ed25519")
    assert result.code == 0
    assert result.out.startswith("sha256:")
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    assert "k.pub" in result.err
    again = cli("keygen", "--out", tmp_path / "k")
    assert again.code == 2
    assert "already exists" in again.err


def test_keygen_encrypts_with_the_passphrase_variable(
    cli: Cli, tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELSEAL_KEY_PASSPHRASE", "correct horse")
    assert cli("keygen", "--out", tmp_path / "k").code == 0
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "k.key").read_bytes()
    assert cli("seal", model, "--key", tmp_path / "k.key").code == 0
    monkeypatch.delenv("MODELSEAL_KEY_PASSPHRASE")
    result = cli("seal", model, "--key", tmp_path / "k.key")
    assert result.code == 2
    assert "MODELSEAL_KEY_PASSPHRASE" in result.err


def test_seal_and_verify_text_and_json(cli: Cli, model: Path, keypair: KeyPair) -> None:
    sealed = cli("seal", model, "--key", keypair.private, "--format", "json")
    assert sealed.code == 0
    seal_data = json.loads(sealed.out)
    assert seal_data["seal"] == str(model / "model.sig")
    text = cli("verify", model, "--public-key", keypair.public)
    assert text.code == 0
    assert text.out == ""
    assert "verified model" in text.err
    data = cli("verify", model, "--public-key", keypair.public, "--format", "json")
    assert data.code == 0
    report = json.loads(data.out)
    assert report["verified"] is True
    assert report["root_digest"] == seal_data["root_digest"]
    quiet = cli("verify", model, "--public-key", keypair.public, "--quiet")
    assert (quiet.code, quiet.out, quiet.err) == (0, "", "")


def test_failed_verification_exit_1_with_json_report(
    cli: Cli, model: Path, keypair: KeyPair
) -> None:
    cli("seal", model, "--key", keypair.private)
    (model / "config.json").write_text('{"layers": 3}\n')
    (model / "backdoor.py").write_text("import os\n")
    result = cli("verify", model, "--public-key", keypair.public, "--format", "json")
    assert result.code == 1
    report = json.loads(result.out)
    assert report["verified"] is False
    kinds = {f["name"]: f["kind"] for f in report["findings"]}
    assert kinds == {"config.json": "changed", "backdoor.py": "extra"}
    changed = next(f for f in report["findings"] if f["kind"] == "changed")
    assert changed["expected"].startswith("sha256:")
    assert changed["actual"].startswith("sha256:")
    assert changed["expected"] != changed["actual"]
    assert result.err.startswith("modelseal: FAILED: verification of")


def test_log_json_appends_one_line_per_verification(
    cli: Cli, model: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    log = tmp_path / "audit.jsonl"
    cli("seal", model, "--key", keypair.private)
    cli("verify", model, "--public-key", keypair.public, "--log-json", log)
    cli("verify", model, "--public-key", keypair.public, "--log-json", log)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["outcome"] for line in lines] == ["verified", "verified"]
    assert lines[0]["level"] == "INFO"


def test_hash_prints_digests(cli: Cli, model: Path) -> None:
    text = cli("hash", model)
    assert text.code == 0
    lines = text.out.splitlines()
    assert lines[0].startswith("sha256:")
    assert lines[0].endswith("  config.json")
    assert lines[-1].endswith("(root)")
    data = json.loads(cli("hash", model, "--format", "json", "--shard-size", "50000").out)
    names = [r["name"] for r in data["predicate"]["resources"]]
    assert "weights/layer0.bin:50000:70000" in names


def test_unsigned_seal_warns(cli: Cli, model: Path) -> None:
    result = cli("seal", model, "--unsigned")
    assert result.code == 0
    assert "UNSIGNED" in result.err
    assert "corruption" in result.err
    assert cli("verify", model, "--allow-unsigned").code == 0


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["verify"],
        ["verify", "MODEL"],
        ["verify", "MODEL", "--public-key", "p", "--allow-unsigned"],
        ["seal", "MODEL"],
        ["seal", "MODEL", "--key", "k", "--unsigned"],
        ["seal", "MODEL", "--unsigned", "--shard-size", "-5"],
        ["seal", "MODEL", "--unsigned", "--algorithm", "md5"],
        ["hash", "MODEL", "--format", "xml"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(cli: Cli, model: Path, args: list[str]) -> None:
    result = cli(*[str(model) if a == "MODEL" else a for a in args])
    assert result.code == 2
    assert "error" in result.err


def test_io_errors_exit_2_with_one_line(
    cli: Cli, model: Path, tmp_path: Path, keypair: KeyPair
) -> None:
    for args in (
        ["hash", tmp_path / "absent"],
        ["seal", model, "--key", tmp_path / "absent.key"],
        ["verify", tmp_path / "absent", "--public-key", keypair.public],
        ["verify", model, "--public-key", model / "config.json"],
    ):
        result = cli(*args)
        assert result.code == 2, args
        assert len(result.err.strip().splitlines()) == 1, result.err
        assert result.err.startswith("modelseal: error:")


def test_real_entry_point_never_shows_a_traceback(
    model: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    """The installed console script, as a user runs it, on a garbage seal."""
    (model / "model.sig").write_bytes(b"\x00\xff garbage")
    exe = Path(sys.executable).with_name("modelseal")
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    result = subprocess.run(
        [str(exe), "verify", str(model), "--public-key", str(keypair.public)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "malformed seal" in result.stderr


@pytest.mark.parametrize(
    ("seal_bytes", "reason"),
    [
        (b"", "is empty"),
        (b"{", "not valid JSON"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"mediaType": "x"}', "mediaType"),
    ],
)
def test_a_bad_seal_is_one_line_exit_1(
    cli: Cli, model: Path, keypair: KeyPair, seal_bytes: bytes, reason: str
) -> None:
    (model / "model.sig").write_bytes(seal_bytes)
    result = cli("verify", model, "--public-key", keypair.public)
    assert result.code == 1
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert reason in result.err
