"""Content-addressed storage of evidence files.

A file is stored once under its SHA-256: `root/ab/cd/abcd...`. Uploads stream through a temp file
in `root/tmp` while being hashed, so a file is never held in memory whole, and appear under their
final name only complete (an atomic rename). What is stored is what was sniffed from the bytes
(`domain.evidence.sniff`): a file whose content is not an accepted type, an empty file or one
above the size limit is refused and leaves nothing behind. Stored files are read-only (0o444),
never executable, and `verify` rehashes one to show it was not changed since.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aftersales.domain.errors import (
    FileTooLarge,
    InvalidInput,
    NotFound,
    UnsupportedMediaType,
)
from aftersales.domain.evidence import (
    ACCEPTED_DESCRIPTION,
    ALLOWED_MEDIA,
    SNIFF_BYTES,
    TEXT,
    TextCheck,
    describe,
    sniff,
)

CHUNK = 64 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class StoredFile:
    sha256: str
    size: int
    media_type: str


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def _check_hash(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise InvalidInput(f"{sha256!r} is not a file id: expected 64 lowercase hex characters "
                           "(a SHA-256 digest)")
    return sha256


def _refuse(head: bytes) -> UnsupportedMediaType:
    return UnsupportedMediaType(f"this file's content is {describe(head)}; "
                                f"accepted: {ACCEPTED_DESCRIPTION}")


def _not_text() -> UnsupportedMediaType:
    return UnsupportedMediaType("this file starts as plain text but further on is not UTF-8 "
                                "text (binary data or control characters); "
                                f"accepted: {ACCEPTED_DESCRIPTION}")


class BlobStore:
    """Evidence files under `root`, each at most `max_bytes` long."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.tmp = self.root / "tmp"

    # -- writing -------------------------------------------------------------------------------

    def put_stream(self, chunks: Iterable[bytes]) -> StoredFile:
        """Store the content `chunks` yields. Reads no further than the first refused byte: past
        `max_bytes` (FileTooLarge) or past the first `SNIFF_BYTES` when they are not an accepted
        type (UnsupportedMediaType). Storing content already present stores nothing new."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="up-", suffix=".part")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            head = bytearray()
            media: str | None = None
            text = TextCheck()  # a text file must be text to its end, not just in its head
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    if not chunk:
                        continue
                    if size + len(chunk) > self.max_bytes:
                        raise FileTooLarge(
                            f"evidence file is larger than the limit of {_human(self.max_bytes)}"
                            f" ({self.max_bytes} bytes)")
                    size += len(chunk)
                    digest.update(chunk)
                    out.write(chunk)
                    if media is None and len(head) < SNIFF_BYTES:
                        head += chunk[:SNIFF_BYTES - len(head)]
                        if len(head) >= SNIFF_BYTES:
                            media = self._sniffed(bytes(head))
                    if not text.feed(chunk) and media == TEXT:
                        raise _not_text()
                if size == 0:
                    raise InvalidInput("evidence file is empty")
                if media is None:
                    media = self._sniffed(bytes(head))
                if media == TEXT and not text.close():
                    raise _not_text()
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o444)
            sha = digest.hexdigest()
            final = self._location(sha)
            if final.is_file() and self.verify(sha):
                tmp.unlink()  # the same content is already stored
            else:  # new, or a damaged copy that this upload repairs
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
            return StoredFile(sha, size, media)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    @staticmethod
    def _sniffed(head: bytes) -> str:
        media = sniff(head)
        if media is None or media not in ALLOWED_MEDIA:
            raise _refuse(head)
        return media

    def put_file(self, path: Path) -> StoredFile:
        """Store a file's content (its name plays no part)."""
        with open(path, "rb") as f:
            return self.put_stream(iter(lambda: f.read(CHUNK), b""))

    def put_bytes(self, data: bytes) -> StoredFile:
        return self.put_stream(data[i:i + CHUNK] for i in range(0, len(data), CHUNK))

    # -- reading -------------------------------------------------------------------------------

    def _location(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def exists(self, sha256: str) -> bool:
        return self._location(_check_hash(sha256)).is_file()

    def path(self, sha256: str) -> Path:
        """Where the file is stored; NotFound when it is not."""
        where = self._location(_check_hash(sha256))
        if not where.is_file():
            raise NotFound(f"no evidence file {sha256}")
        return where

    def open(self, sha256: str) -> BinaryIO:
        """The stored file, opened for binary reading; NotFound when it is not stored."""
        try:
            return open(self._location(_check_hash(sha256)), "rb")  # the caller closes it
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"no evidence file {sha256}") from None

    def media_type(self, sha256: str) -> str:
        """The stored file's media type, sniffed again from its bytes."""
        with self.open(sha256) as f:
            head = f.read(SNIFF_BYTES)
        media = sniff(head)
        if media is None:
            raise _refuse(head)
        return media

    def _chunks(self, sha256: str) -> Iterator[bytes]:
        with self.open(sha256) as f:
            yield from iter(lambda: f.read(CHUNK), b"")

    def verify(self, sha256: str) -> bool:
        """True when the stored file still hashes to its name; False when it was changed or is
        missing."""
        digest = hashlib.sha256()
        try:
            for chunk in self._chunks(sha256):
                digest.update(chunk)
        except NotFound:
            return False
        return digest.hexdigest() == sha256
