"""Several signatures on one seal: co-signing, k-of-n policies, key rotation, upstream interop.

Extra signatures go into the one seal's DSSE envelope after the first, so `model.sig` stays the
single file upstream `model_signing` checks (it verifies the first signature and the key hint).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import modelseal
from conftest import Cli, KeyPair, make_keypair
from modelseal.errors import ModelMismatchError, SignatureError
from modelseal.policy import Policy, PolicyViolation
from modelseal.signing import keys
from modelseal.signing.bundle import Bundle, read_seal, write_seal
from modelseal.signing.dsse import Envelope
from test_interop import upstream_verify


@pytest.fixture
def reviewer(key_dir: Path) -> KeyPair:
    return make_keypair(key_dir, "reviewer")


def key_id(pair: KeyPair) -> str:
    return keys.key_id(keys.load_public_key(pair.public))


def two_of_two(path: Path, trainer: KeyPair, reviewer: KeyPair, extra: str = "") -> Policy:
    path.write_text(
        f"""
[[signers]]
name = "trainer"
public_key = "{trainer.public}"
models = ["*"]

[[signers]]
name = "reviewer"
public_key = "{reviewer.public}"
models = ["*"]
{extra}
[[rules]]
models = ["*"]
threshold = 2
signers = ["trainer", "reviewer"]
"""
    )
    return Policy.load(path)


def test_cosign_adds_a_second_signature_without_resealing(
    model: Path, keypair: KeyPair, reviewer: KeyPair
) -> None:
    modelseal.seal(model, key=keypair.private)
    before = read_seal(model / "model.sig")
    result = modelseal.sign(model, key=reviewer.private, public_keys=[keypair.public])
    after = read_seal(model / "model.sig")
    assert result.added
    assert result.signatures == 2
    assert result.signer == key_id(reviewer)
    assert after.envelope.payload == before.envelope.payload  # the statement is not rebuilt
    assert after.envelope.signatures[0] == before.envelope.signatures[0]
    assert after.key_hint == before.key_hint  # still the original sealer's
    assert after.envelope.signatures[1].keyid == key_id(reviewer)
    verified = modelseal.verify(model, public_keys=[keypair.public, reviewer.public])
    assert set(verified.signers) == {key_id(keypair), key_id(reviewer)}


def test_cosigning_twice_with_the_same_key_changes_nothing(
    model: Path, keypair: KeyPair, reviewer: KeyPair
) -> None:
    modelseal.seal(model, key=keypair.private)
    modelseal.sign(model, key=reviewer.private, public_keys=[keypair.public])
    raw = (model / "model.sig").read_bytes()
    again = modelseal.sign(model, key=reviewer.private, public_keys=[keypair.public])
    assert not again.added
    assert again.signatures == 2
    assert (model / "model.sig").read_bytes() == raw


def test_cosigning_a_changed_model_is_refused_and_the_seal_kept(
    model: Path, keypair: KeyPair, reviewer: KeyPair
) -> None:
    modelseal.seal(model, key=keypair.private)
    raw = (model / "model.sig").read_bytes()
    (model / "config.json").write_text('{"layers": 3}\n')
    with pytest.raises(ModelMismatchError, match="1 changed"):
        modelseal.sign(model, key=reviewer.private, public_keys=[keypair.public])
    assert (model / "model.sig").read_bytes() == raw


def test_cosigning_a_seal_by_an_untrusted_key_is_refused(
    model: Path, other_keypair: KeyPair, keypair: KeyPair, reviewer: KeyPair
) -> None:
    modelseal.seal(model, key=other_keypair.private)
    with pytest.raises(SignatureError, match="not trusted"):
        modelseal.sign(model, key=reviewer.private, public_keys=[keypair.public])
    assert len(read_seal(model / "model.sig").envelope.signatures) == 1


def test_cosigning_an_unsigned_seal_needs_allow_unsigned_and_then_signs_it(
    single_file: Path, reviewer: KeyPair
) -> None:
    modelseal.seal(single_file, unsigned=True)
    with pytest.raises(modelseal.UsageError, match="no trusted public key"):
        modelseal.sign(single_file, key=reviewer.private)
    result = modelseal.sign(single_file, key=reviewer.private, allow_unsigned=True)
    assert result.added
    assert result.signatures == 1
    assert read_seal(single_file.with_name(single_file.name + ".sig")).key_hint == keys.key_hint(
        keys.load_public_key(reviewer.public)
    )
    assert modelseal.verify(single_file, public_keys=[reviewer.public]).signed


def test_two_of_two_is_met_only_after_the_reviewer_cosigns(
    model: Path, keypair: KeyPair, reviewer: KeyPair, tmp_path: Path
) -> None:
    policy = two_of_two(tmp_path / "policy.toml", keypair, reviewer)
    modelseal.seal(model, key=keypair.private)
    with pytest.raises(PolicyViolation, match="1 of 2 required signers"):
        modelseal.verify(model, policy=policy)
    # The co-signer checks the trainer's signature with the policy's keys, not its threshold.
    modelseal.sign(model, key=reviewer.private, policy=policy)
    result = modelseal.verify(model, policy=policy)
    assert set(result.signers) == {key_id(keypair), key_id(reviewer)}


def test_the_same_signature_twice_does_not_meet_a_threshold_of_two(
    model: Path, keypair: KeyPair, reviewer: KeyPair, tmp_path: Path
) -> None:
    policy = two_of_two(tmp_path / "policy.toml", keypair, reviewer)
    modelseal.seal(model, key=keypair.private)
    seal = model / "model.sig"
    bundle = read_seal(seal)
    first = bundle.envelope.signatures[0]
    # An attacker duplicates the trainer's signature (and adds a re-signed copy of it).
    doubled = Envelope(bundle.envelope.payload_type, bundle.envelope.payload, (first, first))
    write_seal(seal, Bundle(doubled, bundle.key_hint))
    with pytest.raises(PolicyViolation, match="1 of 2 required signers"):
        modelseal.verify(model, policy=policy)
    modelseal.sign(model, key=keypair.private, policy=policy)  # same key again: a no-op
    with pytest.raises(PolicyViolation, match="1 of 2 required signers"):
        modelseal.verify(model, policy=policy)


def test_one_person_with_an_old_and_a_new_key_counts_once(
    model: Path, keypair: KeyPair, reviewer: KeyPair, key_dir: Path, tmp_path: Path
) -> None:
    """Rotation: the trainer's new key is a second entry under the same name, so during the
    overlap the trainer alone (old + new key) cannot meet a threshold of two."""
    new = make_keypair(key_dir, "trainer-new")
    extra = f'\n[[signers]]\nname = "trainer"\npublic_key = "{new.public}"\nmodels = ["*"]\n'
    policy = two_of_two(tmp_path / "policy.toml", keypair, reviewer, extra)
    modelseal.seal(model, key=keypair.private)
    modelseal.sign(model, key=new.private, policy=policy)
    with pytest.raises(PolicyViolation, match="1 of 2 required signers"):
        modelseal.verify(model, policy=policy)
    modelseal.sign(model, key=reviewer.private, policy=policy)
    assert len(modelseal.verify(model, policy=policy).signers) == 3


def test_rotation_overlap_then_expiry(
    model: Path, keypair: KeyPair, key_dir: Path, tmp_path: Path
) -> None:
    """Both keys verify during the overlap; once the old key's not_after passes, only the new."""
    new = make_keypair(key_dir, "trainer-new")
    now = datetime.now(timezone.utc)

    def policy(old_not_after: datetime) -> Policy:
        text = f"""
[[signers]]
name = "trainer"
public_key = "{keypair.public}"
models = ["*"]
not_after = {old_not_after.strftime("%Y-%m-%dT%H:%M:%SZ")}

[[signers]]
name = "trainer"
public_key = "{new.public}"
models = ["*"]
not_before = {(now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}

[[rules]]
models = ["*"]
signers = ["trainer"]
"""
        return Policy.from_toml(text, tmp_path)

    overlap, expired = policy(now + timedelta(days=30)), policy(now - timedelta(seconds=1))
    old_model, new_model = model, tmp_path / "new-model"
    new_model.mkdir()
    (new_model / "w.bin").write_bytes(b"new weights")
    modelseal.seal(old_model, key=keypair.private)
    modelseal.seal(new_model, key=new.private)
    assert modelseal.verify(old_model, policy=overlap).signed
    assert modelseal.verify(new_model, policy=overlap).signed
    with pytest.raises(PolicyViolation, match="expired"):
        modelseal.verify(old_model, policy=expired)
    assert modelseal.verify(new_model, policy=expired).signed
    # Re-signing the old model with the new key (no rehash of the statement) restores it.
    modelseal.sign(old_model, key=new.private, policy=overlap)
    assert modelseal.verify(old_model, policy=expired).signed


