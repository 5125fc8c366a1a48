"""The trust policy: strict loading, and decisions that fail closed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from modelseal.errors import IntegrityError, UsageError
from modelseal.policy import MAX_POLICY_FILE, Policy, PolicyError, PolicyViolation
from modelseal.sealing import seal
from modelseal.signing import keys
from modelseal.signing.bundle import read_seal
from modelseal.verification import check_bundle, default_seal_path

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Key:
    private: Path
    public: Path
    id: str


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    """Keys made once per module: generating them is the slow part of these tests."""
    directory = tmp_path_factory.mktemp("keys")
    made = {}
    for name in ("trainer", "reviewer", "auditor", "old", "new"):
        private, public = keys.write_keypair(directory / name)
        made[name] = Key(private, public, keys.key_id(keys.load_public_key(public)))
    return made


@pytest.fixture
def policy_dir(tmp_path: Path, key_files: dict[str, Key]) -> Path:
    """A policy directory with the public keys in keys/, as relative paths expect."""
    (tmp_path / "keys").mkdir()
    for name, key in key_files.items():
        (tmp_path / "keys" / f"{name}.pub").write_bytes(key.public.read_bytes())
    return tmp_path


BASE = """
[[signers]]
name = "trainer"
public_key = "keys/trainer.pub"
models = ["fraud-*"]
not_before = 2026-01-01T00:00:00Z
not_after = 2027-01-01T00:00:00Z

[[signers]]
name = "reviewer"
public_key = "keys/reviewer.pub"
models = ["fraud-*", "churn-*"]

