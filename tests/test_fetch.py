"""modelseal.fetch against a real loopback HTTPS server (tests/httpserver.py): pins, resume,
retries, redirects, allowlists, plain http, TLS trust, mirrors and archives."""

from __future__ import annotations

import hashlib
import io
import logging
import random
import zipfile
from pathlib import Path

import pytest

from httpserver import Server, http_server, https_server
from modelseal.errors import UsageError
from modelseal.fetch import (
    DigestMismatch,
    DownloadError,
    SourceNotAllowed,
    UnsafeArchiveError,
    download_verified,
    fetch,
)
from modelseal.policy import Policy
from modelseal.signing import keys
from modelseal.verification import verify

__all__ = ["http_server", "https_server"]  # fixtures, imported for pytest

DATA = random.Random(5).randbytes(200_000)
DIGEST = hashlib.sha256(DATA).hexdigest()


class Sleeps:
    """Stands in for time.sleep: records the backoff delays, never waits."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".modelseal-"))


def sources(*patterns: str) -> Policy:
    allow = ", ".join(f'"{p}"' for p in patterns)
    return Policy.from_toml(f"[sources]\nallow = [{allow}]\n", ".", source="test-policy")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the honest case and the pin ---------------------------------------------------------------


def test_good_fetch(https_server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = https_server.add("/zoo/r50.params", DATA)
    with caplog.at_level(logging.INFO, logger="modelseal.fetch"):
        result = fetch(url, sha256=DIGEST, out=tmp_path)
    assert result.path == tmp_path / "r50.params"
    assert result.path.read_bytes() == DATA
    assert (result.sha256, result.size, result.trust) == (f"sha256:{DIGEST}", len(DATA), "pinned")
    assert (result.url, result.final_url, result.resumed, result.extracted) == (
        url,
        url,
        False,
        False,
    )
    assert (result.path.stat().st_mode & 0o777) == 0o644
    assert leftovers(tmp_path) == []
    assert [r.levelname for r in caplog.records if "fetched" in r.getMessage()] == ["INFO"]


def test_pin_given_with_prefix_and_uppercase(https_server: Server, tmp_path: Path) -> None:
    url = https_server.add("/m.bin", DATA)
    result = fetch(url, sha256="sha256:" + DIGEST.upper(), out=tmp_path / "x.bin")
    assert result.path == tmp_path / "x.bin"


def test_wrong_digest_discards_and_keeps_destination(
    https_server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = https_server.add("/m.bin", DATA)
    dest = tmp_path / "m.bin"
    dest.write_bytes(b"the old, good copy")
    wrong = sha(b"something else")
    with (
        caplog.at_level(logging.INFO, logger="modelseal.fetch"),
        pytest.raises(DigestMismatch) as info,
    ):
        fetch(url, sha256=wrong, out=dest)
    message = str(info.value)
    assert wrong in message
    assert DIGEST in message
    assert url in message
    assert "\n" not in message
    assert (info.value.expected, info.value.actual, info.value.url) == (
        f"sha256:{wrong}",
        f"sha256:{DIGEST}",
        url,
    )
    assert dest.read_bytes() == b"the old, good copy"
    assert leftovers(tmp_path) == []
    assert any(r.levelname == "ERROR" and "refused" in r.getMessage() for r in caplog.records)


def test_pin_is_required_unless_tofu(https_server: Server, tmp_path: Path) -> None:
    url = https_server.add("/m.bin", DATA)
    with pytest.raises(UsageError, match="SHA-256 pin is required"):
        fetch(url, out=tmp_path)
    with pytest.raises(UsageError, match="64 hex"):
        fetch(url, sha256="abc123", out=tmp_path)
    assert https_server.requests == []
    result = fetch(url, trust_on_first_use=True, out=tmp_path)
    assert (result.trust, result.sha256) == ("tofu", f"sha256:{DIGEST}")


# -- bodies that end early or run long ----------------------------------------------------------


def test_truncated_body_is_retried_with_range_then_refused(
    https_server: Server, tmp_path: Path, sleeps: Sleeps
) -> None:
    url = https_server.add("/m.bin", DATA, truncate_at=50_000)
    with pytest.raises(DownloadError, match="gave up after 3 attempts") as info:
        fetch(url, sha256=DIGEST, out=tmp_path, retries=2, sleep=sleeps)
    assert "\n" not in str(info.value)
    seen = https_server.requests_for("/m.bin")
    assert len(seen) == 3
    assert seen[0].headers.get("Range") is None
    assert [r.headers.get("Range") for r in seen[1:]] == ["bytes=50000-", "bytes=50000-"]
    assert len(sleeps.delays) == 2
    assert not (tmp_path / "m.bin").exists()
    assert leftovers(tmp_path) == []


def test_content_length_over_the_cap_is_refused_up_front(
    https_server: Server, tmp_path: Path, sleeps: Sleeps
) -> None:
    url = https_server.add("/m.bin", DATA, content_length=10**12)
    with pytest.raises(DownloadError, match="over the size cap"):
        fetch(url, sha256=DIGEST, out=tmp_path, sleep=sleeps)
    assert https_server.count("/m.bin") == 1  # not retried
    assert leftovers(tmp_path) == []


def test_body_over_the_cap_without_length_is_cut_off(
    https_server: Server, tmp_path: Path, sleeps: Sleeps
) -> None:
    url = https_server.add("/m.bin", DATA, no_length=True)
    with pytest.raises(DownloadError, match="more than the size cap of 100000"):
        fetch(url, sha256=DIGEST, out=tmp_path, max_bytes=100_000, sleep=sleeps)
    assert leftovers(tmp_path) == []
    # The honest case: the same stream under the cap.
    assert fetch(url, sha256=DIGEST, out=tmp_path, max_bytes=len(DATA)).size == len(DATA)


def test_lying_content_length_cannot_smuggle_bytes(https_server: Server, tmp_path: Path) -> None:
    # Claims 1000 bytes, sends the whole 200 kB: only what was claimed is read, and it is
    # not the pinned file.
    url = https_server.add("/m.bin", DATA, content_length=1000)
    with pytest.raises(DigestMismatch):
        fetch(url, sha256=DIGEST, out=tmp_path, max_bytes=100_000)
    assert leftovers(tmp_path) == []


# -- resume --------------------------------------------------------------------------------------


def test_server_dies_mid_download_then_resumes(
    https_server: Server, tmp_path: Path, sleeps: Sleeps
) -> None:
    url = https_server.add("/m.bin", DATA, die_once_at=70_000)
    result = fetch(url, sha256=DIGEST, out=tmp_path, sleep=sleeps)
    assert result.resumed
    assert result.path.read_bytes() == DATA
    first, second = https_server.requests_for("/m.bin")
    assert "Range" not in first.headers
    assert second.headers["Range"] == "bytes=70000-"
    assert second.headers["If-Range"] == https_server.routes["/m.bin"].etag
    assert len(sleeps.delays) == 1


def test_server_ignoring_range_restarts_from_zero(
    https_server: Server, tmp_path: Path, sleeps: Sleeps
) -> None:
    url = https_server.add("/m.bin", DATA, die_once_at=70_000, ignore_range=True)
    result = fetch(url, sha256=DIGEST, out=tmp_path, sleep=sleeps)
    assert not result.resumed
    assert result.path.read_bytes() == DATA
    assert [r.headers.get("Range") for r in https_server.requests_for("/m.bin")] == [
        None,
        "bytes=70000-",
    ]


def test_changed_file_is_not_spliced(https_server: Server, tmp_path: Path, sleeps: Sleeps) -> None:
    # The file changes between the attempts: If-Range no longer matches, the server sends the
    # whole new file, and the pin (of the old one) refuses it rather than a spliced mix.
    url = https_server.add("/m.bin", DATA, die_once_at=70_000)
    https_server.routes["/m.bin"].etag = '"v1"'

    def change(seconds: float) -> None:
        sleeps(seconds)
        route = https_server.routes["/m.bin"]
        route.body, route.etag = DATA[::-1], '"v2"'

    with pytest.raises(DigestMismatch) as info:
        fetch(url, sha256=DIGEST, out=tmp_path, sleep=change)
    assert info.value.actual == "sha256:" + sha(DATA[::-1])


# -- retries -------------------------------------------------------------------------------------


def test_retries_exhausted(https_server: Server, tmp_path: Path, sleeps: Sleeps) -> None:
    url = https_server.add("/m.bin", DATA, status=503)
    with pytest.raises(DownloadError, match=r"HTTP 503.*gave up after 4 attempts"):
        fetch(url, sha256=DIGEST, out=tmp_path, retries=3, sleep=sleeps)
    assert https_server.count("/m.bin") == 4
    assert len(sleeps.delays) == 3
    # Exponential (with jitter within [half, all] of each step): 0.25-0.5, 0.5-1, 1-2 s.
    for delay, step in zip(sleeps.delays, (0.5, 1.0, 2.0), strict=True):
        assert step / 2 <= delay <= step


def test_transient_errors_are_retried(https_server: Server, tmp_path: Path, sleeps: Sleeps) -> None:
    url = https_server.add("/m.bin", DATA, fail_times=2)
    assert fetch(url, sha256=DIGEST, out=tmp_path, sleep=sleeps).size == len(DATA)
    assert https_server.count("/m.bin") == 3


def test_not_found_is_not_retried(https_server: Server, tmp_path: Path, sleeps: Sleeps) -> None:
    url = https_server.url("/missing.bin")
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(url, sha256=DIGEST, out=tmp_path, sleep=sleeps)
    assert sleeps.delays == []


# -- redirects, allowlists, plain http ----------------------------------------------------------


def test_redirect_outside_the_allowlist_is_refused(https_server: Server, tmp_path: Path) -> None:
    https_server.add("/m.bin", DATA)
    url = https_server.add("/r", redirect_to=https_server.url("/m.bin", host="localhost"))
    policy = sources(https_server.url("/*"))  # 127.0.0.1 only
    with pytest.raises(SourceNotAllowed, match="refused a redirect") as info:
        fetch(url, sha256=DIGEST, out=tmp_path / "m.bin", policy=policy)
    assert info.value.url == https_server.url("/m.bin", host="localhost")
    assert https_server.count("/m.bin") == 0
    assert not (tmp_path / "m.bin").exists()


def test_redirect_inside_the_allowlist_is_followed(https_server: Server, tmp_path: Path) -> None:
    https_server.add("/m.bin", DATA)
    url = https_server.add("/r", redirect_to=https_server.url("/m.bin", host="localhost"))
    policy = sources(https_server.url("/*"), https_server.url("/*", host="localhost"))
    result = fetch(url, sha256=DIGEST, out=tmp_path / "m.bin", policy=policy)
    assert result.final_url == https_server.url("/m.bin", host="localhost")
    assert result.url == url


def test_redirect_loop_is_cut(https_server: Server, tmp_path: Path) -> None:
    url = https_server.add("/loop", redirect_to="/loop")
    with pytest.raises(DownloadError, match="more than 5 redirects"):
        fetch(url, sha256=DIGEST, out=tmp_path / "x")
    assert https_server.count("/loop") == 6


def test_https_to_http_redirect_is_refused(
    https_server: Server, http_server: Server, tmp_path: Path
) -> None:
    http_server.add("/m.bin", DATA)
    url = https_server.add("/r", redirect_to=http_server.url("/m.bin"))
    with pytest.raises(SourceNotAllowed, match="from https to"):
        fetch(url, sha256=DIGEST, out=tmp_path / "m.bin", allow_http_loopback=True)
    assert http_server.requests == []


def test_plain_http_only_to_loopback_with_the_flag(http_server: Server, tmp_path: Path) -> None:
    url = http_server.add("/m.bin", DATA)
    with pytest.raises(SourceNotAllowed, match="allow_http_loopback"):
        fetch(url, sha256=DIGEST, out=tmp_path)
    assert http_server.requests == []
    with pytest.raises(SourceNotAllowed, match="plain http is refused"):
        fetch("http://models.example.com/m.bin", sha256=DIGEST, allow_http_loopback=True)
    result = fetch(url, sha256=DIGEST, out=tmp_path, allow_http_loopback=True)
    assert result.path.read_bytes() == DATA


def test_url_outside_the_policy_is_refused_before_any_request(
    https_server: Server, tmp_path: Path
) -> None:
    url = https_server.add("/private/m.bin", DATA)
    policy = sources(https_server.url("/zoo/*"))
    with pytest.raises(SourceNotAllowed, match="not an allowed source"):
        fetch(url, sha256=DIGEST, out=tmp_path, policy=policy)
    with pytest.raises(SourceNotAllowed):  # a policy without [sources] allows no download
        fetch(url, sha256=DIGEST, out=tmp_path, policy=sources_none())
    assert https_server.requests == []
    allowed = https_server.add("/zoo/m.bin", DATA)
    assert fetch(allowed, sha256=DIGEST, out=tmp_path, policy=policy).size == len(DATA)


def sources_none() -> Policy:
    pub = Path(__file__).parent  # any directory: the policy below names no keys
    return Policy.from_toml('[sources]\nallow = ["https://elsewhere.example/*"]\n', pub)


def test_credentials_in_url_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceNotAllowed, match="credentials"):
        fetch("https://user:pw@127.0.0.1:1/m.bin", sha256=DIGEST, out=tmp_path)


# -- mirrors ------------------------------------------------------------------------------------


def test_mirrors_are_tried_in_order(
    https_server: Server, tmp_path: Path, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    down = https_server.add("/a/m.bin", DATA, status=500)
    bad = https_server.add("/b/m.bin", b"tampered")
    good = https_server.add("/c/m.bin", DATA)
    never = https_server.add("/d/m.bin", DATA)
    with caplog.at_level(logging.WARNING, logger="modelseal.fetch"):
        result = fetch([down, bad, good, never], sha256=DIGEST, out=tmp_path, retries=0)
    assert result.url == good
    assert [r.path for r in https_server.requests] == ["/a/m.bin", "/b/m.bin", "/c/m.bin"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2
    assert down in warned[0]
    assert bad in warned[1]


def test_every_mirror_failing_reports_all(https_server: Server, tmp_path: Path) -> None:
    down = https_server.add("/a/m.bin", DATA, status=500)
    bad = https_server.add("/b/m.bin", b"tampered")
    with pytest.raises(DigestMismatch) as info:
        fetch([down, bad], sha256=DIGEST, out=tmp_path, retries=0)
    message = str(info.value)
    assert "every mirror failed" in message
    assert down in message
    assert bad in message
    assert "HTTP 500" in message
    assert sha(b"tampered") in message
    assert leftovers(tmp_path) == []


def test_one_disallowed_mirror_refuses_before_any_request(
    https_server: Server, tmp_path: Path
) -> None:
    good = https_server.add("/zoo/m.bin", DATA)
    other = https_server.url("/zoo/m.bin", host="localhost")
    with pytest.raises(SourceNotAllowed):
        fetch([good, other], sha256=DIGEST, out=tmp_path, policy=sources(good))
    assert https_server.requests == []


# -- TLS ----------------------------------------------------------------------------------------


def test_untrusted_certificate_is_refused(
    https_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps: Sleeps
) -> None:
    url = https_server.add("/m.bin", DATA)
    monkeypatch.delenv("SSL_CERT_FILE")
    with pytest.raises(DownloadError, match="certificate verification failed") as info:
        fetch(url, sha256=DIGEST, out=tmp_path, sleep=sleeps)
    assert "\n" not in str(info.value)
    assert "SSL_CERT_FILE" in str(info.value)
    assert https_server.requests == []
    assert sleeps.delays == []  # a certificate does not get better by trying again


# -- the low-level call (used by the lock and the zoo wrappers) --------------------------------


def test_download_verified(https_server: Server, tmp_path: Path) -> None:
    url = https_server.add("/m.bin", DATA)
    dest = tmp_path / "sub" / "file"
    assert download_verified(url, dest, sha256=DIGEST) == (
        f"sha256:{DIGEST}",
        len(DATA),
        url,
        False,
    )
    assert dest.read_bytes() == DATA
    digest, _size, _final, _resumed = download_verified(url, tmp_path / "tofu", sha256=None)
    assert digest == f"sha256:{DIGEST}"


def test_progress_is_reported(https_server: Server, tmp_path: Path) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.total = 0
            self.done = 0

        def start(self, total_bytes: int) -> None:
            self.total = total_bytes

        def advance(self, nbytes: int) -> None:
            self.done += nbytes

    url = https_server.add("/m.bin", DATA)
    progress = Recorder()
    fetch(url, sha256=DIGEST, out=tmp_path, progress=progress)
    assert progress.total == progress.done == len(DATA)


# -- archives -----------------------------------------------------------------------------------


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_archive_is_extracted_and_sealed(https_server: Server, tmp_path: Path) -> None:
    payload = zip_bytes({"r50/model.params": DATA, "r50/config.json": b"{}"})
    url = https_server.add("/zoo/r50-v1.zip", payload)
    result = fetch(url, sha256=sha(payload), out=tmp_path)
    assert result.extracted
    assert result.path == tmp_path / "r50-v1"
    assert (result.path / "r50" / "model.params").read_bytes() == DATA
    assert result.seal == result.path / "model.sig"
    assert result.seal.is_file()
    checked = verify(result.path, allow_unsigned=True)
    assert checked.model_name == "r50-v1"
    assert checked.root_digest == result.root_digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r50-v1"]  # archive removed


def test_archive_signed_with_key(https_server: Server, tmp_path: Path) -> None:
    private, public = keys.write_keypair(tmp_path / "k", keys.KeyAlgorithm("ecdsa-p256"))
    payload = zip_bytes({"model.params": DATA})
    url = https_server.add("/r50.zip", payload)
    result = fetch(url, sha256=sha(payload), out=tmp_path / "models" / "r50", key=private)
    assert verify(result.path, public_keys=[public]).model_name == "r50"


def test_unsafe_archive_is_refused_and_nothing_lands(https_server: Server, tmp_path: Path) -> None:
    payload = zip_bytes({"../evil.py": b"print('owned')", "ok.bin": b"x"})
    url = https_server.add("/r50.zip", payload)
    with pytest.raises(UnsafeArchiveError) as info:
        fetch(url, sha256=sha(payload), out=tmp_path / "out" / "r50")
    assert info.value.member == "../evil.py"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "evil.py").exists()


def test_no_extract_keeps_the_archive(https_server: Server, tmp_path: Path) -> None:
    payload = zip_bytes({"../evil.py": b"x"})
    url = https_server.add("/r50.zip", payload)
    result = fetch(url, sha256=sha(payload), out=tmp_path, extract=False)
    assert result.path == tmp_path / "r50.zip"
    assert not result.extracted


def test_existing_extraction_target_is_refused(https_server: Server, tmp_path: Path) -> None:
    payload = zip_bytes({"a.bin": b"x"})
    url = https_server.add("/r50.zip", payload)
    (tmp_path / "r50").mkdir()
    with pytest.raises(UsageError, match="already exists"):
        fetch(url, sha256=sha(payload), out=tmp_path)
    assert https_server.requests == []
