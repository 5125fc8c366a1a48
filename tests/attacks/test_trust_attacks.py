"""Attacks on trust: thresholds, policies, provenance, co-signing, SBOMs and zoo pins.

The attacker can write the model directory, its seal and provenance files and a zoo's
cache, and may hold a key the policy trusts for *other* models, but never the private keys
trusted for the model under attack. Each attack has an honest counterpart that passes.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

import modelseal
from conftest import KeyPair, make_keypair, write_model
from modelseal.errors import SealError, SignatureError
from modelseal.integrations import zoo
from modelseal.policy import Policy, PolicyViolation, ProvenanceClaims
from modelseal.provenance import ProvenanceError, check_provenance, default_provenance_path
from modelseal.signing import keys
from modelseal.signing.bundle import Bundle, read_seal, write_seal
from modelseal.signing.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, Signature

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
BUILDER = "https://ci.example.com/trainer"
REPO = "https://git.example.com/ml/fraud"
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def key_id(pair: KeyPair) -> str:
    return keys.key_id(keys.load_public_key(pair.public))


def policy(
    path: Path, signers: dict[str, tuple[KeyPair, str]], rules: str, extra: str = ""
) -> Policy:
    """Signers as name -> (key pair, models TOML array); `rules` and `extra` as TOML."""
    text = "".join(
        f'[[signers]]\nname = "{name}"\npublic_key = "{pair.public}"\nmodels = {models}\n\n'
        for name, (pair, models) in signers.items()
    )
    path.write_text(text + extra + "\n" + rules)
    return Policy.load(path)


def add_signatures(seal: Path, *signatures: Signature) -> None:
    bundle = read_seal(seal)
    envelope = bundle.envelope
    grown = Envelope(envelope.payload_type, envelope.payload, (*envelope.signatures, *signatures))
    write_seal(seal, Bundle(grown, bundle.key_hint))


# --- thresholds ------------------------------------------------------------------------------


@pytest.fixture
def reviewer(key_dir: Path) -> KeyPair:
    return make_keypair(key_dir, "reviewer")


def two_of(path: Path, trainer: KeyPair, reviewer: KeyPair, alias: KeyPair | None = None) -> Policy:
    signers = {"trainer": (trainer, '["*"]'), "reviewer": (reviewer, '["*"]')}
    names = '["trainer", "reviewer"]'
    if alias is not None:
        signers["alias"] = (alias, '["*"]')
        names = '["trainer", "reviewer", "alias"]'
    rule = f'[[rules]]\nmodels = ["*"]\nthreshold = 2\nsigners = {names}\n'
    return policy(path, signers, rule)


def test_an_ecdsa_signature_and_its_malleable_twin_count_once(
    model: Path, keypair: KeyPair, reviewer: KeyPair, tmp_path: Path
) -> None:
    """(r, s) and (r, n - s) both verify for P-256; re-encoded they are a second 'signature'
    with another keyid, but they are one key: the threshold of two is not met."""
    modelseal.seal(model, key=keypair.private)
    seal = model / "model.sig"
    r, s = decode_dss_signature(read_seal(seal).envelope.signatures[0].sig)
    twin = encode_dss_signature(r, P256_ORDER - s)
    add_signatures(seal, Signature(twin, key_id(reviewer)), Signature(twin, "sha256:" + "0" * 64))
    two = two_of(tmp_path / "p.toml", keypair, reviewer)
    with pytest.raises(PolicyViolation, match="1 of 2"):
        modelseal.verify(model, policy=two)
    # Honest: the reviewer really co-signs.
    modelseal.sign(model, key=reviewer.private, public_keys=[keypair.public])
    assert set(modelseal.verify(model, policy=two).signers) >= {key_id(keypair), key_id(reviewer)}


def test_a_signature_whose_keyid_names_the_reviewer_does_not_count_for_the_reviewer(
    model: Path, keypair: KeyPair, reviewer: KeyPair, other_keypair: KeyPair, tmp_path: Path
) -> None:
    """keyid is a hint: a signature by another key (or garbage) labelled with the reviewer's
    id verifies with no trusted key and is ignored; co-signing keeps it but never counts it."""
    modelseal.seal(model, key=keypair.private)
    seal = model / "model.sig"
    forged = keys.as_signer(other_keypair.private).sign(read_seal(seal).envelope.signed_bytes())
    add_signatures(seal, Signature(forged, key_id(reviewer)), Signature(b"\x30\x00", "x"))
    two = two_of(tmp_path / "p.toml", keypair, reviewer)
    with pytest.raises(PolicyViolation, match="1 of 2"):
        modelseal.verify(model, policy=two)
    result = modelseal.sign(model, key=reviewer.private, public_keys=[keypair.public])
    assert result.added
    assert result.signatures == 4  # the junk is kept: it is not ours to drop
    assert modelseal.verify(model, policy=two).signers == (key_id(keypair), key_id(reviewer))


def test_a_revoked_key_listed_again_under_another_name_is_refused(
    model: Path, keypair: KeyPair, reviewer: KeyPair, tmp_path: Path
) -> None:
    modelseal.seal(model, key=keypair.private)
    modelseal.sign(model, key=reviewer.private, public_keys=[keypair.public])
    revoked = f'[revoked]\nkey_ids = ["{key_id(reviewer).upper()}"]\n'
    signers = {
        "trainer": (keypair, '["*"]'),
        "reviewer": (reviewer, '["*"]'),
        "reviewer2": (reviewer, '["*"]'),
    }
    rule = '[[rules]]\nmodels = ["*"]\nthreshold = 2\nsigners = ["trainer", "reviewer2"]\n'
    with pytest.raises(PolicyViolation, match="1 of 2"):
        modelseal.verify(model, policy=policy(tmp_path / "p.toml", signers, rule, revoked))
    honest = policy(tmp_path / "ok.toml", signers, rule)
    assert modelseal.verify(model, policy=honest).signed


def test_a_rotation_entry_keeps_its_own_model_globs(
    tmp_path: Path, keypair: KeyPair, reviewer: KeyPair
) -> None:
    """Old key may sign anything, the rotated key only fraud-*: the name 'trainer' does not
    lend the old entry's `*` to the new key."""
    signers_toml = (
        f'[[signers]]\nname = "trainer"\npublic_key = "{keypair.public}"\nmodels = ["*"]\n'
        f'[[signers]]\nname = "trainer"\npublic_key = "{reviewer.public}"\n'
        'models = ["fraud-*"]\n[[rules]]\nmodels = ["*"]\nsigners = ["trainer"]\n'
    )
    (tmp_path / "p.toml").write_text(signers_toml)
    rotated = Policy.load(tmp_path / "p.toml")
    assert not rotated.decide("billing-v1", [key_id(reviewer)], "sha256", NOW).allowed
    assert rotated.decide("fraud-v1", [key_id(reviewer)], "sha256", NOW).allowed
    assert rotated.decide("billing-v1", [key_id(keypair)], "sha256", NOW).allowed


