"""Tests of :mod:`ae4ad_core.content_hash`: cache keys follow the bytes, not names or sizes."""

from __future__ import annotations

from ae4ad_core.content_hash import content_digest, files_digest, named_digests_key


def test_digest_is_stable_and_order_sensitive():
    assert content_digest(b"a", "b") == content_digest(b"a", "b")
    assert content_digest(b"a", "b") != content_digest("b", b"a")
    assert content_digest("ab", "c") != content_digest("a", "bc")  # parts are delimited


def test_files_with_the_same_name_and_size_but_other_bytes_get_other_keys():
    first, second = [("series.zip", b"\x00" * 64)], [("series.zip", b"\x00" * 63 + b"\x01")]
    assert files_digest(first) != files_digest(second)
    assert files_digest(first) == files_digest([("series.zip", bytes(64))])
    assert files_digest(first) == named_digests_key([("series.zip", content_digest(bytes(64)))])
