"""imgpipe serve on the cloud blob backends: Azure Blob Storage (Azurite) and S3 (the S3 server of scripts/services/s3).
Also: nothing reaches the services in plaintext (their own files, read raw), and a service killed mid-upload leaves
no image and no object.

Needs the services' settings (IMGPIPE_TEST_AZURE_*, IMGPIPE_TEST_S3_*, IMGPIPE_SERVICES_DIR) from scripts/test; without
them these tests skip, unless IMGPIPE_REQUIRE_AZURE / IMGPIPE_REQUIRE_S3 is 1, when they fail.
"""

import json
import os
import secrets
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from support import CORPORA, assert_error, kill_service, restart_service, run_cli, sha256
from test_encryption import MAGIC, SIGNATURES, exif_strings

BACKENDS = ["azure", "s3"]
SERVICE = {"azure": "azurite", "s3": "s3"}

# A few files of each common format from the valid corpora.
CORPUS = [
    "exif/metadata-extractor-images/jpg/Olympus PEN E-P3.jpg",
    "valid/kodak/kodim01.png",
    "valid/kodak/kodim02.png",
]


def corpus_files():
    files = [CORPORA / p for p in CORPUS]
    files += sorted((CORPORA / "valid/libwebp-examples").glob("*.webp"))[:2]
    files += sorted((CORPORA / "valid/libjpeg-turbo-testimages").glob("*.jpg"))[:2]
    return [f for f in files if f.is_file()]


def cloud_env(backend):
    """The IMGPIPE_STORAGE_* settings of a fresh namespace (container prefix or bucket) on the backend's service."""
    e = os.environ
    unique = secrets.token_hex(4)
    if backend == "azure":
        names = ["IMGPIPE_TEST_AZURE_ENDPOINT", "IMGPIPE_TEST_AZURE_ACCOUNT", "IMGPIPE_TEST_AZURE_KEY"]
    else:
        names = ["IMGPIPE_TEST_S3_ENDPOINT", "IMGPIPE_TEST_S3_ACCESS_KEY", "IMGPIPE_TEST_S3_SECRET_KEY"]
    missing = [n for n in names + ["IMGPIPE_SERVICES_DIR"] if not e.get(n)]
    if missing:
        why = f"{', '.join(missing)} not set: start scripts/services/{SERVICE[backend]}"
        if e.get(f"IMGPIPE_REQUIRE_{backend.upper()}") == "1":
            pytest.fail(why)
        pytest.skip(why)
    if backend == "azure":
        return {
            "IMGPIPE_STORAGE_BACKEND": "azure",
            "IMGPIPE_STORAGE_AZURE_ENDPOINT": e["IMGPIPE_TEST_AZURE_ENDPOINT"],
            "IMGPIPE_STORAGE_AZURE_ACCOUNT": e["IMGPIPE_TEST_AZURE_ACCOUNT"],
            "IMGPIPE_STORAGE_AZURE_KEY": e["IMGPIPE_TEST_AZURE_KEY"],
            "IMGPIPE_STORAGE_AZURE_CONTAINER_PREFIX": f"e{unique}-",
        }
    return {
        "IMGPIPE_STORAGE_BACKEND": "s3",
        "IMGPIPE_STORAGE_S3_ENDPOINT": e["IMGPIPE_TEST_S3_ENDPOINT"],
        "IMGPIPE_STORAGE_S3_REGION": e.get("IMGPIPE_TEST_S3_REGION", "us-east-1"),
        "IMGPIPE_STORAGE_S3_BUCKET": f"e{unique}",
        "IMGPIPE_STORAGE_S3_ACCESS_KEY": e["IMGPIPE_TEST_S3_ACCESS_KEY"],
        "IMGPIPE_STORAGE_S3_SECRET_KEY": e["IMGPIPE_TEST_S3_SECRET_KEY"],
    }


def stored_keys(env, container):
    p = run_cli("storage", "list", container, env=env)
    assert p.returncode == 0, p.stderr
    return [json.loads(line)["key"] for line in p.stdout.splitlines()]