@pytest.mark.parametrize(
    "name",
    ["FRAUD-v3", "fr\u0430ud-v3", "\uff46raud-v3", "[f]raud-v3", " fraud-v3", "x/fraud-v3"],
)
def test_names_that_only_look_like_a_signers_glob_do_not_match(
    tmp_path: Path, keypair: KeyPair, name: str
) -> None:
    """Case, a Cyrillic a, a fullwidth f, glob characters or a prefix in the *name* never
    satisfy `fraud-*` (the name is literal; only the policy's pattern is a glob)."""
    restricted = policy(
        tmp_path / "p.toml",
        {"trainer": (keypair, '["fraud-*"]')},
        '[[rules]]\nmodels = ["*"]\nsigners = ["trainer"]\n',
    )
    assert not restricted.decide(name, [key_id(keypair)], "sha256", NOW).allowed
    assert restricted.decide("fraud-v3", [key_id(keypair)], "sha256", NOW).allowed


# --- a key trusted for another model stands in -----------------------------------------------


def test_a_model_sealed_under_another_name_is_refused_when_the_name_is_expected(
    tmp_path: Path, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    """The intern may sign test-* models alone; fraud-* needs the trainer. The intern puts
    their own model, sealed as 'test-x', where fraud-v3 is deployed. A policy decides by the
    name inside the seal, so it allows it: only the name the application expects stops it."""
    trust = policy(
        tmp_path / "p.toml",
        {"trainer": (keypair, '["fraud-*"]'), "intern": (other_keypair, '["test-*"]')},
        '[[rules]]\nmodels = ["fraud-*"]\nsigners = ["trainer"]\n'
        '[[rules]]\nmodels = ["test-*"]\nsigners = ["intern"]\n',
    )
    deployed = write_model(tmp_path / "fraud-v3", seed=9)
    modelseal.seal(deployed, key=other_keypair.private, name="test-x")
    assert modelseal.verify(deployed, policy=trust).model_name == "test-x"  # the gap
    with pytest.raises(SealError, match="not the expected 'fraud-v3'") as info:
        modelseal.verify(deployed, policy=trust, model_name="fraud-v3")
    assert info.value.failure is not None
    assert info.value.failure.findings[0].kind == "seal"
    modelseal.seal(deployed, key=keypair.private, name="fraud-v3")
    assert modelseal.verify(deployed, policy=trust, model_name="fraud-v3").signed


# --- co-signing ------------------------------------------------------------------------------


class _SwapBack:
    """A progress sink that puts the attacker's seal back while the files are being hashed."""

    def __init__(self, seal: Path, evil: bytes) -> None:
        self.seal, self.evil = seal, evil

    def start(self, total_bytes: int) -> None:
        self.seal.write_bytes(self.evil)

    def advance(self, nbytes: int) -> None:
        pass


def test_cosign_signs_the_very_seal_it_verified(
    tmp_path: Path, keypair: KeyPair, reviewer: KeyPair, other_keypair: KeyPair
) -> None:
    """A-B-A: the attacker's seal is in place when `sign` first reads it, the honest seal
    while the verification reads it, the attacker's again afterwards. Reading the seal twice
    would have the reviewer sign the attacker's statement; it is read (and verified) once."""
    model = write_model(tmp_path / "model")
    modelseal.seal(model, key=keypair.private, name="fraud-v3")
    honest = (model / "model.sig").read_bytes()
    evil_dir = write_model(tmp_path / "evil", seed=66)
    modelseal.seal(evil_dir, key=other_keypair.private, name="fraud-v3")
    evil = (evil_dir / "model.sig").read_bytes()
    seal = model / "model.sig"
    seal.write_bytes(evil)

    def trusted_then_swap() -> Iterator[Path]:
        seal.write_bytes(honest)  # runs after sign() read the seal, before the check reads it
        yield keypair.public

    with pytest.raises(SignatureError):
        modelseal.sign(
            model,
            key=reviewer.private,
            public_keys=trusted_then_swap(),
            progress=_SwapBack(seal, evil),
        )
    assert seal.read_bytes() in (honest, evil)  # nothing was co-signed by the reviewer
    seal.write_bytes(honest)
    assert modelseal.sign(model, key=reviewer.private, public_keys=[keypair.public]).added


# --- provenance ------------------------------------------------------------------------------


def statement(name: str, root_hex: str, **changes: Any) -> dict[str, Any]:
    source = {"uri": changes.pop("repo", REPO)}
    subject = changes.pop("subject", [{"name": name, "digest": {"sha256": root_hex}}])
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subject,
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://modelseal.dev/buildtypes/training/v1",
                "externalParameters": {"source": source, "parameters": changes},
                "resolvedDependencies": [
                    {
                        "name": 'data\u202e"},{"bom-ref":"model',
                        "uri": "file:///data/<script>\n",
                        "digest": {"sha256": "ab" * 32, "SHA256": "not hex", "md5": "x"},
                        "annotations": {"role": "dataset", "files": {"nested": [1]}},
                    }
                ],
            },
            "runDetails": {"builder": {"id": BUILDER}},
        },
    }


