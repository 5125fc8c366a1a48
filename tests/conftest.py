"""Shared fixtures: keys, small models, and a CLI runner."""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

# Real frameworks run on the CPU in the integration tests: keep them quiet and polite.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from modelseal._cli import main
from modelseal.signing import keys


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


def make_keypair(directory: Path, name: str = "signer", algorithm: str = "ecdsa-p256") -> KeyPair:
    private, public = keys.write_keypair(directory / name, keys.KeyAlgorithm(algorithm))
    return KeyPair(private, public)


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.mkdir()
    return path


@pytest.fixture
def keypair(key_dir: Path) -> KeyPair:
    return make_keypair(key_dir, "trusted")


@pytest.fixture
def other_keypair(key_dir: Path) -> KeyPair:
    return make_keypair(key_dir, "other")


def write_model(root: Path, seed: int = 1) -> Path:
    """A small model: weights in a subdirectory, a config, a tokenizer."""
    rng = random.Random(seed)
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "layer0.bin").write_bytes(rng.randbytes(70_000))
    (root / "weights" / "layer1.bin").write_bytes(rng.randbytes(33_333))
    (root / "config.json").write_text('{"layers": 2}\n')
    (root / "tokenizer.txt").write_text("a b c\n")
    return root


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_model(tmp_path / "model")


@pytest.fixture
def single_file(tmp_path: Path) -> Path:
    path = tmp_path / "weights.safetensors"
    path.write_bytes(random.Random(7).randbytes(50_000))
    return path


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


Cli = Callable[..., CliResult]


@pytest.fixture
def cli() -> Cli:
    """Run the CLI in-process; returns exit code, stdout and stderr."""

    def run(*args: str | os.PathLike[str]) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main([os.fspath(a) for a in args])
            except SystemExit as exc:  # argparse exits for --version and usage errors
                code = int(exc.code or 0)
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


def policy_file(path: Path, public: Path, signer_models: str = "*") -> Path:
    """A one-signer, one-rule trust policy: `public` may sign models matching `signer_models`."""
    path.write_text(
        f'[[signers]]\nname = "trainer"\npublic_key = "{public}"\n'
        f'models = ["{signer_models}"]\n\n'
        '[[rules]]\nmodels = ["*"]\nsigners = ["trainer"]\n'
    )
    return path
