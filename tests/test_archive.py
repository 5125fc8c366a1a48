"""Safe archive extraction: each refusal with the attack, and the honest archive that passes."""

from __future__ import annotations

import io
import stat
import tarfile
import unicodedata
import warnings
import zipfile
from pathlib import Path

import pytest

from modelseal.errors import UsageError
from modelseal.fetch import UnsafeArchiveError, extract_archive


def make_zip(path: Path, files: dict[str, bytes], *, mode: int | None = None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in files.items() if isinstance(files, dict) else files:
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                if mode is not None:
                    info.external_attr = mode << 16
                    info.create_system = 3
                archive.writestr(info, data)
    return path


def zip_of(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    """A zip with possibly repeated names."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return path


def tar_member(
    name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **fields: object
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644 if kind != tarfile.DIRTYPE else 0o755
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def refused(archive: Path, tmp_path: Path, **caps: int) -> UnsafeArchiveError:
    dest = tmp_path / "out" / "model"
    with pytest.raises(UnsafeArchiveError) as info:
        extract_archive(archive, dest, **caps)  # type: ignore[arg-type]
    assert not dest.exists()
    assert list((tmp_path / "out").iterdir()) == []  # the temporary directory is gone too
    assert "\n" not in str(info.value)
    return info.value


# -- honest archives ------------------------------------------------------------------------------


def test_good_zip(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "m.zip", {"m/w.bin": b"w" * 1000, "m/config.json": b"{}"})
    dest = tmp_path / "out"
    extract_archive(archive, dest)
    assert (dest / "m" / "w.bin").read_bytes() == b"w" * 1000
    assert stat.S_IMODE((dest / "m" / "config.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "m").stat().st_mode) == 0o755
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz", "w"])
def test_good_tar(tmp_path: Path, mode: str) -> None:
    archive = make_tar(
        tmp_path / "m.tar",
        [
            tar_member("./", kind=tarfile.DIRTYPE),
            tar_member("./m", kind=tarfile.DIRTYPE),
            # setuid and world-writable in the archive: written 0644 all the same
            tar_member("./m/w.bin", b"weights", mode=0o4777),
        ],
        mode,
    )
    dest = tmp_path / "out"
    extract_archive(archive, dest)
    assert (dest / "m" / "w.bin").read_bytes() == b"weights"
    assert stat.S_IMODE((dest / "m" / "w.bin").stat().st_mode) == 0o644


def test_kind_comes_from_content_not_name(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "m.tar.gz", {"a.bin": b"x"})
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "a.bin").read_bytes() == b"x"


def test_destination_must_not_exist(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "m.zip", {"a.bin": b"x"})
    (tmp_path / "out").mkdir()
    with pytest.raises(UsageError, match="already exists"):
        extract_archive(archive, tmp_path / "out")


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "m.zip"
    junk.write_bytes(b"this is no archive" * 10)
    refused(junk, tmp_path)


def test_empty_archive(tmp_path: Path) -> None:
    error = refused(make_zip(tmp_path / "m.zip", {}), tmp_path)
    assert "no files" in str(error)


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../evil.py", "m/../../evil.py", "/etc/cron.d/evil", "m\\..\\evil", "C:/evil", "m//x"]
)
def test_bad_names_in_zip(tmp_path: Path, name: str) -> None:
    archive = zip_of(tmp_path / "m.zip", [("ok.bin", b"ok"), (name, b"evil")])
    assert refused(archive, tmp_path).member == name
    assert not (tmp_path / "evil.py").exists()


@pytest.mark.parametrize("name", ["../evil.py", "/tmp/evil.py", "./../evil.py"])
def test_bad_names_in_tar(tmp_path: Path, name: str) -> None:
    archive = make_tar(tmp_path / "m.tgz", [tar_member("ok.bin", b"ok"), tar_member(name, b"x")])
    assert refused(archive, tmp_path).member == name


def test_symlink_in_tar(tmp_path: Path) -> None:
    for target in ("/etc/passwd", "ok.bin"):  # out of the tree, and even inside it
        archive = make_tar(
            tmp_path / "m.tgz",
            [
                tar_member("ok.bin", b"ok"),
                tar_member("link", kind=tarfile.SYMTYPE, linkname=target),
            ],
        )
        error = refused(archive, tmp_path)
        assert error.member == "link"
        assert "link" in str(error)


def test_hardlink_in_tar(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "m.tgz",
        [tar_member("ok.bin", b"ok"), tar_member("hard", kind=tarfile.LNKTYPE, linkname="ok.bin")],
    )
    assert refused(archive, tmp_path).member == "hard"


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_devices_and_fifos_in_tar(tmp_path: Path, kind: bytes) -> None:
    archive = make_tar(tmp_path / "m.tgz", [tar_member("dev", kind=kind, devmajor=1, devminor=3)])
    assert refused(archive, tmp_path).member == "dev"


def test_symlink_in_zip(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "m.zip", {"link": b"/etc/passwd"}, mode=stat.S_IFLNK | 0o777)
    assert refused(archive, tmp_path).member == "link"


def test_unix_regular_file_mode_in_zip_passes(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "m.zip", {"a.bin": b"x"}, mode=stat.S_IFREG | 0o4755)
    extract_archive(archive, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out" / "a.bin").stat().st_mode) == 0o644


# -- duplicates and collisions --------------------------------------------------------------------


def test_duplicate_names(tmp_path: Path) -> None:
    archive = zip_of(tmp_path / "m.zip", [("a.bin", b"first"), ("a.bin", b"second")])
    assert refused(archive, tmp_path).member == "a.bin"


def test_names_equal_after_case_folding(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "m.tgz", [tar_member("Model.bin", b"1"), tar_member("model.BIN")])
    assert refused(archive, tmp_path).member == "model.BIN"


def test_names_equal_after_nfc(tmp_path: Path) -> None:
    composed, decomposed = "caf\u00e9.bin", unicodedata.normalize("NFD", "caf\u00e9.bin")
    archive = zip_of(tmp_path / "m.zip", [(composed, b"1"), (decomposed, b"2")])
    assert refused(archive, tmp_path).member == decomposed


def test_file_used_as_directory(tmp_path: Path) -> None:
    archive = zip_of(tmp_path / "m.zip", [("a", b"file"), ("a/b", b"inside")])
    assert refused(archive, tmp_path).member == "a/b"


# -- caps -----------------------------------------------------------------------------------------


def test_too_many_members(tmp_path: Path) -> None:
    files = {f"f{i}.bin": b"x" for i in range(5)}
    error = refused(make_zip(tmp_path / "m.zip", files), tmp_path, max_files=3)
    assert "more than 3 members" in str(error)
    tar = make_tar(tmp_path / "m.tgz", [tar_member(f"f{i}.bin", b"x") for i in range(5)])
    assert refused(tar, tmp_path, max_files=3).member == "f3.bin"
    extract_archive(tar, tmp_path / "ok", max_files=5)


def test_zip_bomb(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "m.zip", {"zeros.bin": bytes(4_000_000)})
    assert archive.stat().st_size < 20_000  # small compressed, large uncompressed
    error = refused(archive, tmp_path, max_bytes=1_000_000)
    assert "1000000" in str(error)
    extract_archive(archive, tmp_path / "ok", max_bytes=4_000_000)


def test_zip_with_lying_sizes(tmp_path: Path) -> None:
    # The central directory claims 10 bytes; the data holds 4 MB of zeros. Only bytes actually
    # written count, and what zipfile reads past the claim fails its CRC: refused either way.
    archive = make_zip(tmp_path / "m.zip", {"zeros.bin": bytes(4_000_000)})
    data = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        at = data.find(signature) + offset
        data[at : at + 4] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    refused(archive, tmp_path, max_bytes=1_000_000)


def test_tar_bomb_counts_bytes_written(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "m.tgz", [tar_member(f"z{i}.bin", bytes(600_000)) for i in (1, 2)]
    )
    error = refused(archive, tmp_path, max_bytes=1_000_000)
    assert error.member == "z2.bin"


def test_encrypted_zip_entry(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "m.zip", {"secret.bin": b"x" * 100})
    data = bytearray(archive.read_bytes())
    for signature, offset in ((b"PK\x01\x02", 8), (b"PK\x03\x04", 6)):
        at = data.find(signature) + offset
        data[at] |= 0x1  # the "encrypted" general-purpose flag
    archive.write_bytes(bytes(data))
    assert refused(archive, tmp_path).member == "secret.bin"