def signed(stmt: dict[str, Any], *pairs: KeyPair) -> Bundle:
    envelope = Envelope(IN_TOTO_PAYLOAD_TYPE, json.dumps(stmt).encode(), ())
    signatures = tuple(
        Signature(keys.as_signer(pair.private).sign(envelope.signed_bytes())) for pair in pairs
    )
    return Bundle(Envelope(IN_TOTO_PAYLOAD_TYPE, envelope.payload, signatures))


ROOT = bytes(range(32))


def check(bundle: Bundle, pair: KeyPair, claims: ProvenanceClaims | None = None) -> Any:
    return check_provenance(
        bundle,
        [keys.load_public_key(pair.public)],
        model_name="fraud-v3",
        root_digest=ROOT,
        claims=(claims,) if claims else (),
        now=NOW,
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"subject": [{"name": "fraud-v4", "digest": {"sha256": ROOT.hex()}}]}, "for model"),
        (
            {
                "subject": [
                    {"name": "fraud-v3", "digest": {"sha256": ROOT.hex()}},
                    {"name": "fraud-v4", "digest": {"sha256": "00" * 32}},
                ]
            },
            "exactly one subject",
        ),
        ({"subject": [{"name": "fraud-v3", "digest": {"sha256": ROOT.hex().upper()}}]}, "hex"),
        ({"subject": [{"name": "fraud-v3", "digest": {"sha512": "ab" * 64}}]}, "no sha256"),
    ],
)
def test_provenance_subject_tricks_are_refused(
    keypair: KeyPair, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ProvenanceError, match=message):
        check(signed(statement("fraud-v3", ROOT.hex(), **changes), keypair), keypair)


