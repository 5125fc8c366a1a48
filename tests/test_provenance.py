"""Signed training provenance: what `record` captures, and every refusal of `check_provenance`.

Git is real: each test that needs a checkout creates one in tmp_path.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import modelseal
from conftest import KeyPair, make_keypair, write_model
from modelseal.errors import IntegrityError, ModelMismatchError, UsageError
from modelseal.policy import Policy, ProvenanceClaims
from modelseal.provenance import (
    BUILD_TYPE,
    DEFAULT_BUILDER_ID,
    ProvenanceError,
    RecordResult,
    check_for_policy,
    check_provenance,
    current,
    default_provenance_path,
    provenance_path_for,
    read_bundle,
    read_provenance,
    record,
    strip_credentials,
    verify_provenance,
)
from modelseal.signing import keys
from modelseal.signing.bundle import Bundle, read_seal, write_seal
from modelseal.signing.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, Signature

REMOTE = "https://ci-bot:s3cret-token@git.example.com/ml/fraud.git"
CLEAN_REMOTE = "https://git.example.com/ml/fraud.git"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=trainer@example.com", "-c", "user.name=Trainer", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Git sees neither the machine's configuration nor any checkout around tmp_path."""
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Trainer")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "trainer@example.com")


@dataclass(frozen=True)
class Project:
    """A training project: a git checkout with a script, datasets and a config."""

    root: Path
    script: Path
    data_file: Path
    data_dir: Path
    config: Path
    commit: str


def make_project(root: Path, remote: str | None = REMOTE) -> Project:
    root.mkdir(parents=True)
    git(root, "init", "-q")
    script = root / "train.py"
    script.write_text("print('training')\n")
    config = root / "config.yaml"
    config.write_text("lr: 0.1\n")
    git(root, "add", "train.py", "config.yaml")
    git(root, "commit", "-q", "-m", "initial")
    if remote is not None:
        git(root, "remote", "add", "origin", remote)
    data_file = root / "data" / "train.csv"
    data_dir = root / "data" / "images"
    data_dir.mkdir(parents=True)
    data_file.write_text("x,y\n1,2\n3,4\n")
    (data_dir / "a.png").write_bytes(b"\x89PNG fake a" * 100)
    (data_dir / "b.png").write_bytes(b"\x89PNG fake b" * 77)
    return Project(root, script, data_file, data_dir, config, git(root, "rev-parse", "HEAD"))


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return make_project(tmp_path / "project")


def recorder(project: Project, model: Path, keypair: KeyPair, **options: Any) -> record:
    defaults: dict[str, Any] = {
        "key": keypair.private,
        "datasets": [project.data_file, project.data_dir],
        "configs": [project.config],
        "params": {"lr": 0.1},
        "script": project.script,
    }
    return record(model, **{**defaults, **options})


def train(project: Project, model: Path, keypair: KeyPair, seed: int = 1, **options: Any) -> Any:
    with recorder(project, model, keypair, **options) as run:
        if model.exists():
            shutil.rmtree(model)
        write_model(model, seed)
        run.params["epochs"] = 3
    assert run.result is not None
    return run.result


@pytest.fixture
def recorded(project: Project, tmp_path: Path, keypair: KeyPair) -> RecordResult:
    result: RecordResult = train(project, tmp_path / "out" / "model", keypair)
    return result


def now() -> datetime:
    return datetime.now(timezone.utc)


