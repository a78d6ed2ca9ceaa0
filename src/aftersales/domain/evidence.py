"""Evidence (IN-5): its kinds, what a file really is, and the free text that goes with it.

Pure: no I/O, no clock. A file's media type comes from its first bytes (`sniff`), never from
its name or from what the uploader claims, so an HTML page renamed `photo.png` is not an image.
Only types that a browser cannot run are accepted: images, PDF and plain UTF-8 text; markup
(HTML, SVG, XML) is refused even though it is text, because it could be served as active content.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from enum import StrEnum

from aftersales.domain.errors import InvalidInput


class EvidenceKind(StrEnum):
    """IN-5: what a piece of evidence shows."""

    PHOTO = "photo"  # photos comparing the goods with the listing
    CHAT = "chat"  # chat records between buyer and seller
    WAYBILL = "waybill"  # return waybill receipts
    INSPECTION = "inspection"  # quality-inspection certificates
    MEASUREMENT = "measurement"  # measurements (size, weight)
    LISTING = "listing"  # the listing page as it was
    OTHER = "other"


JPEG = "image/jpeg"
PNG = "image/png"
GIF = "image/gif"
WEBP = "image/webp"
PDF = "application/pdf"
TEXT = "text/plain"

ALLOWED_MEDIA: frozenset[str] = frozenset({JPEG, PNG, GIF, WEBP, PDF, TEXT})
"""The media types `sniff` can report; every other content is refused."""

SNIFF_BYTES = 4096
"""How many leading bytes `sniff` needs (it reads no further)."""

ACCEPTED_DESCRIPTION = "JPEG, PNG, GIF or WebP images, PDF documents, or plain UTF-8 text"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Text that a browser would render as a document: refused wherever it appears in the head, since
# some browsers sniff markup beyond the first byte. A chat record rarely contains these.
_MARKUP = re.compile(
    r"<(?:!doctype|\?xml|html|head|body|script|svg|iframe|object|embed)\b", re.IGNORECASE)
_STARTS_WITH_MARKUP = re.compile(r"[\s\ufeff]*<")
# C0 controls except \t \n \r, DEL, and the C1 controls
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _text(head: bytes) -> str | None:
    """The head decoded as UTF-8, tolerating a multibyte character cut at the end; else None."""
    try:
        # final=False keeps an incomplete trailing sequence (the cut) instead of failing on it
        return codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None


def sniff(head: bytes) -> str | None:
    """The media type of content starting with `head` (its first `SNIFF_BYTES` bytes or all of
    it), from magic bytes only; None when it is none of `ALLOWED_MEDIA`."""
    head = bytes(head[:SNIFF_BYTES])
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(_PNG_SIGNATURE):
        return PNG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith(b"%PDF-"):
        return PDF
    if not head:
        return None
    text = _text(head)
    if text is None or _CONTROL.search(text):
        return None
    if _STARTS_WITH_MARKUP.match(text) or _MARKUP.search(text):
        return None
    return TEXT


class TextCheck:
    """Checks a whole text file, fed in chunks, is UTF-8 without control characters (other than
    \t \n \r): `sniff` sees only the head, this sees the rest. `feed` and `close` return False
    from the first bad byte on."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self.ok = True

    def feed(self, data: bytes) -> bool:
        if self.ok:
            try:
                self.ok = not _CONTROL.search(self._decoder.decode(data, final=False))
            except UnicodeDecodeError:
                self.ok = False
        return self.ok

    def close(self) -> bool:
        """Also refuses a multibyte character cut off by the end of the file."""
        return self.feed(b"") and self._final()

    def _final(self) -> bool:
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            self.ok = False
        return self.ok


_DESCRIPTIONS: tuple[tuple[bytes, str], ...] = (
    (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a Windows executable"),
    (b"\xfe\xed\xfa", "a Mach-O executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "a Mach-O or Java class file"),
    (b"PK\x03\x04", "a ZIP archive (or a document/app packaged as one)"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\x00asm", "a WebAssembly module"),
)


def describe(head: bytes) -> str:
    """What `head` looks like, in words, for an error message ("an ELF executable", ...)."""
    media = sniff(head)
    if media is not None:
        return media
    head = bytes(head[:SNIFF_BYTES])
    if not head:
        return "empty content"
    for magic, what in _DESCRIPTIONS:
        if head.startswith(magic):
            return what
    text = _text(head)
    if text is not None and not _CONTROL.search(text):
        if re.match(r"[\s\ufeff]*<\?xml|[\s\ufeff]*<svg", text, re.IGNORECASE):
            return "XML or SVG markup"
        return "HTML or other markup"
    if text is not None:
        return "text with control characters"
    return "unrecognised binary data"


def evidence_text(value: str | None, limit: int) -> str:
    """Free text of a piece of evidence (a caption, a statement), normalised: Unicode NFC, line
    breaks as \\n, surrounding blanks stripped; None is "". Refuses control characters and text
    longer than `limit` characters with `InvalidInput`."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"evidence text must be a string, got {type(value).__name__}")
    text = unicodedata.normalize("NFC", value).replace("\r\n", "\n").replace("\r", "\n").strip()
    bad = re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", text)
    if bad:
        raise InvalidInput(f"evidence text contains a control character "
                           f"(U+{ord(bad.group()):04X} at position {bad.start() + 1})")
    if len(text) > limit:
        raise InvalidInput(f"evidence text is {len(text)} characters long; "
                           f"the limit is {limit}")
    return text


FILENAME_MAX = 200


def evidence_filename(value: object) -> str:
    """The name an uploaded file had, kept for staff only: its last path component, without
    control characters, at most FILENAME_MAX characters (the type never comes from it)."""
    name = str(value or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[\x00-\x1f\x7f-\x9f]", "", unicodedata.normalize("NFC", name)).strip()
    if len(name) > FILENAME_MAX:
        _, dot, ext = name.rpartition(".")
        keep = ext if dot and len(ext) <= 10 else ""
        name = name[:FILENAME_MAX - len(keep) - 1] + ("." + keep if keep else "")
    return name