def test_a_revoked_cosigner_does_not_count(
    model: Path, keypair: KeyPair, reviewer: KeyPair, tmp_path: Path
) -> None:
    extra = f'\n[revoked]\nkey_ids = ["{key_id(reviewer)}"]\n'
    policy = two_of_two(tmp_path / "policy.toml", keypair, reviewer, extra)
    modelseal.seal(model, key=keypair.private)
    modelseal.sign(model, key=reviewer.private, public_keys=[keypair.public])
    with pytest.raises(PolicyViolation, match="1 of 2 required signers"):
        modelseal.verify(model, policy=policy)


def test_upstream_still_verifies_a_cosigned_seal_with_the_first_key(
    model: Path, keypair: KeyPair, reviewer: KeyPair
) -> None:
    modelseal.seal(model, key=keypair.private)
    modelseal.sign(model, key=reviewer.private, public_keys=[keypair.public])
    result = upstream_verify(model, model / "model.sig", keypair.public)
    assert result.returncode == 0, result.stdout + result.stderr
    # Upstream checks one signature and the hint: the co-signer's key alone is not enough there.
    assert upstream_verify(model, model / "model.sig", reviewer.public).returncode != 0


def test_cli_sign_then_verify_with_a_threshold(
    cli: Cli, model: Path, keypair: KeyPair, reviewer: KeyPair, tmp_path: Path
) -> None:
    policy_path = tmp_path / "policy.toml"
    two_of_two(policy_path, keypair, reviewer)
    assert cli("seal", model, "--key", keypair.private).code == 0
    refused = cli("verify", model, "--policy", policy_path)
    assert refused.code == 1
    assert "1 of 2 required signers" in refused.err
    signed = cli(
        "sign", model, "--key", reviewer.private, "--policy", policy_path, "--format", "json"
    )
    assert signed.code == 0, signed.err
    assert json.loads(signed.out)["signatures"] == 2
    assert "now carries 2 signatures" in signed.err
    assert cli("verify", model, "--policy", policy_path).code == 0
    again = cli("sign", model, "--key", reviewer.private, "--policy", policy_path)
    assert again.code == 0
    assert "already signed" in again.err


def test_cli_sign_refuses_a_changed_model_and_a_missing_seal(
    cli: Cli, model: Path, keypair: KeyPair, reviewer: KeyPair
) -> None:
    missing = cli("sign", model, "--key", reviewer.private, "--public-key", keypair.public)
    assert missing.code == 1
    assert "not sealed" in missing.err
    assert "Traceback" not in missing.err
    cli("seal", model, "--key", keypair.private)
    (model / "tokenizer.txt").write_text("x\n")
    changed = cli("sign", model, "--key", reviewer.private, "--public-key", keypair.public)
    assert changed.code == 1
    assert "tokenizer.txt" in changed.err
    no_trust = cli("sign", model, "--key", reviewer.private)
    assert no_trust.code == 2
    assert "no trust given" in no_trust.err