def statement_of(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(read_seal(path).envelope.payload)
    return data


def signed(
    statement: dict[str, Any], private: Path, payload_type: str = IN_TOTO_PAYLOAD_TYPE
) -> Bundle:
    """`statement` signed by `private`, as an attacker (or an honest other tool) would."""
    signer = keys.as_signer(private)
    payload = json.dumps(statement).encode()
    unsigned = Envelope(payload_type, payload, ())
    signature = Signature(signer.sign(unsigned.signed_bytes()))
    return Bundle(Envelope(payload_type, payload, (signature,)), keys.key_hint(signer.public_key))


def check(
    bundle: Bundle,
    result: RecordResult,
    trusted: Path,
    claims: tuple[ProvenanceClaims, ...] = (),
    when: datetime | None = None,
) -> Any:
    return check_provenance(
        bundle,
        [keys.load_public_key(trusted)],
        model_name=result.seal.model_name,
        root_digest=bytes.fromhex(result.seal.root_digest.removeprefix("sha256:")),
        claims=claims,
        now=when or now(),
    )


def validate_with_in_toto(statement: dict[str, Any]) -> None:
    """The statement and its SLSA v1 predicate, parsed by the in-toto-attestation package."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    Statement.copy_from_pb(json_format.ParseDict(statement, statement_pb2.Statement())).validate()
    # ParseDict refuses any field the SLSA v1 schema does not define.
    predicate = json_format.ParseDict(statement["predicate"], provenance_pb2.Provenance())
    definition = predicate.build_definition
    assert definition.build_type == BUILD_TYPE
    assert definition.HasField("external_parameters")
    assert predicate.run_details.builder.id
    assert predicate.run_details.metadata.started_on.seconds > 0
    for dependency in definition.resolved_dependencies:
        ResourceDescriptor.copy_from_pb(dependency).validate()


# --- recording ----------------------------------------------------------------------------


def test_record_as_context_manager_captures_the_run(
    recorded: RecordResult, project: Project, keypair: KeyPair, cli: Any
) -> None:
    model = Path(recorded.seal.model)
    assert recorded.provenance_path == model / "model.provenance.sig"
    assert recorded.provenance_path == default_provenance_path(model)
    modelseal.verify(model, public_keys=[keypair.public])  # the provenance file is not "extra"

    provenance = verify_provenance(model, public_keys=[keypair.public])
    assert provenance.signers == (keys.key_id(keys.load_public_key(keypair.public)),)
    assert provenance.root_digest == recorded.seal.root_digest
    assert provenance.model_name == "model"
    assert provenance.builder_id == DEFAULT_BUILDER_ID
    assert provenance.build_type == BUILD_TYPE
    assert provenance.source_repo == CLEAN_REMOTE  # the token never reaches the statement
    assert "s3cret" not in recorded.provenance_path.read_text()
    assert provenance.commit == project.commit
    assert provenance.dirty is False  # untracked data and models do not make it dirty
    assert dict(provenance.parameters) == {"lr": 0.1, "epochs": 3}
    assert provenance.started_on is not None
    assert provenance.finished_on is not None
    assert provenance.started_on <= provenance.finished_on <= now()

    roles = {d.role: d for d in provenance.dependencies}
    assert roles["source"].digest == {"gitCommit": project.commit}
    assert roles["source"].uri == f"git+{CLEAN_REMOTE}@{project.commit}"
    assert roles["script"].digest == {
        "sha256": hashlib.sha256(project.script.read_bytes()).hexdigest()
    }
    assert roles["config"].name == str(project.config)
    # A dataset file: what sha256sum prints. A directory: what `modelseal hash` prints as root.
    file_set, dir_set = provenance.datasets
    assert file_set.digest == {"sha256": hashlib.sha256(project.data_file.read_bytes()).hexdigest()}
    assert file_set.annotations["files"] == 1
    assert file_set.uri == project.data_file.resolve().as_uri()
    hashed = cli("hash", project.data_dir)
    assert hashed.code == 0
    assert f"sha256:{dir_set.digest['sha256']}  (root)" in hashed.out
    assert dir_set.annotations["files"] == 2
    assert dir_set.annotations["bytes"] == 1100 + 847

    internal = provenance.statement["predicate"]["buildDefinition"]["internalParameters"]
    assert internal["python"] == ".".join(map(str, sys.version_info[:3]))
    assert internal["packages"]["modelseal"] == modelseal.__version__
    assert internal["distributions"]["count"] > 1
    assert internal["distributions"]["digest"].startswith("sha256:")
    assert "torch" not in sys.modules or "torch" in internal["packages"]
    assert {"host", "platform"} <= set(internal)
    validate_with_in_toto(dict(provenance.statement))


def test_record_does_not_import_frameworks(tmp_path: Path, keypair: KeyPair) -> None:
    code = (
        "import sys, modelseal.provenance as p\n"
        "p.installed_distributions()\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'numpy', 'onnx') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_record_as_decorator(project: Project, tmp_path: Path, keypair: KeyPair) -> None:
    model = tmp_path / "model"
    rec = recorder(project, model, keypair, params={"lr": 0.01})

    @rec
    def training(seed: int) -> str:
        current().params["seed"] = seed
        write_model(model, seed)
        return "done"

    assert training(5) == "done"
    assert rec.result is not None
    provenance = verify_provenance(model, public_keys=[keypair.public])
    assert dict(provenance.parameters) == {"lr": 0.01, "seed": 5}
    assert provenance.root_digest == rec.result.seal.root_digest
    with pytest.raises(UsageError, match="no provenance is being recorded"):
        current()


def test_an_exception_in_the_block_seals_and_writes_nothing(
    project: Project, tmp_path: Path, keypair: KeyPair
) -> None:
    model = tmp_path / "model"

    def failing_training() -> None:
        with recorder(project, model, keypair):
            write_model(model)
            raise RuntimeError("loss diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        failing_training()
    assert not (model / "model.sig").exists()
    assert not (model / "model.provenance.sig").exists()
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "tokenizer.txt", "weights"]


def test_dirty_checkout_is_recorded(project: Project, tmp_path: Path, keypair: KeyPair) -> None:
    project.script.write_text("print('an uncommitted change')\n")
    result = train(project, tmp_path / "model", keypair)
    assert result.provenance.dirty is True
    source = next(d for d in result.provenance.dependencies if d.role == "source")
    assert source.annotations["dirty"] is True


def test_outside_a_checkout_the_source_is_omitted(tmp_path: Path, keypair: KeyPair) -> None:
    script = tmp_path / "plain" / "train.py"
    script.parent.mkdir()
    script.write_text("pass\n")
    with record(tmp_path / "model", key=keypair.private, script=script) as run:
        write_model(tmp_path / "model")
    assert run.result is not None
    provenance = run.result.provenance
    assert provenance.source_repo is None
    assert provenance.commit is None
    assert (
        "source" not in provenance.statement["predicate"]["buildDefinition"]["externalParameters"]
    )
    assert [d.role for d in provenance.dependencies] == ["script"]


def test_a_checkout_without_remote_names_its_directory(tmp_path: Path, keypair: KeyPair) -> None:
    project = make_project(tmp_path / "local", remote=None)
    result = train(project, tmp_path / "model", keypair, datasets=(), configs=())
    assert result.provenance.source_repo == project.root.resolve().as_uri()


def test_single_file_model(
    project: Project, single_file: Path, keypair: KeyPair, tmp_path: Path
) -> None:
    with recorder(project, single_file, keypair, name="fraud-detector"):
        pass  # the model file exists already
    path = single_file.with_name(single_file.name + ".provenance.sig")
    assert path.is_file()
    provenance = verify_provenance(single_file, public_keys=[keypair.public])
    assert provenance.model_name == "fraud-detector"


def test_named_datasets_and_algorithm(project: Project, tmp_path: Path, keypair: KeyPair) -> None:
    pytest.importorskip("blake3")
    result = train(
        project,
        tmp_path / "model",
        keypair,
        datasets={"transactions-2026": project.data_file},
        algorithm="blake3",
    )
    (dataset,) = result.provenance.datasets
    assert dataset.name == "transactions-2026"
    assert list(dataset.digest) == ["blake3"]


def test_a_dataset_given_as_a_symlink_is_hashed_where_it_points(
    project: Project, tmp_path: Path, keypair: KeyPair
) -> None:
    link = tmp_path / "current-data"
    link.symlink_to(project.data_dir, target_is_directory=True)
    result = train(project, tmp_path / "model", keypair, datasets=[link])
    (dataset,) = result.provenance.datasets
    assert dataset.name == str(link)
    assert dataset.uri == project.data_dir.resolve().as_uri()
    direct = train(project, tmp_path / "model2", keypair, datasets=[project.data_dir])
    assert dataset.digest == direct.provenance.datasets[0].digest


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("datasets", ["missing.csv"], "dataset not found"),
        ("script", "missing.py", "training script not found"),
        ("params", {"lr": float("nan")}, "JSON cannot represent"),
        ("params", {"f": object()}, "cannot be recorded as JSON"),
        ("algorithm", "md5", "too weak"),
    ],
)
def test_bad_inputs_fail_before_training(
    project: Project, tmp_path: Path, keypair: KeyPair, option: str, value: Any, message: str
) -> None:
    trained = []
    with (
        pytest.raises(UsageError, match=message),
        recorder(project, tmp_path / "model", keypair, **{option: value}),
    ):
        trained.append(True)
    assert trained == []


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        (REMOTE, CLEAN_REMOTE),
        ("https://ghp_token@github.com/org/repo", "https://github.com/org/repo"),
        ("http://u:p@[::1]:8080/r.git", "http://[::1]:8080/r.git"),
        ("ssh://git:pw@host/r.git", "ssh://git@host/r.git"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("https://github.com/org/repo.git", "https://github.com/org/repo.git"),
    ],
)
def test_credentials_are_stripped_from_remotes(url: str, clean: str) -> None:
    assert strip_credentials(url) == clean


def test_provenance_paths() -> None:
    assert provenance_path_for(Path("m/model.sig")) == Path("m/model.provenance.sig")
    assert provenance_path_for(Path("w.pt.sig")) == Path("w.pt.provenance.sig")
    assert provenance_path_for(Path("seal.json")) == Path("seal.json.provenance.sig")


@pytest.mark.interop
def test_recorded_directory_model_verifies_with_upstream(
    recorded: RecordResult, keypair: KeyPair
) -> None:
    upstream = Path(sys.executable).with_name("model_signing")
    if not upstream.exists():  # pragma: no cover - the test extras install it
        pytest.fail("model_signing is not installed")
    model = Path(recorded.seal.model)
    args = ["verify", "key", str(model), "--signature", str(model / "model.sig")]
    done = subprocess.run(
        [str(upstream), *args, "--public_key", str(keypair.public)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- checking: each refusal next to its honest counterpart ----------------------------------


def test_honest_provenance_passes_the_pure_check(recorded: RecordResult, keypair: KeyPair) -> None:
    bundle = read_bundle(recorded.provenance_path)
    assert check(bundle, recorded, keypair.public).root_digest == recorded.seal.root_digest


def test_missing_provenance_is_refused(recorded: RecordResult, keypair: KeyPair) -> None:
    recorded.provenance_path.unlink()
    with pytest.raises(ProvenanceError, match="no provenance at"):
        verify_provenance(recorded.seal.model, public_keys=[keypair.public])


def test_unsigned_provenance_is_refused(recorded: RecordResult, keypair: KeyPair) -> None:
    bundle = read_bundle(recorded.provenance_path)
    unsigned = Bundle(Envelope(IN_TOTO_PAYLOAD_TYPE, bundle.envelope.payload, ()))
    with pytest.raises(ProvenanceError, match="carries no signature"):
        check(unsigned, recorded, keypair.public)


def test_provenance_signed_by_an_untrusted_key_is_refused(
    recorded: RecordResult, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    statement = statement_of(recorded.provenance_path)
    forged = signed(statement, other_keypair.private)
    with pytest.raises(ProvenanceError, match="signed by a key that is not trusted"):
        check(forged, recorded, keypair.public)
    # The same statement re-signed by the trusted key passes: only the key was wrong.
    assert check(signed(statement, keypair.private), recorded, keypair.public)


def test_tampered_provenance_is_refused(recorded: RecordResult, keypair: KeyPair) -> None:
    bundle = read_bundle(recorded.provenance_path)
    statement = statement_of(recorded.provenance_path)
    statement["predicate"]["runDetails"]["builder"]["id"] = "https://ci.example.com"
    tampered = Bundle(
        Envelope(IN_TOTO_PAYLOAD_TYPE, json.dumps(statement).encode(), bundle.envelope.signatures),
        bundle.key_hint,
    )
    with pytest.raises(ProvenanceError, match="no signature on the provenance verifies"):
        check(tampered, recorded, keypair.public)


def test_provenance_of_another_model_is_refused(
    recorded: RecordResult, project: Project, tmp_path: Path, keypair: KeyPair
) -> None:
    other = train(project, tmp_path / "elsewhere" / "model", keypair, seed=99)
    model = Path(recorded.seal.model)
    shutil.copy(other.provenance_path, recorded.provenance_path)
    with pytest.raises(ProvenanceError, match="for another model") as raised:
        verify_provenance(model, public_keys=[keypair.public])
    assert other.seal.root_digest in str(raised.value)
    assert recorded.seal.root_digest in str(raised.value)


def test_replayed_provenance_of_an_older_version_is_refused(
    project: Project, tmp_path: Path, keypair: KeyPair
) -> None:
    model = tmp_path / "model"
    first = train(project, model, keypair, seed=1)
    old = tmp_path / "old.provenance.sig"
    shutil.copy(first.provenance_path, old)
    second = train(project, model, keypair, seed=2)  # re-trained: a new root digest
    assert second.seal.root_digest != first.seal.root_digest
    assert verify_provenance(model, public_keys=[keypair.public]).root_digest == (
        second.seal.root_digest
    )
    shutil.copy(old, second.provenance_path)  # the old, validly signed provenance replayed
    with pytest.raises(ProvenanceError, match="an older version of this model") as raised:
        verify_provenance(model, public_keys=[keypair.public])
    assert first.seal.root_digest in str(raised.value)
    assert second.seal.root_digest in str(raised.value)


def test_provenance_for_another_model_name_is_refused(
    project: Project, tmp_path: Path, keypair: KeyPair
) -> None:
    result = train(project, tmp_path / "model", keypair, name="fraud-v2")
    statement = statement_of(result.provenance_path)
    statement["subject"][0]["name"] = "fraud-v1"
    with pytest.raises(ProvenanceError, match="is for model 'fraud-v1', not 'fraud-v2'"):
        check(signed(statement, keypair.private), result, keypair.public)


def test_the_model_itself_is_verified_first(recorded: RecordResult, keypair: KeyPair) -> None:
    model = Path(recorded.seal.model)
    (model / "weights" / "layer0.bin").write_bytes(b"tampered")
    with pytest.raises(ModelMismatchError):
        verify_provenance(model, public_keys=[keypair.public])


def _mutate(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(statement: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = statement
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return apply


_DELETE = object()


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (_mutate("_type", "https://in-toto.io/Statement/v0.1"), "_type"),
        (_mutate("predicateType", "https://slsa.dev/provenance/v0.2"), "predicateType"),
        (_mutate("predicateType", "https://model_signing/signature/v1.0"), "not a provenance"),
        (_mutate("subject", []), "exactly one subject"),
        (
            lambda s: s["subject"].append(copy.deepcopy(s["subject"][0])),
            "exactly one subject",
        ),
        (_mutate("subject.0.digest.sha256", "ab" * 31), "64 lowercase hex"),
        (_mutate("predicate.buildDefinition", _DELETE), "buildDefinition must be"),
        (_mutate("predicate.runDetails", []), "runDetails must be"),
        (_mutate("predicate.runDetails.builder.id", 7), "builder.id"),
        (_mutate("predicate.buildDefinition.externalParameters", "x"), "externalParameters"),
        (_mutate("predicate.buildDefinition.resolvedDependencies", {}), "must be a list"),
        (_mutate("predicate.buildDefinition.externalParameters.source.dirty", "no"), "dirty"),
        (_mutate("predicate.runDetails.metadata.startedOn", "yesterday"), "RFC 3339"),
    ],
)
def test_malformed_statements_are_refused(
    recorded: RecordResult,
    keypair: KeyPair,
    mutation: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    statement = statement_of(recorded.provenance_path)
    mutation(statement)
    with pytest.raises(ProvenanceError, match=message) as raised:
        check(signed(statement, keypair.private), recorded, keypair.public)
    assert "\n" not in str(raised.value)


def test_unknown_extra_fields_are_ignored(recorded: RecordResult, keypair: KeyPair) -> None:
    statement = statement_of(recorded.provenance_path)
    statement["predicate"]["runDetails"]["byproducts"] = [{"name": "log.txt"}]
    statement["predicate"]["buildDefinition"]["externalParameters"]["notes"] = "second run"
    statement["extension"] = {"x": 1}
    assert check(signed(statement, keypair.private), recorded, keypair.public)


def test_wrong_payload_type_is_refused(recorded: RecordResult, keypair: KeyPair) -> None:
    statement = statement_of(recorded.provenance_path)
    bundle = signed(statement, keypair.private, payload_type="application/json")
    with pytest.raises(ProvenanceError, match="payloadType"):
        check(bundle, recorded, keypair.public)


def test_implausible_times_are_refused(recorded: RecordResult, keypair: KeyPair) -> None:
    statement = statement_of(recorded.provenance_path)
    metadata = statement["predicate"]["runDetails"]["metadata"]
    metadata["startedOn"], metadata["finishedOn"] = metadata["finishedOn"], "2020-01-01T00:00:00Z"
    with pytest.raises(ProvenanceError, match=r"finished .* before it started"):
        check(signed(statement, keypair.private), recorded, keypair.public)

    statement = statement_of(recorded.provenance_path)
    finished = statement["predicate"]["runDetails"]["metadata"]["finishedOn"]
    in_ten_minutes = now() + timedelta(minutes=10)
    statement["predicate"]["runDetails"]["metadata"]["finishedOn"] = in_ten_minutes.strftime(
        "%Y-%m-%dT%H:%M:%S.123456789Z"
    )
    with pytest.raises(ProvenanceError, match=r"finishedOn .* is in the future"):
        check(signed(statement, keypair.private), recorded, keypair.public)
    # Within the allowed clock skew, and as written: accepted.
    assert check(
        signed(statement, keypair.private),
        recorded,
        keypair.public,
        when=now() + (timedelta(minutes=6)),
    )
    statement["predicate"]["runDetails"]["metadata"]["finishedOn"] = finished
    assert check(signed(statement, keypair.private), recorded, keypair.public)


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        (ProvenanceClaims(builder_id="https://ci.example.com/runner"), "builder_id differs"),
        (ProvenanceClaims(source_repo="https://git.example.com/ml/other"), "source_repo differs"),
        (ProvenanceClaims(dataset_digests=("sha256:" + "0" * 64,)), "dataset_digests differs"),
    ],
)
def test_claims_that_differ_are_refused(
    recorded: RecordResult, keypair: KeyPair, claims: ProvenanceClaims, message: str
) -> None:
    bundle = read_bundle(recorded.provenance_path)
    with pytest.raises(ProvenanceError, match=message) as raised:
        check(bundle, recorded, keypair.public, claims=(claims,))
    assert "expected" in str(raised.value)
    assert "actual" in str(raised.value)


def test_claims_that_hold_pass(recorded: RecordResult, keypair: KeyPair, project: Project) -> None:
    digest = hashlib.sha256(project.data_file.read_bytes()).hexdigest()
    claims = ProvenanceClaims(
        builder_id=DEFAULT_BUILDER_ID,
        source_repo="https://git.example.com/ml/fraud/",  # ".git" and "/" do not matter
        dataset_digests=(f"sha256:{digest}",),
    )
    bundle = read_bundle(recorded.provenance_path)
    assert check(bundle, recorded, keypair.public, claims=(claims, ProvenanceClaims()))


# --- with a policy --------------------------------------------------------------------------


def write_policy(path: Path, public: Path, signer: str = "", rule: str = "") -> Path:
    path.write_text(
        f'[[signers]]\nname = "trainer"\npublic_key = "{public}"\nmodels = ["*"]\n{signer}\n'
        f'[[rules]]\nmodels = ["*"]\nsigners = ["trainer"]\n{rule}\n'
    )
    return path


def _policy_check(recorded: RecordResult, policy: Policy, path: Path | None = None) -> Any:
    return check_for_policy(
        policy,
        model_name=recorded.seal.model_name,
        root_digest=bytes.fromhex(recorded.seal.root_digest.removeprefix("sha256:")),
        provenance_path=path or recorded.provenance_path,
        claims=(),
        now=now(),
    )


@pytest.mark.parametrize(
    ("signer", "message"),
    [
        ("not_after = 2020-01-01T00:00:00Z\nnot_before = 2019-01-01T00:00:00Z", "no trusted key"),
        ("not_before = 2999-01-01T00:00:00Z", "no trusted key"),
    ],
)
def test_policy_signer_outside_its_window_is_refused(
    recorded: RecordResult, keypair: KeyPair, tmp_path: Path, signer: str, message: str
) -> None:
    policy = Policy.load(write_policy(tmp_path / "p.toml", keypair.public, signer))
    with pytest.raises(ProvenanceError, match=message):
        _policy_check(recorded, policy)
    honest = Policy.load(write_policy(tmp_path / "ok.toml", keypair.public))
    assert _policy_check(recorded, honest).signers


def test_policy_signer_that_may_not_sign_the_model_is_refused(
    recorded: RecordResult, keypair: KeyPair, tmp_path: Path
) -> None:
    text = write_policy(tmp_path / "p.toml", keypair.public).read_text()
    (tmp_path / "p.toml").write_text(text.replace('models = ["*"]', 'models = ["fraud-*"]', 1))
    policy = Policy.load(tmp_path / "p.toml")
    with pytest.raises(ProvenanceError, match="no trusted key may vouch"):
        _policy_check(recorded, policy)


def test_policy_requires_provenance_that_is_missing(
    recorded: RecordResult, keypair: KeyPair, tmp_path: Path
) -> None:
    policy = Policy.load(write_policy(tmp_path / "p.toml", keypair.public))
    missing = tmp_path / "none.provenance.sig"
    with pytest.raises(ProvenanceError, match="requires provenance and none is at"):
        _policy_check(recorded, policy, missing)


def test_verify_provenance_with_policy_claims(
    recorded: RecordResult, keypair: KeyPair, tmp_path: Path, project: Project
) -> None:
    digest = hashlib.sha256(project.data_file.read_bytes()).hexdigest()
    honest = write_policy(
        tmp_path / "ok.toml",
        keypair.public,
        rule=f'[rules.provenance]\nsource_repo = "{CLEAN_REMOTE}"\n'
        f'dataset_digests = ["sha256:{digest}"]\n',
    )
    model = recorded.seal.model
    assert verify_provenance(model, policy=Policy.load(honest)).source_repo == CLEAN_REMOTE
    refusing = write_policy(
        tmp_path / "no.toml",
        keypair.public,
        rule='[rules.provenance]\nbuilder_id = "https://ci.example.com/runner"\n',
    )
    with pytest.raises(ProvenanceError, match="builder_id differs"):
        verify_provenance(model, policy=Policy.load(refusing))


def test_verify_provenance_with_policy_refuses_the_seal_first(
    recorded: RecordResult, keypair: KeyPair, other_keypair: KeyPair, tmp_path: Path
) -> None:
    policy = Policy.load(write_policy(tmp_path / "p.toml", other_keypair.public))
    with pytest.raises(IntegrityError, match="not trusted"):
        verify_provenance(recorded.seal.model, policy=policy)


def test_verify_provenance_needs_one_kind_of_trust(recorded: RecordResult) -> None:
    with pytest.raises(UsageError, match="exactly one"):
        verify_provenance(recorded.seal.model)


# --- reading without trust -----------------------------------------------------------------


def test_read_provenance_parses_without_checking(
    recorded: RecordResult, other_keypair: KeyPair, tmp_path: Path
) -> None:
    provenance = read_provenance(recorded.provenance_path)
    assert provenance.signers == ()
    assert provenance.root_digest == recorded.seal.root_digest
    forged = tmp_path / "forged.sig"
    write_seal(forged, signed(statement_of(recorded.provenance_path), other_keypair.private))
    assert read_provenance(forged).model_name == "model"  # parsed, and vouched for by nobody


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00garbage", "malformed provenance .*not valid JSON"),
        (b"", "is empty"),
        (b"[]", "not a JSON object"),
        (b'{"mediaType": "x"}', "not a sigstore bundle"),
    ],
)
def test_read_provenance_refuses_malformed_files(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "model.provenance.sig"
    path.write_bytes(content)
    with pytest.raises(ProvenanceError, match=message) as raised:
        read_provenance(path)
    assert "\n" not in str(raised.value)
    assert "seal" not in str(raised.value).replace(str(tmp_path), "")


def test_read_provenance_refuses_a_seal(recorded: RecordResult) -> None:
    with pytest.raises(ProvenanceError, match="not a provenance: predicateType"):
        read_provenance(Path(recorded.seal.seal))


def test_provenance_statement_is_bounded(
    project: Project, tmp_path: Path, keypair: KeyPair
) -> None:
    with pytest.raises(UsageError, match=r"would be .* bytes"):
        train(project, tmp_path / "model", keypair, params={"blob": "x" * (5 << 20)})
    assert not (tmp_path / "model" / "model.provenance.sig").exists()
    assert not (tmp_path / "model" / "model.sig").exists()


def test_keygen_pair_other_algorithm(project: Project, tmp_path: Path, key_dir: Path) -> None:
    pair = make_keypair(key_dir, "ed", "ed25519")
    train(project, tmp_path / "model", pair)
    assert verify_provenance(tmp_path / "model", public_keys=[pair.public]).signers
