"""Evidence uploads over HTTP: streamed to disk (never held whole in memory), typed from the
bytes, refused when not an accepted type or too large, with nothing left behind."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from aftersales.service.handlers import Service
from tests.conftest import T0
from tests.integration.api_support import Clock, live_api
from tests.integration.intervention_setup import Parties, escalated_dispute
from tests.unit.test_evidence import png_bytes

LIMIT = 256 * 1024
FILES = "/api/v1/cases/c1/evidence/files"


def _stored(root: Path) -> list[Path]:
    """Every file under the evidence store, temp files included."""
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _seed(service: Service) -> None:
    escalated_dispute(service, Parties("b1", "s1", "o1", "c1", "SF1"), T0)


def test_upload_and_download(db_url: str, tmp_path: Path) -> None:
    with live_api(db_url, tmp_path, clock=Clock(T0 + timedelta(days=3)), configure=_seed,
                  evidence_max_bytes=LIMIT) as live:
        root = Path(live.settings.evidence_dir)
        buyer, seller = live.client("buyer", "b1"), live.client("seller", "s1")
        data = png_bytes(8, 8)
        r = buyer.post(FILES, params={"filename": "zip.png"}, content=data,
                       headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        stored = r.json()
        sha = hashlib.sha256(data).hexdigest()
        assert stored == {"sha256": sha, "size": len(data), "media_type": "image/png",
                          "filename": "zip.png"}
        assert (root / sha[:2] / sha[2:4] / sha).read_bytes() == data
        text = buyer.post(FILES, content=b"the parcel arrived open\n",
                          headers={"Content-Type": "text/plain"})
        assert text.status_code == 201 and text.json()["media_type"] == "text/plain"

        r = buyer.post("/api/v1/cases/c1/evidence", json={
            "kind": "photo", "text": "the broken zip", "file": {"sha256": sha,
                                                                 "filename": "zip.png"}})
        assert r.status_code == 201, r.text
        r = seller.post("/api/v1/cases/c1/evidence", json={"kind": "inspection",
                                                           "text": "checked before sending"})
        assert r.status_code == 201, r.text
        assert r.json()["case"]["evidence"] == {"buyer": 1, "seller": 1}
        missing = buyer.post("/api/v1/cases/c1/evidence", json={
            "kind": "photo", "file": {"sha256": "0" * 64}})
        assert missing.status_code == 404

        items = seller.get("/api/v1/cases/c1/evidence").json()
        assert [(i["party"], i["kind"]) for i in items] == [("buyer", "photo"),
                                                          ("seller", "inspection")]
        assert items[0]["file"]["sha256"] == sha and items[1]["file"] is None
        r = seller.get(f"/api/v1/cases/c1/evidence/{items[0]['id']}/file")
        assert r.status_code == 200 and r.content == data
        assert r.headers["content-type"] == "image/png"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-disposition"].startswith("attachment")
        assert seller.get(f"/api/v1/cases/c1/evidence/{items[1]['id']}/file").status_code == 404


def test_refused_uploads_leave_nothing_behind(db_url: str, tmp_path: Path) -> None:
    with live_api(db_url, tmp_path, clock=Clock(T0 + timedelta(days=3)), configure=_seed,
                  evidence_max_bytes=LIMIT) as live:
        root = Path(live.settings.evidence_dir)
        buyer = live.client("buyer", "b1")

        html = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
        r = buyer.post(FILES, params={"filename": "photo.png"}, content=html,
                       headers={"Content-Type": "image/png"})
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "unsupported_media_type"
        assert "HTML" in r.json()["detail"]
        assert _stored(root) == []

        big = png_bytes() + b"\0" * (LIMIT + 1)
        r = buyer.post(FILES, content=big)  # declared too large: refused before reading
        assert r.status_code == 413 and r.json()["code"] == "file_too_large"

        def chunked() -> Iterator[bytes]:  # no Content-Length: refused while streaming
            yield png_bytes()
            for _ in range(LIMIT // 16384 + 2):
                yield b"\0" * 16384

        r = buyer.post(FILES, content=chunked())
        assert r.status_code == 413 and r.json()["code"] == "file_too_large"
        assert _stored(root) == []
        r = buyer.post(FILES, content=b"")
        assert r.status_code == 422 and "empty" in r.json()["detail"]
        assert _stored(root) == []


def test_uploads_stream_to_disk(sqlite_url: str, tmp_path: Path) -> None:
    size = 24 * 1024 * 1024  # the peak stays near 3 MiB (imports, pydantic) whatever the size
    chunk = b"\0" * (64 * 1024)

    def body() -> Iterator[bytes]:
        yield png_bytes()
        for _ in range(size // len(chunk)):
            yield chunk

    with live_api(sqlite_url, tmp_path, clock=Clock(T0 + timedelta(days=3)),
                  configure=_seed, evidence_max_bytes=32 * 1024 * 1024) as live:
        buyer = live.client("buyer", "b1")
        tracemalloc.start()
        try:
            r = buyer.post(FILES, content=body())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert r.status_code == 201, r.text
        assert r.json()["size"] > size
        assert peak < size // 3, f"peak {peak} bytes while uploading {size}"