def test_extra_subject_digests_and_an_untrusted_second_signature_are_harmless(
    keypair: KeyPair, other_keypair: KeyPair
) -> None:
    digest = {"sha256": ROOT.hex(), "sha512": "cd" * 64, "gitCommit": "whatever"}
    stmt = statement("fraud-v3", ROOT.hex(), subject=[{"name": "fraud-v3", "digest": digest}])
    found = check(signed(stmt, other_keypair, keypair), keypair)
    assert found.signers == (key_id(keypair),)
    with pytest.raises(ProvenanceError, match=r"not trusted|no signature"):
        check(signed(stmt, other_keypair), keypair)


@pytest.mark.parametrize(
    ("repo", "holds"),
    [
        (REPO, True),
        (REPO + ".git", True),
        (REPO + ".git/", True),
        (REPO + "/", True),
        (REPO + "/.git", False),  # a repository named .git inside ml/fraud
        (REPO + "-fork", False),
        (REPO + ".git.git", False),
        ("https://git.example.com/ML/fraud", False),
        ("https://user:token@git.example.com/ml/fraud", False),
        ("https://git.example.com.evil.example/ml/fraud", False),
        ("https://git.example.com/ml/fraud/../fraud-fork", False),
    ],
)
def test_source_repo_claims_normalise_only_a_trailing_slash_and_dot_git(
    keypair: KeyPair, repo: str, holds: bool
) -> None:
    bundle = signed(statement("fraud-v3", ROOT.hex(), repo=repo), keypair)
    claims = ProvenanceClaims(source_repo=REPO)
    if holds:
        assert check(bundle, keypair, claims).source_repo == repo
    else:
        with pytest.raises(ProvenanceError, match="source_repo differs"):
            check(bundle, keypair, claims)


def _sealed_file(tmp_path: Path, pair: KeyPair, name: str = "fraud-v3") -> tuple[Path, bytes]:
    weights = tmp_path / name / "weights.bin"
    weights.parent.mkdir()
    weights.write_bytes(os.urandom(4096))
    result = modelseal.seal(weights, key=pair.private, name="fraud-v3")
    return weights, bytes.fromhex(result.root_digest.removeprefix("sha256:"))


