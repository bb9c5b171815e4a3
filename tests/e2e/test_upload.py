"""Upload, processing, renditions and downloads (ranges, ETags), as the contract describes them."""

import json
import subprocess
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests

import support
from support import CORPORA, assert_error, image_size, jpeg_segments, sha256

PHOTO = CORPORA / "exif/metadata-extractor-images/jpg/Apple iPhone 5.jpg"   # 3264x2448, orientation 3 (180°)
ORIENTATION_DIR = CORPORA / "exif/exif-orientation-examples"
RENDITIONS = {"thumb-256": 256, "thumb-1024": 1024}
IMAGE_FIELDS = {"id", "status", "sha256", "bytes", "format", "content_type", "width", "height", "frames", "has_alpha",
                "colour_space", "has_icc", "orientation", "exif", "metadata", "source", "received_at", "processed_at",
                "expires_at", "expired_at", "phash", "dominant_colour", "error", "renditions", "links"}


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_raw_upload_is_created_processed_and_served(server):
    data = PHOTO.read_bytes()
    metadata = {"album": "e2e", "n": 3, "ok": True}
    r = server.upload(data, headers={"Content-Type": "image/jpeg", "X-Imgpipe-Metadata": json.dumps(metadata)})
    assert r.status_code == 201, r.text
    created = r.json()
    image_id = created["id"]
    assert r.headers["Location"] == f"/v1/images/{image_id}"
    assert r.headers.get("X-Request-Id")
    assert created["status"] == "queued"
    assert created["sha256"] == sha256(data)
    assert created["bytes"] == len(data)
    assert (created["format"], created["content_type"]) == ("jpeg", "image/jpeg")
    assert (created["width"], created["height"], created["frames"]) == (3264, 2448, 1)
    assert parse_time(created["expires_at"]) - parse_time(created["received_at"]) == timedelta(days=7)
    assert created["links"] == {"self": f"/v1/images/{image_id}", "original": f"/v1/images/{image_id}/original"}

    image = server.wait_processed(image_id)
    assert IMAGE_FIELDS <= set(image), f"missing fields: {IMAGE_FIELDS - set(image)}"
    assert image["metadata"] == metadata
    assert image["sha256"] == sha256(data)
    assert image["orientation"] == 3
    assert image["has_alpha"] is False
    assert image["error"] is None
    assert image["processed_at"] is not None
    assert image["source"] == "upload"

    by_name = {rd["name"]: rd for rd in image["renditions"]}
    assert set(by_name) == set(RENDITIONS)
    for name, edge in RENDITIONS.items():
        rd = by_name[name]
        assert max(rd["width"], rd["height"]) == edge, rd
        assert abs(rd["width"] / rd["height"] - 3264 / 2448) < 0.01, rd
        assert (rd["format"], rd["content_type"]) == ("jpeg", "image/jpeg"), rd
        got = server.get(rd["url"])
        assert got.status_code == 200, got.text
        assert got.headers["Content-Type"] == "image/jpeg"
        assert len(got.content) == rd["bytes"]
        assert image_size(got.content) == ("jpeg", rd["width"], rd["height"])
        # Metadata stripped: no EXIF (APP1 "Exif") segment left in the rendition.
        assert not any(m == 0xE1 and p.startswith(b"Exif\0") for m, p in jpeg_segments(got.content)), name

    original = server.get(f"/v1/images/{image_id}/original")
    assert original.status_code == 200
    assert sha256(original.content) == sha256(data)
    assert original.headers["Content-Type"] == "image/jpeg"
    assert original.headers.get("Accept-Ranges") == "bytes"
    assert "private" in original.headers.get("Cache-Control", "")


def test_multipart_upload_with_metadata(server):
    data = (CORPORA / "exif/metadata-extractor-images/jpg/FujiFilm FinePixS1Pro (1).jpg").read_bytes()
    metadata = {"camera_roll": "x", "rating": 4.5, "public": False}
    r = server.request("POST", "/v1/images", files={"metadata": (None, json.dumps(metadata), "application/json"),
                                                    "file": ("photo.jpg", data, "image/jpeg")})
    assert r.status_code == 201, r.text
    image = server.wait_processed(r.json()["id"])
    assert image["metadata"] == metadata
    assert image["sha256"] == sha256(data)
    assert (image["width"], image["height"]) == (600, 400)
    by_name = {rd["name"]: rd for rd in image["renditions"]}
    # Never upscaled: the 1024 box keeps the 600x400 original's size.
    assert (by_name["thumb-1024"]["width"], by_name["thumb-1024"]["height"]) == (600, 400)
    assert (by_name["thumb-256"]["width"], by_name["thumb-256"]["height"]) in ((256, 171), (256, 170))


