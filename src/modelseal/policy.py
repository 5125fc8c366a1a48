"""Trust policy: which keys may seal which models, how many must agree, with what algorithms.

A policy is a TOML file (`modelseal.toml`, or `--policy FILE`). Loading is strict, because a
typo must never silently weaken a policy: unknown keys, impossible thresholds, weak algorithms,
naive datetimes are all refused with a `PolicyError` naming the file and the entry.

Deciding is free of I/O (as in python-tuf): `Policy.decide` takes the model name, the ids of the
keys whose signatures verified over the seal, the seal's hash type and the current time, and
returns a `PolicyDecision`. It fails closed: a model that no rule covers is refused, and when
several rules cover a model, every one of them must be satisfied (adding a rule only tightens).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from modelseal._internal.files import read_capped
from modelseal._internal.toml import one_line, parse_toml
from modelseal.errors import IntegrityError, UsageError
from modelseal.manifest import ALGORITHMS, WEAK_ALGORITHMS
from modelseal.signing import keys

MAX_POLICY_FILE = 1024 * 1024
"""Policies larger than this are refused before parsing (bounded input)."""

DEFAULT_POLICY_FILE = "modelseal.toml"

_KEY_ID = re.compile(r"sha256:[0-9a-f]{64}")
_URL_HOST = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|[0-9a-f:.]*:[0-9a-f:.]*")
_PROVENANCE_CLAIMS = frozenset({"builder_id", "source_repo", "dataset_digests"})


class PolicyError(UsageError):
    """The policy file is unreadable, too large, or not a policy modelseal fully understands."""


class PolicyViolation(IntegrityError):
    """The seal verified, but the policy does not allow these signers to vouch for this model."""

    def __init__(self, decision: PolicyDecision) -> None:
        super().__init__(
            f"policy refuses model {decision.model_name!r}: " + "; ".join(decision.reasons)
        )
        self.decision = decision

    def diagnostics(self) -> str:
        lines = [f"policy refuses model {self.decision.model_name!r}:"]
        lines.extend(f"  {reason}" for reason in self.decision.reasons)
        return "\n".join(lines)


@dataclass(frozen=True)
class Signer:
    """A named key, the model names it may sign, and when it is valid."""

    name: str
    public_key: keys.PublicKey
    key_id: str
    models: tuple[str, ...]
    not_before: datetime | None = None
    not_after: datetime | None = None

    def may_sign(self, model_name: str) -> bool:
        return any(fnmatch.fnmatchcase(model_name, pattern) for pattern in self.models)

    def window_problem(self, now: datetime) -> str | None:
        """Why the key is not valid at `now` (None when it is): [not_before, not_after)."""
        if self.not_before is not None and now < self.not_before:
            return f"signer {self.name!r} is not valid before {self.not_before.isoformat()}"
        if self.not_after is not None and now >= self.not_after:
            return f"signer {self.name!r} expired at {self.not_after.isoformat()}"
        return None


@dataclass(frozen=True)
class ProvenanceClaims:
    """Claims a rule requires of the model's provenance; checked by the caller (later part)."""

    builder_id: str | None = None
    source_repo: str | None = None
    dataset_digests: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.builder_id is not None:
            data["builder_id"] = self.builder_id
        if self.source_repo is not None:
            data["source_repo"] = self.source_repo
        if self.dataset_digests:
            data["dataset_digests"] = list(self.dataset_digests)
        return data


@dataclass(frozen=True)
class Rule:
    """For models matching `models`: `threshold` distinct listed signers must have signed."""

    models: tuple[str, ...]
    signers: tuple[str, ...]
    threshold: int = 1
    require_provenance: bool = False
    provenance: ProvenanceClaims = field(default_factory=ProvenanceClaims)
    algorithms: tuple[str, ...] = tuple(ALGORITHMS)

    def covers(self, model_name: str) -> bool:
        return any(fnmatch.fnmatchcase(model_name, pattern) for pattern in self.models)


