"""ae4ad_core.archive: good nested batches come back in memory; traversal, links, bombs and deep nesting do not."""

from __future__ import annotations

import io
import os
import stat
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from _fixtures_io import dicom_bytes, png_bytes

from ae4ad_core.archive import ArchiveLimits, expand_uploads, is_zip, iter_archive
from ae4ad_core.errors import UnreadableImageError, UnsafeArchiveError
from ae4ad_core.io import read_images


def _zip(members: list[tuple[str | zipfile.ZipInfo, bytes]], *, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for member, content in members:
            archive.writestr(member, content)
    return buffer.getvalue()


def _set_declared_size(data: bytes, size: int) -> bytes:
    """Make the first member lie about its uncompressed size, in the local header and the central directory."""
    patched = bytearray(data)
    assert patched[:4] == b"PK\x03\x04"
    struct.pack_into("<I", patched, 22, size)
    central = patched.find(b"PK\x01\x02")
    struct.pack_into("<I", patched, central + 24, size)
    return bytes(patched)


def _assert_refused(error: pytest.ExceptionInfo, archive: str, *fragments: str) -> None:
    message = str(error.value)
    assert message.startswith(f"{archive}: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.fixture
def good_archive() -> bytes:
    png = png_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    inner = _zip([("c.dcm", dicom_bytes())])
    return _zip(
        [
            ("study/", b""),
            ("study/series1/a.dcm", dicom_bytes()),
            ("study/series1/b", dicom_bytes()),
            ("study/picture.png", png),
            ("study/nested.zip", inner),
            ("__MACOSX/study/._a.dcm", b"junk"),
            ("study/.DS_Store", b"junk"),
            ("study/Thumbs.db", b"junk"),
            ("windows\\style\\d.png", png),
        ]
    )


def test_good_nested_archive_comes_back_in_memory(
    good_archive: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    members = iter_archive(good_archive, name="batch.zip")
    assert [name for name, _ in members] == [
        "study/series1/a.dcm",
        "study/series1/b",
        "study/picture.png",
        "study/nested.zip/c.dcm",
        "windows/style/d.png",
    ]
    assert dict(members)["study/picture.png"] == png_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere
    images, errors = read_images(members)
    assert errors == [] and len(images) == 5


def test_archive_from_a_path_uses_the_file_name(tmp_path: Path, good_archive: bytes) -> None:
    path = tmp_path / "upload.zip"
    path.write_bytes(good_archive)
    assert len(iter_archive(path)) == 5
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(UnreadableImageError, match=r"^upload.zip: not a readable ZIP archive"):
        iter_archive(path)


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../../evil.dcm", "path traversal"),
        ("study/../../evil.dcm", "path traversal"),
        ("..\\..\\evil.dcm", "path traversal"),
        ("/etc/passwd", "an absolute path"),
        ("\\\\server\\share\\evil", "an absolute path"),
        ("C:\\Windows\\evil.dll", "an absolute path"),
        ("c:evil", "an absolute path"),
        ("study/D:/evil", "a drive letter"),
    ],
)
def test_paths_escaping_the_archive_are_refused(member: str, reason: str) -> None:
    data = _zip([("fine.png", b"ok"), (member, b"payload")])
    with pytest.raises(UnsafeArchiveError) as caught:
        iter_archive(data, name="evil.zip")
    _assert_refused(caught, "evil.zip", repr(member), reason)


def test_symbolic_links_are_refused() -> None:
    link = zipfile.ZipInfo("study/link.dcm")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    data = _zip([("study/a.png", b"ok"), (link, b"/etc/passwd")])
    with pytest.raises(UnsafeArchiveError) as caught:
        iter_archive(data, name="links.zip")
    _assert_refused(caught, "links.zip", "'study/link.dcm'", "a symbolic link")


def test_encrypted_members_are_refused() -> None:
    patched = bytearray(_zip([("secret.dcm", b"ciphertext")]))
    central = patched.find(b"PK\x01\x02")
    for offset in (6, central + 8):  # general purpose bit flag: bit 0 = encrypted
        patched[offset] |= 0x1
    data = bytes(patched)
    with pytest.raises(UnsafeArchiveError) as caught:
        iter_archive(data, name="locked.zip")
    _assert_refused(caught, "locked.zip", "'secret.dcm'", "encrypted")


def test_zip_bomb_is_refused_by_ratio_before_extraction() -> None:
    data = _zip([("readme.txt", b"hello"), ("zeros.bin", bytes(50 * 1024 * 1024))])
    started = time.perf_counter()
    with pytest.raises(UnsafeArchiveError) as caught:
        iter_archive(data, name="bomb.zip")
    assert time.perf_counter() - started < 0.5
    _assert_refused(caught, "bomb.zip", "'zeros.bin'", "compression ratio", "max_ratio=200")


def test_archive_ratio_and_size_caps() -> None:
    many_small_zeros = _zip([(f"z{index}.bin", bytes(200_000)) for index in range(20)])
    with pytest.raises(UnsafeArchiveError) as caught:
        iter_archive(many_small_zeros, name="spread.zip")
    _assert_refused(caught, "spread.zip", "the archive expands", "max_ratio")

    noise = [(f"n{index}.bin", os.urandom(300_000)) for index in range(4)]
    with pytest.raises(UnsafeArchiveError) as caught:
        iter_archive(_zip(noise), name="big.zip", limits=ArchiveLimits(max_total_bytes=1_000_000))
    _assert_refused(caught, "big.zip", "members declare 1200000 bytes in all", "max_total_bytes=1000000")
    with pytest.raises(UnsafeArchiveError) as caught:
        iter_archive(_zip(noise), name="big.zip", limits=ArchiveLimits(max_member_bytes=250_000))
    _assert_refused(caught, "big.zip", "'n0.bin'", "declares 300000 bytes", "max_member_bytes=250000")


def test_declared_sizes_that_lie_are_caught_while_reading() -> None:
    noise = os.urandom(200_000)
    honest = _zip([("data.bin", noise)])
    with pytest.raises(UnsafeArchiveError) as caught:
        iter_archive(_set_declared_size(honest, 1000), name="small-lie.zip")
    _assert_refused(caught, "small-lie.zip", "'data.bin'", "does not match its header")
    with pytest.raises(UnsafeArchiveError) as caught:
        iter_archive(_set_declared_size(honest, 400_000), name="big-lie.zip")
    _assert_refused(caught, "big-lie.zip", "'data.bin'", "200000 bytes read, 400000 declared")


def test_nesting_deeper_than_max_depth_is_refused() -> None:
    level3 = _zip([("deep.dcm", b"x")])
    level2 = _zip([("level3.zip", level3)])
    level1 = _zip([("level2.zip", level2)])
    with pytest.raises(UnsafeArchiveError) as caught:
        iter_archive(level1, name="outer.zip")
    _assert_refused(caught, "outer.zip", "'level2.zip/level3.zip'", "nested deeper than max_depth=2")
    members = iter_archive(level1, name="outer.zip", limits=ArchiveLimits(max_depth=3))
    assert members == [("level2.zip/level3.zip/deep.dcm", b"x")]
    with pytest.raises(UnsafeArchiveError, match="max_depth=1"):
        iter_archive(_zip([("inner.zip", level3)]), limits=ArchiveLimits(max_depth=1))


def test_too_many_files_are_refused_nested_ones_included() -> None:
    many = _zip([(f"f{index}.png", b"x") for index in range(50)])
    with pytest.raises(UnsafeArchiveError) as caught:
        iter_archive(many, name="many.zip", limits=ArchiveLimits(max_files=10))
    _assert_refused(caught, "many.zip", "50 members, more than max_files=10")
    nested = _zip(
        [(f"f{index}.png", b"x") for index in range(6)]
        + [("inner.zip", _zip([(f"i{index}", b"1") for index in range(6)]))]
    )
    with pytest.raises(UnsafeArchiveError, match="max_files=10"):
        iter_archive(nested, name="nested.zip", limits=ArchiveLimits(max_files=10))


def test_corrupt_central_directory_is_a_library_error() -> None:
    # Found by the fuzz tests: a member whose name length is 0 made zipfile raise IndexError.
    patched = bytearray(_zip([("x.png", b"data")]))
    central = patched.find(b"PK\x01\x02")
    struct.pack_into("<H", patched, central + 28, 0)  # file name length: the name becomes...
    struct.pack_into("<H", patched, central + 32, 5)  # ...the member comment
    with pytest.raises(UnreadableImageError) as caught:
        iter_archive(bytes(patched), name="noname.zip")
    _assert_refused(caught, "noname.zip", "a member has an empty name")
    with pytest.raises(UnreadableImageError, match=r"^junk.zip: not a readable ZIP archive"):
        iter_archive(b"PK\x03\x04" + bytes(100), name="junk.zip")


def test_stored_members_and_empty_archives() -> None:
    stored = _zip([("a.png", b"abc"), ("empty.dcm", b"")], method=zipfile.ZIP_STORED)
    assert iter_archive(stored) == [("a.png", b"abc"), ("empty.dcm", b"")]
    assert iter_archive(_zip([])) == []


def test_expand_uploads_expands_zips_passes_files_and_reports_refusals(good_archive: bytes) -> None:
    bomb = _zip([("zeros.bin", bytes(8 * 1024 * 1024))])
    files, errors = expand_uploads(
        [
            ("scan.png", b"\x89PNG..."),
            ("batch.zip", good_archive),
            ("bomb.zip", bomb),
            ("notes.txt", b"plain"),
        ]
    )
    names = [name for name, _ in files]
    assert names[0] == "scan.png" and names[-1] == "notes.txt"
    assert "batch.zip/study/nested.zip/c.dcm" in names and len(names) == 7
    assert [name for name, _ in errors] == ["bomb.zip"]
    assert errors[0][1].startswith("bomb.zip: member 'zeros.bin' refused: compression ratio")


def test_is_zip_and_limits_validation() -> None:
    assert is_zip(_zip([("a", b"b")])) and is_zip(_zip([]))
    assert not is_zip(b"\x89PNG") and not is_zip(b"")
    with pytest.raises(ValueError, match="max_files"):
        ArchiveLimits(max_files=0)
    with pytest.raises(ValueError, match="max_ratio"):
        ArchiveLimits(max_ratio=0.5)
