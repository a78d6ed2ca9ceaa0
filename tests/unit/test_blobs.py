"""Content-addressed evidence files on disk: what is accepted, refused, deduplicated, verified."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from aftersales.domain.errors import (
    FileTooLarge,
    InvalidInput,
    NotFound,
    UnsupportedMediaType,
)
from aftersales.domain.evidence import SNIFF_BYTES
from aftersales.store.blobs import BlobStore, StoredFile
from tests.unit.test_evidence import ELF, ZIP, jpeg_bytes, pdf_bytes, png_bytes

MB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "evidence", max_bytes=MB)


def stored_files(store: BlobStore) -> list[Path]:
    """Every file in the store outside its temp folder."""
    return sorted(p for p in store.root.rglob("*")
                  if p.is_file() and p.relative_to(store.root).parts[0] != "tmp")


def temp_files(store: BlobStore) -> list[Path]:
    return sorted((store.root / "tmp").glob("*"))


@pytest.mark.parametrize(
    ("content", "media"),
    [(png_bytes(), "image/png"), (jpeg_bytes(), "image/jpeg"),
     (pdf_bytes(), "application/pdf"), ("聊天记录\n".encode(), "text/plain")],
)
def test_a_file_is_stored_under_its_sha256_with_its_sniffed_type(
        store: BlobStore, tmp_path: Path, content: bytes, media: str) -> None:
    upload = tmp_path / "upload.bin"  # the name says nothing: the bytes decide
    upload.write_bytes(content)
    stored = store.put_file(upload)
    sha = hashlib.sha256(content).hexdigest()
    assert stored == StoredFile(sha, len(content), media)
    where = store.root / sha[:2] / sha[2:4] / sha
    assert store.path(sha) == where
    assert where.read_bytes() == content
    with store.open(sha) as f:
        assert f.read() == content
    assert store.media_type(sha) == media
    assert store.verify(sha)
    assert temp_files(store) == []


def test_stored_files_are_read_only_and_never_executable(store: BlobStore) -> None:
    # a script is accepted as text, so the mode is what keeps it from ever running
    sha = store.put_bytes(b"#!/bin/sh\necho pwned\n").sha256
    mode = stat.S_IMODE(store.path(sha).stat().st_mode)
    assert mode == 0o444
    assert not mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_html_renamed_png_is_refused_and_nothing_is_kept(store: BlobStore, tmp_path: Path) -> None:
    fake = tmp_path / "photo.png"
    fake.write_bytes(b"<!DOCTYPE html><html><script>steal()</script></html>")
    with pytest.raises(UnsupportedMediaType) as err:
        store.put_file(fake)
    message = str(err.value)
    assert "markup" in message and "PNG" in message and "PDF" in message  # found vs accepted
    assert err.value.code == "unsupported_media_type"
    assert stored_files(store) == [] and temp_files(store) == []


@pytest.mark.parametrize(("content", "words"), [(ELF, "ELF executable"), (ZIP, "ZIP archive")])
def test_executables_and_archives_are_refused(store: BlobStore, content: bytes, words: str) -> None:
    with pytest.raises(UnsupportedMediaType, match=words):
        store.put_bytes(content)
    assert stored_files(store) == [] and temp_files(store) == []


def test_a_refused_type_is_refused_after_its_head_without_reading_the_rest(
        store: BlobStore) -> None:
    read = 0

    def endless_elf() -> Iterator[bytes]:
        nonlocal read
        yield ELF
        while True:
            read += 1
            yield bytes(1024)

    big = BlobStore(store.root, max_bytes=1024 * MB)
    with pytest.raises(UnsupportedMediaType):
        big.put_stream(endless_elf())
    assert read * 1024 <= SNIFF_BYTES + 1024
    assert temp_files(store) == []


def test_text_that_turns_binary_after_the_head_is_refused(store: BlobStore) -> None:
    content = b"a plain start\n" * (SNIFF_BYTES // 10) + b"\x00\x01binary payload"
    with pytest.raises(UnsupportedMediaType, match="UTF-8"):
        store.put_bytes(content)
    assert stored_files(store) == [] and temp_files(store) == []


def test_an_oversize_file_is_refused_stopping_at_the_limit(store: BlobStore) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield png_bytes()
        while True:  # would never end: the store must stop reading
            sent += 64 * 1024
            yield bytes(64 * 1024)

    with pytest.raises(FileTooLarge) as err:
        store.put_stream(chunks())
    assert "1 MiB" in str(err.value) and str(MB) in str(err.value)
    assert err.value.code == "file_too_large"
    assert sent <= MB + 64 * 1024
    assert stored_files(store) == [] and temp_files(store) == []


def test_a_file_of_exactly_the_limit_is_accepted(tmp_path: Path) -> None:
    store = BlobStore(tmp_path, max_bytes=SNIFF_BYTES * 2)
    content = b"x" * (SNIFF_BYTES * 2)
    assert store.put_bytes(content).size == len(content)
    with pytest.raises(FileTooLarge):
        store.put_bytes(content + b"x")


def test_an_empty_file_is_refused(store: BlobStore) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        store.put_stream([b"", b""])
    assert stored_files(store) == [] and temp_files(store) == []


def test_an_interrupted_upload_leaves_no_temp_file(store: BlobStore) -> None:
    def broken() -> Iterator[bytes]:
        yield png_bytes()
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.put_stream(broken())
    assert stored_files(store) == [] and temp_files(store) == []


def test_identical_content_is_stored_once(store: BlobStore, tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(png_bytes())
    b.write_bytes(png_bytes())
    first, second = store.put_file(a), store.put_file(b)
    assert first == second
    assert len(stored_files(store)) == 1
    assert temp_files(store) == []
    other = store.put_bytes(png_bytes(3, 3))
    assert other.sha256 != first.sha256
    assert len(stored_files(store)) == 2


@pytest.mark.parametrize(
    "bad",
    ["../../../../etc/passwd", "A" * 64, "a" * 63, "a" * 65, "g" * 64, "a" * 64 + "\n",
     "../" + "a" * 61, "", "aa/bb/" + "a" * 58],
)
def test_a_hash_that_is_not_64_lowercase_hex_is_refused(store: BlobStore, bad: str) -> None:
    for read in (store.open, store.path, store.media_type, store.exists):
        with pytest.raises(InvalidInput, match="64 lowercase hex"):
            read(bad)


def test_an_unknown_hash_is_not_found(store: BlobStore) -> None:
    missing = "0" * 64
    with pytest.raises(NotFound):
        store.open(missing)
    with pytest.raises(NotFound):
        store.path(missing)
    assert not store.exists(missing)
    assert store.verify(missing) is False


def test_verify_detects_a_stored_file_changed_on_disk(store: BlobStore) -> None:
    sha = store.put_bytes(pdf_bytes()).sha256
    where = store.path(sha)
    assert store.verify(sha)
    where.chmod(0o644)
    where.write_bytes(pdf_bytes().replace(b"200 200", b"999 999"))
    assert store.verify(sha) is False
    # uploading the original again repairs the damaged copy
    assert store.put_bytes(pdf_bytes()).sha256 == sha
    assert store.verify(sha)
    assert stat.S_IMODE(where.stat().st_mode) == 0o444


def test_media_type_is_sniffed_again_from_the_stored_bytes(store: BlobStore) -> None:
    sha = store.put_bytes(jpeg_bytes()).sha256
    where = store.path(sha)
    where.chmod(0o644)
    where.write_bytes(b"<html>swapped</html>")  # what is served is what is there now
    with pytest.raises(UnsupportedMediaType):
        store.media_type(sha)


def test_a_store_needs_a_positive_limit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        BlobStore(tmp_path, max_bytes=0)