@dataclass(frozen=True)
class PolicyDecision:
    """The outcome of checking one seal against a policy. `allowed` or `reasons` why not."""

    model_name: str
    allowed: bool
    reasons: tuple[str, ...] = ()
    signers: tuple[str, ...] = ()
    """Names of the signers that counted towards the matching rules."""
    rules: tuple[int, ...] = ()
    """Indexes (in file order) of the rules that cover the model."""
    require_provenance: bool = False
    """The caller must still check provenance (with `provenance` claims) before loading."""
    provenance: tuple[ProvenanceClaims, ...] = ()

    def raise_if_refused(self) -> PolicyDecision:
        """Return self when allowed, else raise a PolicyViolation carrying this decision."""
        if not self.allowed:
            raise PolicyViolation(self)
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "signers": list(self.signers),
            "rules": list(self.rules),
            "require_provenance": self.require_provenance,
            "provenance": [claims.to_json() for claims in self.provenance],
        }


@dataclass(frozen=True)
class Policy:
    """A validated trust policy. Build it with `load` or `from_toml`."""

    signers: tuple[Signer, ...]
    rules: tuple[Rule, ...]
    revoked: frozenset[str] = frozenset()
    source: str = "<policy>"
    sources: tuple[str, ...] | None = None
    """`[sources] allow` URL patterns for downloads; None when the policy has no [sources]."""
    allow_unsafe_skip: bool = True
    """False: the emergency escape (MODELSEAL_UNSAFE_SKIP=1) is refused where this policy is
    used, so a deployment can rule it out for itself."""

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Policy:
        """Read and validate a policy file; relative key paths are resolved beside it."""
        policy_path = Path(path)
        data = read_capped(policy_path, MAX_POLICY_FILE, "policy file", PolicyError)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicyError(f"policy {policy_path} is not UTF-8 text") from None
        return cls.from_toml(text, policy_path.parent, source=str(policy_path))

    @classmethod
    def from_toml(
        cls, text: str, base_dir: str | os.PathLike[str], *, source: str = "<policy>"
    ) -> Policy:
        """Validate policy `text`; relative key paths are resolved against `base_dir`."""
        if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_FILE:
            raise PolicyError(f"policy {source} is larger than {MAX_POLICY_FILE} bytes")
        return _Parser(source, Path(base_dir)).parse(_parse_toml(text, source))

    def source_allowed(self, url: str) -> str | None:
        """The `[sources] allow` pattern that admits `url`, or None (also when the policy has
        no [sources]: a policy that says nothing about downloads allows none)."""
        for pattern in self.sources or ():
            if url_matches(url, pattern):
                return pattern
        return None

    def trusted_keys(self) -> tuple[keys.PublicKey, ...]:
        """The public keys of all non-revoked signers: what signatures are checked against."""
        found: dict[str, keys.PublicKey] = {}
        for signer in self.signers:
            if signer.key_id not in self.revoked:
                found.setdefault(signer.key_id, signer.public_key)
        return tuple(found.values())

    def decide(
        self,
        model_name: str,
        signer_key_ids: Iterable[str],
        hash_type: str,
        now: datetime,
    ) -> PolicyDecision:
        """Whether the policy allows this seal. No I/O; never raises on a refusal.

        `signer_key_ids` are the ids of the keys whose signatures verified over the seal,
        `hash_type` the seal's serialization hash type, `now` an aware datetime.
        """
        if now.tzinfo is None or now.utcoffset() is None:
            raise UsageError("the time to decide a policy at must be timezone-aware")
        verified = frozenset(signer_key_ids)
        indexes = tuple(i for i, rule in enumerate(self.rules) if rule.covers(model_name))
        if not indexes:
            return PolicyDecision(
                model_name, False, (f"no rule of the policy covers model {model_name!r}",)
            )
        by_name = self.signers_by_name()
        reasons: list[str] = []
        counted: dict[str, None] = {}
        for index in indexes:
            rule = self.rules[index]
            label = f"rules[{index}]"
            if hash_type not in rule.algorithms:
                weak = hash_type.lower() in WEAK_ALGORITHMS
                kind = "weak" if weak else "not allowed"
                reasons.append(
                    f"{label}: hash type {hash_type!r} is {kind} "
                    f"(allowed: {', '.join(rule.algorithms)})"
                )
            # A signer (a name) counts once however many of its keys signed, and one key
            # counts for one signer only: a threshold counts people, not signatures.
            accepted: dict[str, str] = {}  # signer name -> the key id that counted
            notes: list[str] = []
            for name in rule.signers:
                for signer in by_name[name]:
                    if signer.key_id not in verified or signer.key_id in accepted.values():
                        continue
                    problem = self._signer_problem(signer, model_name, now)
                    if problem is None:
                        accepted[name] = signer.key_id
                        break
                    notes.append(problem)
            if len(accepted) < rule.threshold:
                listed = {s.key_id for n in rule.signers for s in by_name[n]}
                notes.extend(
                    f"key {key} is not a signer of this rule" for key in sorted(verified - listed)
                )
                reasons.append(
                    f"{label}: {len(accepted)} of {rule.threshold} required signers "
                    f"({', '.join(rule.signers)}) signed"
                    + (f" ({'; '.join(dict.fromkeys(notes))})" if notes else "")
                )
            counted.update(dict.fromkeys(accepted))
        rules = [self.rules[i] for i in indexes]
        return PolicyDecision(
            model_name,
            not reasons,
            tuple(reasons),
            tuple(counted),
            indexes,
            any(rule.require_provenance for rule in rules),
            tuple(rule.provenance for rule in rules if rule.require_provenance),
        )

    def check(
        self,
        model_name: str,
        signer_key_ids: Iterable[str],
        hash_type: str,
        now: datetime,
    ) -> PolicyDecision:
        """Like `decide`, but raise a PolicyViolation when the policy refuses."""
        return self.decide(model_name, signer_key_ids, hash_type, now).raise_if_refused()

    def signers_by_name(self) -> dict[str, tuple[Signer, ...]]:
        """Each signer name with its keys: several `[[signers]]` entries share a name while a
        key is rotated (an overlap where both are valid, then the old one expires)."""
        by_name: dict[str, tuple[Signer, ...]] = {}
        for signer in self.signers:
            by_name[signer.name] = (*by_name.get(signer.name, ()), signer)
        return by_name

    def keys_for(self, model_name: str, now: datetime) -> tuple[Signer, ...]:
        """The signers whose key may vouch for `model_name` at `now`: listed for the model,
        inside their validity window, not revoked. (For statements beside the seal, such as
        provenance, that carry one signature rather than a threshold.)"""
        return tuple(s for s in self.signers if self._signer_problem(s, model_name, now) is None)

    def _signer_problem(self, signer: Signer, model_name: str, now: datetime) -> str | None:
        if signer.key_id in self.revoked:
            return f"signer {signer.name!r} uses revoked key {signer.key_id}"
        window = signer.window_problem(now)
        if window is not None:
            return window
        if not signer.may_sign(model_name):
            return f"signer {signer.name!r} may not sign model {model_name!r}"
        return None

    def describe(self) -> dict[str, Any]:
        """What the policy allows, as JSON-serializable data (for `modelseal policy check`)."""

        def when(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "source": self.source,
            "signers": [
                {
                    "name": s.name,
                    "key_id": s.key_id,
                    "models": list(s.models),
                    "not_before": when(s.not_before),
                    "not_after": when(s.not_after),
                    "revoked": s.key_id in self.revoked,
                }
                for s in self.signers
            ],
            "revoked": sorted(self.revoked),
            "sources": list(self.sources) if self.sources is not None else None,
            "allow_unsafe_skip": self.allow_unsafe_skip,
            "rules": [
                {
                    "models": list(r.models),
                    "threshold": r.threshold,
                    "signers": list(r.signers),
                    "require_provenance": r.require_provenance,
                    "provenance": r.provenance.to_json(),
                    "algorithms": list(r.algorithms),
                }
                for r in self.rules
            ],
        }


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def source_pattern_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be a source pattern (None when it can): https, a literal host
    (or `*.domain`), an optional port, a path glob; plain http only for a loopback host."""
    try:
        parts = urlsplit(pattern)
        port = parts.port
    except ValueError:
        return f"{pattern!r} is not a URL pattern"
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        return f"{pattern!r} must be an https:// URL pattern with a host"
    if parts.scheme == "http" and host not in _LOOPBACK_HOSTS:
        return f"{pattern!r}: plain http is allowed only for a loopback host (tests)"
    if parts.username is not None or parts.password is not None:
        return f"{pattern!r} must not contain credentials"
    wildcard = host.startswith("*.")
    if any(c in host[2 if wildcard else 0 :] for c in "*?[]") or (wildcard and "." not in host[2:]):
        return f"{pattern!r}: the host must be literal, or '*.' before a domain"
    if port == 0:
        return f"{pattern!r} has an invalid port"
    if parts.fragment:
        return f"{pattern!r} must not contain a fragment"
    return None


def url_matches(url: str, pattern: str) -> bool:
    """Whether `url` lies under `pattern`: same scheme, host (a `*.` pattern matches
    subdomains only), port and a path (with its query) matching the glob. A URL with
    credentials, a `..` segment, a backslash or a host that is not plain ASCII never matches,
    whatever the pattern says."""
    try:
        have, want = urlsplit(url), urlsplit(pattern)
        have_port, want_port = have.port, want.port
    except ValueError:
        return False
    if have.username is not None or have.password is not None or have.fragment:
        return False
    host, pattern_host = (have.hostname or ""), (want.hostname or "")
    # Only hosts that every URL parser reads alike: urllib3 ends the authority at a backslash
    # ("https://evil.com\.ok.org/" is evil.com to it, a subdomain of ok.org to urlsplit), and
    # non-ASCII hosts are mapped by IDNA after this check.
    if "\\" in url or not _URL_HOST.fullmatch(host):
        return False
    if have.scheme != want.scheme or not host:
        return False
    if pattern_host.startswith("*."):
        if not host.endswith(pattern_host[1:]) or host == pattern_host[2:]:
            return False
    elif host != pattern_host:
        return False
    default = 443 if have.scheme == "https" else 80
    if (have_port or default) != (want_port or default):
        return False
    segments = unquote(have.path).split("/")
    if ".." in segments or "." in segments:
        return False
    target = have.path + (f"?{have.query}" if have.query else "")
    return fnmatch.fnmatchcase(target, want.path + (f"?{want.query}" if want.query else ""))


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    return parse_toml(text, "policy", source, PolicyError)


class _Parser:
    """Turns parsed TOML into a Policy, refusing anything not exactly understood."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    def fail(self, entry: str, problem: str) -> PolicyError:
        return PolicyError(one_line(f"policy {self.source}: {entry}: {problem}"))

    def table(
        self, value: object, entry: str, allowed: Iterable[str], required: Iterable[str] = ()
    ) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(entry, "must be a table")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise self.fail(entry, f"unknown key {unknown[0]!r} (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in value:
                raise self.fail(entry, f"missing required key {key!r}")
        return value

    def tables(self, value: object, entry: str) -> list[object]:
        if not isinstance(value, list) or not value:
            raise self.fail(entry, f"must be a non-empty array of tables ([[{entry}]])")
        return value

    def string(self, value: object, entry: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(entry, "must be a non-empty string")
        return value

    def strings(self, value: object, entry: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(entry, "must be a non-empty array of strings")
        items = tuple(self.string(item, f"{entry}[{i}]") for i, item in enumerate(value))
        if len(set(items)) != len(items):
            raise self.fail(entry, "lists the same value twice")
        return items

    def when(self, value: object, entry: str) -> datetime:
        if not isinstance(value, datetime):
            raise self.fail(entry, "must be a TOML date-time such as 2026-01-01T00:00:00Z")
        if value.tzinfo is None or value.utcoffset() is None:
            raise self.fail(entry, "must be timezone-aware (end it with Z or an offset)")
        return value

    def parse(self, data: Mapping[str, Any]) -> Policy:
        self.table(data, "policy", ("signers", "revoked", "rules", "sources", "allow_unsafe_skip"))
        sources = self.sources(data["sources"]) if "sources" in data else None
        allow_skip = data.get("allow_unsafe_skip", True)
        if not isinstance(allow_skip, bool):
            raise self.fail("allow_unsafe_skip", "must be true or false")
        if "rules" not in data and "signers" not in data and sources is not None:
            # A policy for downloads only: it allows no model to load (no rule covers any).
            revoked = self.revoked(data.get("revoked", {}))
            return Policy((), (), revoked, self.source, sources, allow_skip)
        for key in ("signers", "rules"):
            if key not in data:
                raise self.fail("policy", f"missing required key {key!r}")
        revoked = self.revoked(data.get("revoked", {}))
        signers = tuple(
            self.signer(item, f"signers[{i}]")
            for i, item in enumerate(self.tables(data["signers"], "signers"))
        )
        seen: dict[tuple[str, str], int] = {}
        for i, signer in enumerate(signers):
            earlier = seen.setdefault((signer.name, signer.key_id), i)
            if earlier != i:
                raise self.fail(
                    f"signers[{i}]",
                    f"signer {signer.name!r} lists the same key as signers[{earlier}]",
                )
        by_name: dict[str, list[Signer]] = {}
        for signer in signers:
            by_name.setdefault(signer.name, []).append(signer)
        rules = tuple(
            self.rule(item, f"rules[{i}]", by_name)
            for i, item in enumerate(self.tables(data["rules"], "rules"))
        )
        return Policy(signers, rules, revoked, self.source, sources, allow_skip)

    def sources(self, value: object) -> tuple[str, ...]:
        table = self.table(value, "sources", ("allow",), ("allow",))
        patterns = self.strings(table["allow"], "sources.allow")
        for i, pattern in enumerate(patterns):
            problem = source_pattern_problem(pattern)
            if problem is not None:
                raise self.fail(f"sources.allow[{i}]", problem)
        return patterns

    def revoked(self, value: object) -> frozenset[str]:
        table = self.table(value, "revoked", ("key_ids",))
        ids = table.get("key_ids", [])
        if not isinstance(ids, list):
            raise self.fail("revoked.key_ids", "must be an array of key ids")
        result: set[str] = set()
        for i, item in enumerate(ids):
            entry = f"revoked.key_ids[{i}]"
            if not isinstance(item, str) or not _KEY_ID.fullmatch(item.lower()):
                raise self.fail(entry, "must be a key id 'sha256:<64 hex digits>'")
            result.add(item.lower())
        return frozenset(result)

    def signer(self, value: object, entry: str) -> Signer:
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            entry = f"{entry} ({value['name']!r})"
        table = self.table(
            value,
            entry,
            ("name", "public_key", "models", "not_before", "not_after"),
            ("name", "public_key", "models"),
        )
        name = self.string(table["name"], f"{entry}.name")
        public_key = self.public_key(table["public_key"], f"{entry}.public_key")
        models = self.strings(table["models"], f"{entry}.models")
        not_before = (
            self.when(table["not_before"], f"{entry}.not_before") if "not_before" in table else None
        )
        not_after = (
            self.when(table["not_after"], f"{entry}.not_after") if "not_after" in table else None
        )
        if not_before is not None and not_after is not None and not_before >= not_after:
            raise self.fail(entry, "not_before must be earlier than not_after")
        return Signer(name, public_key, keys.key_id(public_key), models, not_before, not_after)

    def public_key(self, value: object, entry: str) -> keys.PublicKey:
        text = self.string(value, entry)
        if text.lstrip().startswith("-----BEGIN"):
            try:
                key = serialization.load_pem_public_key(text.strip().encode("utf-8"))
            except (ValueError, UnsupportedAlgorithm, UnicodeEncodeError):
                raise self.fail(entry, "inline value is not a PEM public key") from None
            if not isinstance(key, keys.PUBLIC_KEY_TYPES) or (
                not isinstance(key, ed25519.Ed25519PublicKey)
                and key.curve.name not in ("secp256r1", "secp384r1", "secp521r1")
            ):
                raise self.fail(entry, "only ECDSA (P-256/384/521) and Ed25519 keys are supported")
            return key
        path = Path(text)
        if not path.is_absolute():
            path = self.base_dir / path
        try:
            return keys.load_public_key(path)
        except UsageError as exc:
            raise self.fail(entry, str(exc)) from None

    def rule(self, value: object, entry: str, by_name: Mapping[str, list[Signer]]) -> Rule:
        table = self.table(
            value,
            entry,
            ("models", "threshold", "signers", "require_provenance", "provenance", "algorithms"),
            ("models", "signers"),
        )
        models = self.strings(table["models"], f"{entry}.models")
        names = self.strings(table["signers"], f"{entry}.signers")
        for name in names:
            if name not in by_name:
                raise self.fail(f"{entry}.signers", f"unknown signer {name!r}")
        threshold = table.get("threshold", 1)
        if type(threshold) is not int:
            raise self.fail(f"{entry}.threshold", "must be an integer")
        if not 1 <= threshold <= len(names):
            raise self.fail(
                f"{entry}.threshold",
                f"must be between 1 and the {len(names)} listed signers, not {threshold}",
            )
        distinct = min(len(names), len({s.key_id for name in names for s in by_name[name]}))
        if threshold > distinct:
            raise self.fail(
                f"{entry}.threshold",
                f"{threshold} can never be met: the listed signers hold {distinct} distinct keys",
            )
        algorithms = self.algorithms(table.get("algorithms"), f"{entry}.algorithms")
        provenance = self.provenance(table.get("provenance"), f"{entry}.provenance")
        require = table.get("require_provenance", provenance != ProvenanceClaims())
        if not isinstance(require, bool):
            raise self.fail(f"{entry}.require_provenance", "must be true or false")
        if not require and provenance != ProvenanceClaims():
            raise self.fail(entry, "provenance claims given but require_provenance = false")
        return Rule(models, names, threshold, require, provenance, algorithms)

    def algorithms(self, value: object, entry: str) -> tuple[str, ...]:
        if value is None:
            return tuple(ALGORITHMS)
        algorithms = self.strings(value, entry)
        for algorithm in algorithms:
            if algorithm.lower() in WEAK_ALGORITHMS:
                raise self.fail(entry, f"{algorithm} is too weak to be trusted (never md5/sha1)")
            if algorithm not in ALGORITHMS:
                raise self.fail(
                    entry, f"unknown algorithm {algorithm!r} (allowed: {', '.join(ALGORITHMS)})"
                )
        return algorithms

    def provenance(self, value: object, entry: str) -> ProvenanceClaims:
        if value is None:
            return ProvenanceClaims()
        table = self.table(value, entry, sorted(_PROVENANCE_CLAIMS))
        builder = table.get("builder_id")
        repo = table.get("source_repo")
        return ProvenanceClaims(
            self.string(builder, f"{entry}.builder_id") if builder is not None else None,
            self.string(repo, f"{entry}.source_repo") if repo is not None else None,
            self.digests(table.get("dataset_digests"), f"{entry}.dataset_digests"),
        )

    def digests(self, value: object, entry: str) -> tuple[str, ...]:
        if value is None:
            return ()
        digests = self.strings(value, entry)
        for i, digest in enumerate(digests):
            algorithm, _, hexdigest = digest.partition(":")
            size = ALGORITHMS.get(algorithm)
            if size is None or not re.fullmatch(f"[0-9a-f]{{{2 * size}}}", hexdigest):
                raise self.fail(f"{entry}[{i}]", "must be '<algorithm>:<hex digest>', e.g. sha256")
        return digests


__all__ = [
    "DEFAULT_POLICY_FILE",
    "MAX_POLICY_FILE",
    "Policy",
    "PolicyDecision",
    "PolicyError",
    "PolicyViolation",
    "ProvenanceClaims",
    "Rule",
    "Signer",
    "source_pattern_problem",
    "url_matches",
]
