"""`modelseal sbom`: valid CycloneDX 1.6, and only for models that match their seal."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from conftest import Cli, KeyPair, make_keypair, policy_file, write_model
from modelseal import seal
from modelseal.errors import IntegrityError, ModelMismatchError
from modelseal.provenance import ProvenanceError, record
from modelseal.sbom import build_sbom
from modelseal.signing import keys


def validate(document: Mapping[str, Any]) -> None:
    """Fail unless the document is valid CycloneDX 1.6 (formats included) and its refs resolve."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(document))
    assert error is None, error
    refs: list[str] = []

    def collect(component: Mapping[str, Any]) -> None:
        refs.append(component["bom-ref"])
        for child in component.get("components", []):
            collect(child)

    collect(document["metadata"]["component"])
    for component in document["components"]:
        collect(component)
    assert len(refs) == len(set(refs)), "bom-refs must be unique"
    card = document["metadata"]["component"]["modelCard"]
    for dataset in card.get("modelParameters", {}).get("datasets", []):
        assert dataset["ref"] in refs
    for dependency in document["dependencies"]:
        assert dependency["ref"] in refs
        assert set(dependency.get("dependsOn", [])) <= set(refs)


def props(component: Mapping[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in component.get("properties", [])}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train(model: Path, key: KeyPair, datasets: list[Path], **options: Any) -> Path:
    """Record a (pretend) training run: the model exists, is sealed, provenance is written."""
    with record(
        model, key=key.private, datasets=datasets, script=False, source_dir=model, **options
    ) as run:
        run.params.update({"lr": 0.01, "epochs": 3, "optimizer": "adam"})
    assert run.result is not None
    return run.result.provenance_path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "train.csv"
    path.parent.mkdir()
    path.write_text("x,y\n1,2\n3,4\n")
    return path


# --- the model and its files --------------------------------------------------------------


def test_directory_model_lists_each_file_with_its_digest(
    model: Path, keypair: KeyPair, cli: Cli
) -> None:
    sealed = seal(model, key=keypair.private)
    result = cli("sbom", model, "--public-key", keypair.public)
    assert result.code == 0, result.err
    document = json.loads(result.out)
    validate(document)
    assert document["bomFormat"] == "CycloneDX"
    assert document["specVersion"] == "1.6"
    assert document["metadata"]["tools"]["components"][0]["name"] == "modelseal"
    component = document["metadata"]["component"]
    assert component["type"] == "machine-learning-model"
    assert component["name"] == "model"
    info = props(component)
    assert info["modelseal:root-digest"] == sealed.root_digest
    assert info["modelseal:seal-path"] == str(model / "model.sig")
    assert info["modelseal:verified"] == "true"
    assert info["modelseal:signers"] == keys.key_id(keys.load_public_key(keypair.public))
    files = {c["name"]: c for c in component["components"]}
    assert set(files) == {
        "config.json",
        "tokenizer.txt",
        "weights/layer0.bin",
        "weights/layer1.bin",
    }
    for name, file in files.items():
        assert file["type"] == "file"
        assert file["hashes"] == [{"alg": "SHA-256", "content": sha256(model / name)}]
    assert props(component["modelCard"]) == {"modelseal:provenance": "absent"}
    assert "modelParameters" not in component["modelCard"]


def test_single_file_model_carries_the_file_digest(
    single_file: Path, keypair: KeyPair, cli: Cli
) -> None:
    seal(single_file, key=keypair.private)
    result = cli("sbom", single_file, "--public-key", keypair.public)
    assert result.code == 0, result.err
    document = json.loads(result.out)
    validate(document)
    component = document["metadata"]["component"]
    assert component["name"] == single_file.name
    assert component["hashes"] == [{"alg": "SHA-256", "content": sha256(single_file)}]
    assert "components" not in component


def test_blake3_seal_reports_blake3_hashes(model: Path) -> None:
    import blake3

    seal(model, unsigned=True, algorithm="blake3")
    document = build_sbom(model)
    validate(document)
    component = document["metadata"]["component"]
    assert props(component)["modelseal:hash-type"] == "blake3"
    for file in component["components"]:
        expected = blake3.blake3((model / file["name"]).read_bytes()).hexdigest()
        assert file["hashes"] == [{"alg": "BLAKE3", "content": expected}]


def test_sharded_seal_does_not_pass_shard_digests_off_as_file_hashes(model: Path) -> None:
    seal(model, unsigned=True, shard_size=32_768)
    document = build_sbom(model)
    validate(document)
    files = {c["name"]: c for c in document["metadata"]["component"]["components"]}
    layer0 = files["weights/layer0.bin"]
    assert "hashes" not in layer0
    shards = [p["value"] for p in layer0["properties"] if p["name"] == "modelseal:shard"]
    assert len(shards) == 3
    assert shards[0].startswith("0-32768 sha256:")


# --- trust --------------------------------------------------------------------------------


def test_without_trust_the_sbom_says_unverified(model: Path, keypair: KeyPair, cli: Cli) -> None:
    seal(model, key=keypair.private)
    result = cli("sbom", model)
    assert result.code == 0, result.err
    assert "signatures are not checked" in result.err
    document = json.loads(result.out)
    validate(document)
    info = props(document["metadata"]["component"])
    assert info["modelseal:verified"] == "false"
    assert "modelseal:signers" not in info


def test_tampered_model_is_refused(model: Path, keypair: KeyPair, cli: Cli) -> None:
    seal(model, key=keypair.private)
    (model / "weights" / "layer1.bin").write_bytes(b"tampered")
    for trust in (["--public-key", str(keypair.public)], ["--allow-unsigned"], []):
        result = cli("sbom", model, *trust)
        assert result.code == 1, trust
        assert result.out == ""
        assert "weights/layer1.bin" in result.err
    with pytest.raises(ModelMismatchError):
        build_sbom(model)


def test_seal_by_an_untrusted_key_is_refused(
    model: Path, keypair: KeyPair, other_keypair: KeyPair, cli: Cli
) -> None:
    seal(model, key=other_keypair.private)
    result = cli("sbom", model, "--public-key", keypair.public)
    assert result.code == 1
    assert result.out == ""
    assert "not trusted" in result.err


def test_policy_is_applied(model: Path, keypair: KeyPair, tmp_path: Path, cli: Cli) -> None:
    seal(model, key=keypair.private)
    allowed = policy_file(tmp_path / "allow.toml", keypair.public)
    result = cli("sbom", model, "--policy", allowed)
    assert result.code == 0, result.err
    validate(json.loads(result.out))
    assert props(json.loads(result.out)["metadata"]["component"])["modelseal:verified"] == "true"
    other = policy_file(tmp_path / "other.toml", keypair.public, signer_models="fraud-*")
    refused = cli("sbom", model, "--policy", other)
    assert refused.code == 1
    assert refused.out == ""


def test_policy_in_the_working_directory_is_used(
    model: Path,
    keypair: KeyPair,
    other_keypair: KeyPair,
    tmp_path: Path,
    cli: Cli,
    monkeypatch: Any,
) -> None:
    seal(model, key=other_keypair.private)
    policy_file(tmp_path / "modelseal.toml", keypair.public)
    monkeypatch.chdir(tmp_path)
    result = cli("sbom", model)
    assert result.code == 1  # the local policy does not trust the key that sealed the model
    assert result.out == ""


def test_emergency_skip_never_yields_an_sbom(
    model: Path, keypair: KeyPair, cli: Cli, monkeypatch: Any
) -> None:
    seal(model, key=keypair.private)
    (model / "config.json").write_text("{}")
    monkeypatch.setenv("MODELSEAL_UNSAFE_SKIP", "1")
    result = cli("sbom", model, "--public-key", keypair.public)
    assert result.code == 1
    assert result.out == ""
    assert "not checked against its seal" in result.err


def test_missing_seal_is_one_line_error(model: Path, keypair: KeyPair, cli: Cli) -> None:
    result = cli("sbom", model, "--public-key", keypair.public)
    assert result.code == 1
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert "no seal at" in result.err
    assert "Traceback" not in result.err


def test_missing_model_is_a_usage_error(tmp_path: Path, cli: Cli) -> None:
    result = cli("sbom", tmp_path / "nothing", "--allow-unsigned")
    assert result.code == 2
    assert result.out == ""
    assert "model not found" in result.err


def test_output_file_is_written(model: Path, keypair: KeyPair, tmp_path: Path, cli: Cli) -> None:
    seal(model, key=keypair.private)
    target = tmp_path / "out" / "model.cdx.json"
    target.parent.mkdir()
    target.write_text("old")
    result = cli("sbom", model, "--public-key", keypair.public, "--output", target)
    assert result.code == 0, result.err
    assert result.out == ""
    validate(json.loads(target.read_text()))
    assert [p.name for p in target.parent.iterdir()] == ["model.cdx.json"]  # no temporary left
    unwritable = cli("sbom", model, "--allow-unsigned", "--output", tmp_path / "no" / "x.json")
    assert unwritable.code == 2
    assert "cannot write the SBOM" in unwritable.err


# --- provenance ---------------------------------------------------------------------------


def test_provenance_datasets_appear_with_their_digests(
    model: Path, keypair: KeyPair, dataset: Path, cli: Cli
) -> None:
    train(model, keypair, [dataset], builder_id="https://ci.example/builder")
    result = cli("sbom", model, "--public-key", keypair.public)
    assert result.code == 0, result.err
    document = json.loads(result.out)
    validate(document)
    card = document["metadata"]["component"]["modelCard"]
    (reference,) = card["modelParameters"]["datasets"]
    data = {c["bom-ref"]: c for c in document["components"]}[reference["ref"]]
    assert data["type"] == "data"
    assert data["name"] == str(dataset)
    assert data["hashes"] == [{"alg": "SHA-256", "content": sha256(dataset)}]
    assert data["data"][0]["type"] == "dataset"
    assert data["data"][0]["contents"]["url"] == dataset.resolve().as_uri()
    info = props(card)
    assert info["modelseal:provenance"] == "verified"
    assert info["modelseal:builder-id"] == "https://ci.example/builder"
    assert info["modelseal:hyperparameter:lr"] == "0.01"
    assert info["modelseal:hyperparameter:epochs"] == "3"
    assert info["modelseal:hyperparameter:optimizer"] == "adam"
    assert (
        info["modelseal:provenance-signers"]
        == props(document["metadata"]["component"])["modelseal:signers"]
    )


def test_directory_dataset_root_digest_is_a_property(
    model: Path, keypair: KeyPair, dataset: Path
) -> None:
    train(model, keypair, [dataset.parent])
    document = build_sbom(model, public_keys=[keypair.public])
    validate(document)
    (data,) = document["components"]
    assert "hashes" not in data  # an OMS root digest is not the hash of any byte stream
    assert props(data)["modelseal:root-digest"].startswith("sha256:")
    assert props(data)["modelseal:files"] == "1"


def test_unverified_provenance_is_reported_as_such(
    model: Path, keypair: KeyPair, dataset: Path
) -> None:
    train(model, keypair, [dataset])
    document = build_sbom(model, allow_unsigned=True)
    validate(document)
    card = document["metadata"]["component"]["modelCard"]
    assert props(card)["modelseal:provenance"] == "unverified"
    assert len(card["modelParameters"]["datasets"]) == 1


def test_provenance_signed_by_an_untrusted_key_is_refused(
    model: Path, keypair: KeyPair, other_keypair: KeyPair, dataset: Path, key_dir: Path
) -> None:
    train(model, keypair, [dataset])
    provenance = model / "model.provenance.sig"
    # Re-seal with the trusted key only: the provenance stays signed by `keypair`.
    seal(model, key=other_keypair.private, ignore=[provenance.name])
    with pytest.raises(ProvenanceError):
        build_sbom(model, public_keys=[other_keypair.public])
    third = make_keypair(key_dir, "third")
    with pytest.raises(IntegrityError):
        build_sbom(model, public_keys=[third.public])


def test_provenance_of_another_model_is_refused(
    tmp_path: Path, keypair: KeyPair, dataset: Path, cli: Cli
) -> None:
    first = write_model(tmp_path / "first", seed=1)
    second = write_model(tmp_path / "second", seed=2)
    train(first, keypair, [dataset], name="shared")
    train(second, keypair, [dataset], name="shared")
    replayed = second / "model.provenance.sig"
    replayed.write_bytes((first / "model.provenance.sig").read_bytes())
    for trust in (["--public-key", str(keypair.public)], ["--allow-unsigned"]):
        result = cli("sbom", second, *trust)
        assert result.code == 1, trust
        assert result.out == ""
        assert "another model" in result.err
        assert result.err.count("\n") == 1


def test_explicit_provenance_path_must_exist(model: Path, keypair: KeyPair, cli: Cli) -> None:
    seal(model, key=keypair.private)
    result = cli("sbom", model, "--public-key", keypair.public, "--provenance", model / "nope")
    assert result.code == 1
    assert result.out == ""
    assert "no provenance at" in result.err


def test_single_file_model_with_provenance(
    single_file: Path, keypair: KeyPair, dataset: Path, cli: Cli
) -> None:
    train(single_file, keypair, [dataset])
    result = cli("sbom", single_file, "--public-key", keypair.public)
    assert result.code == 0, result.err
    document = json.loads(result.out)
    validate(document)
    assert document["components"][0]["hashes"][0]["content"] == sha256(dataset)


def test_odd_provenance_values_still_give_a_valid_sbom(model: Path) -> None:
    """Unverified provenance is anyone's text: it must not break the document's validity."""
    from modelseal.provenance import Dependency, Provenance
    from modelseal.sbom import ProvenanceFacts, check_model, render

    seal(model, unsigned=True)
    sealed = check_model(model)
    odd = Dependency(
        name=None,
        uri="file:data set <1>.csv",
        digest={"sha256": "not-hex", "md5": "0" * 32, "blake3": "a" * 64},
        role="data set",
        annotations={"files": 1},
    )
    provenance = Provenance(
        model_name="model",
        root_digest=sealed.verification.root_digest,
        builder_id="b",
        build_type="t",
        source_repo=None,
        commit=None,
        dirty=None,
        parameters={"nested": {"a": [1, None]}},
        command=(),
        started_on=None,
        finished_on=None,
        dependencies=(odd,),
        signers=(),
        statement={"predicate": "not an object"},
    )
    document = render(sealed, ProvenanceFacts(provenance, "p", verified=False))
    validate(document)
    (component,) = document["components"]
    assert component["bom-ref"] == "input-1"
    assert component["hashes"] == [{"alg": "BLAKE3", "content": "a" * 64}]
    assert "contents" not in component["data"][0]  # not an IRI: kept as a property only
    assert props(component)["modelseal:uri"] == "file:data set <1>.csv"
    card = props(document["metadata"]["component"]["modelCard"])
    assert card["modelseal:hyperparameter:nested"] == '{"a":[1,null]}'
