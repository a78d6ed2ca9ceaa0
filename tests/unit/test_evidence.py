"""Evidence (IN-5): kinds, media types sniffed from the bytes, and evidence free text."""

from __future__ import annotations

import struct
import unicodedata
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aftersales.domain.errors import InvalidInput
from aftersales.domain.evidence import (
    ALLOWED_MEDIA,
    SNIFF_BYTES,
    EvidenceKind,
    TextCheck,
    describe,
    evidence_text,
    sniff,
)

# -- real files, built here ---------------------------------------------------------------


def png_bytes(width: int = 2, height: int = 2) -> bytes:
    """A valid greyscale PNG (signature, IHDR, zlib IDAT, IEND, with their CRCs)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def jpeg_bytes() -> bytes:
    """A valid 8x8 grey baseline JPEG: one DC-only block, one-code Huffman tables."""

    def seg(marker: int, data: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(data) + 2) + data

    one_code = bytes([1] + [0] * 15) + b"\x00"
    return (b"\xff\xd8"
            + seg(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
            + seg(0xDB, b"\x00" + b"\x01" * 64)
            + seg(0xC0, b"\x08\x00\x08\x00\x08\x01\x01\x11\x00")
            + seg(0xC4, b"\x00" + one_code) + seg(0xC4, b"\x10" + one_code)
            + seg(0xDA, b"\x01\x01\x00\x00\x3f\x00")
            + b"\x3f" + b"\xff\xd9")


def pdf_bytes() -> bytes:
    """A valid one-page PDF with a correct cross-reference table."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
       b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
WEBP = b"RIFF" + struct.pack("<I", 26) + b"WEBPVP8L" + struct.pack("<I", 13) + bytes(13) + b"\x00"
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(56)
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(20)


# -- kinds ------------------------------------------------------------------------------------


def test_evidence_kinds_are_those_of_in_5_plus_other() -> None:
    assert {k.value for k in EvidenceKind} == {
        "photo", "chat", "waybill", "inspection", "measurement", "listing", "other"}
    assert EvidenceKind("waybill") is EvidenceKind.WAYBILL


# -- sniffing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "media"),
    [
        (png_bytes(), "image/png"),
        (jpeg_bytes(), "image/jpeg"),
        (pdf_bytes(), "application/pdf"),
        (GIF, "image/gif"),
        (b"GIF87a" + GIF[6:], "image/gif"),
        (WEBP, "image/webp"),
        ("买家聊天记录: 商品与描述不符\n第二行\r\n\tindented".encode(), "text/plain"),
        (b"#!/bin/sh\nrm -rf /\n", "text/plain"),  # a script is text; it is never executed
        (b"price < 5 and > 2", "text/plain"),  # a '<' inside a sentence is not markup
        ("\ufeffBOM then text".encode(), "text/plain"),
    ],
)
def test_real_content_is_recognised_by_its_bytes(content: bytes, media: str) -> None:
    assert sniff(content) == media
    assert media in ALLOWED_MEDIA


def test_allowed_media_is_exactly_the_sniffable_types() -> None:
    assert frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "application/pdf",
                      "text/plain"}) == ALLOWED_MEDIA


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x89PNG\r\n\x00\x00",  # a PNG signature that does not continue as one
        b"\x89PNG",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",  # RIFF, but audio
        b"GIF88a\x01\x00\x01\x00\x80\x00",  # not a GIF version
        ELF,
        ZIP,
        b"MZ\x90\x00\x03\x00\x00\x00\x04\x00",  # a Windows executable
        b"\x1f\x8b\x08\x00",  # gzip
        b"<html><script>alert(1)</script></html>",
        b"  \r\n\t<!DOCTYPE html><p>hi",
        "\ufeff<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>".encode(),
        b"<?xml version='1.0'?><svg/>",
        b"hello\n<script>alert(1)</script>",  # markup further into the head
        b"text with a NUL\x00 byte",
        b"text with an escape \x1b[31m code",
        b"\xff\xfe<\x00h\x00t\x00m\x00l\x00>\x00",  # UTF-16 HTML
        b"valid start then \xc3\x28 invalid UTF-8",
    ],
)
def test_anything_else_is_not_an_accepted_type(content: bytes) -> None:
    assert sniff(content) is None


def test_a_text_head_cut_inside_a_multibyte_character_is_still_text() -> None:
    text = ("退" * SNIFF_BYTES).encode()  # 3 bytes each: the head ends mid-character
    assert len(text[:SNIFF_BYTES]) % 3 != 0
    assert sniff(text[:SNIFF_BYTES]) == "text/plain"
    assert sniff(text) == "text/plain"  # given more, it reads only the first SNIFF_BYTES


def test_sniff_looks_only_at_the_head() -> None:
    # what follows SNIFF_BYTES is not sniffed (the store checks text files to their end)
    assert sniff(b"a" * SNIFF_BYTES + b"\x00<script>") == "text/plain"


@given(st.binary(max_size=64))
def test_sniff_never_reports_a_type_outside_the_allowed_set(content: bytes) -> None:
    media = sniff(content)
    assert media is None or media in ALLOWED_MEDIA
    if media == "text/plain":
        assert not content.decode("utf-8", "ignore").lstrip().lstrip("\ufeff").startswith("<")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (ELF, "ELF executable"),
        (ZIP, "ZIP archive"),
        (b"MZ\x90\x00", "Windows executable"),
        (b"<html></html>", "markup"),
        (b"\x00\x01\x02\xfe\xff", "binary"),
        (png_bytes(), "image/png"),
    ],
)
def test_describe_says_what_the_content_looks_like(content: bytes, words: str) -> None:
    assert words in describe(content)


def test_text_check_accepts_utf8_split_anywhere_and_refuses_what_follows_bad_bytes() -> None:
    data = "退款 refund ✓\n".encode() * 50
    check = TextCheck()
    assert all(check.feed(data[i:i + 7]) for i in range(0, len(data), 7))
    assert check.close()

    bad = TextCheck()
    assert bad.feed(b"fine so far ")
    assert not bad.feed(b"then \x00 a NUL")
    assert not bad.feed(b"and fine again")  # once bad, stays bad
    assert not bad.close()

    cut = TextCheck()
    assert cut.feed("退".encode()[:2])
    assert not cut.close()  # the file ends inside a character


# -- evidence text ---------------------------------------------------------------------------


def test_evidence_text_is_stripped_and_none_is_empty() -> None:
    assert evidence_text("  the zip is broken \n", 100) == "the zip is broken"
    assert evidence_text(None, 100) == ""
    assert evidence_text("   ", 100) == ""


def test_evidence_text_normalises_unicode_and_line_breaks() -> None:
    decomposed = unicodedata.normalize("NFD", "café")
    assert len(decomposed) == 5
    assert evidence_text(decomposed, 4) == "café"  # counted as the 4 characters a user sees
    assert evidence_text("line 1\r\nline 2\rline 3", 100) == "line 1\nline 2\nline 3"


def test_evidence_text_over_the_limit_is_refused_with_both_numbers() -> None:
    assert evidence_text("x" * 500, 500) == "x" * 500
    with pytest.raises(InvalidInput) as err:
        evidence_text("x" * 501, 500)
    assert "501" in str(err.value) and "500" in str(err.value)
    assert err.value.code == "invalid_input"


def test_evidence_text_refuses_control_characters() -> None:
    with pytest.raises(InvalidInput, match="U\\+0000"):
        evidence_text("hidden\x00text", 100)
    assert evidence_text("a\tb", 100) == "a\tb"


def test_evidence_text_needs_a_sensible_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        evidence_text("x", -1)