[[rules]]
models = ["fraud-*"]
threshold = 2
signers = ["trainer", "reviewer"]
require_provenance = true
algorithms = ["sha256", "blake3"]
"""


def write(directory: Path, text: str) -> Path:
    path = directory / "modelseal.toml"
    path.write_text(text)
    return path


def load(directory: Path, text: str) -> Policy:
    return Policy.load(write(directory, text))


def ids(key_files: dict[str, Key], *names: str) -> list[str]:
    return [key_files[name].id for name in names]


# --- loading ---------------------------------------------------------------------------------


def test_load_resolves_keys_beside_the_policy(
    policy_dir: Path, key_files: dict[str, Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")
    policy = load(policy_dir, BASE)
    assert [s.name for s in policy.signers] == ["trainer", "reviewer"]
    assert [s.key_id for s in policy.signers] == ids(key_files, "trainer", "reviewer")
    assert policy.signers[0].not_after == datetime(2027, 1, 1, tzinfo=timezone.utc)
    assert policy.rules[0].threshold == 2
    assert policy.rules[0].algorithms == ("sha256", "blake3")


def test_inline_pem_is_accepted(policy_dir: Path, key_files: dict[str, Key]) -> None:
    pem = key_files["trainer"].public.read_text()
    text = BASE.replace('"keys/trainer.pub"', f'"""\n{pem}"""')
    policy = Policy.from_toml(text, policy_dir)
    assert policy.signers[0].key_id == key_files["trainer"].id


def test_absolute_key_path(policy_dir: Path, key_files: dict[str, Key]) -> None:
    text = BASE.replace('"keys/trainer.pub"', json.dumps(str(key_files["trainer"].public)))
    text = text.replace('"keys/reviewer.pub"', json.dumps(str(key_files["reviewer"].public)))
    policy = Policy.from_toml(text, policy_dir / "elsewhere")
    assert [s.key_id for s in policy.signers] == ids(key_files, "trainer", "reviewer")


def test_defaults(policy_dir: Path) -> None:
    policy = load(
        policy_dir,
        """
        [[signers]]
        name = "trainer"
        public_key = "keys/trainer.pub"
        models = ["*"]
        [[rules]]
        models = ["*"]
        signers = ["trainer"]
        """,
    )
    rule = policy.rules[0]
    assert (rule.threshold, rule.require_provenance) == (1, False)
    assert rule.algorithms == ("sha256", "sha384", "sha512", "blake3")
    assert policy.revoked == frozenset()


def test_trusted_keys_leave_out_revoked(policy_dir: Path, key_files: dict[str, Key]) -> None:
    policy = load(policy_dir, BASE)
    assert [keys.key_id(k) for k in policy.trusted_keys()] == ids(key_files, "trainer", "reviewer")
    revoked = load(policy_dir, BASE + f'[revoked]\nkey_ids = ["{key_files["trainer"].id}"]\n')
    assert [keys.key_id(k) for k in revoked.trusted_keys()] == ids(key_files, "reviewer")


def test_describe_is_json(policy_dir: Path, key_files: dict[str, Key]) -> None:
    text = BASE + f'[revoked]\nkey_ids = ["{key_files["auditor"].id}"]\n'
    described = load(policy_dir, text).describe()
    assert json.loads(json.dumps(described)) == described
    assert described["revoked"] == [key_files["auditor"].id]
    assert described["signers"][0] == {
        "name": "trainer",
        "key_id": key_files["trainer"].id,
        "models": ["fraud-*"],
        "not_before": "2026-01-01T00:00:00+00:00",
        "not_after": "2027-01-01T00:00:00+00:00",
        "revoked": False,
    }
    assert described["rules"][0]["threshold"] == 2
    assert described["rules"][0]["require_provenance"] is True


# --- decisions -------------------------------------------------------------------------------


def test_threshold_met_is_allowed(policy_dir: Path, key_files: dict[str, Key]) -> None:
    policy = load(policy_dir, BASE)
    decision = policy.check("fraud-v3", ids(key_files, "trainer", "reviewer"), "sha256", NOW)
    assert decision.allowed
    assert decision.reasons == ()
    assert decision.signers == ("trainer", "reviewer")
    assert decision.rules == (0,)
    assert decision.require_provenance
    assert json.loads(json.dumps(decision.to_json()))["allowed"] is True


def test_threshold_not_met(policy_dir: Path, key_files: dict[str, Key]) -> None:
    policy = load(policy_dir, BASE)
    decision = policy.decide("fraud-v3", ids(key_files, "trainer"), "sha256", NOW)
    assert not decision.allowed
    assert "1 of 2 required signers" in decision.reasons[0]
    with pytest.raises(PolicyViolation, match="1 of 2") as info:
        policy.check("fraud-v3", ids(key_files, "trainer"), "sha256", NOW)
    assert isinstance(info.value, IntegrityError)
    assert info.value.decision == decision
    assert "fraud-v3" in info.value.diagnostics()


def test_no_signer_at_all(policy_dir: Path) -> None:
    decision = load(policy_dir, BASE).decide("fraud-v3", [], "sha256", NOW)
    assert not decision.allowed
    assert "0 of 2" in decision.reasons[0]


def test_same_key_twice_counts_once(policy_dir: Path, key_files: dict[str, Key]) -> None:
    policy = load(policy_dir, BASE)
    twice = ids(key_files, "trainer", "trainer")
    assert not policy.decide("fraud-v3", twice, "sha256", NOW).allowed


def test_two_signer_entries_with_one_key_count_once(
    policy_dir: Path, key_files: dict[str, Key]
) -> None:
    text = """
    [[signers]]
    name = "trainer"
    public_key = "keys/trainer.pub"
    models = ["*"]
    [[signers]]
    name = "trainer-again"
    public_key = "keys/trainer.pub"
    models = ["*"]
    [[signers]]
    name = "reviewer"
    public_key = "keys/reviewer.pub"
    models = ["*"]
    [[rules]]
    models = ["*"]
    threshold = 2
    signers = ["trainer", "trainer-again", "reviewer"]
    """
    policy = load(policy_dir, text)
    assert len(policy.trusted_keys()) == 2
    decision = policy.decide("m", ids(key_files, "trainer"), "sha256", NOW)
    assert not decision.allowed
    assert "1 of 2" in decision.reasons[0]
    assert policy.decide("m", ids(key_files, "trainer", "reviewer"), "sha256", NOW).allowed


def test_threshold_that_shared_keys_can_never_meet_is_refused(policy_dir: Path) -> None:
    text = """
    [[signers]]
    name = "a"
    public_key = "keys/trainer.pub"
    models = ["*"]
    [[signers]]
    name = "b"
    public_key = "keys/trainer.pub"
    models = ["*"]
    [[rules]]
    models = ["*"]
    threshold = 2
    signers = ["a", "b"]
    """
    with pytest.raises(PolicyError, match="never be met"):
        load(policy_dir, text)


def test_revoked_key_is_refused_even_if_listed(policy_dir: Path, key_files: dict[str, Key]) -> None:
    text = BASE + f'[revoked]\nkey_ids = ["{key_files["trainer"].id}"]\n'
    decision = load(policy_dir, text).decide(
        "fraud-v3", ids(key_files, "trainer", "reviewer"), "sha256", NOW
    )
    assert not decision.allowed
    assert "revoked" in decision.reasons[0]


def test_revoked_key_id_is_case_insensitive(policy_dir: Path, key_files: dict[str, Key]) -> None:
    upper = "sha256:" + key_files["trainer"].id[7:].upper()
    policy = load(policy_dir, BASE + f'[revoked]\nkey_ids = ["{upper}"]\n')
    assert key_files["trainer"].id in policy.revoked


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (datetime(2025, 12, 31, 23, 59, tzinfo=timezone.utc), "not valid before"),
        (datetime(2027, 1, 1, tzinfo=timezone.utc), "expired"),
        (datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=2))), "expired"),
    ],
)
def test_key_outside_its_window(
    policy_dir: Path, key_files: dict[str, Key], now: datetime, reason: str
) -> None:
    decision = load(policy_dir, BASE).decide(
        "fraud-v3", ids(key_files, "trainer", "reviewer"), "sha256", now
    )
    assert not decision.allowed
    assert reason in decision.reasons[0]


def test_key_may_not_sign_that_model(policy_dir: Path, key_files: dict[str, Key]) -> None:
    text = BASE.replace('models = ["fraud-*"]\nnot_before', 'models = ["fraud-a*"]\nnot_before')
    policy = load(policy_dir, text)
    both = ids(key_files, "trainer", "reviewer")
    assert policy.decide("fraud-a1", both, "sha256", NOW).allowed
    decision = policy.decide("fraud-b1", both, "sha256", NOW)
    assert not decision.allowed
    assert "may not sign model 'fraud-b1'" in decision.reasons[0]


def test_globs_are_case_sensitive(policy_dir: Path, key_files: dict[str, Key]) -> None:
    decision = load(policy_dir, BASE).decide(
        "FRAUD-v3", ids(key_files, "trainer", "reviewer"), "sha256", NOW
    )
    assert not decision.allowed
    assert "no rule" in decision.reasons[0]


def test_no_rule_for_the_model(policy_dir: Path, key_files: dict[str, Key]) -> None:
    # reviewer may sign churn-* models, but no rule covers them: fail closed.
    decision = load(policy_dir, BASE).decide("churn-v1", ids(key_files, "reviewer"), "sha256", NOW)
    assert not decision.allowed
    assert decision.reasons == ("no rule of the policy covers model 'churn-v1'",)


def test_signer_not_in_the_rule_does_not_count(policy_dir: Path, key_files: dict[str, Key]) -> None:
    auditor = '[[signers]]\nname = "auditor"\npublic_key = "keys/auditor.pub"\nmodels = ["*"]\n'
    text = BASE.replace("[[rules]]", auditor + "[[rules]]")
    decision = load(policy_dir, text).decide(
        "fraud-v3", ids(key_files, "trainer", "auditor"), "sha256", NOW
    )
    assert not decision.allowed
    assert "is not a signer of this rule" in decision.reasons[0]


@pytest.mark.parametrize(
    ("hash_type", "reason"),
    [("md5", "is weak"), ("sha1", "is weak"), ("crc64", "not allowed"), ("sha512", "not allowed")],
)
def test_algorithm_of_the_seal(
    policy_dir: Path, key_files: dict[str, Key], hash_type: str, reason: str
) -> None:
    policy = load(policy_dir, BASE)
    both = ids(key_files, "trainer", "reviewer")
    assert policy.decide("fraud-v3", both, "blake3", NOW).allowed
    decision = policy.decide("fraud-v3", both, hash_type, NOW)
    assert not decision.allowed
    assert reason in decision.reasons[0]


def test_every_matching_rule_must_hold(policy_dir: Path, key_files: dict[str, Key]) -> None:
    text = BASE.replace('models = ["fraud-*"]\nnot_before', 'models = ["*"]\nnot_before') + (
        '[[rules]]\nmodels = ["*"]\nsigners = ["trainer"]\n'
    )
    policy = load(policy_dir, text)
    assert policy.decide("other", ids(key_files, "trainer"), "sha256", NOW).allowed
    decision = policy.decide("fraud-v3", ids(key_files, "trainer"), "sha256", NOW)
    assert not decision.allowed
    assert decision.rules == (0, 1)
    assert decision.reasons[0].startswith("rules[0]:")


def test_provenance_claims_are_returned(policy_dir: Path, key_files: dict[str, Key]) -> None:
    digest = "sha256:" + "ab" * 32
    text = BASE + (
        "[rules.provenance]\n"
        'builder_id = "https://ci.example/builder"\n'
        f'dataset_digests = ["{digest}"]\n'
    )
    decision = load(policy_dir, text).check(
        "fraud-v3", ids(key_files, "trainer", "reviewer"), "sha256", NOW
    )
    assert decision.require_provenance
    assert decision.provenance[0].builder_id == "https://ci.example/builder"
    assert decision.provenance[0].dataset_digests == (digest,)


def test_naive_now_is_refused(policy_dir: Path) -> None:
    with pytest.raises(UsageError, match="timezone-aware"):
        load(policy_dir, BASE).decide("fraud-v3", [], "sha256", datetime(2026, 6, 1))


def test_rotation(policy_dir: Path, key_files: dict[str, Key]) -> None:
    text = """
    [[signers]]
    name = "trainer-2025"
    public_key = "keys/old.pub"
    models = ["fraud-*"]
    not_after = 2026-03-01T00:00:00Z
    [[signers]]
    name = "trainer-2026"
    public_key = "keys/new.pub"
    models = ["fraud-*"]
    not_before = 2026-02-01T00:00:00Z
    [[rules]]
    models = ["fraud-*"]
    signers = ["trainer-2025", "trainer-2026"]
    """
    policy = load(policy_dir, text)
    old, new = ids(key_files, "old"), ids(key_files, "new")
    before = datetime(2026, 1, 15, tzinfo=timezone.utc)
    overlap = datetime(2026, 2, 15, tzinfo=timezone.utc)
    after = datetime(2026, 3, 1, tzinfo=timezone.utc)
    assert policy.decide("fraud-v1", old, "sha256", before).allowed
    assert not policy.decide("fraud-v1", new, "sha256", before).allowed
    assert policy.decide("fraud-v1", old, "sha256", overlap).allowed
    assert policy.decide("fraud-v1", new, "sha256", overlap).allowed
    refused = policy.decide("fraud-v1", old, "sha256", after)
    assert not refused.allowed
    assert "expired" in refused.reasons[0]
    assert policy.decide("fraud-v1", new, "sha256", after).allowed


def test_with_a_real_seal(tmp_path: Path, policy_dir: Path, key_files: dict[str, Key]) -> None:
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    seal(model, key=key_files["trainer"].private, name="fraud-v3")
    policy = load(policy_dir, BASE.replace("threshold = 2", "threshold = 1"))
    bundle = read_seal(default_seal_path(model))
    manifest, signers = check_bundle(bundle, policy.trusted_keys(), allow_unsigned=False)
    decision = policy.check(manifest.model_name, signers, manifest.serialization.hash_type, NOW)
    assert decision.signers == ("trainer",)


# --- malformed policies ----------------------------------------------------------------------

MINIMAL_SIGNER = '[[signers]]\nname = "a"\npublic_key = "keys/trainer.pub"\nmodels = ["*"]\n'
MINIMAL_RULE = '[[rules]]\nmodels = ["*"]\nsigners = ["a"]\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("signers = [", "not valid TOML", id="not-toml"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE + "version = 1\n", "unknown key 'version'",
                     id="unknown-top-key"),
        pytest.param(MINIMAL_SIGNER.replace("models", "model") + MINIMAL_RULE,
                     "signers[0] ('a'): unknown key 'model'", id="unknown-signer-key"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE + "treshold = 2\n",
                     "rules[0]: unknown key 'treshold'", id="unknown-rule-key"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE + "[revoked]\nkeys = []\n",
                     "revoked: unknown key 'keys'", id="unknown-revoked-key"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE + "[rules.provenance]\nbuilder = 'x'\n",
                     "unknown key 'builder'", id="unknown-provenance-key"),
        pytest.param(MINIMAL_SIGNER + 'not_after = "2027-01-01"\n' + MINIMAL_RULE,
                     "not_after: must be a TOML date-time", id="datetime-as-string"),
        pytest.param(MINIMAL_SIGNER + "not_after = 2027-01-01\n" + MINIMAL_RULE,
                     "not_after: must be a TOML date-time", id="date-only"),
        pytest.param(MINIMAL_SIGNER + "not_after = 2027-01-01T00:00:00\n" + MINIMAL_RULE,
                     "must be timezone-aware", id="naive-datetime"),
        pytest.param(MINIMAL_SIGNER + "not_after = 2027-13-01T00:00:00Z\n" + MINIMAL_RULE,
                     "not valid TOML", id="bad-datetime"),
        pytest.param(MINIMAL_SIGNER + "not_before = 2027-01-01T00:00:00Z\n"
                     "not_after = 2027-01-01T00:00:00Z\n" + MINIMAL_RULE,
                     "not_before must be earlier than not_after", id="empty-window"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE + "threshold = 0\n",
                     "threshold: must be between 1 and the 1 listed signers, not 0",
                     id="threshold-0"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE + "threshold = 2\n",
                     "not 2", id="threshold-too-large"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE + "threshold = true\n",
                     "threshold: must be an integer", id="threshold-bool"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE.replace('["a"]', '["a", "b"]'),
                     "rules[0].signers: unknown signer 'b'", id="unknown-signer-in-rule"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE.replace('["a"]', '["a", "a"]'),
                     "lists the same value twice", id="signer-listed-twice"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_SIGNER + MINIMAL_RULE,
                     "signers[1]: signer 'a' lists the same key as signers[0]",
                     id="same-name-same-key"),
        pytest.param(MINIMAL_SIGNER.replace('["*"]', '[""]') + MINIMAL_RULE,
                     "models[0]: must be a non-empty string", id="empty-glob"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE.replace('models = ["*"]', "models = []"),
                     "rules[0].models: must be a non-empty array", id="no-globs"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE + 'algorithms = ["sha256", "md5"]\n',
                     "md5 is too weak", id="md5"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE + 'algorithms = ["SHA1"]\n',
                     "SHA1 is too weak", id="sha1"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE + 'algorithms = ["sha3-256"]\n',
                     "unknown algorithm 'sha3-256'", id="unknown-algorithm"),
        pytest.param(MINIMAL_SIGNER.replace("trainer.pub", "missing.pub") + MINIMAL_RULE,
                     "public key not found", id="missing-key-file"),
        pytest.param(MINIMAL_SIGNER.replace("trainer.pub", "bad.pub") + MINIMAL_RULE,
                     "is not a PEM public key", id="bad-pem-file"),
        pytest.param(MINIMAL_SIGNER.replace('"keys/trainer.pub"', '"-----BEGIN junk"')
                     + MINIMAL_RULE, "inline value is not a PEM public key", id="bad-inline-pem"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE + "[revoked]\nkey_ids = ['sha256:abc']\n",
                     "revoked.key_ids[0]: must be a key id", id="bad-revoked-id"),
        pytest.param(MINIMAL_SIGNER, "missing required key 'rules'", id="no-rules"),
        pytest.param("rules = []\n" + MINIMAL_SIGNER, "rules: must be a non-empty array",
                     id="empty-rules"),
        pytest.param(MINIMAL_SIGNER.replace('name = "a"\n', "") + MINIMAL_RULE,
                     "signers[0]: missing required key 'name'", id="signer-without-name"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE + "require_provenance = 'yes'\n",
                     "must be true or false", id="require-provenance-not-bool"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE
                     + "require_provenance = false\n[rules.provenance]\nbuilder_id = 'x'\n",
                     "require_provenance = false", id="claims-without-requirement"),
        pytest.param(MINIMAL_SIGNER + MINIMAL_RULE
                     + "[rules.provenance]\ndataset_digests = ['md5:00']\n",
                     "dataset_digests[0]", id="bad-dataset-digest"),
    ],
)  # fmt: skip
def test_malformed_policy(policy_dir: Path, text: str, message: str) -> None:
    (policy_dir / "keys" / "bad.pub").write_text("-----BEGIN PUBLIC KEY-----\nnope\n")
    path = write(policy_dir, text)
    with pytest.raises(PolicyError) as info:
        Policy.load(path)
    text = str(info.value)
    assert "\n" not in text
    assert str(path) in text
    assert message in text


def test_policy_over_1_mib_is_refused_before_parsing(policy_dir: Path) -> None:
    path = write(policy_dir, "# " + "x" * MAX_POLICY_FILE + "\n")
    with pytest.raises(PolicyError, match="larger than"):
        Policy.load(path)
    with pytest.raises(PolicyError, match="larger than"):
        Policy.from_toml(path.read_text(), policy_dir)


def test_missing_and_binary_policy_files(policy_dir: Path) -> None:
    with pytest.raises(PolicyError, match="policy file not found"):
        Policy.load(policy_dir / "absent.toml")
    path = policy_dir / "modelseal.toml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(PolicyError, match="not UTF-8"):
        Policy.load(path)


def test_policy_error_is_a_usage_error() -> None:
    assert issubclass(PolicyError, UsageError)
    assert not issubclass(PolicyError, IntegrityError)
    assert issubclass(PolicyViolation, IntegrityError)


# --------------------------------------------------------------------------- [sources]

SOURCES = """
[sources]
allow = [
    "https://models.example.com/zoo/*",
    "https://*.cdn.example.org/weights/*.params",
    "http://127.0.0.1:8080/*",
]
"""


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://models.example.com/zoo/resnet50.zip", True),
        ("https://models.example.com/zoo/a/b/c.bin?rev=1", True),
        ("https://models.example.com/other/resnet50.zip", False),
        ("https://models.example.com.evil.net/zoo/resnet50.zip", False),
        ("https://evil.net/zoo/resnet50.zip#https://models.example.com/zoo/x", False),
        ("https://user:pw@models.example.com/zoo/resnet50.zip", False),
        ("https://models.example.com/zoo/../secret/x.zip", False),
        ("https://models.example.com/zoo/%2e%2e/secret/x.zip", False),
        ("https://models.example.com:8443/zoo/resnet50.zip", False),
        ("https://models.example.com:443/zoo/resnet50.zip", True),
        ("http://models.example.com/zoo/resnet50.zip", False),
        ("https://eu.cdn.example.org/weights/r50.params", True),
        ("https://cdn.example.org/weights/r50.params", False),
        ("https://eu.cdn.example.org/weights/r50.json", False),
        ("http://127.0.0.1:8080/model.bin", True),
        ("http://127.0.0.1:9090/model.bin", False),
        ("not a url", False),
    ],
)
def test_sources_allow(policy_dir: Path, url: str, allowed: bool) -> None:
    policy = Policy.from_toml(SOURCES, policy_dir)
    assert (policy.source_allowed(url) is not None) is allowed


def test_a_sources_only_policy_allows_downloads_and_no_model(policy_dir: Path) -> None:
    policy = Policy.from_toml(SOURCES, policy_dir)
    assert policy.rules == ()
    assert policy.describe()["sources"] == list(policy.sources or ())
    decision = policy.decide("any", (), "sha256", datetime.now(timezone.utc))
    assert not decision.allowed


def test_a_policy_without_sources_allows_no_download(
    policy_dir: Path, key_files: dict[str, Key]
) -> None:
    policy = Policy.from_toml(MINIMAL_SIGNER + MINIMAL_RULE, policy_dir)
    assert policy.source_allowed("https://models.example.com/zoo/x") is None


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("http://models.example.com/*", "plain http is allowed only for a loopback host"),
        ("ftp://models.example.com/*", "must be an https:// URL pattern"),
        ("https://*/*", "the host must be literal"),
        ("https://mod*.example.com/*", "the host must be literal"),
        ("https://*.com/*", "the host must be literal"),
        ("https://u:p@models.example.com/*", "must not contain credentials"),
        ("https:///path/*", "with a host"),
    ],
)
def test_bad_source_patterns_are_refused(policy_dir: Path, pattern: str, problem: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(problem)):
        Policy.from_toml(f'[sources]\nallow = ["{pattern}"]\n', policy_dir)
