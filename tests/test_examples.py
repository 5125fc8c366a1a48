"""The examples/ scenario end to end: train with provenance, deploy only what the policy allows."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KeyPair, make_keypair

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "models" / "train.py"
DEPLOY = ROOT / "examples" / "deployment" / "deploy_model.sh"
MODELSEAL = Path(sys.executable).with_name("modelseal")
NAME = "fraud-detector"  # the name train.py seals with, and the one the deployment expects

pytest.importorskip("torch")


def run(*argv: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MODELSEAL": str(MODELSEAL),
        "PATH": f"{MODELSEAL.parent}:{os.environ['PATH']}",
    }
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def policy(path: Path, trainer: KeyPair, dataset_digest: str) -> Path:
    path.write_text(
        f"""
[[signers]]
name = "trainer"
public_key = "{trainer.public}"
models = ["fraud-*"]

[[rules]]
models = ["fraud-*"]
signers = ["trainer"]
require_provenance = true
[rules.provenance]
builder_id = "https://modelseal.dev/builders/local"
dataset_digests = ["{dataset_digest}"]
"""
    )
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, KeyPair, Path]:
    work = tmp_path_factory.mktemp("example")
    trainer = make_keypair(work, "trainer")
    data = work / "transactions.csv"
    result = run(
        sys.executable, TRAIN, "--data", data, "--out", work / "fraud-model",
        "--key", trainer.private, "--epochs", "30", cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "sealed with provenance" in result.stdout
    return work, trainer, data


def test_a_trained_model_is_deployed(trained: tuple[Path, KeyPair, Path], tmp_path: Path) -> None:
    work, trainer, data = trained
    digest = "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()
    pol = policy(tmp_path / "modelseal.toml", trainer, digest)
    dest = tmp_path / "serving" / "fraud"
    dest.parent.mkdir()
    result = run(
        "bash",
        DEPLOY,
        work / "fraud-model",
        NAME,
        pol,
        dest,
        tmp_path / "audit.jsonl",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (dest / "model.pt").read_bytes() == (work / "fraud-model" / "model.pt").read_bytes()
    assert "deployed" in result.stderr


def test_a_tampered_model_is_not_deployed(
    trained: tuple[Path, KeyPair, Path], tmp_path: Path
) -> None:
    work, trainer, data = trained
    copy = tmp_path / "fraud-model"
    subprocess.run(["cp", "-a", str(work / "fraud-model"), str(copy)], check=True)
    with (copy / "model.pt").open("r+b") as handle:
        handle.seek(-10, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(-10, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 1]))
    digest = "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()
    pol = policy(tmp_path / "modelseal.toml", trainer, digest)
    dest = tmp_path / "serving"
    result = run("bash", DEPLOY, copy, NAME, pol, dest, cwd=tmp_path)
    assert result.returncode == 1
    assert "REFUSED" in result.stderr
    assert "model.pt" in result.stderr
    assert not dest.exists()


def test_a_model_trained_on_other_data_is_not_deployed(
    trained: tuple[Path, KeyPair, Path], tmp_path: Path
) -> None:
    work, trainer, _ = trained
    pinned = "sha256:" + "ab" * 32  # the dataset the policy approved
    pol = policy(tmp_path / "modelseal.toml", trainer, pinned)
    dest = tmp_path / "serving"
    result = run("bash", DEPLOY, work / "fraud-model", NAME, pol, dest, cwd=tmp_path)
    assert result.returncode == 1
    assert "dataset" in result.stderr
    assert not dest.exists()


def test_a_model_sealed_under_another_name_is_not_deployed(
    trained: tuple[Path, KeyPair, Path], tmp_path: Path
) -> None:
    work, trainer, data = trained
    digest = "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()
    pol = policy(tmp_path / "modelseal.toml", trainer, digest)
    dest = tmp_path / "serving"
    result = run("bash", DEPLOY, work / "fraud-model", "fraud-v9", pol, dest, cwd=tmp_path)
    assert result.returncode == 1
    assert "not the expected 'fraud-v9'" in result.stderr
    assert not dest.exists()