def test_provenance_must_come_from_a_signer_of_the_rule_that_requires_it(
    tmp_path: Path, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    """'ops' may sign any model name (its own `models`), but the rule for fraud-* trusts only
    the trainer: ops must not be able to vouch that fraud-v3 came from the CI builder."""
    weights, root = _sealed_file(tmp_path, keypair)
    trust = policy(
        tmp_path / "p.toml",
        {"trainer": (keypair, '["fraud-*"]'), "ops": (other_keypair, '["*"]')},
        '[[rules]]\nmodels = ["fraud-*"]\nsigners = ["trainer"]\n'
        f'[rules.provenance]\nbuilder_id = "{BUILDER}"\n'
        '[[rules]]\nmodels = ["ops-*"]\nsigners = ["ops"]\n',
    )
    provenance = default_provenance_path(weights)
    write_seal(provenance, signed(statement("fraud-v3", root.hex()), other_keypair))
    with pytest.raises(ProvenanceError, match=r"no trusted key|not trusted|no signature"):
        modelseal.verify(weights, policy=trust)
    write_seal(provenance, signed(statement("fraud-v3", root.hex()), keypair))
    assert modelseal.verify(weights, policy=trust).signed


def test_every_rule_requiring_provenance_needs_its_own_signer(
    tmp_path: Path, keypair: KeyPair, other_keypair: KeyPair
) -> None:
    weights, root = _sealed_file(tmp_path, keypair)
    modelseal.sign(weights, key=other_keypair.private, public_keys=[keypair.public])
    trust = policy(
        tmp_path / "p.toml",
        {"trainer": (keypair, '["*"]'), "security": (other_keypair, '["*"]')},
        '[[rules]]\nmodels = ["fraud-*"]\nsigners = ["trainer"]\nrequire_provenance = true\n'
        '[[rules]]\nmodels = ["*"]\nsigners = ["security"]\nrequire_provenance = true\n',
    )
    provenance = default_provenance_path(weights)
    write_seal(provenance, signed(statement("fraud-v3", root.hex()), keypair))
    with pytest.raises(ProvenanceError, match=r"rules\[1\] \(security\)"):
        modelseal.verify(weights, policy=trust)
    write_seal(provenance, signed(statement("fraud-v3", root.hex()), keypair, other_keypair))
    assert modelseal.verify(weights, policy=trust).signed


def test_a_provenance_symlinked_to_another_models_is_refused(
    tmp_path: Path, keypair: KeyPair
) -> None:
    weights, _ = _sealed_file(tmp_path, keypair)
    other, other_root = _sealed_file(tmp_path, keypair, "fraud-v2")
    write_seal(
        default_provenance_path(other), signed(statement("fraud-v3", other_root.hex()), keypair)
    )
    trust = policy(
        tmp_path / "p.toml",
        {"trainer": (keypair, '["*"]')},
        '[[rules]]\nmodels = ["*"]\nsigners = ["trainer"]\nrequire_provenance = true\n',
    )
    default_provenance_path(weights).symlink_to(default_provenance_path(other))
    with pytest.raises(ProvenanceError, match="older version"):
        modelseal.verify(weights, policy=trust)
    assert modelseal.verify(other, policy=trust).signed


# --- SBOM --------------------------------------------------------------------------------


def test_hostile_provenance_strings_stay_data_in_the_sbom(tmp_path: Path, keypair: KeyPair) -> None:
    """JSON-looking names, bidi overrides, '<', newlines, odd digest keys and nested
    annotations are escaped values: the SBOM validates, has one model, unique bom-refs."""
    pytest.importorskip("cyclonedx")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from modelseal.sbom import build_sbom

    weights, root = _sealed_file(tmp_path, keypair)
    stmt = statement("fraud-v3", root.hex(), **{"modelseal:verified": "true", "x\n": [None]})
    write_seal(default_provenance_path(weights), signed(stmt, keypair))
    document = build_sbom(weights, public_keys=[keypair.public])
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(document)) is None
    refs = [
        document["metadata"]["component"]["bom-ref"],
        *(c["bom-ref"] for c in document["components"]),
    ]
    assert len(refs) == len(set(refs))
    assert refs[0] == "model"
    props = {p["name"]: p["value"] for p in document["metadata"]["component"]["properties"]}
    assert props["modelseal:verified"] == "true"  # the seal's, not the hyperparameter's
    (dataset,) = document["components"]
    assert dataset["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    assert "contents" not in dataset["data"][0]  # a URI with '<' or a newline is no IRI


# --- zoo pins ----------------------------------------------------------------------------


def test_a_pinned_zoo_file_swapped_after_the_check_never_reaches_the_caller(
    tmp_path: Path,
) -> None:
    """The snapshot is made while hashing, in a private 0700 directory: rewriting the zoo's
    cache file afterwards changes nothing the caller reads."""
    import hashlib

    cached = tmp_path / "cache" / "weights.h5"
    cached.parent.mkdir()
    cached.write_bytes(b"honest weights" * 100)
    pin = hashlib.sha256(cached.read_bytes()).hexdigest()
    with zoo.pinned(cached, pin, url="https://zoo.example/w.h5", snapshot=True) as found:
        cached.write_bytes(b"evil weights!!" * 100)
        assert found.path is not None
        assert found.path != cached
        assert stat.S_IMODE(found.path.parent.stat().st_mode) == 0o700
        assert hashlib.sha256(found.path.read_bytes()).hexdigest() == pin
    with (
        pytest.raises(zoo.PinMismatchError) as info,
        zoo.pinned(cached, pin, url="https://zoo.example/w.h5", snapshot=True),
    ):
        pass  # pragma: no cover
    assert info.value.expected == "sha256:" + pin


def test_a_zoo_cache_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.bin"
    real.write_bytes(b"weights")
    link = tmp_path / "cached.bin"
    link.symlink_to(real)
    import hashlib

    pin = hashlib.sha256(b"weights").hexdigest()
    with (
        pytest.raises(modelseal.IntegrityError),
        zoo.pinned(link, pin, url="https://zoo.example/w.bin"),
    ):
        pass  # pragma: no cover
    shutil.copy(real, tmp_path / "copy.bin")
    with zoo.pinned(tmp_path / "copy.bin", pin, url="https://zoo.example/w.bin") as found:
        assert found.read() == b"weights"
