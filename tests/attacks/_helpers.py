"""Assertions shared by the attack modules: how a refusal must look, in the library and CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import modelseal
from conftest import CliResult, KeyPair
from modelseal import IntegrityError


def refused(
    model: Path, keypair: KeyPair, error: type[IntegrityError], **kwargs: bool
) -> IntegrityError:
    """Verify `model` with the trusted key and expect `error`, with a full failure report."""
    with pytest.raises(error) as info:
        modelseal.verify(model, public_keys=[keypair.public], **kwargs)
    assert info.value.failure is not None
    return info.value


def assert_cli_refused(result: CliResult, reason: str) -> None:
    """Exit 1; stderr opens with a one-line verdict and states `reason` on exactly one line."""
    assert result.code == 1, result.err
    assert result.out == ""
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert lines[0].startswith("modelseal: FAILED: verification of ")
    assert sum(reason in line for line in lines) == 1, result.err


def verify_in_subprocess(model: Path, keypair: KeyPair) -> CliResult:
    """The real CLI in a child process, so a regression that blocks (on a FIFO) cannot hang
    the suite: the timeout is a safety net, not a timed assertion."""
    command = [sys.executable, "-m", "modelseal", "verify", str(model)]
    command += ["--public-key", str(keypair.public)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    return CliResult(result.returncode, result.stdout, result.stderr)