def rfc3339(dt):
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("backend", BACKENDS)
def test_corpus_is_stored_processed_read_and_expired_in_the_cloud(start_server, backend):
    env = cloud_env(backend)
    server = start_server(env=env)
    uploaded = {}
    for f in corpus_files():
        data = f.read_bytes()
        created = server.upload_ok(data)
        uploaded[created["id"]] = (data, created)
    assert len(uploaded) >= 5
    for image_id, (data, created) in uploaded.items():
        server.wait_processed(image_id)
        original = server.get(f"/v1/images/{image_id}/original")
        assert original.status_code == 200
        assert sha256(original.content) == sha256(data), "the original must come back byte for byte"
        ranged = server.get(f"/v1/images/{image_id}/original", headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == data[10:20]
        thumb = server.get(f"/v1/images/{image_id}/renditions/thumb-256")
        assert thumb.status_code == 200 and len(thumb.content) > 100
    assert server.get("/readyz").json()["checks"]["storage"] == "ok"
    # Nothing in the local blob folder, nothing left in the spool: it all went to the service.
    assert server.blob_files() == []
    assert server.spool_files() == []
    originals = stored_keys(env, "originals")
    renditions = stored_keys(env, "renditions")
    for image_id in uploaded:
        assert sum(image_id in k for k in originals) == 1
        assert sum(image_id in k for k in renditions) == 2
    assert server.stop() == 0

    # Eight days later the sweep deletes every blob and keeps the rows.
    t0 = max(datetime.fromisoformat(c["received_at"].replace("Z", "+00:00")) for _, c in uploaded.values())
    p = run_cli("retention", "run", "--data-dir", server.data_dir, "--now", rfc3339(t0 + timedelta(days=8)), env=env)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["expired"] == len(uploaded)
    assert report["deleted_blobs"] == 3 * len(uploaded)
    assert stored_keys(env, "originals") == []
    assert stored_keys(env, "renditions") == []
    again = start_server(data_dir=server.data_dir, admin_key=server.admin_key, env=env)
    for image_id in uploaded:
        assert_error(again.get(f"/v1/images/{image_id}/original"), 404, "not_found")


@pytest.mark.disrupts_services
@pytest.mark.parametrize("backend", BACKENDS)
def test_storage_stopped_mid_upload_fails_cleanly_and_recovers(start_server, backend):
    env = cloud_env(backend)
    server = start_server(env=env)
    photo = (CORPORA / CORPUS[0]).read_bytes()
    server.upload_ok(photo)  # the containers or bucket exist now
    before = [it["id"] for it in server.get("/v1/images").json()["items"]]
    objects_before = stored_keys(env, "originals")

    def body():
        yield photo[: len(photo) // 2]
        # The storage service dies while the upload's body is arriving.
        kill_service(SERVICE[backend])
        yield photo[len(photo) // 2:]

    try:
        r = server.upload(body())
        assert r.status_code == 503, f"{r.status_code} {r.text[:300]}"
        error = r.json()["error"]
        assert error["code"] == "storage_unavailable"
        assert "connect" in error["message"], error["message"]
        after = [it["id"] for it in server.get("/v1/images").json()["items"]]
        assert after == before, "a refused upload must leave no image"
    finally:
        assert restart_service(SERVICE[backend]).wait(timeout=120) == 0, f"{SERVICE[backend]} restart failed"
    # The service restarted on the same data: no partial or orphaned object of the refused upload is visible.
    # (A subset, not equal: Azurite persists its metadata lazily, so a kill -9 can lose objects written before it.)
    assert set(stored_keys(env, "originals")) <= set(objects_before)

    # Back up: the same upload succeeds whole.
    created = server.upload_ok(photo)
    server.wait_processed(created["id"])
    assert sha256(server.get(f"/v1/images/{created['id']}/original").content) == sha256(photo)
    assert sum(created["id"] in k for k in stored_keys(env, "originals")) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_legal_hold_and_read_time_expiry_in_the_cloud(start_server, backend):
    """With the clock moved 9 days on: a held image stays readable and survives the sweep with every blob; the
    other is refused at once (read-time expiry) and swept; released, the held one goes at the next sweep."""
    env = cloud_env(backend)
    server = start_server(env=env)
    photo = (CORPORA / CORPUS[0]).read_bytes()
    held = server.upload_ok(photo)["id"]
    other = server.upload_ok(photo + b"\0")["id"]
    for image_id in (held, other):
        server.wait_processed(image_id)
    r = server.request("PUT", f"/v1/images/{held}/hold", json={"reason": "litigation"})
    assert r.status_code == 200, r.text
    assert server.stop() == 0

    later = dict(env, IMGPIPE_TESTING_CLOCK_OFFSET="9d", IMGPIPE_RETENTION_SWEEPER="false")
    server = start_server(data_dir=server.data_dir, admin_key=server.admin_key, env=later)
    assert server.get(f"/v1/images/{held}/original").content == photo
    assert_error(server.get(f"/v1/images/{other}/original"), 404, "not_found")
    assert server.stop() == 0
    p = run_cli("retention", "run", "--data-dir", server.data_dir, env=later)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["expired"] == 1
    kept = [k for k in stored_keys(env, "originals") + stored_keys(env, "renditions")]
    assert sum(held in k for k in kept) == 3 and not any(other in k for k in kept)

    p = run_cli("hold", "release", held, "--data-dir", server.data_dir, env=env)
    assert p.returncode == 0, p.stderr
    p = run_cli("retention", "run", "--data-dir", server.data_dir, env=later)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["expired"] == 1
    assert stored_keys(env, "originals") == [] and stored_keys(env, "renditions") == []


def with_comment(jpeg, text):
    """The JPEG with a comment segment holding `text` right after its SOI marker (still a valid JPEG)."""
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + jpeg[2:]


def raw_service_files(backend, env):
    """The files the service itself keeps the namespace's objects in: Versity's posix backend stores each object as
    a file under <data>/<bucket>/; Azurite appends blob bytes to extent files shared by every container."""
    services = Path(os.environ["IMGPIPE_SERVICES_DIR"])
    if backend == "s3":
        root = services / "s3" / "data" / env["IMGPIPE_STORAGE_S3_BUCKET"]
    else:
        root = services / "azurite" / "__blobstorage__"
    assert root.is_dir(), f"{root} is missing: where does {SERVICE[backend]} keep its data now?"
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_nothing_reaches_the_service_in_plaintext(start_server, backend):
    env = cloud_env(backend)
    server = start_server(env=env)
    files = corpus_files()
    # A token only this test's uploads carry, so a find in Azurite's shared extents can only be ours.
    token = b"imgpipe-e2e-" + secrets.token_hex(16).encode()
    uploads = [with_comment(f.read_bytes(), token) if f.read_bytes()[:2] == b"\xff\xd8" else f.read_bytes()
               for f in files]
    ids = [server.upload_ok(data)["id"] for data in uploads]
    for image_id in ids:
        server.wait_processed(image_id)
    secrets_found = exif_strings(files)
    assert secrets_found, "exiftool found no camera strings in the corpus files"

    raw_files = raw_service_files(backend, env)
    raw = b"".join(p.read_bytes() for p in raw_files)
    assert len(raw) > sum(map(len, uploads)), "the service holds less than was uploaded: wrong folder?"
    if backend == "s3":
        objects = [p for p in raw_files if "originals" in p.parts or "renditions" in p.parts]
        assert len(objects) == 3 * len(ids), sorted(str(p) for p in raw_files)
        for p in objects:
            assert p.read_bytes().startswith(MAGIC), f"{p} is not an encrypted object"
    for needle in [token, *SIGNATURES, *secrets_found, *(data[:16] for data in uploads)]:
        assert needle not in raw, f"{SERVICE[backend]}'s files hold {needle[:24]!r} in the clear"
    # And it all reads back as uploaded.
    for image_id, data in zip(ids, uploads):
        assert server.get(f"/v1/images/{image_id}/original").content == data


def test_s3_virtual_hosted_addressing_against_the_live_server(start_server):
    """storage.s3.addressing = "virtual": requests go to http://<bucket>.<domain>:PORT/<key> with that Host header
    (and signature), connected to 127.0.0.1 through storage.s3.connect_host since the name does not resolve."""
    env = cloud_env("s3")
    domain = os.environ.get("IMGPIPE_TEST_S3_VIRTUAL_DOMAIN")
    if not domain:
        pytest.fail("IMGPIPE_TEST_S3_VIRTUAL_DOMAIN not set: restart scripts/services/s3 (it serves virtual hosts)")
    port = env["IMGPIPE_STORAGE_S3_ENDPOINT"].rsplit(":", 1)[1]
    env.update({"IMGPIPE_STORAGE_S3_ENDPOINT": f"http://{domain}:{port}", "IMGPIPE_STORAGE_S3_ADDRESSING": "virtual",
                "IMGPIPE_STORAGE_S3_CONNECT_HOST": "127.0.0.1"})
    # Without the override the bucket's name does not resolve: a clear connection error, not a silent fallback.
    p = run_cli("storage", "check", env={k: v for k, v in env.items() if k != "IMGPIPE_STORAGE_S3_CONNECT_HOST"})
    assert p.returncode != 0 and f"{env['IMGPIPE_STORAGE_S3_BUCKET']}.{domain}".encode() in p.stderr, p.stderr
    assert run_cli("storage", "check", env=env).returncode == 0

    server = start_server(env=env)
    photo = (CORPORA / CORPUS[0]).read_bytes()
    image_id = server.upload_ok(photo)["id"]
    server.wait_processed(image_id)
    assert server.get(f"/v1/images/{image_id}/original").content == photo
    assert sum(image_id in k for k in stored_keys(env, "originals")) == 1
    # The objects are in that bucket on the server's disk, as for path-style requests.
    bucket_dir = Path(os.environ["IMGPIPE_SERVICES_DIR"]) / "s3" / "data" / env["IMGPIPE_STORAGE_S3_BUCKET"]
    assert sum(1 for p in bucket_dir.rglob("*") if p.is_file() and image_id in str(p)) == 3