@pytest.mark.parametrize("metadata", ["{not json", "[1, 2]", '"text"'])
def test_bad_metadata_is_400_and_stores_nothing(server, metadata):
    data = (CORPORA / "exif/pillow/exif-ifd-offset.jpg").read_bytes()
    r = server.request("POST", "/v1/images", files={"metadata": (None, metadata, "application/json"),
                                                    "file": ("a.jpg", data, "image/jpeg")})
    assert_error(r, 400, "invalid_argument")
    r = server.upload(data, headers={"X-Imgpipe-Metadata": metadata})
    assert_error(r, 400, "invalid_argument")
    assert server.scalar("SELECT count(*) FROM images") == "0"
    assert server.blob_files() == []


def test_ranges_etags_and_conditional_get(server):
    data = PHOTO.read_bytes()
    n = len(data)
    image_id = server.upload_ok(data)["id"]
    server.wait_processed(image_id)
    url = f"/v1/images/{image_id}/original"

    full = server.get(url)
    etag = full.headers.get("ETag", "")
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2, f"not a strong quoted ETag: {etag!r}"

    r = server.get(url, headers={"Range": "bytes=0-99"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes 0-99/{n}"
    assert r.content == data[:100]

    r = server.get(url, headers={"Range": f"bytes={n - 1000}-"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes {n - 1000}-{n - 1}/{n}"
    assert r.content == data[-1000:]

    r = server.get(url, headers={"Range": "bytes=-50"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes {n - 50}-{n - 1}/{n}"
    assert r.content == data[-50:]

    r = server.get(url, headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == data[1000:2000]

    for unsatisfiable in (f"bytes={n}-", f"bytes={n + 10}-{n + 20}"):
        r = server.get(url, headers={"Range": unsatisfiable})
        assert_error(r, 416, "range_not_satisfiable")

    r = server.get(url, headers={"If-None-Match": etag})
    assert r.status_code == 304
    assert r.content == b""
    r = server.get(url, headers={"If-None-Match": '"something-else"'})
    assert r.status_code == 200 and r.content == data

    rendition = f"/v1/images/{image_id}/renditions/thumb-256"
    r = server.get(rendition)
    assert r.status_code == 200
    tag = r.headers.get("ETag", "")
    assert tag.startswith('"') and tag != etag
    assert server.get(rendition, headers={"If-None-Match": tag}).status_code == 304
    r = server.get(rendition, headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and len(r.content) == 10


def test_renditions_are_auto_oriented(server):
    """The recurser orientation set: the same picture stored with EXIF orientations 1..8 (and 0). Every upright
    thumbnail must look like the orientation-1 one."""
    ids = {}
    for path in sorted(ORIENTATION_DIR.glob("*.jpg")):
        ids[path.stem] = server.upload_ok(path.read_bytes())["id"]
    pixels = {}
    for stem, image_id in ids.items():
        image = server.wait_processed(image_id)
        thumb = {rd["name"]: rd for rd in image["renditions"]}["thumb-256"]
        if stem.startswith("Landscape"):
            assert (thumb["width"], thumb["height"]) in ((256, 171), (256, 170)), (stem, thumb)
        else:
            assert (thumb["width"], thumb["height"]) in ((171, 256), (170, 256)), (stem, thumb)
        pixels[stem] = raw_pixels(server.get(thumb["url"]).content, thumb["width"], thumb["height"])
    for stem, px in pixels.items():
        ref = pixels[stem.split("_")[0] + "_1"]
        if len(px) != len(ref):
            continue  # one pixel of rounding in a side; the aspect check above covered it
        diff = sum(abs(a - b) for a, b in zip(px, ref)) / len(px)
        assert diff < 20, f"{stem}: thumbnail differs from the upright one by {diff:.1f} levels on average"


def raw_pixels(jpeg, width, height):
    """Decodes a JPEG rendition to raw 8-bit pixels with libvips' command-line tool."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.jpg", Path(tmp) / "out.raw"
        src.write_bytes(jpeg)
        subprocess.run(["vips", "rawsave", str(src), str(dst)], check=True, capture_output=True, timeout=60)
        return dst.read_bytes()


def test_unprocessed_image_has_no_renditions_until_workers_run(start_server):
    server = start_server(env={"IMGPIPE_PROCESSING_ENABLED": "false"})
    image_id = server.upload_ok(PHOTO.read_bytes())["id"]
    image = server.get(f"/v1/images/{image_id}").json()
    assert image["status"] == "queued"
    assert image["renditions"] == []
    err = assert_error(server.get(f"/v1/images/{image_id}/renditions/thumb-256"), 404, "not_found")
    assert "queued" in err["message"] or "processing" in err["message"], err
    assert server.stop() == 0
    # The job survived the restart: with workers on, the image gets processed.
    again = start_server(data_dir=server.data_dir, admin_key=server.admin_key)
    image = again.wait_processed(image_id)
    assert {rd["name"] for rd in image["renditions"]} == set(RENDITIONS)


def test_list_delete_and_not_found(server):
    ids = []
    for seed in range(3):
        ids.append(server.upload_ok(support.make_png(64, 48, seed))["id"])
        time.sleep(0.01)  # ids order by millisecond; keep the three in distinct milliseconds
    r = server.get("/v1/images", params={"limit": 2})
    assert r.status_code == 200
    page = r.json()
    assert [it["id"] for it in page["items"]] == ids[::-1][:2], "newest first"
    assert page["next_cursor"]
    rest = server.get("/v1/images", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [it["id"] for it in rest["items"]] == [ids[0]]
    assert rest["next_cursor"] is None

    for bad in ({"limit": 0}, {"limit": 501}, {"from": "yesterday"}, {"status": "sleeping"}):
        assert_error(server.get("/v1/images", params=bad), 400, "invalid_argument")

    for missing in ("/v1/images/doesnotexist", "/v1/images/..%2F..%2Fetc%2Fpasswd", f"/v1/images/{ids[0]}x"):
        assert_error(server.get(missing), 404, "not_found")

    victim = ids[1]
    server.wait_processed(victim)
    assert any(victim in str(p) for p in server.blob_files())
    r = server.request("DELETE", f"/v1/images/{victim}")
    assert r.status_code == 204, r.text
    assert_error(server.get(f"/v1/images/{victim}"), 404, "not_found")
    assert_error(server.get(f"/v1/images/{victim}/original"), 404, "not_found")
    assert not any(victim in str(p) for p in server.blob_files()), "DELETE left blob files behind"
    assert server.scalar(f"SELECT status FROM images WHERE id = '{victim}'") == "deleted"

    assert_error(server.request("PUT", "/v1/images"), 405, "method_not_allowed")
    assert_error(server.get("/v1/nothing-here"), 404, "not_found")


def test_query_api_metrics_and_health(server):
    image_id = server.upload_ok(support.make_png(32, 32, 1))["id"]
    r = server.request("POST", "/v1/query", json={"sql": "SELECT id, format FROM images WHERE id = ?",
                                                  "params": [image_id]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["columns"] == ["id", "format"]
    assert body["rows"] == [[image_id, "png"]]
    assert body["truncated"] is False

    r = server.request("POST", "/v1/query", json={"sql": "SELECT count(*) AS n FROM images", "format": "csv"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/csv")
    assert r.text.split() == ["n", "1"]

    for sql in ("DELETE FROM images", "SELEKT 1"):
        assert_error(server.request("POST", "/v1/query", json={"sql": sql}), 400, "invalid_argument")
    assert server.scalar("SELECT count(*) FROM images") == "1"

    r = server.get("/metrics")
    assert r.status_code == 200
    assert "version=0.0.4" in r.headers["Content-Type"]
    for name in ("imgpipe_http_requests_total", "imgpipe_uploads_total", "imgpipe_build_info",
                 "imgpipe_queue_depth", "imgpipe_http_request_duration_seconds_bucket"):
        assert name in r.text, f"{name} missing from /metrics"

    for path in ("/livez", "/readyz"):
        r = requests.get(server.base + path, timeout=10)
        assert r.status_code == 200
        assert r.headers.get("X-Request-Id")
    assert requests.get(server.base + "/livez", timeout=10).json() == {"status": "ok"}
    ready = requests.get(server.base + "/readyz", timeout=10).json()
    assert ready == {"status": "ready", "checks": {"storage": "ok", "database": "ok", "queue": "ok"}}
