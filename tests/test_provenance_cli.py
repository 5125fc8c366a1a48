"""`modelseal provenance record|show|verify`: round trips, failing commands, malformed files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Cli, CliResult, KeyPair, policy_file

TRAIN = """\
import os, random, sys
out = sys.argv[1]
os.makedirs(os.path.join(out, "weights"), exist_ok=True)
with open(os.path.join(out, "weights", "w.bin"), "wb") as f:
    f.write(random.Random(int(sys.argv[2])).randbytes(4096))
with open(os.path.join(out, "config.json"), "w") as f:
    f.write('{"seed": %s}' % sys.argv[2])
sys.exit(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
"""


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Trainer")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "trainer@example.com")


@pytest.fixture
def script(tmp_path: Path) -> Path:
    """train.py in a git checkout with a remote."""
    repo = tmp_path / "repo"
    repo.mkdir()
    path = repo / "train.py"
    path.write_text(TRAIN)
    for args in (
        ["init", "-q"],
        ["add", "train.py"],
        ["commit", "-q", "-m", "train"],
        ["remote", "add", "origin", "https://git.example.com/ml/fraud.git"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "train.csv"
    path.write_text("x,y\n1,2\n")
    return path


def record(
    cli: Cli, out: Path, keypair: KeyPair, script: Path, dataset: Path, *extra: str, seed: int = 1
) -> CliResult:
    return cli(
        "provenance",
        "record",
        "--model",
        out,
        "--key",
        keypair.private,
        "--dataset",
        dataset,
        "--param",
        "lr=0.001",
        "--param",
        "optimizer=adam",
        "--param",
        "shuffle=true",
        "--builder-id",
        "https://ci.example.com/runner/7",
        *extra,
        "--",
        sys.executable,
        script,
        out,
        str(seed),
    )


def test_record_show_verify_round_trip(
    cli: Cli, tmp_path: Path, keypair: KeyPair, script: Path, dataset: Path
) -> None:
    out = tmp_path / "model"
    done = record(cli, out, keypair, script, dataset, "--format", "json")
    assert done.code == 0, done.err
    recorded = json.loads(done.out)
    assert recorded["provenance_path"] == str(out / "model.provenance.sig")
    provenance = recorded["provenance"]
    assert provenance["parameters"] == {"lr": 0.001, "optimizer": "adam", "shuffle": True}
    assert provenance["command"] == [sys.executable, str(script), str(out), "1"]
    assert provenance["source_repo"] == "https://git.example.com/ml/fraud.git"
    script_dep = next(d for d in provenance["dependencies"] if d["role"] == "script")
    assert script_dep["digest"]["sha256"] == hashlib.sha256(script.read_bytes()).hexdigest()

    shown = cli("provenance", "show", out)
    assert shown.code == 0
    assert "NOT verified" in shown.err or "WITHOUT verification" in shown.err
    assert "builder:      https://ci.example.com/runner/7" in shown.out
    assert "parameter:    lr = 0.001" in shown.out
    assert str(dataset) in shown.out
    shown_json = cli("provenance", "show", out, "--format", "json")
    assert json.loads(shown_json.out)["verified"] is False
    assert json.loads(shown_json.out)["root_digest"] == recorded["seal"]["root_digest"]

    verified = cli("provenance", "verify", out, "--public-key", keypair.public)
    assert verified.code == 0, verified.err
    assert "verified the provenance of model" in verified.err
    as_json = cli("provenance", "verify", out, "--public-key", keypair.public, "--format", "json")
    assert json.loads(as_json.out)["verified"] is True
    assert json.loads(as_json.out)["builder_id"] == "https://ci.example.com/runner/7"
    assert cli("verify", out, "--public-key", keypair.public).code == 0


def test_verify_with_a_policy_and_its_claims(
    cli: Cli, tmp_path: Path, keypair: KeyPair, script: Path, dataset: Path
) -> None:
    out = tmp_path / "model"
    assert record(cli, out, keypair, script, dataset).code == 0
    policy = policy_file(tmp_path / "policy.toml", keypair.public)
    assert cli("provenance", "verify", out, "--policy", policy).code == 0
    digest = hashlib.sha256(dataset.read_bytes()).hexdigest()
    with policy.open("a") as handle:
        handle.write(
            f'[rules.provenance]\nbuilder_id = "https://ci.example.com/runner/7"\n'
            f'dataset_digests = ["sha256:{digest}"]\n'
        )
    assert cli("provenance", "verify", out, "--policy", policy).code == 0
    text = policy.read_text().replace("runner/7", "runner/8")
    policy.write_text(text)
    refused = cli("provenance", "verify", out, "--policy", policy, "--format", "json")
    assert refused.code == 1
    assert "builder_id differs" in refused.err
    assert json.loads(refused.out)["verified"] is False


def test_a_failing_command_seals_nothing(
    cli: Cli, tmp_path: Path, keypair: KeyPair, script: Path, dataset: Path
) -> None:
    out = tmp_path / "model"
    done = cli(
        "provenance", "record", "--model", out, "--key", keypair.private,
        "--", sys.executable, script, out, "1", "3",
    )  # fmt: skip
    assert done.code == 3
    assert "exited with 3: nothing was sealed" in done.err
    assert out.exists()
    assert not (out / "model.sig").exists()
    assert not (out / "model.provenance.sig").exists()


def test_a_command_that_writes_no_model(cli: Cli, tmp_path: Path, keypair: KeyPair) -> None:
    done = cli(
        "provenance", "record", "--model", tmp_path / "nothing", "--key", keypair.private,
        "--", sys.executable, "-c", "pass",
    )  # fmt: skip
    assert done.code == 2
    assert "wrote no model" in done.err


@pytest.mark.parametrize(
    "tail",
    [
        [sys.executable, "-c", "pass"],  # no --
        ["--"],  # nothing after --
        [],
    ],
)
def test_record_needs_a_command_after_double_dash(
    cli: Cli, tmp_path: Path, keypair: KeyPair, tail: list[str]
) -> None:
    done = cli("provenance", "record", "--model", tmp_path / "m", "--key", keypair.private, *tail)
    assert done.code == 2
    assert "--" in done.err


def test_bad_param_is_a_usage_error(cli: Cli, tmp_path: Path, keypair: KeyPair) -> None:
    done = cli(
        "provenance", "record", "--model", tmp_path / "m", "--key", keypair.private,
        "--param", "no-equals-sign", "--", sys.executable, "-c", "pass",
    )  # fmt: skip
    assert done.code == 2
    assert "NAME=VALUE" in done.err


def test_untrusted_and_replayed_provenance_are_refused(
    cli: Cli,
    tmp_path: Path,
    keypair: KeyPair,
    other_keypair: KeyPair,
    script: Path,
    dataset: Path,
) -> None:
    out = tmp_path / "model"
    assert record(cli, out, keypair, script, dataset, seed=1).code == 0
    old = tmp_path / "old.sig"
    shutil.copy(out / "model.provenance.sig", old)
    shutil.rmtree(out)
    assert record(cli, out, keypair, script, dataset, seed=2).code == 0

    untrusted = cli("provenance", "verify", out, "--public-key", other_keypair.public)
    assert untrusted.code == 1
    replayed = cli("provenance", "verify", out, "--public-key", keypair.public, "--provenance", old)
    assert replayed.code == 1
    assert "older version of this model" in replayed.err
    assert replayed.err.count("\n") == 1


@pytest.mark.parametrize("kind", ["garbage", "seal", "missing"])
def test_malformed_provenance_file_is_a_one_line_refusal(
    cli: Cli, tmp_path: Path, keypair: KeyPair, script: Path, dataset: Path, kind: str
) -> None:
    out = tmp_path / "model"
    assert record(cli, out, keypair, script, dataset).code == 0
    path = out / "model.provenance.sig"
    if kind == "garbage":
        path.write_bytes(b"\xff\xfe not json at all")
        expected = "malformed provenance"
    elif kind == "seal":  # a validly signed statement, of the wrong type
        shutil.copy(out / "model.sig", path)
        expected = "predicateType"
    else:
        path.unlink()
        expected = "no provenance at"
    for command in (["show", out], ["verify", out, "--public-key", keypair.public]):
        done = cli("provenance", *command)
        assert done.code == 1, done.err
        assert expected in done.err
        assert done.err.count("\n") == 1, done.err
        assert "Traceback" not in done.err
    as_json = cli("provenance", "verify", out, "--public-key", keypair.public, "--format", "json")
    failure = json.loads(as_json.out)
    assert failure["verified"] is False
    assert expected in failure["reason"]
