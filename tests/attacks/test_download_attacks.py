"""Adversarial review of the trusted-download code (fetch, the engine, archives, cache, lock).

Each attack is written as the attacker would try it: a hostile mirror or redirect target, a
lying server, a crafted archive, a planted cache entry, a hostile lock entry in a pull request.
The honest counterpart shows the rule does not refuse ordinary use. Loopback only, no sleeps.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from httpserver import Server, https_server
from modelseal.cache import Cache
from modelseal.errors import ModelMismatchError, UsageError
from modelseal.fetch import (
    DigestMismatch,
    DownloadError,
    SourceNotAllowed,
    UnsafeArchiveError,
    download_verified,
    extract_archive,
    fetch,
)
from modelseal.lock import Lock, LockedModel, LockError, Resolved, materialize, resolve, sync
from modelseal.lock import verify_lock as verify_lock_
from modelseal.policy import Policy, url_matches

__all__ = ["https_server"]  # a fixture, imported for pytest

DATA = bytes(range(256)) * 300
HEX = hashlib.sha256(DATA).hexdigest()
FAST: dict[str, Any] = {"retries": 0, "timeout": 10.0}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sources(*patterns: str) -> Policy:
    allow = ", ".join(f'"{p}"' for p in patterns)
    return Policy.from_toml(f"[sources]\nallow = [{allow}]\n", ".", source="test-policy")


def no_wait(_seconds: float) -> None:
    pass


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# -- allowlist: URL parsing differentials between our check and urllib3 ------------------------


def test_backslash_host_differential_is_refused() -> None:
    # urlsplit reads the host as "evil.test\.allowed.test" (a subdomain of allowed.test);
    # urllib3, which makes the request, ends the authority at the backslash: host evil.test.
    from urllib3.util import parse_url

    url = "https://evil.test\\.allowed.test/model.bin"
    assert parse_url(url).host == "evil.test"
    policy = sources("https://*.allowed.test/*")
    assert not url_matches(url, "https://*.allowed.test/*")
    with pytest.raises(SourceNotAllowed):
        download_verified(url, Path("unused"), sha256=HEX, policy=policy)
    # Without a policy too: a URL two parsers read differently is never requested.
    with pytest.raises(SourceNotAllowed):
        download_verified(url, Path("unused"), sha256=HEX)
    assert url_matches("https://cdn.allowed.test/model.bin", "https://*.allowed.test/*")


@pytest.mark.parametrize(
    "url",
    [
        "https://\uff43\uff44\uff4e.allowed.test/m.bin",  # fullwidth "cdn": IDNA maps it later
        "https://evil.test%00.allowed.test/m.bin",
        "https://evil.test%2f.allowed.test/m.bin",
        "https://evil.test;.allowed.test/m.bin",
        "https://evil.test\\@cdn.allowed.test/m.bin",
        "https://cdn.allowed.test\\@evil.test/m.bin",
        "https://user@cdn.allowed.test/m.bin",
        "https://cdn.allowed.test./m.bin",  # trailing dot: another name, not matched
        "https://evil.test#@cdn.allowed.test/m.bin",
        "https://evil.test?@cdn.allowed.test/m.bin",
        "https://cdn.allowed.test:444/m.bin",
        "https://allowed.test/m.bin",  # "*." matches subdomains only
        "https://cdn.allowed.test/a/%2e%2e/m.bin",
        "https://cdn.allowed.test/a/..%2f../m.bin",
        "http://cdn.allowed.test/m.bin",
    ],
)
def test_allowlist_parsing_tricks_never_match(url: str) -> None:
    assert not url_matches(url, "https://*.allowed.test/*")


def test_allowlist_honest_variants_match() -> None:
    pattern = "https://*.allowed.test/zoo/*"
    for url in (
        "https://CDN.Allowed.Test/zoo/m.bin",
        "https://cdn.allowed.test:443/zoo/m.bin",
        "https://a.b.allowed.test/zoo/m.bin?x=1",
    ):
        assert url_matches(url, pattern), url
    assert url_matches("https://[::1]:8443/zoo/m.bin", "https://[::1]:8443/zoo/*")


# -- redirects ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "file:///etc/passwd",
        "data:application/octet-stream;base64,AAAA",
        "//evil.test/m.bin",  # protocol-relative: https://evil.test/m.bin
        "https://evil.test\\.localhost/m.bin",
        "ftp://localhost/m.bin",
    ],
)
def test_redirect_tricks_are_refused(https_server: Server, tmp_path: Path, location: str) -> None:
    url = https_server.add("/r", redirect_to=location, redirect_status=307)
    policy = sources(https_server.url("/*"))
    with pytest.raises(SourceNotAllowed):
        download_verified(url, tmp_path / "m.bin", sha256=HEX, policy=policy, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_relative_redirect_on_allowed_host_is_followed(
    https_server: Server, tmp_path: Path
) -> None:
    https_server.add("/zoo/m.bin", DATA)
    url = https_server.add("/old/m.bin", redirect_to="../zoo/m.bin", redirect_status=308)
    policy = sources(https_server.url("/*"))
    digest, _size, final, _ = download_verified(
        url, tmp_path / "m.bin", sha256=HEX, policy=policy, **FAST
    )
    assert (digest, final) == ("sha256:" + HEX, https_server.url("/zoo/m.bin"))


def test_redirect_loop_is_bounded(https_server: Server, tmp_path: Path) -> None:
    url = https_server.add("/loop", redirect_to="/loop")
    with pytest.raises(DownloadError, match="redirects"):
        download_verified(url, tmp_path / "m.bin", sha256=HEX, **FAST)
    assert https_server.count("/loop") == 6


# -- content encoding, resume ------------------------------------------------------------------


def test_content_encoding_is_not_decoded_the_pin_covers_the_bytes_as_sent(
    https_server: Server, tmp_path: Path
) -> None:
    # A mirror that gzips on the fly must not turn a tiny body into a huge one or change what
    # the pin covers: the bytes are stored and hashed exactly as received.
    packed = gzip.compress(DATA)
    url = https_server.add("/m.bin", packed, headers={"Content-Encoding": "gzip"})
    with pytest.raises(DigestMismatch):
        download_verified(url, tmp_path / "a", sha256=HEX, **FAST)
    download_verified(url, tmp_path / "b", sha256=sha(packed), max_bytes=len(packed), **FAST)
    assert (tmp_path / "b").read_bytes() == packed
    assert https_server.requests[0].headers.get("Accept-Encoding") == "identity"


def test_resume_with_a_range_we_did_not_ask_for_is_not_spliced(
    https_server: Server, tmp_path: Path
) -> None:
    # The 206 claims to start at byte 0 of a longer file: splicing it at our offset would
    # build a file nobody served. The engine restarts cleanly instead.
    url = https_server.add(
        "/m.bin", DATA, die_once_at=10_000, headers={"Content-Range": f"bytes 0-99/{len(DATA)}"}
    )
    digest, size, _, resumed = download_verified(
        url, tmp_path / "m.bin", sha256=HEX, retries=3, timeout=10.0, sleep=no_wait
    )
    assert (digest, size, resumed) == ("sha256:" + HEX, len(DATA), False)
    assert (tmp_path / "m.bin").read_bytes() == DATA


def test_server_ignoring_if_range_cannot_mix_two_versions(
    https_server: Server, tmp_path: Path
) -> None:
    new = bytes(reversed(DATA))
    url = https_server.add("/m.bin", DATA, die_once_at=10_000, etag='"v1"')

    def swap(_seconds: float) -> None:  # between attempts the file changes, the ETag lies
        https_server.add("/m.bin", new, etag='"v1"')

    for pin in (HEX, sha(new)):
        https_server.add("/m.bin", DATA, die_once_at=10_000, etag='"v1"')
        with pytest.raises(DigestMismatch):
            download_verified(url, tmp_path / "m.bin", sha256=pin, retries=2, sleep=swap)
        assert list(tmp_path.iterdir()) == []


def test_honest_version_change_restarts_via_if_range(https_server: Server, tmp_path: Path) -> None:
    new = bytes(reversed(DATA))
    url = https_server.add("/m.bin", DATA, die_once_at=10_000, etag='"v1"')

    def swap(_seconds: float) -> None:
        https_server.add("/m.bin", new, etag='"v2"')

    digest, _, _, resumed = download_verified(
        url, tmp_path / "m.bin", sha256=sha(new), retries=2, sleep=swap
    )
    assert (digest, resumed) == ("sha256:" + sha(new), False)


def test_chunked_body_without_length_is_capped(https_server: Server, tmp_path: Path) -> None:
    url = https_server.add("/m.bin", DATA, no_length=True)
    with pytest.raises(DownloadError, match="size cap"):
        download_verified(url, tmp_path / "m.bin", sha256=HEX, max_bytes=len(DATA) - 1, **FAST)
    assert list(tmp_path.iterdir()) == []


# -- the destination and the temporary file ----------------------------------------------------


def test_symlink_planted_at_destination_is_replaced_not_followed(
    https_server: Server, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    victim.chmod(0o600)
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / "m.bin"
    dest.symlink_to(victim)
    url = https_server.add("/m.bin", DATA)
    result = fetch(url, sha256=HEX, out=dest, **FAST)
    assert not dest.is_symlink()
    assert dest.read_bytes() == DATA
    assert victim.read_bytes() == b"precious"
    assert (victim.stat().st_mode & 0o777) == 0o600
    assert result.path == dest


def test_destination_symlink_to_a_directory_is_refused(
    https_server: Server, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "m.bin").symlink_to(elsewhere)
    url = https_server.add("/m.bin", DATA)
    with pytest.raises(UsageError):
        download_verified(url, tmp_path / "m.bin", sha256=HEX, **FAST)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("name", ["..%2f..%2fevil.bin", "%2e%2e", "a%5cb.bin", "%00.bin"])
def test_file_name_from_the_url_cannot_escape(
    https_server: Server, tmp_path: Path, name: str
) -> None:
    url = https_server.url("/zoo/" + name)
    with pytest.raises(UsageError, match="file name"):
        fetch(url, sha256=HEX, out=tmp_path / "out/", **FAST)
    assert https_server.requests == []


# -- archives ----------------------------------------------------------------------------------


def _extract_refused(data: bytes, tmp_path: Path, suffix: str = ".bin") -> UnsafeArchiveError:
    archive = tmp_path / ("a" + suffix)
    archive.write_bytes(data)
    with pytest.raises(UnsafeArchiveError) as caught:
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == [archive.name]
    return caught.value


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries:
            archive.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "entries",
    [
        [("a/", b""), ("a", b"x")],  # a directory, then a file of the same name
        [("//etc/x", b"x")],  # absolute through an empty first component
        [("C:x.bin", b"x")],  # a drive-relative Windows path
        [("a\\..\\..\\x", b"x")],
        [("w/x.bin", b"1"), ("w\\x.bin", b"2")],  # equal where "\" is a separator
        [("Caf\u00e9.bin", b"1"), ("Cafe\u0301.bin", b"2")],  # equal after NFC
    ],
)
def test_zip_name_tricks_are_refused(tmp_path: Path, entries: list[tuple[str, bytes]]) -> None:
    _extract_refused(_zip(entries), tmp_path)


def test_zip_whose_local_header_disagrees_with_central_directory(tmp_path: Path) -> None:
    data = _zip([("good.bin", b"weights")])
    first = data.index(b"good.bin")  # the local header comes first
    forged = data[:first] + b"../x.bin" + data[first + 8 :]
    _extract_refused(forged, tmp_path)
    assert not (tmp_path.parent / "x.bin").exists()


def _tar(members: list[tarfile.TarInfo], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for info in members:
            archive.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return buffer.getvalue()


def test_tar_pax_header_overriding_the_name_is_checked(tmp_path: Path) -> None:
    info = tarfile.TarInfo("ok.bin")
    info.size = 1
    info.pax_headers = {"path": "../evil.bin"}
    error = _extract_refused(_tar([info]), tmp_path)
    assert error.member == "../evil.bin"


def test_tar_symlink_to_directory_then_file_through_it(tmp_path: Path) -> None:
    link = tarfile.TarInfo("d")
    link.type, link.linkname = tarfile.SYMTYPE, "/tmp"
    through = tarfile.TarInfo("d/x.bin")
    through.size = 1
    assert _extract_refused(_tar([link, through]), tmp_path).member == "d"


def test_tar_with_a_chain_of_long_name_headers_is_refused_cleanly(tmp_path: Path) -> None:
    # tarfile follows GNU long-name (and pax) headers recursively: a few thousand chained
    # headers raised RecursionError, which escaped as a crash instead of a refusal.
    chain = io.BytesIO()
    for _ in range(3000):
        info = tarfile.TarInfo("././@LongLink")
        info.type, info.size = tarfile.GNUTYPE_LONGNAME, 11
        chain.write(info.tobuf(format=tarfile.GNU_FORMAT) + b"y" * 10 + b"\0" * 502)
    last = tarfile.TarInfo("ok.bin")
    last.size = 1
    tail = last.tobuf(format=tarfile.GNU_FORMAT) + b"x" + b"\0" * 511 + b"\0" * 1024
    assert "headers" in str(_extract_refused(chain.getvalue() + tail, tmp_path))
    honest = _tar([last], tarfile.GNU_FORMAT)
    (tmp_path / "h.tar").write_bytes(honest)
    extract_archive(tmp_path / "h.tar", tmp_path / "h")
    assert (tmp_path / "h" / "ok.bin").read_bytes() == b"x"


def test_many_empty_members_hit_the_count_cap(tmp_path: Path) -> None:
    members = []
    for i in range(50):
        info = tarfile.TarInfo(f"e{i}")
        members.append(info)
    archive = tmp_path / "a.tar"
    archive.write_bytes(_tar(members))
    with pytest.raises(UnsafeArchiveError, match="cap"):
        extract_archive(archive, tmp_path / "out", max_files=49)
    extract_archive(archive, tmp_path / "ok", max_files=50)


# -- the cache ---------------------------------------------------------------------------------


def test_cache_entry_symlinked_to_a_matching_file_elsewhere_is_not_served(tmp_path: Path) -> None:
    # Even with the right digest: a link can be re-pointed after the check.
    cache = Cache(tmp_path / "cache")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(DATA)
    entry = cache.path_for(HEX)
    cache.put(outside, HEX)
    entry.unlink()
    entry.symlink_to(outside)
    assert cache.get(HEX) is None
    assert not os.path.lexists(entry)
    assert outside.read_bytes() == DATA


def test_cache_directory_where_a_file_is_expected_is_removed(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    cache.put(_write(tmp_path / "f", DATA), HEX)
    entry = cache.path_for(HEX)
    entry.unlink()
    entry.mkdir()
    assert cache.check(HEX).status == "mismatch"
    assert cache.get(HEX) is None
    assert not entry.exists()


def test_cache_writable_by_others_is_refused_for_reads_too(tmp_path: Path) -> None:
    # The path `get` returns is loaded later; anyone who can write the cache could swap it in
    # between. Only writes were refused; a shared cache is now refused for every use.
    cache = Cache(tmp_path / "cache")
    cache.put(_write(tmp_path / "f", DATA), HEX)
    assert cache.get(HEX) == cache.path_for(HEX)
    cache.root.chmod(0o777)
    for use in (cache.get, cache.check, lambda h: cache.get_model("sha256:" + h)):
        with pytest.raises(UsageError, match="writable by others"):
            use(HEX)
    cache.root.chmod(0o700)
    os.chown(cache.root, 65534, -1)  # another user's cache (the tests run as root or not)
    if os.stat(cache.root).st_uid != os.getuid():
        with pytest.raises(UsageError, match="another user"):
            cache.get(HEX)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- the lock ----------------------------------------------------------------------------------


def test_lock_root_digest_swapped_to_another_cached_model_is_not_served(
    https_server: Server, tmp_path: Path
) -> None:
    # A pull request keeps bert's (publisher-checked) sha256 but points its root_digest at
    # another model already in the cache. Before the fix a warm cache served that other model
    # and `lock verify` said ok; a cold cache refused it: the outcome depended on the cache.
    cache = Cache(tmp_path / "cache")
    evil_archive, bert_archive = tar_gz({"w.bin": b"backdoor"}), tar_gz({"w.bin": b"honest"})
    evil_url = https_server.add("/evil.tar.gz", evil_archive)
    bert_url = https_server.add("/bert.tar.gz", bert_archive)
    evil, bert = (
        resolve(LockedModel(name, (url,), sha(data)), cache=cache, extract=True, **FAST)
        for name, url, data in (("evil", evil_url, evil_archive), ("bert", bert_url, bert_archive))
    )
    assert evil.model.root_digest
    assert bert.model.root_digest
    forged = LockedModel(
        "bert",
        (bert_url,),
        sha(bert_archive),
        root_digest=evil.model.root_digest,
        files=evil.model.files,
    )
    [check] = verify_lock_(Lock((forged,)), cache=cache)
    assert check.status == "mismatch"
    with pytest.raises(ModelMismatchError):
        resolve(forged, cache=cache, **FAST)
    # Honest: both pins served from the cache, nothing downloaded again.
    count = len(https_server.requests)
    for honest in (evil.model, bert.model):
        got = resolve(honest, cache=cache, **FAST)
        assert got.source == "cache"
        assert (got.path / "w.bin").exists()
    assert len(https_server.requests) == count
    assert all(c.ok for c in verify_lock_(Lock((evil.model, bert.model)), cache=cache))


def _resolved(tmp_path: Path, name: str, data: bytes = DATA) -> Resolved:
    entry = LockedModel(name, (f"https://h.test/{name.replace('/', '_')}",), sha(data))
    return Resolved(_write(tmp_path / f"src-{sha(name.encode())[:8]}", data), entry, "cache")


def test_lock_name_dot_cannot_replace_the_out_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "other-model.bin").write_bytes(b"keep")
    with pytest.raises(UsageError, match="directory itself"):
        materialize(_resolved(tmp_path, "."), out)
    assert (out / "other-model.bin").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("name", ["../evil.bin", "/etc/evil.bin", "a/../../evil.bin", "a\\b"])
def test_lock_name_cannot_leave_out(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError):
        materialize(_resolved(tmp_path, name), tmp_path / "out")
    assert not (tmp_path / "evil.bin").exists()


def test_lock_names_overlapping_under_out_are_refused(https_server: Server, tmp_path: Path) -> None:
    # "bert/w.bin" would overwrite a file inside the verified copy of "bert" after its check.
    archive = tar_gz({"w.bin": b"honest"})
    bert = LockedModel("bert", (https_server.add("/bert.tar.gz", archive),), sha(archive))
    bert = resolve(bert, cache=Cache(tmp_path / "c"), extract=True, **FAST).model
    inner = LockedModel("Bert/w.bin", (https_server.add("/w.bin", DATA),), HEX)
    lock = Lock((bert, inner))
    with pytest.raises(UsageError, match="overlap"):
        sync(lock, cache=Cache(tmp_path / "c"), out=tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists()
    results = sync(lock, cache=Cache(tmp_path / "c"), **FAST)  # without --out: no conflict
    assert [(r.name, r.status) for r in results] == [("Bert/w.bin", "fetched"), ("bert", "ok")]
    [one] = sync(lock, cache=Cache(tmp_path / "c"), out=tmp_path / "out", names=["bert"], **FAST)
    assert one.status == "ok"
    assert (tmp_path / "out" / "bert" / "w.bin").read_bytes() == b"honest"


@pytest.mark.parametrize(
    "urls",
    [
        ("https://H.test/m.bin", "https://h.test:443/m.bin"),
        ("https://h.test/m.bin", "HTTPS://h.test/m.bin"),
    ],
)
def test_lock_same_url_under_two_names_is_refused(urls: tuple[str, str]) -> None:
    text = "version = 1\n" + "".join(
        f'[[models]]\nname = "m{i}"\nurls = ["{u}"]\nsha256 = "{HEX}"\n' for i, u in enumerate(urls)
    )
    with pytest.raises(LockError, match="already a source"):
        Lock.loads(text)


@pytest.mark.parametrize(
    "entry",
    [
        'urls = ["https://h.test/m.bin"]\nurls = ["https://evil.test/m.bin"]',  # duplicate key
        'urls = ["https://evil.test\\\\.h.test/m.bin"]',  # a backslash (TOML unescapes it)
        'urls = ["https://h.test/m.bin"]\nsha256 = "' + HEX[:63] + '"',
        'urls = ["https://h.test/m.bin"]\n"sha256 " = "' + HEX + '"',
        'urls = ["https://h.test/m.bin"]\nsize = -1',
        'urls = ["file:///etc/passwd"]',
    ],
)
def test_lock_toml_tricks_are_refused(entry: str) -> None:
    text = f'version = 1\n[[models]]\nname = "m"\n{entry}\n'
    if "sha256" not in entry:
        text += f'sha256 = "{HEX}"\n'
    with pytest.raises(LockError):
        Lock.loads(text)
